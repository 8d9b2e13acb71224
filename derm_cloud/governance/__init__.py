"""Responsible delivery, computed from data: validation sets, dataset audits, skin tone, referral, risk notes.

* `build_validation_set`: a seeded, lesion-level, stratified validation set that reports unfilled cells.
* `audit_dataset` / `compare_audits` / `write_audit_report`: class balance, lesions,
  duplicates, metadata and skin-tone coverage, side by side, as Markdown, HTML and JSON.
* `estimate_ita` / `fitzpatrick_from_metadata`: skin-tone groups, with their caveats (the second
  lives with the dataset loaders, `derm_cloud.data.fields`, which read it from every manifest).
* `ReferralPolicy`, `ReferralClassifier`, `evaluate_referral`: human-in-the-loop rules and
  what a sensitivity target costs in referrals.
* `risk_register`: dated, evidence-linked risk-register and DPIA entries from a comparator run.
* `compare_model_cards`: model facts side by side with the governance questions they leave open.

Nothing here makes a diagnosis; a clinician reviews every result. Heavy dependencies (pandas, matplotlib,
imagehash) are imported only by the functions that need them.
"""

from __future__ import annotations

from derm_cloud.data.fields import fitzpatrick_from_metadata
from derm_cloud.governance.audit import AuditComparison, DatasetAudit, audit_dataset, compare_audits, write_audit_report
from derm_cloud.governance.model_cards import ModelCard, compare_model_cards, model_card, model_card_flags
from derm_cloud.governance.notes import Evidence, RiskEntry, RiskRegister, load_run, risk_register
from derm_cloud.governance.referral import (
    HUMAN_REVIEW,
    GroupReferral,
    OperatingPoint,
    Referral,
    ReferralClassifier,
    ReferralDecision,
    ReferralEvaluation,
    ReferralPolicy,
    evaluate_referral,
    parse_prevalence,
    plot_referral,
    referral_markdown,
)
from derm_cloud.governance.skin_tone import ITA_CATEGORIES, ITA_CAVEAT, SkinToneEstimate, estimate_ita, ita_category
from derm_cloud.governance.validation_set import CellCoverage, ValidationSet, build_validation_set

__all__ = [
    "HUMAN_REVIEW",
    "ITA_CATEGORIES",
    "ITA_CAVEAT",
    "AuditComparison",
    "CellCoverage",
    "DatasetAudit",
    "Evidence",
    "GroupReferral",
    "ModelCard",
    "OperatingPoint",
    "Referral",
    "ReferralClassifier",
    "ReferralDecision",
    "ReferralEvaluation",
    "ReferralPolicy",
    "RiskEntry",
    "RiskRegister",
    "SkinToneEstimate",
    "ValidationSet",
    "audit_dataset",
    "build_validation_set",
    "compare_audits",
    "compare_model_cards",
    "estimate_ita",
    "evaluate_referral",
    "fitzpatrick_from_metadata",
    "ita_category",
    "load_run",
    "model_card",
    "model_card_flags",
    "parse_prevalence",
    "plot_referral",
    "referral_markdown",
    "risk_register",
    "write_audit_report",
]
