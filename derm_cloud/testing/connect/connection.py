"""`connection`: one running emulator described as plain data, and `render_text` to print it."""

from __future__ import annotations

from typing import Any

from derm_cloud.testing.connect import aws, azure, embeddings, google
from derm_cloud.testing.connect.snippet import derm_cloud_snippet

__all__ = ["connection", "render_text"]


def connection(kind: str, emulator: Any) -> dict[str, Any]:
    """Connection details for a running emulator of `kind` (a backend type such as `"sagemaker"`).

    Args:
        kind: one of `sagemaker`, `azure-ml`, `azure-custom-vision`, `vertex`, `google-vision`,
            `azure-openai`, `vertex-gemini`, `rekognition-custom-labels`, or an embedding endpoint:
            `vertex-medsiglip`, `vertex-derm-foundation`, `azure-medimageinsight`.
        emulator: the running emulator (from `derm_cloud.testing.launch.start` or its own class).

    Returns:
        A JSON-compatible dict with `kind`, `url`, `sdk`, the cloud's own fields (flat), `env`,
        `backend` (`{"type", "options"}` for `derm_cloud.create`), `python_sdk` and `python_derm_cloud`
        (snippets that classify `lesion.jpg`) and `notes`.

    Raises:
        ValueError: `kind` is not an emulated cloud.
    """
    builders = {
        "sagemaker": aws.sagemaker,
        "azure-ml": azure.azure_ml,
        "azure-custom-vision": azure.custom_vision,
        "vertex": google.vertex,
        "google-vision": google.cloud_vision,
        "azure-openai": azure.azure_openai,
        "vertex-gemini": google.gemini,
        "rekognition-custom-labels": aws.rekognition,
        "vertex-medsiglip": embeddings.vertex_embeddings,
        "vertex-derm-foundation": embeddings.vertex_embeddings,
        "azure-medimageinsight": embeddings.medimageinsight,
    }
    if kind not in builders:
        raise ValueError(f"no emulator connection details for {kind!r}; choose from {', '.join(builders)}")
    info: dict[str, Any] = {"kind": kind, "url": emulator.url}
    info.update(builders[kind](emulator))
    info["python_derm_cloud"] = derm_cloud_snippet(info)
    return info


def render_text(info: dict[str, Any]) -> str:
    """A human-readable block for one emulator: environment lines to paste into a shell, then both snippets."""
    out = [f"== {info['kind']}  {info['url']}  (emulated; test keys only)"]
    skip = {"kind", "url", "env", "backend", "python_sdk", "python_derm_cloud", "notes", "sdk", "labels"}
    facts = ", ".join(f"{k}={v}" for k, v in info.items() if k not in skip and v not in ("", None))
    if facts:
        out.append(f"   {facts}")
    if info["env"]:
        out.append("   environment (read by the SDK and the derm-cloud backend):")
        out.extend(f"     export {name}={value}" for name, value in info["env"].items())
    out.append(f"   {info['sdk']}:")
    out.extend(f"     {line}".rstrip() for line in info["python_sdk"].splitlines())
    out.append("   derm-cloud:")
    out.extend(f"     {line}".rstrip() for line in info["python_derm_cloud"].splitlines())
    out.extend(f"   note: {note}" for note in info["notes"])
    return "\n".join(out)
