"""A web demo across providers: upload a lesion photo, see every backend's answer side by side.

Like the Hugging Face Spaces built on single skin-lesion models, but over several backends at once: the
same model on this machine and behind each cloud's emulator (or real endpoints from a comparison config),
with latency, the cost of the call, whether the provider keeps the image, and the referral decision with its
reasons. It is triage and research support, never a diagnosis: a clinician reviews every result.

Start it with `derm-cloud demo` (needs `pip install 'derm-cloud[demo]'`). Nothing here imports gradio at
module import time; `derm_cloud.demo.app.build_demo` does.

Example:
    >>> from derm_cloud.demo.backends import open_backends
    >>> with open_backends(["local-onnx", "sagemaker"], model_dir="sklesion") as backends:  # doctest: +SKIP
    ...     print([b.name for b in backends])
    ['local-onnx', 'sagemaker (emulated)']
"""

from __future__ import annotations

__all__: list[str] = []
