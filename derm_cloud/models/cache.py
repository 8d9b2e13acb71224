"""Where fetched and converted models live: a per-user cache folder, never the repository.

`$DERM_CLOUD_CACHE` overrides the location (CI points it at a job folder); otherwise
`$XDG_CACHE_HOME/derm-cloud` or `~/.cache/derm-cloud`.
"""

from __future__ import annotations

import os
from pathlib import Path

from derm_cloud.errors import ModelSpecError

__all__ = ["KNOWN_MODELS", "cache_dir", "models_dir", "resolve_model_dir"]

# Short names accepted wherever a model directory is expected, and how to get each.
KNOWN_MODELS: dict[str, tuple[str, str]] = {
    "sklesion": ("sklesion-0.2.2", "derm-cloud models fetch sklesion"),
    "mobilenet-v2": ("mobilenet-v2-imagenet", "derm-cloud models fetch mobilenet-v2"),
}


def cache_dir() -> Path:
    """The derm-cloud cache root (created on first use)."""
    env = os.environ.get("DERM_CLOUD_CACHE")
    if env:
        root = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "derm-cloud"
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    """Folder holding one sub-folder per model."""
    d = cache_dir() / "models"
    d.mkdir(parents=True, exist_ok=True)
    return d


def resolve_model_dir(name_or_path: str | os.PathLike[str]) -> Path:
    """Turn `"sklesion"` or a path into an existing model directory.

    Raises:
        ModelSpecError: the short name is known but not fetched yet, naming the command that fetches it.
    """
    text = os.fspath(name_or_path)
    if text in KNOWN_MODELS:
        folder, command = KNOWN_MODELS[text]
        path = models_dir() / folder
        if not (path / "spec.json").is_file():
            raise ModelSpecError(f"model {text!r} is not in the cache ({path}); fetch it with `{command}`")
        return path
    return Path(text).expanduser()
