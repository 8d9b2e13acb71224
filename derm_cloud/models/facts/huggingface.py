"""Facts from a Hugging Face model: a local folder or a hub id (`config.json`, safetensors, the model card).

Online, the hub is read through `huggingface_hub`; offline (`HF_HUB_OFFLINE` or `local_files_only`), a hub
id gets the reference-table facts and a note saying so.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError, ModelSpecError
from derm_cloud.models.facts.model_card import parse_model_card
from derm_cloud.models.facts.record import Kind, ModelFacts, known_facts, labels_map, with_known

__all__ = ["hf_folder_facts", "hf_hub_facts", "processor_config_problem", "safetensors_parameters"]


def safetensors_parameters(files: Sequence[Path]) -> int:
    """Count tensor elements from safetensors headers (reads a few kB per file, no torch needed)."""
    total = 0
    for f in files:
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name != "__metadata__":
                count = 1
                for dim in info["shape"]:
                    count *= int(dim)
                total += count
    return total


def processor_config_problem(raw: dict[str, Any] | None) -> str | None:
    """Why a `preprocessor_config.json` cannot be trusted as an image-processor config, or `None`.

    Anwarkh1/Skin_Cancer-Image_Classification ships a renamed copy of its model config there (no
    `image_mean`, `image_std` or `size`; docs/reference/dermatology.md section 3.1), so the values must come
    from the
    processor class defaults, explicitly.
    """
    if not raw:
        return "the folder has no preprocessor_config.json"
    missing = [k for k in ("image_mean", "image_std", "size") if k not in raw]
    if missing:
        return f"preprocessor_config.json has no {', '.join(missing)} (it is not an image-processor config)"
    return None


def _hf_facts(
    name: str,
    kind: Kind,
    config: dict[str, Any],
    processor: dict[str, Any] | None,
    card: str | None,
    *,
    parameters: int | None,
    size: int | None,
    notes: list[str],
    aliases: Sequence[str | None],
) -> ModelFacts:
    id2label = config.get("id2label") or {}
    labels = tuple(str(id2label[k]) for k in sorted(id2label, key=int))
    arch = (config.get("architectures") or ["?"])[0]
    details = [
        f"{label} {config[key]}"
        for key, label in (("hidden_size", "hidden"), ("num_hidden_layers", "layers"), ("patch_size", "patch"))
        if config.get(key) is not None
    ]
    if config.get("image_size") is not None:
        details.append(f"image {config['image_size']}")
    architecture = f"{arch} ({config.get('model_type', '?')}" + (f": {', '.join(details)})" if details else ")")
    sources = {"architecture": "config.json", "labels": "config.json id2label"}
    values: dict[str, Any] = {}
    for key, value in parse_model_card(card or "").items():
        values[key], sources[key] = value, "model card (README.md)"
    problem = processor_config_problem(processor)
    if problem is None and processor is not None:
        size_cfg = processor.get("size")
        preprocessing = f"size {size_cfg}, mean {processor.get('image_mean')}, std {processor.get('image_std')}"
    else:
        image_size = config.get("image_size", 224)
        preprocessing = (
            f"ViTImageProcessor defaults assumed: resize {image_size}x{image_size} bilinear, x1/255, mean/std 0.5"
        )
        notes.append(problem or "no preprocessor config")
    sources["preprocessing"] = "preprocessor_config.json" if problem is None else "fallback"
    if parameters is not None:
        sources["parameters"] = "safetensors header"
    facts = ModelFacts(
        model=name,
        kind=kind,
        architecture=architecture,
        parameters=parameters,
        file_size_bytes=size,
        labels=labels,
        maps_to_ham10000=labels_map(labels),
        preprocessing=preprocessing,
        sources=sources,
        notes=tuple(notes),
        **values,
    )
    return with_known(facts, known_facts(*aliases))


def _read_json(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelSpecError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    return data if isinstance(data, dict) else None


def hf_folder_facts(path: Path, name: str) -> ModelFacts:
    config = _read_json(path / "config.json") or {}
    shards = sorted(path.glob("*.safetensors"))
    weights = shards or sorted([*path.glob("*.bin"), *path.glob("*.pt")])
    notes = [] if shards else ["no safetensors file: parameters not counted"]
    readme = path / "README.md"
    return _hf_facts(
        name,
        "hf-folder",
        config,
        _read_json(path / "preprocessor_config.json"),
        readme.read_text(encoding="utf-8") if readme.is_file() else None,
        parameters=safetensors_parameters(shards) if shards else None,
        size=sum(f.stat().st_size for f in weights) or None,
        notes=notes,
        aliases=(name, path.name, config.get("_name_or_path")),
    )


def hf_hub_facts(hub_id: str, *, revision: str | None, local_files_only: bool | None) -> ModelFacts:
    try:
        import huggingface_hub
        from huggingface_hub import errors as hub_errors
    except ImportError:
        note = "huggingface_hub is not installed (pip install 'derm-cloud[hf]'): reference-table facts only"
        return with_known(ModelFacts(model=hub_id, kind="reference", notes=(note,)), known_facts(hub_id))
    offline = bool(huggingface_hub.constants.HF_HUB_OFFLINE) if local_files_only is None else local_files_only
    files: dict[str, Path] = {}
    unreachable = None
    for filename in ("config.json", "preprocessor_config.json", "README.md"):
        try:
            files[filename] = Path(
                huggingface_hub.hf_hub_download(hub_id, filename, revision=revision, local_files_only=offline)
            )
        except (hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError) as exc:
            raise ConfigError(f"hub model {hub_id!r} (revision {revision or 'main'}) does not exist: {exc}") from exc
        except hub_errors.LocalEntryNotFoundError as exc:
            unreachable = f"hub offline or unreachable and {hub_id} not cached ({type(exc).__name__})"
            break
        except hub_errors.EntryNotFoundError:
            continue  # the repo simply has no such file (many have no preprocessor config or card)
        except Exception as exc:  # network stacks raise many types; facts are best effort
            unreachable = f"the Hugging Face hub could not be read ({type(exc).__name__}: {exc})"
            break
    if "config.json" not in files:
        note = (unreachable or f"{hub_id} has no config.json") + "; reference-table facts only"
        return with_known(ModelFacts(model=hub_id, kind="reference", notes=(note,)), known_facts(hub_id))
    notes: list[str] = []
    parameters = size = None
    if not offline:
        try:
            meta = huggingface_hub.get_safetensors_metadata(hub_id, revision=revision)
            parameters = int(sum(meta.parameter_count.values()))
            info = huggingface_hub.HfApi().model_info(hub_id, revision=revision, files_metadata=True)
            size = sum(s.size or 0 for s in info.siblings or [] if s.rfilename.endswith(".safetensors")) or None
        except Exception as exc:  # optional extras: a repo without safetensors is still described
            notes.append(f"size/parameters not read from the hub ({type(exc).__name__})")
    readme = files.get("README.md")
    return _hf_facts(
        hub_id,
        "hf-hub",
        _read_json(files["config.json"]) or {},
        _read_json(files.get("preprocessor_config.json")),
        readme.read_text(encoding="utf-8") if readme else None,
        parameters=parameters,
        size=size,
        notes=notes,
        aliases=(hub_id,),
    )
