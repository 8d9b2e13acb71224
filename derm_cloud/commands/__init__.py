"""Sub-commands of `derm-cloud`: one module each, discovered by `derm_cloud.cli`."""
