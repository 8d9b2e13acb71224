"""Predictions a referral run reads and writes: its own `predictions.jsonl` and the comparator's.

Two layouts, told apart by their lines:

* **a referral run's** (`derm-cloud governance referral --out`): a header line holding the backend, model id,
  the model's identity (fingerprint and metadata mode) and its declared facts (training data, licence ...), then
  `{"image_id", "label", "prediction"}` per image. Files without the header (older versions, other tools) are
  read too: their model and metadata mode are then unknown, and their overlap check works from image ids alone.
* **the comparator's** (`derm-cloud compare` writes it beside `report.json`): one flat row per image and
  backend (`image_id`, `lesion_id`, `truth`, `backend`, `metadata` = `used` / `blind`, `ok`,
  `p_<class>` ...). One backend is picked (`backend=`; a file holding one needs no name). Its model id,
  fingerprint and facts come from `report.json` in the same folder, where the comparator records them; without
  it only the metadata mode is known.

Example:
    >>> found = load_predictions("report/predictions.jsonl", backend="local-onnx")  # doctest: +SKIP
    >>> found.identity.describe(), len(found.predictions)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError
from derm_cloud.governance.referral.provenance import ModelIdentity
from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.types import Prediction

__all__ = ["PredictionsFile", "load_predictions", "read_predictions", "write_predictions"]

_HEADER_KEY = "derm_cloud_predictions"
_COMPARATOR_KEYS = {"image_id", "backend", "metadata", *(f"p_{c}" for c in CLASS_CODES)}


@dataclass
class PredictionsFile:
    """One backend's predictions read from a file, with whatever the file says about their model.

    Attributes:
        path: the file.
        layout: `"referral"`, `"referral (no header)"` or `"comparator"`.
        predictions: image id -> prediction (successful answers only).
        identity: the model and metadata mode (`None` when the file records neither).
        model_facts: the model's declared facts (`{}` when unrecorded).
        failed: image id -> error type, for a comparator backend's failed answers.
        backends: the backends the file holds (one for a referral run's file).
        run: the comparator run's `dataset` limit and `seed` (`{}` otherwise), to name a matching subset.
    """

    path: str
    layout: str
    predictions: dict[str, Prediction]
    identity: ModelIdentity | None
    model_facts: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    backends: list[str] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)


def write_predictions(
    path: str | os.PathLike[str],
    rows: Iterable[tuple[str, str | None, Prediction]],
    *,
    model_facts: Mapping[str, Any] | None = None,
    identity: ModelIdentity | None = None,
) -> None:
    """Write `predictions.jsonl`: a header line with the model's identity and facts, then one line per image."""
    rows = list(rows)
    first = rows[0][2] if rows else None
    header = {
        _HEADER_KEY: 1,
        "backend": first.backend if first else None,
        "model_id": first.model_id if first else None,
        "identity": identity.to_dict() if identity else None,
        "model_facts": dict(model_facts or {}),
    }
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(header, default=str) + "\n")
        for image_id, label, prediction in rows:
            fh.write(json.dumps({"image_id": image_id, "label": label, "prediction": prediction.to_dict()}) + "\n")


def read_predictions(path: str | os.PathLike[str]) -> tuple[dict[str, Prediction], dict[str, Any]]:
    """`({image_id: prediction}, model_facts)` from a single-backend `predictions.jsonl` (either layout).

    Raises:
        ConfigError: see `load_predictions`.
    """
    found = load_predictions(path)
    return found.predictions, found.model_facts


def load_predictions(path: str | os.PathLike[str], backend: str | None = None) -> PredictionsFile:
    """Read a referral run's or a comparator's `predictions.jsonl`, picking `backend` from a multi-backend file.

    Raises:
        ConfigError: the file is missing or a line fits neither layout (the message names the line); the file
            holds several backends and `backend` is not given, or names none of them (the message lists them).
    """
    name = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read predictions file {name!r}: {exc}") from exc
    rows: list[tuple[int, dict[str, Any]]] = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}:{line_no}: not a predictions.jsonl line ({exc})") from exc
        if not isinstance(row, dict):
            raise ConfigError(f"{name}:{line_no}: not a predictions.jsonl line (a JSON object is expected)")
        rows.append((line_no, row))
    if rows and set(rows[0][1]) >= _COMPARATOR_KEYS:
        return _comparator(name, rows, backend)
    return _referral(name, rows, backend)


def _referral(name: str, rows: list[tuple[int, dict[str, Any]]], backend: str | None) -> PredictionsFile:
    out: dict[str, Prediction] = {}
    header: dict[str, Any] | None = None
    for line_no, row in rows:
        try:
            if _HEADER_KEY in row:
                header = row
                continue
            out[str(row["image_id"])] = Prediction.from_dict(row["prediction"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"{name}:{line_no}: not a predictions.jsonl line ({type(exc).__name__}: {exc}); expected a "
                "`derm-cloud governance referral --out` file or a `derm-cloud compare` one"
            ) from exc
    present = sorted({p.backend for p in out.values()})
    if backend is not None and present and backend not in present:
        raise ConfigError(f"{name} holds predictions of {', '.join(present)}, not of backend {backend!r}")
    if header is None:
        return PredictionsFile(name, "referral (no header)", out, None, backends=present)
    identity = ModelIdentity.from_dict(header.get("identity"))
    return PredictionsFile(name, "referral", out, identity, dict(header.get("model_facts") or {}), backends=present)


def _comparator(name: str, rows: list[tuple[int, dict[str, Any]]], backend: str | None) -> PredictionsFile:
    by_backend: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for line_no, row in rows:
        if not set(row) >= _COMPARATOR_KEYS:
            missing = sorted(_COMPARATOR_KEYS - set(row))
            raise ConfigError(f"{name}:{line_no}: not a comparator predictions line (missing {', '.join(missing)})")
        by_backend.setdefault(str(row["backend"]), []).append((line_no, row))
    names = list(by_backend)
    if backend is None and len(names) > 1:
        raise ConfigError(
            f"{name} holds {len(names)} backends ({', '.join(names)}); name the one to use with --backend NAME"
        )
    chosen = backend if backend is not None else names[0]
    if chosen not in by_backend:
        raise ConfigError(f"{name} has no backend {chosen!r}; it holds: {', '.join(names)} (pass one with --backend)")
    report = _report_beside(name)
    facts = dict((report.get("backends") or {}).get(chosen) or {})
    hosted = facts.get("hosted_model") or {}
    model_id = hosted.get("model_id") or facts.get("model_id")
    modes = {str(r["metadata"]) for _, r in by_backend[chosen]}
    preds: dict[str, Prediction] = {}
    failed: dict[str, str] = {}
    for line_no, row in by_backend[chosen]:
        image_id = str(row["image_id"])
        if not row.get("ok") or any(row.get(f"p_{c}") is None for c in CLASS_CODES):
            failed[image_id] = str(row.get("error_type") or "no answer")
            continue
        try:
            probs = {c: float(row[f"p_{c}"]) for c in CLASS_CODES}
            preds[image_id] = Prediction(probs, (), str(facts.get("backend") or chosen), str(model_id or chosen))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}:{line_no}: probabilities are not numbers ({exc})") from exc
    identity = ModelIdentity(
        backend=chosen,
        model_id=str(model_id) if model_id else None,
        fingerprint=facts.get("model_fingerprint") or None,
        metadata_mode=modes.pop() if len(modes) == 1 and next(iter(modes)) in ("used", "blind") else None,
    )
    config = (report.get("run") or {}).get("config") or {}
    run = {"limit": (config.get("dataset") or {}).get("limit"), "seed": config.get("seed")} if config else {}
    return PredictionsFile(
        name, "comparator", preds, identity, dict(facts.get("model_facts") or {}), failed, names, run
    )


def _report_beside(path: str) -> dict[str, Any]:
    """The comparator's `report.json` in the same folder (`{}` when absent or unreadable)."""
    report = Path(path).with_name("report.json")
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
