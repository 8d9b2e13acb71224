"""One referral run over a labelled dataset, as `derm-cloud governance referral` does it.

Given a dataset's labelled samples and one backend's predictions for them:

* `fit_referral` fits the malignant threshold in sample (curve, operating points, per-group figures) and
  measures what the fitting procedure delivers out of sample (lesion-disjoint cross-fitting, or a calibration
  split), grouping images by sex, age band, site and skin tone (`referral_groups`); with
  `fit="conservative"` it also fits the threshold whose out-of-sample lower bound reaches the target
  (`conservative`, nested folds) and ships that one;
* `write_referral_outputs` writes `referral.json`, `referral.md`, `referral.png`,
  `predictions.jsonl` and the fitted `policy.json` (its model, metadata mode, data hash, method and what to
  expect: `policy_file`);
* `check_saved_policy` applies a saved `policy.json` unchanged to new data after checking that it belongs
  to their model and metadata mode, saying how that data relates to the data the policy was fitted on.

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

from derm_cloud.errors import ConfigError
from derm_cloud.governance._records import age_band
from derm_cloud.governance.referral.conservative import (
    DEFAULT_MARGIN,
    DEFAULT_REPEATS,
    ConservativeReferral,
    nested_conservative_referral,
)
from derm_cloud.governance.referral.evaluation import ReferralEvaluation, evaluate_referral
from derm_cloud.governance.referral.files import write_predictions
from derm_cloud.governance.referral.holdout import (
    HoldoutEvaluation,
    calibration_split_referral,
    cross_fit_referral,
    evaluate_saved_policy,
)
from derm_cloud.governance.referral.policy import ReferralPolicy
from derm_cloud.governance.referral.policy_file import SavedPolicy, fitting_overlap, save_policy
from derm_cloud.governance.referral.provenance import ModelIdentity, data_hash
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
        held_out: the out-of-sample headline of the point fit (cross-fitting or a calibration split).
        fitted_on: the samples the shipped threshold is fitted on (all of them, or the calibration split).
        conservative: the conservative fit, when asked for; its threshold is the one shipped.
    """

    evaluation: ReferralEvaluation
    held_out: HoldoutEvaluation
    fitted_on: list[Sample]
    conservative: ConservativeReferral | None = None

    @property
    def method(self) -> str:
        """`"conservative"` or `"point"`: which threshold `policy.json` holds."""
        return "conservative" if self.conservative is not None else "point"

    def shipped_policy(self, base: ReferralPolicy | None = None) -> ReferralPolicy:
        """The policy written to `policy.json`: the conservative threshold when fitted, else the point fit's."""
        if self.conservative is not None:
            return self.conservative.policy(base)
        return self.evaluation.policy("mel", base)

    def expected(self) -> HoldoutEvaluation:
        """The out-of-sample figures of the shipped policy's fitting procedure."""
        return self.conservative.held_out if self.conservative is not None else self.held_out


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
    fit: str = "point",
    margin: float = DEFAULT_MARGIN,
    inner_folds: int = 5,
    inner_repeats: int = DEFAULT_REPEATS,
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
        fit: `"point"` (the threshold reaches the target on the fitting data) or `"conservative"` (the lower
            95% bound of its out-of-sample sensitivity reaches `target_sensitivity + margin`, chosen by
            `inner_folds` and measured by `folds` outer folds: `conservative`).
        margin, inner_folds, inner_repeats: of the conservative fit (defaults chosen on dev.csv).

    Raises:
        ConfigError: unlabelled samples, a bad target, too few lesions for the folds, an empty split, or a
            conservative fit asked with a calibration split.
    """
    if fit not in ("point", "conservative"):
        raise ConfigError(f"fit must be 'point' or 'conservative', got {fit!r}")
    if fit == "conservative" and calibration_split:
        raise ConfigError(
            "the conservative fit chooses its threshold with nested lesion-disjoint folds; use --folds instead of "
            "--calibration-split (or fit the calibration split with --fit point)"
        )
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
        rows = [i for i, c in enumerate(calibrate) if c]
        fitted_on, preds, labels = [fitted_on[i] for i in rows], [preds[i] for i in rows], [labels[i] for i in rows]
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
    conservative = None
    if fit == "conservative":
        conservative = nested_conservative_referral(
            preds,
            labels,
            lesions,
            target_sensitivity=target_sensitivity,
            margin=margin,
            outer_folds=folds,
            inner_folds=inner_folds,
            seed=seed,
            repeats=inner_repeats,
            base_policy=base_policy,
        )
    return ReferralFit(ev, held, fitted_on, conservative)


def write_referral_outputs(
    out: str | os.PathLike[str],
    fit: ReferralFit,
    samples: Sequence[Sample],
    predictions: Sequence[Prediction],
    *,
    dataset_name: str,
    source: str,
    command: str,
    identity: ModelIdentity,
    limit: int | None = None,
    model_facts: Mapping[str, Any] | None = None,
) -> None:
    """Write `predictions.jsonl`, `referral.json`, `referral.md`, `referral.png` and `policy.json`.

    `policy.json` is written only when a melanoma threshold was fitted; it records the model and metadata mode
    of the predictions, what it was fitted on (with a hash of those labels and probabilities), how, and the
    out-of-sample figures to expect, so a later `check_saved_policy` can refuse other predictions and compare.

    Args:
        out: the folder (created).
        fit: from `fit_referral`.
        samples, predictions: all the samples evaluated and their predictions (aligned).
        dataset_name, source, limit: the dataset, for the record.
        command: the command line that reproduces the run.
        identity: the model and metadata mode of `predictions`.
        model_facts: the model's declared facts, kept in the predictions file's header.
    """
    folder = Path(out)
    ev, held = fit.evaluation, fit.held_out
    folder.mkdir(parents=True, exist_ok=True)
    rows = ((s.image_id, s.label, p) for s, p in zip(samples, predictions, strict=True))
    write_predictions(folder / "predictions.jsonl", rows, model_facts=model_facts, identity=identity)
    payload = ev.to_dict()
    payload["out_of_sample"] = held.to_dict()
    if fit.conservative is not None:
        payload["conservative"] = fit.conservative.to_dict()
    payload["dataset"] = {"name": dataset_name, "n": len(samples), "source": source, "limit": limit}
    payload["model"] = identity.to_dict()
    payload["command"] = command
    shipped_t = fit.conservative.threshold if fit.conservative is not None else ev.points["mel"].threshold
    if shipped_t is not None:
        policy = fit.shipped_policy()
        payload["policy"] = policy.to_dict()
        payload["policy_method"] = fit.method
        # By object, not image id: fitted_on holds these very samples, and a manifest may repeat an image id.
        by_id = {id(s): p for s, p in zip(samples, predictions, strict=True)}
        fitted_preds = [by_id[id(s)] for s in fit.fitted_on]
        fitted_on = {
            "dataset": dataset_name,
            "source": source,
            "n": len(fit.fitted_on),
            "image_ids": [s.image_id for s in fit.fitted_on],
            "lesion_ids": sorted({s.lesion_id for s in fit.fitted_on if s.lesion_id}),
        }
        expected_from = fit.expected()
        expected: dict[str, Any] = {
            t: {
                "sensitivity": p.sensitivity,
                "sensitivity_ci": p.sensitivity_ci,
                "referral_rate": p.referral_rate,
                "referral_rate_ci": p.referral_rate_ci,
            }
            for t, p in expected_from.points.items()
        }
        expected["method"] = expected_from.description
        expected["interval"] = "Wilson 95%, lesion-clustered effective sample size"
        method = (
            fit.conservative.method()
            if fit.conservative is not None
            else {"name": "point", "rule": "largest t whose sensitivity on the fitting data reaches the target"}
        )
        save_policy(
            folder / "policy.json",
            policy,
            fitted_on=fitted_on,
            expected=expected,
            identity=identity,
            target={
                "classes": "mel",
                "sensitivity": ev.target_sensitivity,
                "margin": fit.conservative.margin if fit.conservative is not None else 0.0,
            },
            method=method,
            data_hash=data_hash([s.image_id for s in fit.fitted_on], [s.label for s in fit.fitted_on], fitted_preds),
        )
    (folder / "referral.json").write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    (folder / "referral.md").write_text(
        referral_markdown(ev, held=held, conservative=fit.conservative), encoding="utf-8"
    )
    (folder / "referral.png").write_bytes(plot_referral([ev]))


def check_saved_policy(
    saved: SavedPolicy,
    samples: Sequence[Sample],
    predictions: Sequence[Prediction],
    *,
    identity: ModelIdentity,
    dataset_name: str,
    source: str,
    policy_file: str,
    overlap: str | None = None,
    allow_mismatch: bool = False,
) -> tuple[HoldoutEvaluation, dict[str, Any]]:
    """Check that a saved policy belongs to these predictions, then apply it unchanged.

    Args:
        saved: the loaded `policy.json`.
        samples, predictions: the labelled samples and one backend's predictions (aligned).
        identity: the model and metadata mode of `predictions`.
        dataset_name, source, policy_file: for the record.
        overlap: a training-data overlap warning about the model and this data, put first in the notes.
        allow_mismatch: apply the policy even where model or metadata mode differ (or the file records neither);
            the record then says the override was used and what differed.

    Returns:
        The evaluation, and the JSON-compatible record (`policy-evaluation.json`).

    Raises:
        PolicyMismatchError: model or metadata mode differ (or cannot be checked) and `allow_mismatch` is off.
    """
    differences = saved.check(identity, allow_mismatch=allow_mismatch)
    labels = [str(s.label) for s in samples]
    held = evaluate_saved_policy(saved.policy, predictions, labels, [s.lesion_id for s in samples])
    held.notes[:0] = fitting_overlap(
        saved, [s.image_id for s in samples], [s.lesion_id for s in samples], predictions[0].model_id
    )
    if saved.data_hash and saved.data_hash == data_hash([s.image_id for s in samples], labels, predictions):
        held.notes.insert(0, "These are the very labels and probabilities the policy was fitted on (same data hash).")
    if differences:
        held.notes.insert(
            0,
            "OVERRIDE (--allow-mismatch): applied although "
            + "; ".join(f"{d.field} differs (policy: {d.policy}; predictions: {d.predictions})" for d in differences)
            + ". Its figures are not what the policy promised.",
        )
    if overlap:
        held.notes.insert(0, f"Training-data overlap: {overlap}")
    payload = {
        "dataset": {"name": dataset_name, "n": len(samples), "source": source},
        "policy_file": policy_file,
        "policy": saved.policy.to_dict(),
        **saved.to_record(),
        "predictions_model": identity.to_dict(),
        "override": {
            "allow_mismatch": bool(allow_mismatch),
            "used": bool(differences),
            "differences": [d.to_dict() for d in differences],
        },
        "expected": saved.expected,
        "evaluation": held.to_dict(),
    }
    return held, payload
