"""What every connection's snippets share: the image they classify, dummy AWS keys, the derm-cloud snippet."""

from __future__ import annotations

from typing import Any

__all__ = ["DUMMY_AWS_KEY", "IMAGE", "derm_cloud_snippet"]

#: boto3 signs every request and refuses to without credentials; the emulator checks no signature.
DUMMY_AWS_KEY = "testing"
#: The file the snippets classify.
IMAGE = "lesion.jpg"


def derm_cloud_snippet(info: dict[str, Any]) -> str:
    """`derm_cloud.create` with the emulator's options (secrets come from `env` where the backend reads it)."""
    backend = info["backend"]
    lines = ["import derm_cloud", ""]
    options = dict(backend["options"])
    extra = ""
    if info.get("embedder"):
        return _embedder_snippet(backend["type"], options)
    if backend["type"] in ("vertex", "google-vision") and not options.get("api_key"):
        if options.get("transport") == "grpc":
            lines.insert(0, "import grpc")
            extra = f"    channel=grpc.insecure_channel({info['grpc_target']!r}),\n"
        else:
            lines.insert(0, "from google.auth.credentials import AnonymousCredentials")
            extra = "    credentials=AnonymousCredentials(),\n"
    if backend["type"] == "vertex-gemini":
        lines.insert(0, "from google.oauth2.credentials import Credentials")
        extra = "    credentials=Credentials(token='emulator-token'),\n"
    if backend["type"] in ("sagemaker", "rekognition-custom-labels"):
        lines.insert(0, "# with the environment variables above set (the dummy AWS keys and the endpoint URL)")
        options["endpoint_url"] = info["url"]
    if backend["type"] == "azure-openai":
        options["api_key"] = info["api_key"]
    args = "".join(f"    {name}={value!r},\n" for name, value in options.items())
    lines.append(f"with derm_cloud.create(\n    {backend['type']!r},\n{args}{extra}) as clf:")
    lines.append(f"    print(clf.predict({IMAGE!r}).top(3))")
    return "\n".join(lines) + "\n"


def _embedder_snippet(kind: str, options: dict[str, Any]) -> str:
    """`derm_cloud.create_embedder` with the emulator's options, embedding the snippet image."""
    lines = ["import derm_cloud", ""]
    extra = ""
    if kind.startswith("vertex-"):
        lines.insert(0, "from google.auth.credentials import AnonymousCredentials")
        extra = "    credentials=AnonymousCredentials(),\n"
    args = "".join(f"    {name}={value!r},\n" for name, value in options.items())
    lines.append(f"with derm_cloud.create_embedder(\n    {kind!r},\n{args}{extra}) as emb:")
    lines.append(f"    print(emb.embed({IMAGE!r}).dimension)")
    return "\n".join(lines) + "\n"
