"""One referral run over a labelled dataset, as `derm-cloud governance referral` does it.

Given a dataset's labelled samples and one backend's predictions for them:

* `fit_referral` fits the malignant threshold in sample (curve, operating points, per-group figures) and
  measures what the fitting procedure delivers out of sample (lesion-disjoint cross-fitting, or a calibration
  split), grouping images by sex, age band, site and skin tone (`referral_groups`);
* `write_referral_outputs` writes `referral.json`, `referral.md`, `referral.png`,
  `predictions.jsonl` and the fitted `policy.json` (with what it was fitted on and what to expect);
* `check_saved_policy` applies a saved `policy.json` unchanged to new data, saying how that data
  relates to the data the policy was fitted on.

Referral is triage support, never a diagnosis: a clinician reviews every result, referred or not.

Example:
    >>> fit = fit_referral(samples, predictions, target_sensitivity=0.95)  # doctest: +SKIP
    >>> write_referral_outputs("runs/referral", fit, samples, predictions, dataset_name="dev",  # doctest: +SKIP
    ...                        source="dev.csv", command="derm-cloud governance referral ...")
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.governance._records import age_band
from derm_cloud.governance.referral.evaluation import ReferralEvaluation, evaluate_referral
from derm_cloud.governance.referral.files import SavedPolicy, fitting_overlap, save_policy, write_predictions
from derm_cloud.governance.referral.holdout import (
    HoldoutEvaluation,
    calibration_split_referral,
    cross_fit_referral,
    evaluate_saved_policy,
)
from derm_cloud.governance.referral.policy import ReferralPolicy
from derm_cloud.governance.referral.report import plot_referral, referral_markdown

if TYPE_CHECKING:
    from derm_cloud.data import Sample
    from derm_cloud.types import Prediction

__all__ = ["ReferralFit", "check_saved_policy", "fit_referral", "referral_groups", "write_referral_outputs"]


@dataclass
class ReferralFit:
    """What `fit_referral` found.

    Attributes:
        evaluation: the in-sample trade-off (curve, operating points, groups) of the images fitted on.
        held_out: the out-of-sample headline (cross-fitting or a calibration split).
        fitted_on: the samples the shipped threshold is fitted on (all of them, or the calibration split).
    """

    evaluation: ReferralEvaluation
    held_out: HoldoutEvaluation
    fitted_on: list[Sample]


def referral_groups(samples: Sequence[Sample], skin_tone: str = "auto") -> dict[str, list[str]]:
    """The group of each sample by sex, age band, site and skin tone, for per-group referral figures.

    Args:
        samples: labelled samples.
        skin_tone: `"auto"` (the Fitzpatrick type when any sample records one, else the ITA band estimated
            from the image), `"fitzpatrick"`, `"ita"` or `"none"` (no skin-tone groups).
    """
    groups = {
        "sex": [s.metadata.sex for s in samples],
        "age_band": [age_band(s.metadata.age) for s in samples],
        "site": [s.metadata.site or "unknown" for s in samples],
    }
    if skin_tone != "none":
        from derm_cloud.data.fields import fitzpatrick_label
        from derm_cloud.governance.skin_tone import estimate_ita

        has_fitz = any(s.metadata.fitzpatrick is not None for s in samples)
        use_fitz = skin_tone == "fitzpatrick" or (skin_tone == "auto" and has_fitz)
        if use_fitz:
            groups["skin_tone"] = [fitzpatrick_label(s.metadata.fitzpatrick) for s in samples]
        else:
            groups["skin_tone_ita"] = [estimate_ita(s.read_bytes()).category or "unknown" for s in samples]
    return groups


def fit_referral(
    samples: Sequence[Sample],
    predictions: Sequence[Prediction],
    *,
    target_sensitivity: float = 0.95,
    min_confidence: float | None = None,
    skin_tone: str = "auto",
    prevalence: Mapping[str, float] | None = None,
    folds: int = 5,
    seed: int = 0,
    calibration_split: str | None = None,
) -> ReferralFit:
    """The in-sample evaluation (curve, groups) and the out-of-sample headline (cross-fitting or a split).

    Args:
        samples: labelled samples, aligned with `predictions`.
        predictions: one backend's predictions.
        target_sensitivity: the sensitivity the threshold is fitted to reach.
        min_confidence: also refer when the top class is below this probability (a rule kept on top of `t`).
        skin_tone: where skin-tone groups come from (see `referral_groups`).
        prevalence: `{class: share}` to re-weight referral rates to a stated class mix.
        folds, seed: the lesion-disjoint cross-fitting (ignored with `calibration_split`).
        calibration_split: fit on the samples whose `split` column is this name and report on the others; the
            in-sample view (curve, groups) is then that split's.

    Raises:
        ConfigError: unlabelled samples, a bad target, too few lesions for the folds, or an empty split.
    """
    labels = [str(s.label) for s in samples]
    base = ReferralPolicy(malignant_threshold=None, min_confidence=min_confidence, refer_on_disagreement=False)
    base_policy = base if min_confidence is not None else None
    lesions = [s.lesion_id for s in samples]
    fitted_on, preds = list(samples), list(predictions)
    if calibration_split:
        calibrate = [str(s.extra.get("split", "")) == calibration_split for s in samples]
        held = calibration_split_referral(
            preds,
            labels,
            calibrate,
            lesions,
            target_sensitivity=target_sensitivity,
            base_policy=base_policy,
            split_name=calibration_split,
        )
        fit = [i for i, c in enumerate(calibrate) if c]
        fitted_on, preds, labels = [fitted_on[i] for i in fit], [preds[i] for i in fit], [labels[i] for i in fit]
    else:
        held = cross_fit_referral(
            preds,
            labels,
            lesions,
            target_sensitivity=target_sensitivity,
            folds=folds,
            seed=seed,
            base_policy=base_policy,
        )
    groups = referral_groups(fitted_on, skin_tone)
    ev = evaluate_referral(
        preds,
        labels,
        target_sensitivity=target_sensitivity,
        groups=groups,
        base_policy=base_policy,
        prevalence=prevalence,
    )
    ev.notes[0] = (
        "In-sample figures are fitted on the images they are reported on; the out-of-sample figures "
        f"({held.method}) are what to expect on new lesions."
    )
    if "skin_tone_ita" in groups:
        from derm_cloud.governance.skin_tone import ITA_CAVEAT

        ev.notes.append(f"skin_tone_ita groups: {ITA_CAVEAT}")
    return ReferralFit(ev, held, fitted_on)


def write_referral_outputs(
    out: str | os.PathLike[str],
    fit: ReferralFit,
    samples: Sequence[Sample],
    predictions: Sequence[Prediction],
    *,
    dataset_name: str,
    source: str,
    command: str,
    limit: int | None = None,
    model_facts: Mapping[str, Any] | None = None,
) -> None:
    """Write `predictions.jsonl`, `referral.json`, `referral.md`, `referral.png` and `policy.json`.

    `policy.json` is written only when a melanoma threshold was fitted; it records the data it was fitted on
    and the out-of-sample figures to expect, so a later `check_saved_policy` can compare.

    Args:
        out: the folder (created).
        fit: from `fit_referral`.
        samples, predictions: all the samples evaluated and their predictions (aligned).
        dataset_name, source, limit: the dataset, for the record.
        command: the command line that reproduces the run.
        model_facts: the model's declared facts, kept in the predictions file's header.
    """
    folder = Path(out)
    ev, held = fit.evaluation, fit.held_out
    folder.mkdir(parents=True, exist_ok=True)
    rows = ((s.image_id, s.label, p) for s, p in zip(samples, predictions, strict=True))
    write_predictions(folder / "predictions.jsonl", rows, model_facts=model_facts)
    payload = ev.to_dict()
    payload["out_of_sample"] = held.to_dict()
    payload["dataset"] = {"name": dataset_name, "n": len(samples), "source": source, "limit": limit}
    payload["command"] = command
    if ev.points["mel"].threshold is not None:
        policy = ev.policy("mel")
        payload["policy"] = policy.to_dict()
        fitted_on = {
            "dataset": dataset_name,
            "source": source,
            "backend": ev.backend,
            "model_id": ev.model_id,
            "target": "mel",
            "target_sensitivity": ev.target_sensitivity,
            "n": len(fit.fitted_on),
            "image_ids": [s.image_id for s in fit.fitted_on],
            "lesion_ids": sorted({s.lesion_id for s in fit.fitted_on if s.lesion_id}),
        }
        expected: dict[str, Any] = {
            t: {"sensitivity": p.sensitivity, "sensitivity_ci": p.sensitivity_ci, "referral_rate": p.referral_rate}
            for t, p in held.points.items()
        }
        expected["method"] = held.description
        save_policy(folder / "policy.json", policy, fitted_on=fitted_on, expected=expected)
    (folder / "referral.json").write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    (folder / "referral.md").write_text(referral_markdown(ev, held=held), encoding="utf-8")
    (folder / "referral.png").write_bytes(plot_referral([ev]))


def check_saved_policy(
    saved: SavedPolicy,
    samples: Sequence[Sample],
    predictions: Sequence[Prediction],
    *,
    dataset_name: str,
    source: str,
    policy_file: str,
    overlap: str | None = None,
) -> tuple[HoldoutEvaluation, dict[str, Any]]:
    """Apply a saved policy unchanged to labelled predictions, with notes on how the data relates to its fit.

    Args:
        saved: the loaded `policy.json`.
        samples, predictions: the labelled samples and one backend's predictions (aligned).
        dataset_name, source, policy_file: for the record.
        overlap: a training-data overlap warning about the model and this data, put first in the notes.

    Returns:
        The evaluation, and the JSON-compatible record (`policy-evaluation.json`).
    """
    held = evaluate_saved_policy(saved.policy, predictions, [str(s.label) for s in samples])
    held.notes[:0] = fitting_overlap(
        saved, [s.image_id for s in samples], [s.lesion_id for s in samples], predictions[0].model_id
    )
    if overlap:
        held.notes.insert(0, f"Training-data overlap: {overlap}")
    payload = {
        "dataset": {"name": dataset_name, "n": len(samples), "source": source},
        "policy_file": policy_file,
        "policy": saved.policy.to_dict(),
        "fitted_on": {k: v for k, v in saved.fitted_on.items() if k not in ("image_ids", "lesion_ids")},
        "expected": saved.expected,
        "evaluation": held.to_dict(),
    }
    return held, payload
