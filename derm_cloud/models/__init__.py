"""Model specs, the model cache, and the toolbox behind `derm-cloud models`: fetch, export, quantize, info."""
