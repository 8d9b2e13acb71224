"""`policy.json`: a fitted referral policy as a versioned artefact, and the check before it is applied.

Schema version 2 (`SCHEMA_VERSION`) holds:

* `policy`: the rules (`ReferralPolicy.load` reads this key, so the rules stay usable on their own);
* `model`: backend, model id, fingerprint and `metadata_mode` (`used` / `blind`) of the probabilities it
  was fitted on;
* `target`: what it detects (`mel`), the sensitivity promised and the margin; `method`: how the threshold
  was chosen (`point`: reaches the target on the fitting data; `conservative`: the lower 95% bound of its
  out-of-sample sensitivity reaches it);
* `data_hash`: SHA-256 of the labels and probabilities it was fitted on; `fitted_on`: dataset, image and
  lesion ids;
* `expected`: the out-of-sample estimate with its intervals and how it was measured.

`SavedPolicy.check` refuses (`PolicyMismatchError`) predictions of another model
or metadata mode, and a file without `schema_version`: such a file cannot show what it was fitted on, and
accepting it with a warning would keep the silent path this check closes (a metadata-fitted policy applied to
metadata-free predictions kept 0.862 melanoma sensitivity against a promised 0.95, with no message). An explicit
`allow_mismatch=True` (`--allow-mismatch`) applies it anyway and returns the differences, for the result to
record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError, PolicyMismatchError
from derm_cloud.governance.referral.policy import HUMAN_REVIEW, ReferralPolicy
from derm_cloud.governance.referral.provenance import (
    SCHEMA_VERSION,
    Difference,
    ModelIdentity,
    identity_differences,
)

__all__ = ["SavedPolicy", "fitting_overlap", "save_policy"]


class SavedPolicy:
    """A `policy.json` and what it records about how it was fitted.

    Attributes:
        policy: the rules.
        fitted_on: dataset name, image and lesion ids the threshold was fitted on (`{}` for a bare policy).
        expected: the out-of-sample figures recorded when it was fitted (`{}` when absent).
        schema_version: 2 for files that record their model; `None` for older files and bare policies.
        identity: the model and metadata mode it was fitted on (`None` when unrecorded).
        target: `{"classes", "sensitivity", "margin"}`; `method`: how the threshold was chosen.
        data_hash: SHA-256 of the labels and probabilities it was fitted on.
        path: the file it was read from (for messages).
    """

    def __init__(
        self,
        policy: ReferralPolicy,
        fitted_on: Mapping[str, Any],
        expected: Mapping[str, Any],
        *,
        schema_version: int | None = None,
        identity: ModelIdentity | None = None,
        target: Mapping[str, Any] | None = None,
        method: Mapping[str, Any] | None = None,
        data_hash: str | None = None,
        path: str = "policy.json",
    ) -> None:
        self.policy = policy
        self.fitted_on = dict(fitted_on)
        self.expected = dict(expected)
        self.schema_version = schema_version
        self.identity = identity
        self.target = dict(target or {})
        self.method = dict(method or {})
        self.data_hash = data_hash
        self.path = path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SavedPolicy:
        """Read `policy.json` (any version, or a bare policy dict).

        Raises:
            ConfigError: missing file, invalid JSON, unknown policy keys or a schema version newer than this code.
        """
        name = os.fspath(path)
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read policy {name!r}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{name!r} is not a policy object")
        version = data.get("schema_version")
        if version is not None and (not isinstance(version, int) or version > SCHEMA_VERSION):
            raise ConfigError(
                f"{name} has schema_version {version!r}; this derm-cloud reads up to {SCHEMA_VERSION}: upgrade it"
            )
        model = data.get("model")
        identity = None
        if version is not None and isinstance(model, dict):
            identity = ModelIdentity.from_dict({**model, "metadata_mode": data.get("metadata_mode")})
        return cls(
            ReferralPolicy.from_dict(data.get("policy", data)),
            data.get("fitted_on") or {},
            data.get("expected") or {},
            schema_version=version,
            identity=identity,
            target=data.get("target"),
            method=data.get("method"),
            data_hash=data.get("data_hash"),
            path=name,
        )

    def check(self, applied: ModelIdentity, *, allow_mismatch: bool = False) -> list[Difference]:
        """Refuse predictions of another model or metadata mode (or any, for a file without a schema version).

        Args:
            applied: the identity of the predictions the policy is about to be applied to.
            allow_mismatch: apply it anyway; the differences are returned for the result to record.

        Returns:
            The differences (empty when the policy belongs to these predictions).

        Raises:
            PolicyMismatchError: differences and no `allow_mismatch`; one line naming both values and the fix.
        """
        found = identity_differences(self.identity if self.schema_version else None, applied)
        if found and not allow_mismatch:
            fitted = self.identity if self.schema_version else None
            raise PolicyMismatchError(mismatch_message(self.path, fitted, applied, found), [d.to_dict() for d in found])
        return found

    def to_record(self) -> dict[str, Any]:
        """What a saved-policy evaluation records about the policy (ids of the fitting images left out)."""
        return {
            "schema_version": self.schema_version,
            "model": self.identity.to_dict() if self.identity else None,
            "target": self.target,
            "method": self.method,
            "data_hash": self.data_hash,
            "fitted_on": {k: v for k, v in self.fitted_on.items() if k not in ("image_ids", "lesion_ids")},
        }


def mismatch_message(
    path: str, fitted: ModelIdentity | None, applied: ModelIdentity, found: Sequence[Difference]
) -> str:
    """One line: both identities, what differs, and the two fixes."""
    fix = (
        "refit the policy on these predictions (derm-cloud governance referral --out), or pass --allow-mismatch "
        "(allow_mismatch=True) to apply it anyway, recorded in the result"
    )
    if fitted is None or any(d.field == "schema" for d in found):
        return (
            f"{path} has no schema_version: it was written before policies recorded their model and metadata mode, "
            f"so it cannot be checked against these predictions ({applied.describe()}); {fix}"
        )
    what = []
    for d in found:
        if d.field == "metadata_mode":
            what.append("the metadata mode" + (" (unrecorded)" if d.how else ""))
        else:
            what.append(f"the model (compared by {d.how})" if d.how in ("fingerprint", "model id") else
                        "the model (unrecorded, so it cannot be matched)")  # fmt: skip
    return (
        f"{path} was fitted on {fitted.describe()} but these predictions are from {applied.describe()}: "
        f"{' and '.join(what)} differ{'s' if len(what) == 1 else ''}, and a threshold does not transfer; {fix}"
    )


def save_policy(
    path: str | os.PathLike[str],
    policy: ReferralPolicy,
    *,
    fitted_on: Mapping[str, Any],
    expected: Mapping[str, Any] | None = None,
    identity: ModelIdentity | None = None,
    target: Mapping[str, Any] | None = None,
    method: Mapping[str, Any] | None = None,
    data_hash: str | None = None,
) -> None:
    """Write `policy.json` (schema version 2); `ReferralPolicy.load` reads its rules too."""
    payload = {
        "schema_version": SCHEMA_VERSION,
        "policy": policy.to_dict(),
        "model": None
        if identity is None
        else {"backend": identity.backend, "model_id": identity.model_id, "fingerprint": identity.fingerprint},
        "metadata_mode": identity.metadata_mode if identity else None,
        "target": dict(target or {}),
        "method": dict(method or {}),
        "data_hash": data_hash,
        "expected": dict(expected or {}),
        "fitted_on": dict(fitted_on),
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
    fitted_model = saved.identity.model_id if saved.identity else saved.fitted_on.get("model_id")
    if fitted_model and fitted_model != model_id:
        notes.append(
            f"The policy was fitted on {fitted_model}'s probabilities but is applied to {model_id}'s: thresholds "
            "do not transfer between models; refit it."
        )
    return notes
