"""The canonical HAM10000 / ISIC 2018 Task 3 label space and maps from providers' own labels onto it.

Every backend reports probabilities over the same seven classes, in the same (alphabetical) order, so that
results from different providers compare like for like. Providers name classes their own way:

* HAM10000 codes (`mel`), ISIC 2018 CSV headers (`MEL`), full names (`Melanoma`);
* the marmal88/skin_cancer `dx` strings used by `Anwarkh1/Skin_Cancer-Image_Classification`
  (`melanocytic_Nevi`, `benign_keratosis-like_lesions` ...);
* tag or display names chosen when a Custom Vision / Vertex AutoML / Azure AutoML model was trained.

`LabelMap.for_labels` recognises all of those. Generic vision models (ImageNet classes, Cloud Vision
labels) have no skin-lesion classes; they raise `UnmappableLabelsError` rather than getting an invented
mapping, unless the caller asks for an unmapped baseline explicitly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from derm_cloud.errors import UnmappableLabelsError

__all__ = [
    "CLASSES",
    "CLASS_CODES",
    "MALIGNANT_CODES",
    "LabelMap",
    "LesionClass",
    "class_info",
    "classes_named_in",
    "normalise_label",
]


@dataclass(frozen=True)
class LesionClass:
    """One of the seven HAM10000 diagnostic categories."""

    code: str
    index: int
    name: str
    malignant: bool


# Order is the canonical index order (alphabetical codes), the same as sklesion's and SageMaker TF-IC's.
CLASSES: tuple[LesionClass, ...] = (
    LesionClass("akiec", 0, "Actinic keratoses and intraepithelial carcinoma", True),
    LesionClass("bcc", 1, "Basal cell carcinoma", True),
    LesionClass("bkl", 2, "Benign keratosis-like lesions", False),
    LesionClass("df", 3, "Dermatofibroma", False),
    LesionClass("mel", 4, "Melanoma", True),
    LesionClass("nv", 5, "Melanocytic nevi", False),
    LesionClass("vasc", 6, "Vascular lesions", False),
)
CLASS_CODES: tuple[str, ...] = tuple(c.code for c in CLASSES)
# akiec is pre-malignant / in situ; triage treats it as "refer", as sklesion's author does.
MALIGNANT_CODES: frozenset[str] = frozenset(c.code for c in CLASSES if c.malignant)
_BY_CODE = {c.code: c for c in CLASSES}


def class_info(code: str) -> LesionClass:
    """Return the `LesionClass` for a canonical code such as `"mel"`."""
    try:
        return _BY_CODE[code]
    except KeyError:
        raise UnmappableLabelsError(
            f"{code!r} is not a HAM10000 class code; expected one of {', '.join(CLASS_CODES)}",
            [code],
        ) from None


def normalise_label(label: str) -> str:
    """Lower-case a label and collapse separators, so `"Melanocytic_Nevi"` == `"melanocytic nevi"`."""
    return re.sub(r"[\s_\-/]+", " ", label.strip().lower()).strip()


# Synonyms per canonical code, already normalised. Sources: HAM10000 paper (names), marmal88 dx strings
# (Anwarkh1 model), ISIC 2018 headers (upper-case codes, handled by normalisation).
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "akiec": (
        "akiec",
        "actinic keratoses",
        "actinic keratosis",
        "actinic keratoses and intraepithelial carcinoma",
        "bowen's disease",
        "ak",
    ),
    "bcc": ("bcc", "basal cell carcinoma"),
    "bkl": (
        "bkl",
        "benign keratosis like lesions",
        "benign keratosis",
        "benign keratosis like lesion",
        "seborrheic keratosis",
    ),
    "df": ("df", "dermatofibroma"),
    "mel": ("mel", "melanoma", "malignant melanoma"),
    "nv": ("nv", "melanocytic nevi", "melanocytic nevus", "nevus", "nevi", "naevus"),
    "vasc": ("vasc", "vascular lesions", "vascular lesion"),
}
_SYNONYM_TO_CODE: dict[str, str] = {syn: code for code, syns in _SYNONYMS.items() for syn in syns}


def classes_named_in(text: str) -> frozenset[str]:
    """The class codes whose code, name or synonym appears in `text` as whole words.

    Example:
        >>> sorted(classes_named_in("A dermoscopy image of a malignant melanoma"))
        ['mel']
        >>> sorted(classes_named_in("melanoma or melanocytic nevus?"))
        ['mel', 'nv']
    """
    words = re.sub(r"[^a-z0-9']+", " ", normalise_label(text))
    normalised = f" {words} "
    return frozenset(code for syn, code in _SYNONYM_TO_CODE.items() if f" {syn} " in normalised)


@dataclass(frozen=True)
class LabelMap:
    """How a provider's output labels map onto the canonical classes.

    Attributes:
        provider_labels: the provider's labels, in its output order.
        codes: for each provider label, the canonical code it maps to, or `None` when it maps to nothing.
        mapped: `False` for generic models (ImageNet, Cloud Vision) reported as unmappable baselines.
    """

    provider_labels: tuple[str, ...]
    codes: tuple[str | None, ...]
    mapped: bool = True

    @classmethod
    def for_labels(
        cls,
        labels: Sequence[str],
        *,
        overrides: Mapping[str, str] | None = None,
        allow_unmapped: bool = False,
    ) -> LabelMap:
        """Build the map for a model's labels, or raise if they are not the seven lesion classes.

        Args:
            labels: the provider's labels in output order.
            overrides: explicit `{provider_label: canonical_code}` entries, for tag names chosen at training.
            allow_unmapped: return an unmapped map (latency/cost baselines only) instead of raising.

        Raises:
            UnmappableLabelsError: some canonical class has no provider label, or labels map to nothing.

        Example:
            >>> LabelMap.for_labels(["melanocytic_Nevi", "melanoma"], allow_unmapped=True).mapped
            False
        """
        overrides = {k: v for k, v in (overrides or {}).items()}
        for code in overrides.values():
            class_info(code)  # validates the override target
        codes: list[str | None] = []
        for label in labels:
            if label in overrides:
                codes.append(overrides[label])
            else:
                codes.append(_SYNONYM_TO_CODE.get(normalise_label(label)))
        unmatched = [lab for lab, code in zip(labels, codes, strict=True) if code is None]
        missing = [c for c in CLASS_CODES if c not in codes]
        duplicated = sorted({c for c in codes if c is not None and codes.count(c) > 1})
        problem = None
        if missing:
            problem = f"no output for {', '.join(missing)}" + (
                f"; labels that map to nothing: {_preview(unmatched)}" if unmatched else ""
            )
        elif unmatched:
            problem = f"labels that map to nothing: {_preview(unmatched)}"
        elif duplicated:
            problem = f"several outputs map to {', '.join(duplicated)}"
        if problem is None:
            return cls(tuple(labels), tuple(codes), mapped=True)
        if allow_unmapped:
            return cls(tuple(labels), tuple([None] * len(labels)), mapped=False)
        raise UnmappableLabelsError(
            f"the model's {len(labels)} labels do not map onto the 7 HAM10000 classes ({problem}). "
            "A generic model (ImageNet, Cloud Vision labels) cannot triage lesions; pass "
            "label_overrides={'your_tag': 'mel', ...} if the tags are lesion classes under other names, "
            "or allow_unmapped=True to measure it as a latency/cost baseline only.",
            unmatched or list(labels),
        )

    @classmethod
    def canonical(cls) -> LabelMap:
        """The identity map over the canonical codes."""
        return cls(CLASS_CODES, CLASS_CODES, mapped=True)

    def to_canonical(self, scores: Iterable[float]) -> tuple[float, ...]:
        """Reorder provider scores (one per provider label) into canonical order.

        Labels a provider did not return (top-k responses) get probability 0.
        """
        out = [0.0] * len(CLASS_CODES)
        for code, score in zip(self.codes, scores, strict=True):
            if code is not None:
                out[_BY_CODE[code].index] += float(score)
        return tuple(out)

    def code_of(self, provider_label: str) -> str | None:
        """Canonical code of one provider label, `None` if it maps to nothing."""
        try:
            return self.codes[self.provider_labels.index(provider_label)]
        except ValueError:
            return None


def _preview(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
