"""Live list prices from the providers' public price APIs, for `derm-cloud prices refresh`.

* `azure`: the Azure Retail Prices REST API (`https://prices.azure.com/api/retail/prices`, no credentials).
* `aws`: the AWS Price List Query API through boto3's `pricing` client (`get_products`; AWS credentials).
* `google`: the Cloud Billing Catalog API through google-cloud-billing (`services/{id}/skus`; an API key).

`queries` says which catalogue entry each query fills; `refresh` runs them and writes the user catalogue
atomically. Every reader takes an endpoint override, so `--mirror URL` points all three at local emulators
(`derm_cloud.testing.emulators.price_apis`).
"""
