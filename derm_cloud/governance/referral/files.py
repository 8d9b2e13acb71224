"""Files of a referral run: `predictions.jsonl` (with the model's facts) and `policy.json` (with provenance).

`predictions.jsonl` starts with a header line holding the backend, model id and the model's declared facts
(training data, licence ...), so a later `--predictions` run can still warn about training-data overlap. The
other lines are `{"image_id", "label", "prediction"}`. Files without the header (written by older versions or
other tools) are read too; their overlap check then works from the image ids alone.

`policy.json` holds the policy under `"policy"` plus `"fitted_on"` (dataset, model, image and lesion ids)
and `"expected"` (the out-of-sample figures), so `--policy` can say whether new data overlaps the fitting
data and compare what it measures with what was expected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError
from derm_cloud.governance.referral.policy import HUMAN_REVIEW, ReferralPolicy
from derm_cloud.types import Prediction

__all__ = ["SavedPolicy", "fitting_overlap", "read_predictions", "save_policy", "write_predictions"]

_HEADER_KEY = "derm_cloud_predictions"


def write_predictions(
    path: str | os.PathLike[str],
    rows: Iterable[tuple[str, str | None, Prediction]],
    *,
    model_facts: Mapping[str, Any] | None = None,
) -> None:
    """Write `predictions.jsonl`: a header line with the model facts, then one line per image."""
    rows = list(rows)
    first = rows[0][2] if rows else None
    header = {
        _HEADER_KEY: 1,
        "backend": first.backend if first else None,
        "model_id": first.model_id if first else None,
        "model_facts": dict(model_facts or {}),
    }
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(header, default=str) + "\n")
        for image_id, label, prediction in rows:
            fh.write(json.dumps({"image_id": image_id, "label": label, "prediction": prediction.to_dict()}) + "\n")


def read_predictions(path: str | os.PathLike[str]) -> tuple[dict[str, Prediction], dict[str, Any]]:
    """`({image_id: prediction}, model_facts)` from a `predictions.jsonl` (facts `{}` without a header).

    Raises:
        ConfigError: the file is missing or a line is not a predictions line; the message names the line.
    """
    out: dict[str, Prediction] = {}
    facts: dict[str, Any] = {}
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115 - closed by the with below; open errors get our message
    except OSError as exc:
        raise ConfigError(f"cannot read predictions file {os.fspath(path)!r}: {exc}") from exc
    with fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if _HEADER_KEY in row:
                    facts = dict(row.get("model_facts") or {})
                    continue
                out[str(row["image_id"])] = Prediction.from_dict(row["prediction"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ConfigError(f"{os.fspath(path)}:{line_no}: not a predictions.jsonl line ({exc})") from exc
    return out, facts


class SavedPolicy:
    """A `policy.json` and what it records about how it was fitted.

    Attributes:
        policy: the rules.
        fitted_on: dataset name, model id, image and lesion ids the threshold was fitted on (`{}` when the file
            holds a bare policy).
        expected: the out-of-sample figures recorded when it was fitted (`{}` when absent).
    """

    def __init__(self, policy: ReferralPolicy, fitted_on: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
        self.policy = policy
        self.fitted_on = dict(fitted_on)
        self.expected = dict(expected)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SavedPolicy:
        """Read `policy.json` (a bare policy dict or one written by `--out`).

        Raises:
            ConfigError: missing file, invalid JSON or unknown policy keys.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read policy {os.fspath(path)!r}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{os.fspath(path)!r} is not a policy object")
        policy = ReferralPolicy.from_dict(data.get("policy", data))
        return cls(policy, data.get("fitted_on") or {}, data.get("expected") or {})


def save_policy(
    path: str | os.PathLike[str],
    policy: ReferralPolicy,
    *,
    fitted_on: Mapping[str, Any],
    expected: Mapping[str, Any] | None = None,
) -> None:
    """Write `policy.json` with provenance; `ReferralPolicy.load` reads it too."""
    payload = {
        "policy": policy.to_dict(),
        "fitted_on": dict(fitted_on),
        "expected": dict(expected or {}),
        "human_review": HUMAN_REVIEW,
    }
    Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


def fitting_overlap(
    saved: SavedPolicy, image_ids: Sequence[str], lesion_ids: Sequence[str | None], model_id: str
) -> list[str]:
    """Notes on how the evaluation data relates to the policy's fitting data and model (empty when clean)."""
    notes = []
    fit_images = set(saved.fitted_on.get("image_ids") or ())
    fit_lesions = set(saved.fitted_on.get("lesion_ids") or ())
    same_images = sum(1 for i in image_ids if i in fit_images)
    same_lesions = {lid for lid in lesion_ids if lid and lid in fit_lesions}
    if same_images or same_lesions:
        notes.append(
            f"Not out of sample: {same_images} of {len(image_ids)} images and {len(same_lesions)} lesions were "
            "used to fit this policy; evaluate on lesions it was not fitted on."
        )
    elif not saved.fitted_on:
        notes.append("The policy file records no fitting data, so overlap with it cannot be checked.")
    fitted_model = saved.fitted_on.get("model_id")
    if fitted_model and fitted_model != model_id:
        notes.append(
            f"The policy was fitted on {fitted_model}'s probabilities but is applied to {model_id}'s: thresholds "
            "do not transfer between models; refit it."
        )
    return notes
