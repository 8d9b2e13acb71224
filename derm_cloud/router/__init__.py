"""Route one request across several deployments: fallbacks, cooldowns, hedging, load balancing, shadowing.

`Router` is itself a `Classifier`, so everything that takes a classifier (the
comparator, the serving adapters, an app) takes a router. See `docs/router.md`.

Example:
    >>> from derm_cloud.router import Deployment, Router, RouterPolicy
    >>> router = Router(
    ...     [Deployment("sagemaker", sagemaker_clf), Deployment("local", onnx_clf)],
    ...     policy=RouterPolicy(deadline_s=5.0, share=0.6),
    ... )  # doctest: +SKIP
"""

from __future__ import annotations

from derm_cloud.router.core import Router
from derm_cloud.router.health import DeploymentCheck
from derm_cloud.router.policy import Balance, Deployment, HedgePolicy, RouterPolicy
from derm_cloud.router.shadow import PairAgreement, ShadowComparison

__all__ = [
    "Balance",
    "Deployment",
    "DeploymentCheck",
    "HedgePolicy",
    "PairAgreement",
    "Router",
    "RouterPolicy",
    "ShadowComparison",
]
