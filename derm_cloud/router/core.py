"""`Router`: several deployments behind one `Classifier`, as LiteLLM's Router is for LLMs.

Per request the router

1. orders the deployments: groups in the order given, equivalent deployments balanced (round robin or least
   in flight);
2. prepares the image once, as the first deployment it will call would (EXIF stripped, validated against the
   strictest deployment's limits; a local model's full decode doubles as the JPEG damage check), so every
   deployment it tries receives the same payload and patient metadata and no image is decoded twice;
3. passes over deployments in cooldown (their circuit is open);
4. calls the next deployment with its share of the time left. The call runs in a worker thread, and the router
   stops waiting when the share is spent, only when something needs that: a deployment to fall back to, a
   hedge to send, or an HTTP SDK that cannot keep a deadline itself. Otherwise (the last local model, a gRPC
   client) it runs on the caller's thread, with no hand-off;
5. with hedging on, sends the same payload to the next deployment once the first has taken longer than its
   usual latency; the first good answer wins and the other is ignored (but counted: both are billed);
6. on failure or timeout moves to the next deployment, until one answers or the deadline passes;
7. hands a sampled copy to the shadow comparison (off the answer's path) and returns the answer, whose
   `Prediction.route` says which deployment answered, why others were skipped and how many
   requests each was sent.

Each deployment is called through its single-attempt primitive inside the router's own
`RetryPolicy`, so retries never stack (router x backend x SDK).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

from derm_cloud.base import BackendInfo, Classifier, MetadataInput, RawResult, as_metadata
from derm_cloud.errors import ConfigError, InvalidImageError
from derm_cloud.images import ImageInput, PreparedImage, load_image, prepare_payload
from derm_cloud.observability import Telemetry
from derm_cloud.retry import CircuitBreaker
from derm_cloud.router.health import ConfigFaults, DeploymentCheck, check_deployments
from derm_cloud.router.outcomes import default_name, give_up, keeps_own_deadline, strictest
from derm_cloud.router.policy import Balancer, Deployment, DeploymentState, HedgePolicy, RouterPolicy
from derm_cloud.router.routing import RoutedRequest, _can_launch
from derm_cloud.taxonomy import LabelMap
from derm_cloud.types import PatientMetadata, Prediction, Route, SkippedDeployment

if TYPE_CHECKING:
    from derm_cloud.router.shadow import ShadowComparison

__all__ = ["Router"]


class Router(Classifier):
    """A classifier over several deployments: ordered fallbacks, a deadline split across them, cooldowns,
    optional hedging, load balancing, shadow comparison and telemetry.

    Args:
        deployments: `Deployment` objects, or classifiers (named after their backend).
        name: the router's name (its `model_id`; in spans, logs and `Prediction.route`).
        policy: deadline, share, attempts, cooldown and balance rules.
        hedge: a `HedgePolicy` to hedge slow calls; `None` (default) never hedges. Hedged requests
            are billed by two providers: hedging can double cost.
        shadow: a `ShadowComparison` fed a sampled share of answered requests.
        telemetry: spans, logs and metrics; default: a fresh `Telemetry`.
        max_workers: threads for deployment calls (abandoned slow calls hold one until they return).
        owns: objects whose `close()` runs with the router's (the emulators that
            `router_from_config` started).

    Example:
        >>> router = Router([Deployment("cloud", sagemaker_clf), Deployment("local", onnx_clf)],
        ...                 policy=RouterPolicy(deadline_s=5.0))  # doctest: +SKIP
        >>> router.predict("lesion.jpg").route.deployment  # doctest: +SKIP
        'cloud'

    A prediction supports triage and research, never a diagnosis: a clinician reviews every result.
    """

    backend_name: ClassVar[str] = "router"
    default_concurrency: ClassVar[int] = 4

    def __init__(
        self,
        deployments: Sequence[Deployment | Classifier],
        *,
        name: str = "router",
        policy: RouterPolicy | None = None,
        hedge: HedgePolicy | None = None,
        shadow: ShadowComparison | None = None,
        telemetry: Telemetry | None = None,
        max_workers: int = 32,
        owns: Iterable[Any] = (),
    ) -> None:
        self.policy = policy or RouterPolicy()
        deps = [d if isinstance(d, Deployment) else Deployment(default_name(d), d) for d in deployments]
        if not deps:
            raise ConfigError("a Router needs at least one deployment")
        names = [d.name for d in deps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"deployment names must be unique; repeated: {', '.join(dupes)} (pass Deployment(name=))")
        window = hedge.window if hedge else 256
        self._states = [
            DeploymentState(
                d,
                d.breaker or CircuitBreaker(self.policy.cooldown_failures, self.policy.cooldown_s),
                window=window,
                keeps_deadline=keeps_own_deadline(d.classifier),
            )
            for d in deps
        ]
        self._balancer = Balancer(self._states, self.policy.balance)
        self.hedge = hedge
        self.shadow = shadow
        self.telemetry = telemetry or Telemetry()
        self.config_faults = ConfigFaults(name, self.telemetry.metrics, warn_every_s=self.policy.cooldown_s)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"{name}-call")
        self._owns = list(owns)
        super().__init__(
            label_map=LabelMap.canonical(),
            model_id=name,
            retry=None,
            image_limits=strictest([d.classifier.image_limits for d in deps]),
        )

    # --- introspection -------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.model_id

    @property
    def deployments(self) -> list[Deployment]:
        return [st.deployment for st in self._states]

    def status(self) -> list[dict[str, Any]]:
        """Per deployment: group, calls in flight, cooldown seconds left and its configuration fault, if any
        (`{"error", "detail", "since", "count"}`: it cannot authenticate or is not found), for a health
        endpoint."""
        return [
            {
                "deployment": st.name,
                "group": st.deployment.group or st.name,
                "backend": st.deployment.classifier.backend_name,
                "in_flight": st.in_flight,
                "cooldown_s": round(st.breaker.cooldown_remaining(), 3),
                "config_fault": self.config_faults.status(st.name),
            }
            for st in self._states
        ]

    def check(self, *, timeout_s: float = 10.0, strict: bool = False) -> list[DeploymentCheck]:
        """Start-up check: send one tiny probe image to every deployment (and the shadow), at once.

        Run it when the app starts: a deployment that cannot authenticate or does not exist fails here, loudly,
        instead of hiding behind the fallback's answers. The probe is a 64x64 plain JPEG (no patient data),
        sent once through each deployment's single-attempt call, no retry; what it costs per provider is in
        `docs/router.md` (nothing for a local model or a real-time endpoint billed by the hour, one request's
        price for a per-request API). A failure is recorded as a live call's would be (`status()`, metric,
        WARNING).

        Args:
            timeout_s: seconds each probe may take.
            strict: also fail on errors that are not configuration faults (throttled, 5xx, timeout, a probe the
                provider refused).

        Returns:
            One `DeploymentCheck` per deployment, then the shadow's.

        Raises:
            DeploymentCheckError: naming every deployment that cannot authenticate (`AuthenticationError`:
                credentials, role, permission) or was not found (`NotFoundError`), each with its error; with
                `strict`, every deployment that failed.
        """
        self._check_open()
        return check_deployments(self, timeout_s=timeout_s, strict=strict)

    def describe(self) -> BackendInfo:
        infos = [d.classifier.describe() for d in self.deployments]
        stores = [i.stores_images for i in infos]
        return BackendInfo(
            backend=self.backend_name,
            provider="+".join(dict.fromkeys(i.provider for i in infos)),
            service=f"derm-cloud router over {', '.join(d.name for d in self.deployments)}",
            model_id=self.model_id,
            data_leaves_machine=any(i.data_leaves_machine for i in infos),
            stores_images=True if any(stores) else (None if None in stores else False),
            emulated=all(i.emulated for i in infos),
            labels_mapped=all(i.labels_mapped for i in infos),
            model_facts={"deployments": [dataclasses.asdict(i) for i in infos]},
        )

    # --- the Classifier interface --------------------------------------------------------------------------

    def predict(self, image: ImageInput, metadata: MetadataInput = None) -> Prediction:
        """Classify one image through the deployments; see the class docstring for the rules.

        Raises:
            InvalidImageError: the input is not a usable image (nothing is sent anywhere).
            DeadlineExceededError: no deployment answered within `policy.deadline_s`.
            CircuitOpenError: every deployment is cooling down.
            RemoteError: every deployment failed (the class of the last failure); the message lists them all.
        """
        self._check_open()
        queue = self._balancer.order()
        prepared = self._prepare_for(image, queue)
        return self._route(prepared, as_metadata(metadata), queue)

    def _prepare_for(self, image: ImageInput, queue: list[DeploymentState]) -> PreparedImage:
        """Prepare the image as the first deployment to be called would (`Classifier._prepare`'s rules).

        A local model decodes every pixel, and its strict decode refuses a damaged JPEG, so the separate entropy
        check is left out and the decode done now (before anything is sent: a fallback cloud then gets bytes
        the decode has verified). A cloud first gets the entropy-checked bytes, undecoded; a local fallback
        decodes them once if it is reached.
        """
        first = next((st for st in queue if _can_launch(st)), None)
        if first is None or not first.deployment.classifier.decodes_every_pixel:
            return prepare_payload(image, limits=self.image_limits)
        payload = prepare_payload(image, limits=self.image_limits, verify_by_decoding=True)
        if payload.verify_on_decode:
            payload.array()
        return payload

    def predict_batch(
        self,
        images: Iterable[ImageInput],
        metadata: Iterable[MetadataInput] | None = None,
        *,
        batch_size: int = 16,
    ) -> list[Prediction]:
        """Route many images, in input order, `concurrency` at a time; every image is validated first."""
        self._check_open()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        items = list(images)
        metas = [as_metadata(m) for m in metadata] if metadata is not None else [PatientMetadata()] * len(items)
        if len(metas) != len(items):
            raise ValueError(f"got {len(items)} images but {len(metas)} metadata entries; pass one per image")
        prepared: list[PreparedImage] = []
        for i, item in enumerate(items):
            try:
                prepared.append(load_image(item, limits=self.image_limits))
            except InvalidImageError as exc:
                raise InvalidImageError(f"image {i} of {len(items)}: {exc}") from None
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(items)))) as pool:
            return list(pool.map(self._route, prepared, metas))

    def _predict_one(self, image: PreparedImage, metadata: PatientMetadata, timeout: float | None) -> RawResult:
        # The base class's single-call path, kept working: canonical scores of the routed answer.
        pred = self._route(image, metadata)
        return RawResult(scores=list(pred.probabilities.items()), request_id=pred.request_id, extra=dict(pred.extra))

    def _close(self) -> None:
        if self.shadow is not None:
            self.shadow.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for st in self._states:
            st.deployment.classifier.close()
        for obj in self._owns:
            obj.close()

    # --- routing -------------------------------------------------------------------------------------------

    def _route(
        self, prepared: PreparedImage, meta: PatientMetadata, queue: list[DeploymentState] | None = None
    ) -> Prediction:
        started = time.perf_counter()
        deadline_at = time.monotonic() + self.policy.deadline_s
        queue = self._balancer.order() if queue is None else queue
        with self.telemetry.span("derm_cloud.route", {"derm_cloud.router": self.name}) as span:
            request = RoutedRequest(self, prepared, meta, queue, deadline_at, self.telemetry.current_context())
            request.run()
            skipped, hedged, winner = request.skipped, request.hedged, request.winner
            billed = request.billed()
            attempts = sum(n for _, n in billed)
            latency_ms = (time.perf_counter() - started) * 1000
            span.set_attribute("derm_cloud.attempts", attempts)
            span.set_attribute("derm_cloud.skipped", len(skipped))
            span.set_attribute("derm_cloud.hedged", hedged)
            span.set_attribute("derm_cloud.latency_ms", latency_ms)
            if winner is None:
                error = give_up(self.name, self.policy.deadline_s, skipped, request.failures, deadline_at)
                span.set_attribute("derm_cloud.outcome", "error")
                span.set_error(error)
                self.telemetry.log_request(
                    {"router": self.name, "outcome": "error", "error": type(error).__name__, "ms": f"{latency_ms:.0f}"}
                )
                raise error
            st, attempt = winner
            assert attempt.prediction is not None
            route = Route(self.name, st.name, tuple(skipped), hedged, attempts, billed)
            # The provider's request id when it sent one, else the router's: the caller, the log line and the
            # shadow's record of this request all carry the same id, so they can be joined.
            request_id = attempt.prediction.request_id or uuid.uuid4().hex
            pred = dataclasses.replace(
                attempt.prediction, latency_ms=latency_ms, attempts=attempts, route=route, request_id=request_id
            )
            span.set_attribute("derm_cloud.deployment", st.name)
            span.set_attribute("derm_cloud.backend", pred.backend)
            span.set_attribute("derm_cloud.model", pred.model_id)
            span.set_attribute("derm_cloud.outcome", "ok")
        self._log_answer(request_id, st.name, attempts, skipped, hedged, latency_ms)
        if self.shadow is not None:
            self.shadow.offer(request_id, st.name, prepared, meta, pred)
        return pred

    def _log_answer(
        self,
        request_id: str,
        deployment: str,
        attempts: int,
        skipped: list[SkippedDeployment],
        hedged: bool,
        latency_ms: float,
    ) -> None:
        """The request log line of an answered request (when request logging is on)."""
        if self.telemetry.logs_requests:
            self.telemetry.log_request(
                {
                    "router": self.name,
                    "request_id": request_id,
                    "deployment": deployment,
                    "outcome": "ok",
                    "attempts": attempts,
                    "skipped": ",".join(f"{s.deployment}:{s.reason}" for s in skipped) or "-",
                    "hedged": hedged,
                    "ms": f"{latency_ms:.0f}",
                }
            )
