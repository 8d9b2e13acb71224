"""How to point each cloud SDK (and each derm-cloud backend) at a running emulator, ready to copy.

`connection` describes one running emulator as plain data: its URL, the names a client needs (endpoint,
project, deployment ...), the dummy credentials the SDK insists on, the environment variables the SDK or the
derm-cloud backend reads, the `derm_cloud.create` arguments, and two Python snippets (the provider's own SDK,
and derm-cloud) that run verbatim against the emulator. `derm-cloud emulate` prints it; `--json` prints the
dict. Every value is a string, a number, a list or a dict, never `None`, so a script can read any field.

One module per cloud (`aws`, `azure`, `google`) builds the details of its emulators;
`snippet` writes the derm-cloud snippet they share and `connection` picks the builder.

Example:
    >>> from derm_cloud.testing.launch import start  # doctest: +SKIP
    >>> info = connection("sagemaker", start("sagemaker", model_dir, options={}, transport=None))  # doctest: +SKIP
    >>> info["env"]["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"]  # doctest: +SKIP
    'http://127.0.0.1:40123'
"""

from __future__ import annotations

from derm_cloud.testing.connect.connection import connection, render_text
from derm_cloud.testing.connect.snippet import DUMMY_AWS_KEY

__all__ = ["DUMMY_AWS_KEY", "connection", "render_text"]
