"""Model facts side by side: what a model is, how big, what it was trained on and what it may be used for.

``model_facts`` reads an ONNX model directory (``spec.json`` + the graph), a Hugging Face folder
(``config.json``, safetensors header, ``README.md`` model card) or a hub id (the same files through
``huggingface_hub`` when online). Where the model itself is silent, a small table of facts taken from public
sources fills the gap (:data:`KNOWN_FACTS`, each entry citing its URL); every fact records where it came from.

``render_facts`` prints several models side by side as text or Markdown, which is how the workshop compares
"MobileNetV2 vs skin-cancer ViT vs sklesion" offline.

Example:
    >>> rows = [model_facts("sklesion"), model_facts("Anwarkh1/Skin_Cancer-Image_Classification")]  # doctest: +SKIP
    >>> print(render_facts(rows, fmt="markdown"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import struct
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from derm_cloud.errors import ConfigError, ModelSpecError, UnmappableLabelsError
from derm_cloud.models.spec import ModelSpec, Preprocess
from derm_cloud.taxonomy import LabelMap

__all__ = [
    "KNOWN_FACTS",
    "ModelFacts",
    "describe_preprocess",
    "known_facts",
    "labels_map",
    "model_facts",
    "parse_model_card",
    "processor_config_problem",
    "render_facts",
    "safetensors_parameters",
]

Kind = Literal["onnx", "tflite", "hf-folder", "hf-hub", "reference"]
_TEXT_FACTS = ("architecture", "licence", "training_data", "intended_use", "known_limitations")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def _load_known() -> tuple[dict[str, Any], ...]:
    # A data file (like prices): facts from public sources, each entry citing its URL.
    text = importlib.resources.files("derm_cloud.models").joinpath("data/known_models.json").read_text("utf-8")
    return tuple(json.loads(text)["models"])


#: Facts from public sources for models whose files do not carry them (``models/data/known_models.json``).
KNOWN_FACTS: tuple[dict[str, Any], ...] = _load_known()


@dataclass(frozen=True)
class ModelFacts:
    """What is known about one model, and where each fact came from.

    Attributes:
        model: the id or path as given.
        kind: ``onnx`` (model directory), ``hf-folder``, ``hf-hub`` or ``reference`` (table only).
        architecture, parameters, file_size_bytes, opset: structure and size.
        inputs: ``(name, shape)`` per model input (ONNX graphs).
        labels: output labels in order.
        maps_to_ham10000: whether the labels map onto the seven HAM10000 classes.
        preprocessing: how images are turned into tensors, in words.
        licence, training_data, intended_use, known_limitations: from the model or its card.
        sources: fact name -> where it came from (``spec.json``, ``model card``, a URL ...).
        notes: anything the reader should know about these facts (offline hub, fallbacks ...).
        extra: further facts (parity, quantisation agreement ...).
    """

    model: str
    kind: Kind
    architecture: str | None = None
    parameters: int | None = None
    file_size_bytes: int | None = None
    opset: int | None = None
    inputs: tuple[tuple[str, tuple[int | str, ...]], ...] = ()
    labels: tuple[str, ...] = ()
    maps_to_ham10000: bool | None = None
    preprocessing: str | None = None
    licence: str | None = None
    training_data: str | None = None
    intended_use: str | None = None
    known_limitations: str | None = None
    sources: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (``derm-cloud models info --json``)."""
        d = asdict(self)
        d["inputs"] = [{"name": n, "shape": list(s)} for n, s in self.inputs]
        d["labels"], d["notes"] = list(self.labels), list(self.notes)
        return d


def known_facts(*names: str | None) -> dict[str, Any] | None:
    """The :data:`KNOWN_FACTS` entry for the first of ``names`` that is an alias (case-insensitive).

    Matching is exact: ``someone/skin_cancer-image_classification`` is not assumed to be Anwarkh1's model.
    """
    for name in names:
        if not name:
            continue
        key = name.strip().lower().rstrip("/")
        for entry in KNOWN_FACTS:
            if key in entry["aliases"]:
                return entry
    return None


def parse_model_card(text: str) -> dict[str, str]:
    """Licence, training data, intended use and limitations from a hub model card (``README.md``).

    Reads the YAML front matter keys ``license`` and ``datasets`` and the first paragraph of sections whose
    heading mentions intended use, limitations or training data. Small by design: no YAML library needed.
    """
    out: dict[str, str] = {}
    body = text
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end > 0:
            front, body = text[3:end], text[end + 4 :]
            meta = _front_matter(front)
            if meta.get("license"):
                out["licence"] = ", ".join(meta["license"])
            if meta.get("datasets"):
                out["training_data"] = ", ".join(meta["datasets"])
    for heading, content in _sections(body):
        h = heading.lower()
        para = _first_paragraph(content)
        if not para:
            continue
        if "intended use" in h or h.strip() == "uses":
            out.setdefault("intended_use", para)
        elif "limitation" in h or "bias" in h:
            out.setdefault("known_limitations", para)
        elif "training" in h and "data" in h and "training_data" not in out:
            out["training_data"] = para
    return out


def _front_matter(front: str) -> dict[str, list[str]]:
    meta: dict[str, list[str]] = {}
    key = None
    for line in front.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith((" ", "-")) and key is not None:
            item = line.strip().lstrip("-").strip().strip("'\"")
            if item:
                meta[key].append(item)
            continue
        k, sep, v = line.partition(":")
        if not sep:
            continue
        key = k.strip()
        v = v.strip()
        if v.startswith("[") and v.endswith("]"):
            meta[key] = [x.strip().strip("'\"") for x in v[1:-1].split(",") if x.strip()]
        else:
            meta[key] = [v.strip("'\"")] if v else []
    return meta


def _sections(body: str) -> list[tuple[str, str]]:
    parts = re.split(r"^#{1,4}\s+(.+)$", body, flags=re.MULTILINE)
    return [(parts[i].strip(), parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def _first_paragraph(content: str, limit: int = 300) -> str:
    for block in re.split(r"\n\s*\n", content.strip()):
        text = " ".join(block.split())
        if text and not text.lower().startswith(("more information needed", "[more information needed]")):
            return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."
    return ""


def model_facts(
    path_or_hub_id: str | os.PathLike[str], *, revision: str | None = None, local_files_only: bool | None = None
) -> ModelFacts:
    """Facts about an ONNX model directory, a Hugging Face folder, a hub id or a cached short name.

    Args:
        path_or_hub_id: a model directory, an HF folder, ``"owner/name"`` or ``"sklesion"``/``"mobilenet-v2"``.
        revision: hub revision (branch, tag or commit) for hub ids.
        local_files_only: never contact the hub (default: ``HF_HUB_OFFLINE``). Offline, hub ids get the
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
            return _onnx_dir_facts(short, text)
        entry = known_facts(text, short.name)
        note = f"{text!r} is not fetched yet ({short}); run `derm-cloud models fetch {text}`"
        return _with_known(ModelFacts(model=text, kind="reference", notes=(note,)), entry)
    if path.is_dir():
        if (path / "spec.json").is_file() or (path / "labels.json").is_file():
            return _onnx_dir_facts(path, text)
        if (path / "config.json").is_file():
            return _hf_folder_facts(path, text)
        raise ConfigError(
            f"{text!r} is a folder but holds neither spec.json/labels.json (ONNX model directory) nor config.json "
            "(Hugging Face folder)"
        )
    if path.exists():
        raise ConfigError(f"{text!r} is a file; pass the model directory that contains it")
    if _HUB_ID.match(text):
        return _hf_hub_facts(text, revision=revision, local_files_only=local_files_only)
    raise ConfigError(f"{text!r} is neither an existing folder nor a Hugging Face hub id (owner/name); check the path")


def _with_known(facts: ModelFacts, entry: dict[str, Any] | None) -> ModelFacts:
    """Fill facts the model did not state from a reference-table entry, recording the source URL."""
    if entry is None:
        return facts
    values = asdict(facts)
    sources = dict(facts.sources)
    for key in (*_TEXT_FACTS, "parameters"):
        if values.get(key) in (None, "") and entry.get(key) is not None:
            values[key] = entry[key]
            sources[key] = f"reference table: {entry['source']}"
    values["sources"] = sources
    values["inputs"] = facts.inputs
    values["labels"] = facts.labels
    values["notes"] = facts.notes
    return ModelFacts(**values)


def labels_map(labels: Sequence[str]) -> bool | None:
    """Whether labels map onto the seven HAM10000 classes (``None`` when there are no labels)."""
    if not labels:
        return None
    try:
        LabelMap.for_labels(list(labels))
    except UnmappableLabelsError:
        return False
    return True


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


# --- readers -----------------------------------------------------------------------------------------------------


def processor_config_problem(raw: dict[str, Any] | None) -> str | None:
    """Why a ``preprocessor_config.json`` cannot be trusted as an image-processor config, or ``None``.

    Anwarkh1/Skin_Cancer-Image_Classification ships a renamed copy of its model config there (no
    ``image_mean``, ``image_std`` or ``size``; docs/reference/dermatology.md section 3.1), so the values must come
    from the
    processor class defaults, explicitly.
    """
    if not raw:
        return "the folder has no preprocessor_config.json"
    missing = [k for k in ("image_mean", "image_std", "size") if k not in raw]
    if missing:
        return f"preprocessor_config.json has no {', '.join(missing)} (it is not an image-processor config)"
    return None


def describe_preprocess(pre: Preprocess) -> str:
    """A spec's preprocessing in words, e.g. ``resize 224x224 pil_bilinear, x1/255, mean [0.5 ...]``."""
    if pre.resize == "squash":
        steps = [f"resize {pre.height}x{pre.width} {pre.interpolation} (aspect not kept)"]
    elif pre.resize == "shorter_side":
        steps = [f"shorter side {pre.shorter} {pre.interpolation}"]
    else:
        steps = ["no resize"]
    if pre.crop:
        steps.append(f"centre crop {pre.crop[0]}x{pre.crop[1]}")
    steps.append("x1/255" if abs(pre.scale - 1 / 255) < 1e-9 else f"x{pre.scale:g}")
    if pre.mean != (0.0, 0.0, 0.0) or pre.std != (1.0, 1.0, 1.0):
        steps.append(f"mean {[round(m, 3) for m in pre.mean]} std {[round(s, 3) for s in pre.std]}")
    if pre.channel_order != "RGB":
        steps.append(f"channels {pre.channel_order}")
    return ", ".join(steps)


def _short_name_dir(text: str) -> Path | None:
    from derm_cloud.models.cache import KNOWN_MODELS, models_dir
    from derm_cloud.models.mobilenet import MODEL_ID as MOBILENET_ID

    names = {name: folder for name, (folder, _) in KNOWN_MODELS.items()}
    names.setdefault("mobilenet-v2", MOBILENET_ID)
    return models_dir() / names[text] if text in names else None


def _spec_text_facts(facts: dict[str, Any]) -> dict[str, str]:
    out = {k: str(facts[k]) for k in _TEXT_FACTS if facts.get(k)}
    if "licence" not in out and facts.get("license"):
        out["licence"] = str(facts["license"])
    return out


def _onnx_dir_facts(path: Path, name: str) -> ModelFacts:
    spec = ModelSpec.load(path)
    model_file = path / spec.model_file
    values: dict[str, Any] = {"labels": spec.labels, "preprocessing": describe_preprocess(spec.preprocess)}
    sources = {"labels": "spec.json", "preprocessing": "spec.json"}
    notes: list[str] = []
    extra = {k: v for k, v in spec.facts.items() if k not in (*_TEXT_FACTS, "license", "parameters")}
    for key, value in _spec_text_facts(spec.facts).items():
        values[key], sources[key] = value, "spec.json"
    kind: Kind = "onnx"
    if spec.model_file.endswith(".tflite"):
        kind = "tflite"
        values["inputs"], tflite_note = _tflite_inputs(model_file)
        sources["inputs"] = "LiteRT interpreter"
        notes.extend(tflite_note)
    else:
        _read_onnx_graph(model_file, spec, values, sources, notes, extra)
    values["file_size_bytes"] = model_file.stat().st_size
    facts = ModelFacts(model=name, kind=kind, sources=sources, notes=tuple(notes), extra=extra, **values)
    facts = replace(facts, maps_to_ham10000=labels_map(facts.labels))
    return _with_known(facts, known_facts(spec.model_id, spec.facts.get("source_model"), path.name))


def _tflite_inputs(model_file: Path) -> tuple[tuple[tuple[str, tuple[Any, ...]], ...] | None, list[str]]:
    """Input names and shapes of a TFLite file, and notes giving each input's dtype and quantization."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None, ["ai-edge-litert is not installed: TFLite inputs not read (pip install 'derm-cloud[tflite]')"]
    details = Interpreter(model_path=str(model_file)).get_input_details()
    notes = []
    for d in details:
        scale, zero_point = d["quantization"]
        quant = f", quantization scale {scale:g} zero point {zero_point}" if scale else ""
        notes.append(f"TFLite input {d['name']}: {d['dtype'].__name__}{quant}")
    return tuple((d["name"], tuple(int(x) for x in d["shape"])) for d in details), notes


def _read_onnx_graph(
    model_file: Path,
    spec: ModelSpec,
    values: dict[str, Any],
    sources: dict[str, str],
    notes: list[str],
    extra: dict[str, Any],
) -> None:
    try:
        import onnx
    except ImportError:
        notes.append("onnx is not installed: graph facts (parameters, opset, inputs) not read")
    else:
        graph_model = onnx.load(str(model_file), load_external_data=False)
        initializers = {i.name for i in graph_model.graph.initializer}
        count = 0
        for init in graph_model.graph.initializer:
            n = 1
            for dim in init.dims:
                n *= int(dim)
            count += n
        values["parameters"], sources["parameters"] = count, "ONNX initializers"
        if spec.facts.get("parameters") not in (None, count):
            extra["parameters_original_model"] = spec.facts["parameters"]
        values["opset"] = next((o.version for o in graph_model.opset_import if o.domain in ("", "ai.onnx")), None)
        values["inputs"] = tuple(
            (i.name, tuple(d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim))
            for i in graph_model.graph.input
            if i.name not in initializers
        )


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
    return _with_known(facts, known_facts(*aliases))


def _read_json(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelSpecError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    return data if isinstance(data, dict) else None


def _hf_folder_facts(path: Path, name: str) -> ModelFacts:
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


def _hf_hub_facts(hub_id: str, *, revision: str | None, local_files_only: bool | None) -> ModelFacts:
    try:
        import huggingface_hub
        from huggingface_hub import errors as hub_errors
    except ImportError:
        note = "huggingface_hub is not installed (pip install 'derm-cloud[hf]'): reference-table facts only"
        return _with_known(ModelFacts(model=hub_id, kind="reference", notes=(note,)), known_facts(hub_id))
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
        return _with_known(ModelFacts(model=hub_id, kind="reference", notes=(note,)), known_facts(hub_id))
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


# --- rendering ---------------------------------------------------------------------------------------------------

_ROWS: tuple[tuple[str, str], ...] = (
    ("kind", "kind"),
    ("architecture", "architecture"),
    ("parameters", "parameters"),
    ("file_size_bytes", "file size"),
    ("opset", "ONNX opset"),
    ("inputs", "inputs"),
    ("labels", "labels"),
    ("maps_to_ham10000", "maps to HAM10000 classes"),
    ("preprocessing", "preprocessing"),
    ("licence", "licence"),
    ("training_data", "training data"),
    ("intended_use", "intended use"),
    ("known_limitations", "known limitations"),
    ("extra", "validation"),
    ("notes", "notes"),
    ("sources", "sources"),
)


def _cell(facts: ModelFacts, key: str) -> str:
    value = getattr(facts, key)
    if key == "parameters" and value is not None:
        return f"{value:,} ({value / 1e6:.1f}M)"
    if key == "file_size_bytes" and value is not None:
        return f"{value / 1e6:.1f} MB"
    if key == "inputs":
        return "; ".join(f"{n} [{', '.join(str(d) for d in s)}]" for n, s in value)
    if key == "labels":
        if not value:
            return ""
        if len(value) <= 8:
            return f"{len(value)}: " + ", ".join(value)
        return f"{len(value)}: " + ", ".join(value[:4]) + f", ... ({len(value) - 4} more)"
    if key == "maps_to_ham10000":
        return "" if value is None else ("yes" if value else "no (baseline only)")
    if key == "extra":
        parts = []
        for name in ("parity_max_abs_diff", "parity", "quantization"):
            if name in value:
                item = value[name]
                if isinstance(item, dict):
                    shown = ("method", "max_abs_diff", "top1_agreement", "max_abs_dp", "n_images", "source_model_id")
                    item = ", ".join(
                        f"{k}={item[k]:.3g}" if isinstance(item[k], float) else f"{k}={item[k]}"
                        for k in shown
                        if k in item
                    )
                parts.append(f"{name}: {item}")
        return "; ".join(parts)
    if key == "notes":
        return "; ".join(value)
    if key == "sources":
        urls = sorted({v.split(": ", 1)[-1] for v in value.values() if "http" in v})
        return ", ".join(urls)
    return "" if value is None else str(value)


def render_facts(facts: Sequence[ModelFacts], fmt: Literal["text", "markdown"] = "text", width: int = 40) -> str:
    """Several models side by side: one row per fact, one column per model.

    Args:
        facts: the models to show, in column order.
        fmt: ``text`` (wrapped columns for a terminal) or ``markdown`` (a GitHub table).
        width: column width of the text form.
    """
    header = ["fact", *(f.model for f in facts)]
    rows = []
    for key, title in _ROWS:
        cells = [_cell(f, key) for f in facts]
        if any(cells):
            rows.append([title, *cells])
    if fmt == "markdown":

        def esc(s: str) -> str:
            return s.replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)
    first = max(len(r[0]) for r in [header, *rows])
    out = []
    for row in [header, *rows]:
        wrapped = [[row[0]], *[textwrap.wrap(c, width) or [""] for c in row[1:]]]
        for i in range(max(len(w) for w in wrapped)):
            parts = [(wrapped[0][i] if i < len(wrapped[0]) else "").ljust(first)]
            parts += [(w[i] if i < len(w) else "").ljust(width) for w in wrapped[1:]]
            out.append("  ".join(parts).rstrip())
        if row is header:
            out.append("-" * min(200, first + (width + 2) * (len(header) - 1)))
    return "\n".join(out)
