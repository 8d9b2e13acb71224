"""Embedder model folders: `model.onnx` plus `embedder.json`, which says how to feed the encoder and read it.

```text
{
  "format": "derm-cloud-embedder/1",
  "model_id": "sklesion-0.2.2-penultimate",
  "dimension": 32,                                   # length of one embedding
  "output": "embedding",                             # the graph output holding the embeddings (by name)
  "image_input": {"index": 0, "layout": "NHWC"},     # bound by position, as in a classifier's spec.json
  "preprocess": {...},                               # the same block as a classifier's spec.json
  "l2_normalise": false,                             # divide each vector by its length (SigLIP-style)
  "model_file": "model.onnx",
  "facts": {"architecture": "...", "training_data": "...", "cut_at": "..."}
}
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from derm_cloud.errors import ModelSpecError
from derm_cloud.models.spec import Preprocess

__all__ = ["EMBEDDER_FORMAT", "EmbedderSpec"]

EMBEDDER_FORMAT = "derm-cloud-embedder/1"
SPEC_FILE = "embedder.json"


@dataclass(frozen=True)
class EmbedderSpec:
    """How to run an image encoder folder and read its embeddings.

    Example:
        >>> spec = EmbedderSpec.load("~/.cache/derm-cloud/models/sklesion-0.2.2-embedder")  # doctest: +SKIP
        >>> spec.dimension
        32
    """

    model_id: str
    dimension: int
    output: str
    preprocess: Preprocess
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    image_input_index: int = 0
    l2_normalise: bool = False
    model_file: str = "model.onnx"
    facts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: str | Path) -> EmbedderSpec:
        """Read `embedder.json` of a folder.

        Raises:
            ModelSpecError: the folder, the spec or the model file is missing or invalid.
        """
        d = Path(directory).expanduser()
        path = d / SPEC_FILE
        if not path.is_file():
            hint = (
                " (it holds a classifier's spec.json: export an embedder with `derm-cloud models embedder sklesion`)"
                if (d / "spec.json").is_file()
                else ""
            )
            raise ModelSpecError(f"{str(d)!r} has no {SPEC_FILE}; an embedder folder needs one{hint}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelSpecError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        spec = cls.from_dict(data, where=str(path))
        if not (d / spec.model_file).is_file():
            raise ModelSpecError(f"{str(d)!r} has no {spec.model_file}; the model file is missing")
        return spec

    @classmethod
    def from_dict(cls, data: Any, where: str = SPEC_FILE) -> EmbedderSpec:
        """Validate and build a spec from its JSON form; errors name the bad key."""
        if not isinstance(data, dict):
            raise ModelSpecError(f"{where}: expected a JSON object")
        if data.get("format") != EMBEDDER_FORMAT:
            raise ModelSpecError(f"{where}: 'format' must be {EMBEDDER_FORMAT!r}, got {data.get('format')!r}")
        for key in ("model_id", "dimension", "output", "preprocess"):
            if key not in data:
                raise ModelSpecError(f"{where}: missing required key {key!r}")
        dimension = data["dimension"]
        if not isinstance(dimension, int) or isinstance(dimension, bool) or dimension < 1:
            raise ModelSpecError(f"{where}: 'dimension' must be a positive integer, got {dimension!r}")
        image_input = data.get("image_input") or {}
        layout = image_input.get("layout", "NCHW")
        if layout not in ("NCHW", "NHWC"):
            raise ModelSpecError(f"{where}: image_input.layout must be NCHW or NHWC, got {layout!r}")
        return cls(
            model_id=str(data["model_id"]),
            dimension=dimension,
            output=str(data["output"]),
            preprocess=Preprocess.from_dict(dict(data["preprocess"]), f"{where}: preprocess"),
            layout=layout,
            image_input_index=int(image_input.get("index", 0)),
            l2_normalise=bool(data.get("l2_normalise", False)),
            model_file=str(data.get("model_file", "model.onnx")),
            facts=dict(data.get("facts") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to `embedder.json`."""
        return {
            "format": EMBEDDER_FORMAT,
            "model_id": self.model_id,
            "dimension": self.dimension,
            "output": self.output,
            "image_input": {"index": self.image_input_index, "layout": self.layout},
            "preprocess": self.preprocess.to_dict(),
            "l2_normalise": self.l2_normalise,
            "model_file": self.model_file,
            "facts": self.facts,
        }

    def save(self, directory: str | Path) -> Path:
        """Write `embedder.json` into `directory` (atomically) and return its path."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / (SPEC_FILE + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(d / SPEC_FILE)
        return d / SPEC_FILE
