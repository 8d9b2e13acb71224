"""``Router``: several deployments behind one :class:`~derm_cloud.Classifier`, as LiteLLM's Router is for LLMs.

Per request the router prepares the image once (EXIF stripped, validated against the strictest deployment's
limits), so every deployment it tries receives the same payload and patient metadata, then:

1. orders the deployments: groups in the order given, equivalent deployments balanced (round robin or least
   in flight);
2. passes over deployments in cooldown (their circuit is open);
3. calls the next deployment in a worker thread with its share of the time left, and stops waiting when the
   share is spent (a backend whose SDK ignores the timeout cannot hold the request);
4. with hedging on, sends the same payload to the next deployment once the first has taken longer than its
   usual latency; the first good answer wins and the other is ignored;
5. on failure or timeout moves to the next deployment, until one answers or the deadline passes;
6. hands a sampled copy to the shadow comparison (off the answer's path) and returns the answer, whose
   :attr:`~derm_cloud.Prediction.route` says which deployment answered and why others were skipped.

Each deployment is called through its single-attempt primitive inside the router's own
:class:`~derm_cloud.RetryPolicy`, so retries never stack (router x backend x SDK).
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, ClassVar

from derm_cloud.base import BackendInfo, Classifier, MetadataInput, RawResult, as_metadata
from derm_cloud.errors import (
    CircuitOpenError,
    ConfigError,
    InvalidImageError,
    RemoteError,
)
from derm_cloud.images import ImageInput, PreparedImage, load_image
from derm_cloud.observability import Telemetry
from derm_cloud.retry import CircuitBreaker, RetryPolicy
from derm_cloud.router.outcomes import default_name, describe_error, give_up, strictest
from derm_cloud.router.policy import Balancer, Deployment, DeploymentState, HedgePolicy, RouterPolicy
from derm_cloud.taxonomy import LabelMap
from derm_cloud.types import PatientMetadata, Prediction, Route, SkippedDeployment

if TYPE_CHECKING:
    from derm_cloud.router.shadow import ShadowComparison

__all__ = ["Router"]

# The router's RetryPolicy loops over attempts to ONE deployment; the cooldown is the deployment's own breaker,
# recorded once per routed call by the router. This breaker never opens, so the two never count twice.
_NEVER_OPENS = 2**31


class _Attempt:
    """What one deployment call produced (run in a worker thread).

    Either the worker (call finished) or the router (share of the deadline spent) records the outcome in the
    breaker and metrics, never both: a call abandoned as too slow stays a failure even if it answers later.
    """

    __slots__ = ("_lock", "_settled", "calls", "error", "latency_s", "prediction")

    def __init__(self) -> None:
        self.calls = 0
        self.prediction: Prediction | None = None
        self.error: BaseException | None = None
        self.latency_s = 0.0
        self._settled = False
        self._lock = threading.Lock()

    def claim(self) -> bool:
        """True for the first caller only: that one records the outcome."""
        with self._lock:
            first, self._settled = not self._settled, True
            return first


class Router(Classifier):
    """A classifier over several deployments: ordered fallbacks, a deadline split across them, cooldowns,
    optional hedging, load balancing, shadow comparison and telemetry.

    Args:
        deployments: :class:`Deployment` objects, or classifiers (named after their backend).
        name: the router's name (its ``model_id``; in spans, logs and ``Prediction.route``).
        policy: deadline, share, attempts, cooldown and balance rules.
        hedge: a :class:`HedgePolicy` to hedge slow calls; ``None`` (default) never hedges. Hedged requests
            are billed by two providers: hedging can double cost.
        shadow: a :class:`~derm_cloud.router.ShadowComparison` fed a sampled share of answered requests.
        telemetry: spans, logs and metrics; default: a fresh :class:`~derm_cloud.observability.Telemetry`.
        max_workers: threads for deployment calls (abandoned slow calls hold one until they return).
        owns: objects whose ``close()`` runs with the router's (the emulators that
            :func:`~derm_cloud.router.config.router_from_config` started).

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
            )
            for d in deps
        ]
        self._balancer = Balancer(self._states, self.policy.balance)
        self.hedge = hedge
        self.shadow = shadow
        self.telemetry = telemetry or Telemetry()
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
        """Per deployment: group, calls in flight, cooldown seconds left (for a health endpoint)."""
        return [
            {
                "deployment": st.name,
                "group": st.deployment.group or st.name,
                "backend": st.deployment.classifier.backend_name,
                "in_flight": st.in_flight,
                "cooldown_s": round(st.breaker.cooldown_remaining(), 3),
            }
            for st in self._states
        ]

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
            DeadlineExceededError: no deployment answered within ``policy.deadline_s``.
            CircuitOpenError: every deployment is cooling down.
            RemoteError: every deployment failed (the class of the last failure); the message lists them all.
        """
        self._check_open()
        prepared = load_image(image, limits=self.image_limits)
        return self._route(prepared, as_metadata(metadata))

    def predict_batch(
        self,
        images: Iterable[ImageInput],
        metadata: Iterable[MetadataInput] | None = None,
        *,
        batch_size: int = 16,
    ) -> list[Prediction]:
        """Route many images, in input order, ``concurrency`` at a time; every image is validated first."""
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

    def _route(self, prepared: PreparedImage, meta: PatientMetadata) -> Prediction:
        started = time.perf_counter()
        deadline_at = time.monotonic() + self.policy.deadline_s
        request_id = uuid.uuid4().hex
        queue = self._balancer.order()
        skipped: list[SkippedDeployment] = []
        failures: list[BaseException] = []
        pending: dict[Future[_Attempt], tuple[DeploymentState, float, float]] = {}  # -> (state, launched, ends)
        handles: dict[Future[_Attempt], _Attempt] = {}
        winner: tuple[DeploymentState, _Attempt] | None = None
        calls = 0
        hedged = False
        with self.telemetry.span("derm_cloud.route", {"derm_cloud.router": self.name}) as span:
            parent = self.telemetry.current_context()

            def launch() -> bool:
                """Start the next deployment not in cooldown; False when none is left or time is up."""
                while queue:
                    st = queue.pop(0)
                    try:
                        st.breaker.before_call(st.name)
                    except CircuitOpenError as exc:
                        skipped.append(SkippedDeployment(st.name, "cooldown", describe_error(exc)))
                        self.telemetry.metrics.observe(st.name, "cooldown", 0.0)
                        continue
                    now = time.monotonic()
                    left = deadline_at - now
                    if left <= 0:
                        queue.insert(0, st)
                        return False
                    budget = left if not any(_can_launch(q) for q in queue) else left * self.policy.share
                    st.started()
                    handle = _Attempt()
                    fut = self._pool.submit(self._attempt, st, prepared, meta, budget, parent, handle)
                    handles[fut] = handle
                    fut.add_done_callback(_finished_callback(st))
                    pending[fut] = (st, now, now + budget)
                    return True
                return False

            launch()
            while pending:
                now = time.monotonic()
                wake = min(min(end for _, _, end in pending.values()), deadline_at)
                hedge_at = self._hedge_at(pending, queue, hedged)
                if hedge_at is not None:
                    wake = min(wake, hedge_at)
                done, _ = wait(list(pending), timeout=max(0.0, wake - now), return_when=FIRST_COMPLETED)
                for fut in done:
                    st, _, _ = pending.pop(fut)
                    attempt = fut.result()
                    calls += attempt.calls
                    if attempt.prediction is not None and winner is None:
                        winner = (st, attempt)
                    elif attempt.error is not None:
                        failures.append(attempt.error)
                        skipped.append(SkippedDeployment(st.name, "error", describe_error(attempt.error)))
                    else:  # a second good answer in the same instant: the first one won
                        skipped.append(SkippedDeployment(st.name, "hedge_lost", "answered after the winner"))
                if winner is not None:
                    break
                now = time.monotonic()
                for fut, (st, launched, end) in list(pending.items()):
                    if (now >= end or now >= deadline_at) and handles[fut].claim():
                        del pending[fut]  # abandoned: the worker finishes on its own, its result is ignored
                        st.breaker.record(ok=False)
                        self.telemetry.metrics.observe(st.name, "deadline", now - launched, error_class="Deadline")
                        skipped.append(
                            SkippedDeployment(st.name, "deadline", f"no answer within {end - launched:.2f} s")
                        )
                hedge_at = self._hedge_at(pending, queue, hedged)
                if hedge_at is not None and now >= hedge_at and launch():
                    hedged = True
                elif not pending:
                    launch()
            for st, _, _ in pending.values():  # hedged losers still running: ignored, not cancelled
                skipped.append(SkippedDeployment(st.name, "hedge_lost", "another deployment answered first"))
            latency_ms = (time.perf_counter() - started) * 1000
            span.set_attribute("derm_cloud.attempts", calls)
            span.set_attribute("derm_cloud.skipped", len(skipped))
            span.set_attribute("derm_cloud.hedged", hedged)
            span.set_attribute("derm_cloud.latency_ms", latency_ms)
            if winner is None:
                error = give_up(self.name, self.policy.deadline_s, skipped, failures, deadline_at)
                span.set_attribute("derm_cloud.outcome", "error")
                span.set_error(error)
                self.telemetry.log_request(
                    {"router": self.name, "outcome": "error", "error": type(error).__name__, "ms": f"{latency_ms:.0f}"}
                )
                raise error
            st, attempt = winner
            assert attempt.prediction is not None
            route = Route(self.name, st.name, tuple(skipped), hedged, calls)
            pred = dataclasses.replace(attempt.prediction, latency_ms=latency_ms, attempts=calls, route=route)
            span.set_attribute("derm_cloud.deployment", st.name)
            span.set_attribute("derm_cloud.backend", pred.backend)
            span.set_attribute("derm_cloud.model", pred.model_id)
            span.set_attribute("derm_cloud.outcome", "ok")
        self.telemetry.log_request(
            {
                "router": self.name,
                "deployment": st.name,
                "outcome": "ok",
                "attempts": calls,
                "skipped": ",".join(f"{s.deployment}:{s.reason}" for s in skipped) or "-",
                "hedged": hedged,
                "ms": f"{latency_ms:.0f}",
            }
        )
        if self.shadow is not None:
            self.shadow.offer(request_id, st.name, prepared, meta, pred)
        return pred

    def _hedge_at(
        self, pending: dict[Future[_Attempt], tuple[DeploymentState, float, float]], queue: list[Any], hedged: bool
    ) -> float | None:
        """When to hedge the one call in flight, or ``None`` (hedging off, already hedged, nothing to hedge to)."""
        if self.hedge is None or hedged or len(pending) != 1 or not any(_can_launch(q) for q in queue):
            return None
        st, launched, _ = next(iter(pending.values()))
        return launched + st.hedge_delay(self.hedge)

    def _attempt(
        self,
        st: DeploymentState,
        prepared: PreparedImage,
        meta: PatientMetadata,
        budget: float,
        parent: Any,
        out: _Attempt,
    ) -> _Attempt:
        """One deployment, its share of the deadline, the router's retry loop; never raises a RemoteError."""
        clf = st.deployment.classifier
        policy = RetryPolicy(
            max_attempts=self.policy.attempts_per_deployment,
            base_delay=self.policy.base_delay,
            max_delay=self.policy.max_delay,
            deadline=budget,
            breaker=CircuitBreaker(failure_threshold=_NEVER_OPENS),
        )

        def once(remaining: float | None) -> RawResult:
            out.calls += 1
            return clf._predict_one(prepared, meta, remaining)

        attrs = {
            "derm_cloud.router": self.name,
            "derm_cloud.deployment": st.name,
            "derm_cloud.backend": clf.backend_name,
            "derm_cloud.model": clf.model_id,
        }
        start = time.perf_counter()
        with self.telemetry.span("derm_cloud.backend_call", attrs, parent=parent) as span:
            try:
                raw, _ = policy.call(once, backend=clf.backend_name)
                out.latency_s = time.perf_counter() - start
                out.prediction = clf._to_prediction(raw, out.calls, out.latency_s * 1000)
            except (RemoteError, InvalidImageError) as exc:
                out.latency_s = time.perf_counter() - start
                out.error = exc
                span.set_error(exc)
            span.set_attribute("derm_cloud.attempts", out.calls)
            span.set_attribute("derm_cloud.outcome", "ok" if out.error is None else "error")
            span.set_attribute("derm_cloud.latency_ms", out.latency_s * 1000)
        if not out.claim():
            return out  # the router gave up on this call already and counted it as a failure
        if out.error is None:
            st.breaker.record(ok=True)
            st.observe(out.latency_s)
            self.telemetry.metrics.observe(st.name, "ok", out.latency_s)
        else:
            if isinstance(out.error, RemoteError):  # a provider's size limit is not a sign of ill health
                st.breaker.record(ok=False)
            self.telemetry.metrics.observe(st.name, "error", out.latency_s, error_class=type(out.error).__name__)
        return out


def _finished_callback(st: DeploymentState) -> Callable[[Future[_Attempt]], None]:
    return lambda _future: st.finished()


def _can_launch(st: DeploymentState) -> bool:
    return st.breaker.cooldown_remaining() <= 0
