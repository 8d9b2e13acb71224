"""Licence, training data, intended use and limitations from a Hugging Face model card (`README.md`)."""

from __future__ import annotations

import re

__all__ = ["parse_model_card"]


def parse_model_card(text: str) -> dict[str, str]:
    """Licence, training data, intended use and limitations from a hub model card (`README.md`).

    Reads the YAML front matter keys `license` and `datasets` and the first paragraph of sections whose
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
