"""Referral: when a classifier's output must go to a clinician first, and what a sensitivity target costs.

From the rules to the evidence for them, one module each:

* `policy`: `ReferralPolicy`, explicit rules (malignant probability, low confidence, disagreement
  between backends), and the `ReferralDecision` with its reasons;
* `classifier`: `ReferralClassifier`, any classifier (or several) whose every prediction comes with
  a decision;
* `scores` and `prevalence`: the score each image is thresholded on, the threshold search, Wilson
  intervals, and referral rates re-weighted to a stated class mix;
* `evaluation`: `evaluate_referral`, the referral-rate / sensitivity trade-off on labelled data
  (in sample), overall and per group;
* `holdout`: thresholds that hold out of sample (lesion-disjoint cross-fitting, a calibration split, a
  saved policy applied unchanged), with lesion-clustered intervals;
* `conservative`: a threshold whose out-of-sample lower bound reaches the target (nested folds);
* `provenance`, `policy_file`: whose probabilities a policy belongs to (model fingerprint, metadata
  mode, data hash) and `policy.json` as a versioned artefact, refused on other predictions;
* `files` and `report`: `predictions.jsonl` (a referral run's, or the comparator's); Markdown and
  the trade-off plot;
* `run`: one run over a dataset, as `derm-cloud governance referral` does it.

Referral is triage support, never a diagnosis: a clinician reviews every result, referred or not.

Example:
    >>> policy = ReferralPolicy(malignant_threshold=0.2, min_confidence=0.5)
    >>> with ReferralClassifier(derm_cloud.create("local-onnx", model_dir="sklesion"), policy) as app:  # doctest: +SKIP
    ...     prediction, decision = app.predict("lesion.jpg", {"age": 60, "sex": "male", "site": "back"})
    ...     print(decision.refer, decision.reasons)
"""

from __future__ import annotations

from derm_cloud.governance.referral.classifier import Referral, ReferralClassifier
from derm_cloud.governance.referral.conservative import ConservativeReferral, nested_conservative_referral
from derm_cloud.governance.referral.evaluation import (
    GroupReferral,
    OperatingPoint,
    ReferralEvaluation,
    evaluate_referral,
)
from derm_cloud.governance.referral.files import (
    PredictionsFile,
    load_predictions,
    read_predictions,
    write_predictions,
)
from derm_cloud.governance.referral.holdout import (
    HeldOutPoint,
    HoldoutEvaluation,
    calibration_split_referral,
    cross_fit_referral,
    evaluate_saved_policy,
    lesion_folds,
)
from derm_cloud.governance.referral.policy import HUMAN_REVIEW, MALIGNANT, ReferralDecision, ReferralPolicy
from derm_cloud.governance.referral.policy_file import SavedPolicy, fitting_overlap, save_policy
from derm_cloud.governance.referral.prevalence import HAM10000_MIX, parse_prevalence
from derm_cloud.governance.referral.provenance import SCHEMA_VERSION, ModelIdentity, data_hash
from derm_cloud.governance.referral.report import plot_referral, referral_markdown
from derm_cloud.governance.referral.run import (
    ReferralFit,
    check_saved_policy,
    fit_referral,
    referral_groups,
    write_referral_outputs,
)
from derm_cloud.governance.referral.scores import clustered_wilson_interval, wilson_interval

__all__ = [
    "HAM10000_MIX",
    "HUMAN_REVIEW",
    "MALIGNANT",
    "SCHEMA_VERSION",
    "ConservativeReferral",
    "GroupReferral",
    "HeldOutPoint",
    "HoldoutEvaluation",
    "ModelIdentity",
    "OperatingPoint",
    "PredictionsFile",
    "Referral",
    "ReferralClassifier",
    "ReferralDecision",
    "ReferralEvaluation",
    "ReferralFit",
    "ReferralPolicy",
    "SavedPolicy",
    "calibration_split_referral",
    "check_saved_policy",
    "clustered_wilson_interval",
    "cross_fit_referral",
    "data_hash",
    "evaluate_referral",
    "evaluate_saved_policy",
    "fit_referral",
    "fitting_overlap",
    "lesion_folds",
    "load_predictions",
    "nested_conservative_referral",
    "parse_prevalence",
    "plot_referral",
    "read_predictions",
    "referral_groups",
    "referral_markdown",
    "save_policy",
    "wilson_interval",
    "write_predictions",
    "write_referral_outputs",
]
