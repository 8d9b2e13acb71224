"""`model_facts`: which reader a model needs (model directory, cached short name, Hugging Face folder or hub id)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from derm_cloud.errors import ConfigError
from derm_cloud.models.cache import KNOWN_MODELS, models_dir
from derm_cloud.models.facts.huggingface import hf_folder_facts, hf_hub_facts
from derm_cloud.models.facts.model_dir import model_dir_facts
from derm_cloud.models.facts.record import ModelFacts, known_facts, with_known

__all__ = ["model_facts"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def model_facts(
    path_or_hub_id: str | os.PathLike[str], *, revision: str | None = None, local_files_only: bool | None = None
) -> ModelFacts:
    """Facts about an ONNX model directory, a Hugging Face folder, a hub id or a cached short name.

    Args:
        path_or_hub_id: a model directory, an HF folder, `"owner/name"` or `"sklesion"`/`"mobilenet-v2"`.
        revision: hub revision (branch, tag or commit) for hub ids.
        local_files_only: never contact the hub (default: `HF_HUB_OFFLINE`). Offline, hub ids get the
            reference-table facts and a note saying so.

    Raises:
        ConfigError: the argument is neither an existing path, a short name nor a hub id.
        ModelSpecError: a model directory's spec is invalid.
    """
    text = os.fspath(path_or_hub_id)
    path = Path(text).expanduser()
    short = _short_name_dir(text)
    if short is not None and not path.exists():
        if (short / "spec.json").is_file():
            return model_dir_facts(short, text)
        entry = known_facts(text, short.name)
        note = f"{text!r} is not fetched yet ({short}); run `derm-cloud models fetch {text}`"
        return with_known(ModelFacts(model=text, kind="reference", notes=(note,)), entry)
    if path.is_dir():
        if (path / "spec.json").is_file() or (path / "labels.json").is_file():
            return model_dir_facts(path, text)
        if (path / "config.json").is_file():
            return hf_folder_facts(path, text)
        raise ConfigError(
            f"{text!r} is a folder but holds neither spec.json/labels.json (ONNX model directory) nor config.json "
            "(Hugging Face folder)"
        )
    if path.exists():
        raise ConfigError(f"{text!r} is a file; pass the model directory that contains it")
    if _HUB_ID.match(text):
        return hf_hub_facts(text, revision=revision, local_files_only=local_files_only)
    raise ConfigError(f"{text!r} is neither an existing folder nor a Hugging Face hub id (owner/name); check the path")


def _short_name_dir(text: str) -> Path | None:
    """The cache folder of a short name (`sklesion`, `mobilenet-v2`), or `None` for anything else."""
    names = {name: folder for name, (folder, _) in KNOWN_MODELS.items()}
    return models_dir() / names[text] if text in names else None
