"""`ReferralClassifier`: every prediction of a classifier (or of several) comes with a referral decision.

With several classifiers the first is the primary (its prediction is returned) and all of them feed the
decision, so disagreement between backends triggers a referral. Referral is triage support, never a
diagnosis: a clinician reviews every result, referred or not.

Example:
    >>> policy = ReferralPolicy(malignant_threshold=0.2, min_confidence=0.5)
    >>> with ReferralClassifier(derm_cloud.create("local-onnx", model_dir="sklesion"), policy) as app:  # doctest: +SKIP
    ...     prediction, decision = app.predict("lesion.jpg", {"age": 60, "sex": "male", "site": "back"})
    ...     print(decision.refer, decision.reasons)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from derm_cloud.errors import ConfigError
from derm_cloud.governance.referral.policy import ReferralDecision, ReferralPolicy
from derm_cloud.types import Prediction

if TYPE_CHECKING:
    from derm_cloud.base import BackendInfo, Classifier, MetadataInput
    from derm_cloud.images import ImageInput

__all__ = ["Referral", "ReferralClassifier"]


class Referral(NamedTuple):
    """What `ReferralClassifier` returns: unpack as `prediction, decision = app.predict(...)`."""

    prediction: Prediction
    decision: ReferralDecision


class ReferralClassifier:
    """Wrap one classifier (or several) so every prediction comes with a referral decision.

    With several classifiers, the first is the primary (its prediction is returned) and all of them feed the
    decision, so disagreement between backends triggers a referral.

    Args:
        classifier: a `Classifier`, or a sequence of them.
        policy: the rules (default: `ReferralPolicy` defaults).
        close_wrapped: close the wrapped classifiers when this wrapper is closed.

    Example:
        >>> app = ReferralClassifier([clf_local, clf_cloud], ReferralPolicy(malignant_threshold=0.2))  # doctest: +SKIP
        >>> prediction, decision = app.predict("lesion.jpg")  # doctest: +SKIP
    """

    def __init__(
        self,
        classifier: Classifier | Sequence[Classifier],
        policy: ReferralPolicy | None = None,
        *,
        close_wrapped: bool = True,
    ) -> None:
        from derm_cloud.base import Classifier

        self.classifiers: tuple[Classifier, ...] = (
            (classifier,) if isinstance(classifier, Classifier) else tuple(classifier)
        )
        if not self.classifiers:
            raise ConfigError("ReferralClassifier needs at least one classifier")
        self.policy = policy or ReferralPolicy()
        self.close_wrapped = close_wrapped

    @property
    def primary(self) -> Classifier:
        return self.classifiers[0]

    def predict(self, image: ImageInput, metadata: MetadataInput = None) -> Referral:
        """Classify with every wrapped backend and decide whether to refer.

        Raises:
            InvalidImageError: the input is not a usable image.
            RemoteError: a backend failed after its retries (no decision is made without it).
        """
        data = _reusable(image)
        preds = tuple(clf.predict(data, metadata) for clf in self.classifiers)
        return Referral(preds[0], self.policy.evaluate(preds))

    def predict_batch(
        self,
        images: Iterable[ImageInput],
        metadata: Iterable[MetadataInput] | None = None,
        *,
        batch_size: int = 16,
    ) -> list[Referral]:
        """`predict` for many images, each backend batching natively where it can."""
        items = [_reusable(i) for i in images]
        metas = list(metadata) if metadata is not None else None
        per_backend = [clf.predict_batch(items, metas, batch_size=batch_size) for clf in self.classifiers]
        return [Referral(preds[0], self.policy.evaluate(preds)) for preds in zip(*per_backend, strict=True)]

    async def apredict(self, image: ImageInput, metadata: MetadataInput = None) -> Referral:
        """Async `predict`: the backends are called concurrently."""
        data = _reusable(image)
        preds = await asyncio.gather(*(clf.apredict(data, metadata) for clf in self.classifiers))
        return Referral(preds[0], self.policy.evaluate(preds))

    def describe(self) -> list[BackendInfo]:
        """Facts about every wrapped backend."""
        return [clf.describe() for clf in self.classifiers]

    def close(self) -> None:
        if self.close_wrapped:
            for clf in self.classifiers:
                clf.close()

    def __enter__(self) -> ReferralClassifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ReferralClassifier({', '.join(repr(c) for c in self.classifiers)}, policy={self.policy!r})"


def _reusable(image: Any) -> Any:
    """Read a file object once, so several backends get the same bytes (a stream can be read only once)."""
    if hasattr(image, "read") and not isinstance(image, (bytes, bytearray, memoryview, str, os.PathLike)):
        return image.read()
    return image
