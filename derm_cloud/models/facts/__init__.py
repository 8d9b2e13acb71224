"""Model facts side by side: what a model is, how big, what it was trained on and what it may be used for.

`model_facts` reads an ONNX model directory (`spec.json` + the graph), a Hugging Face folder
(`config.json`, safetensors header, `README.md` model card) or a hub id (the same files through
`huggingface_hub` when online). Where the model itself is silent, a small table of facts taken from public
sources fills the gap (`KNOWN_FACTS`, each entry citing its URL); every fact records where it came from.

`render_facts` prints several models side by side as text or Markdown, which is how the workshop compares
"MobileNetV2 vs skin-cancer ViT vs sklesion" offline.

One module per source of facts: `record` (the facts and the reference table), `model_dir`,
`huggingface` and `model_card` (the readers), `lookup` (which reader) and `render`.

Example:
    >>> rows = [model_facts("sklesion"), model_facts("Anwarkh1/Skin_Cancer-Image_Classification")]  # doctest: +SKIP
    >>> print(render_facts(rows, fmt="markdown"))  # doctest: +SKIP
"""

from __future__ import annotations

from derm_cloud.models.facts.huggingface import processor_config_problem, safetensors_parameters
from derm_cloud.models.facts.lookup import model_facts
from derm_cloud.models.facts.model_card import parse_model_card
from derm_cloud.models.facts.model_dir import describe_preprocess
from derm_cloud.models.facts.record import KNOWN_FACTS, ModelFacts, known_facts, labels_map
from derm_cloud.models.facts.render import render_facts

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
