"""Backends: one module per provider, each importing its SDK only when the backend is created.

Import backends through `derm_cloud.create` (or `derm_cloud.registry`), not from here, so that a
missing optional dependency gives a clear `MissingDependencyError`.
"""
