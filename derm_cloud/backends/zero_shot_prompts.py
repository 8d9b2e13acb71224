"""Text prompts for zero-shot classification of the seven HAM10000 classes: the versioned defaults and user files.

A prompt set gives each class a list of prompts; the `zero-shot` backend embeds every prompt once, averages each
class's prompt embeddings (each normalised first) and normalises the mean: the prompt ensemble CLIP and SigLIP
zero-shot classification use (https://arxiv.org/abs/2103.00020, section 3.1.4).

The defaults (`DEFAULT_PROMPTS`, version `DEFAULT_VERSION`) mix two published styles:

- a short caption, as in the MedSigLIP model card's zero-shot example ("a photo of an arm with a rash" ...;
  https://huggingface.co/google/medsiglip-448, https://developers.google.com/health-ai-developer-foundations/medsiglip/model-card);
- `<modality> <body part> <finding>`, the label format of Microsoft's MedImageInsight zero-shot examples
  (https://github.com/microsoft/healthcareai-examples, `azureml/medimageinsight/zero-shot-classification.ipynb`
  and `agentic/medimageinsight/mcp-server/zero_shot.py`).

Every default prompt names its class by a name or synonym of `derm_cloud.taxonomy` and no other class. They are
a starting point, not tuned prompts: zero-shot quality depends strongly on the wording, so measure your own set
(`derm-cloud probe zero-shot --dataset ...`). A change to the defaults gets a new version.

A prompt file (TOML):

```toml
version = "clinic-prompts-2"   # optional, recorded with the results
[prompts]
akiec = ["a dermoscopy image of actinic keratosis", "dermoscopy skin actinic keratosis"]
bcc = ["a dermoscopy image of basal cell carcinoma"]
# ... one list for each of akiec, bcc, bkl, df, mel, nv, vasc
```
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["DEFAULT_PROMPTS", "DEFAULT_VERSION", "PromptSet", "load_prompts"]

#: Version of `DEFAULT_PROMPTS`; recorded in every zero-shot folder and `describe()`.
DEFAULT_VERSION = "derm-cloud-ham10000-prompts/1"

DEFAULT_PROMPTS: dict[str, tuple[str, ...]] = {
    "akiec": (
        "a dermoscopy image of actinic keratosis",
        "a dermatoscopic photograph of Bowen's disease",
        "dermoscopy skin actinic keratosis",
    ),
    "bcc": (
        "a dermoscopy image of basal cell carcinoma",
        "a dermatoscopic photograph of a basal cell carcinoma",
        "dermoscopy skin basal cell carcinoma",
    ),
    "bkl": (
        "a dermoscopy image of a benign keratosis",
        "a dermatoscopic photograph of a seborrheic keratosis",
        "dermoscopy skin benign keratosis",
    ),
    "df": (
        "a dermoscopy image of a dermatofibroma",
        "a dermatoscopic photograph of a dermatofibroma",
        "dermoscopy skin dermatofibroma",
    ),
    "mel": (
        "a dermoscopy image of melanoma",
        "a dermatoscopic photograph of a malignant melanoma",
        "dermoscopy skin melanoma",
    ),
    "nv": (
        "a dermoscopy image of a melanocytic nevus",
        "a dermatoscopic photograph of a benign nevus",
        "dermoscopy skin melanocytic nevus",
    ),
    "vasc": (
        "a dermoscopy image of a vascular lesion",
        "a dermatoscopic photograph of a vascular lesion such as an angioma",
        "dermoscopy skin vascular lesion",
    ),
}


@dataclass(frozen=True)
class PromptSet:
    """Prompts per class code (all seven classes), with where they came from.

    Attributes:
        prompts: `{class code: (prompt, ...)}` in `CLASS_CODES` order.
        version: the set's version (`DEFAULT_VERSION`, a file's `version`, or `custom` for a mapping).
        source: `default`, a file path, or `mapping`.
    """

    prompts: dict[str, tuple[str, ...]]
    version: str
    source: str

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the prompts (class and text, in order): two sets with the same prompts share it."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    @property
    def flat(self) -> list[tuple[str, str]]:
        """`[(class code, prompt), ...]` in class order, then prompt order."""
        return [(code, text) for code in CLASS_CODES for text in self.prompts[code]]

    def to_dict(self) -> dict[str, list[str]]:
        """`{class code: [prompt, ...]}` (JSON form)."""
        return {code: list(self.prompts[code]) for code in CLASS_CODES}


def load_prompts(source: str | os.PathLike[str] | Mapping[str, Sequence[str]] | PromptSet | None = None) -> PromptSet:
    """A checked prompt set: the defaults (`None`), a TOML file, or a `{class code: [prompt, ...]}` mapping.

    Raises:
        ConfigError: a class has no prompts, a key is not a class code, a prompt is not a non-empty string, or
            the file cannot be read; the message names what to fix.
    """
    if isinstance(source, PromptSet):
        return source
    if source is None:
        return PromptSet({code: DEFAULT_PROMPTS[code] for code in CLASS_CODES}, DEFAULT_VERSION, "default")
    if isinstance(source, Mapping):
        return PromptSet(_checked(source, "the prompt mapping"), "custom", "mapping")
    path = Path(source).expanduser()
    data = _read_toml(path)
    version = data.get("version", f"file:{path.name}")
    if not isinstance(version, str) or not version.strip():
        raise ConfigError(f"{path}: 'version' must be a non-empty string, got {version!r}")
    unknown = sorted(set(data) - {"version", "prompts"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; a prompt file has 'version' and [prompts]")
    prompts = data.get("prompts")
    if not isinstance(prompts, Mapping):
        raise ConfigError(
            f"{path}: needs a [prompts] table with one list of prompts per class ({', '.join(CLASS_CODES)})"
        )
    return PromptSet(_checked(prompts, str(path)), version, str(path))


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"prompt file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"prompt file {path} is not valid TOML: {exc}") from None


def _checked(prompts: Mapping[str, Any], where: str) -> dict[str, tuple[str, ...]]:
    unknown = sorted(str(k) for k in prompts if k not in CLASS_CODES)
    if unknown:
        raise ConfigError(
            f"{where}: {', '.join(unknown)} is not a HAM10000 class code; use the codes {', '.join(CLASS_CODES)}"
        )
    missing = [code for code in CLASS_CODES if not prompts.get(code)]
    if missing:
        raise ConfigError(
            f"{where}: no prompts for {', '.join(missing)}; zero-shot scores all seven classes, so every class "
            "needs at least one prompt (the defaults: derm_cloud.backends.zero_shot_prompts.DEFAULT_PROMPTS)"
        )
    out: dict[str, tuple[str, ...]] = {}
    for code in CLASS_CODES:
        texts = prompts[code]
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise ConfigError(f"{where}: {code} must be a list of prompts, got {texts!r}")
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"{where}: a prompt of {code} is not a non-empty string: {text!r}")
        out[code] = tuple(texts)
    return out
