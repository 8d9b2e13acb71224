"""A tiny random ViT image classifier saved as a Hugging Face folder, built at test time (no downloads).

`build_tiny_vit` writes the same files as `save_pretrained` of a real hub model (`config.json`,
`model.safetensors`, `preprocessor_config.json`), so the `local-hf` backend, `derm-cloud models
export-hf` and `models info` run their real code paths on it in about a second. The weights are random: the
scores are reproducible for a given seed but mean nothing, and the folder's facts say so.

Example:
    >>> from derm_cloud.testing.tiny_hf import build_tiny_vit
    >>> folder = build_tiny_vit(tmp_path / "tiny-vit", labels=ANWARKH1_LABELS)  # doctest: +SKIP
    >>> clf = derm_cloud.create("local-hf", model=folder)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from derm_cloud.errors import MissingDependencyError
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["ANWARKH1_LABELS", "IMAGENET_STYLE_LABELS", "build_tiny_vit"]

# id2label of Anwarkh1/Skin_Cancer-Image_Classification in its output order (the marmal88/skin_cancer ``dx``
# strings; docs/reference/dermatology.md section 2), so tests exercise a non-canonical order and non-code names.
ANWARKH1_LABELS: tuple[str, ...] = (
    "benign_keratosis-like_lesions",
    "basal_cell_carcinoma",
    "actinic_keratoses",
    "vascular_lesions",
    "melanocytic_Nevi",
    "melanoma",
    "dermatofibroma",
)
# A few ImageNet class names: a generic model whose labels must not map onto lesion classes.
IMAGENET_STYLE_LABELS: tuple[str, ...] = ("tench", "goldfish", "great white shark", "tiger shark", "hammerhead")


def build_tiny_vit(
    directory: str | Path,
    labels: Sequence[str] = CLASS_CODES,
    seed: int = 0,
    *,
    image_size: int = 224,
    readme: bool = True,
) -> Path:
    """Write a tiny random `ViTForImageClassification` folder (about 130k parameters, 0.5 MB).

    Config as in docs/reference/local-models.md section 3: hidden size 64, 2 layers, 4 heads, intermediate 128, patch
    16.
    The image processor is a `ViTImageProcessor` with 224x224 bilinear resize, 1/255 and mean/std 0.5, the
    values the Anwarkh1 model is used with.

    Args:
        directory: folder to create (parents too); existing files are overwritten.
        labels: class names in output order, e.g. `CLASS_CODES` or `ANWARKH1_LABELS`.
        seed: torch seed of the random weights.
        image_size: input side in pixels (a multiple of the patch size 16).
        readme: also write a model card (`README.md`) with licence and intended use, as hub models have.

    Returns:
        The folder.

    Raises:
        MissingDependencyError: transformers or torch is not installed.
    """
    try:
        import torch
        from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor
    except ImportError as exc:
        raise MissingDependencyError(
            "build_tiny_vit needs transformers and torch; run: pip install 'derm-cloud[hf]'"
        ) from exc
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    names = list(labels)
    config = ViTConfig(
        image_size=image_size,
        patch_size=16,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
    )
    # A private generator state: seeding the global RNG would change other code's random numbers.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: Any = ViTForImageClassification(config)
        model.eval()
    model.save_pretrained(d)
    ViTImageProcessor(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(d)
    if readme:
        card = {
            "license": "mit",
            "datasets": ["none (random weights)"],
            "pipeline_tag": "image-classification",
        }
        lines = ["---"]
        for key, value in card.items():
            if isinstance(value, list):
                lines.append(f"{key}:")
                lines.extend(f"- {item}" for item in value)
            else:
                lines.append(f"{key}: {value}")
        lines += [
            "---",
            "",
            "# tiny-vit (derm-cloud test fixture)",
            "",
            "## Intended uses & limitations",
            "",
            "Software tests only. The weights are random: the outputs carry no medical meaning.",
            "",
            "## Training and evaluation data",
            "",
            "None: the model was never trained.",
            "",
        ]
        (d / "README.md").write_text("\n".join(lines), encoding="utf-8")
    return d
