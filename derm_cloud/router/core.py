"""``Router``: several deployments behind one :class:`~derm_cloud.Classifier`, as LiteLLM's Router is for LLMs.

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
:class:`~derm_cloud.RetryPolicy`, so retries never stack (router x backend x SDK).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from derm_cloud.base import BackendInfo, Classifier, MetadataInput, RawResult, as_metadata
from derm_cloud.errors import CircuitOpenError, ConfigError, InvalidImageError
from derm_cloud.images import ImageInput, PreparedImage, load_image, prepare_payload
from derm_cloud.observability import Telemetry
from derm_cloud.retry import CircuitBreaker
from derm_cloud.router.calls import Call, run_call
from derm_cloud.router.health import ConfigFaults, DeploymentCheck, check_deployments
from derm_cloud.router.outcomes import (
    default_name,
    describe_error,
    failure_reason,
    give_up,
    keeps_own_deadline,
    strictest,
)
from derm_cloud.router.policy import Balancer, Deployment, DeploymentState, HedgePolicy, RouterPolicy
from derm_cloud.taxonomy import LabelMap
from derm_cloud.types import PatientMetadata, Prediction, Route, SkippedDeployment

if TYPE_CHECKING:
    from derm_cloud.router.shadow import ShadowComparison

__all__ = ["Router"]


class _Launched(NamedTuple):
    """One deployment call of a request: its state, its handle, when it started and when its share ends."""

    state: DeploymentState
    call: Call
    at: float
    ends: float


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
        (``{"error", "detail", "since", "count"}``: it cannot authenticate or is not found), for a health
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
        ``docs/router.md`` (nothing for a local model or a real-time endpoint billed by the hour, one request's
        price for a per-request API). A failure is recorded as a live call's would be (``status()``, metric,
        WARNING).

        Args:
            timeout_s: seconds each probe may take.
            strict: also fail on errors that are not configuration faults (throttled, 5xx, timeout, a probe the
                provider refused).

        Returns:
            One `DeploymentCheck` per deployment, then the shadow's.

        Raises:
            DeploymentCheckError: naming every deployment that cannot authenticate (``AuthenticationError``:
                credentials, role, permission) or was not found (``NotFoundError``), each with its error; with
                ``strict``, every deployment that failed.
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
            DeadlineExceededError: no deployment answered within ``policy.deadline_s``.
            CircuitOpenError: every deployment is cooling down.
            RemoteError: every deployment failed (the class of the last failure); the message lists them all.
        """
        self._check_open()
        queue = self._balancer.order()
        prepared = self._prepare_for(image, queue)
        return self._route(prepared, as_metadata(metadata), queue)

    def _prepare_for(self, image: ImageInput, queue: list[DeploymentState]) -> PreparedImage:
        """Prepare the image as the first deployment to be called would (``Classifier._prepare``'s rules).

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

    def _route(
        self, prepared: PreparedImage, meta: PatientMetadata, queue: list[DeploymentState] | None = None
    ) -> Prediction:
        started = time.perf_counter()
        deadline_at = time.monotonic() + self.policy.deadline_s
        queue = self._balancer.order() if queue is None else queue
        skipped: list[SkippedDeployment] = []
        failures: list[BaseException] = []
        pending: dict[Future[Call], _Launched] = {}
        launched: list[_Launched] = []
        winner: tuple[DeploymentState, Call] | None = None
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
                    others = any(_can_launch(q) for q in queue)  # a fallback, or a hedge, could follow
                    budget = left * self.policy.share if others else left
                    handle = Call()
                    st.started()
                    if others or pending or not st.keeps_deadline:
                        fut = self._pool.submit(run_call, self, st, prepared, meta, budget, parent, handle)
                    else:
                        # Nothing to fall back to or hedge with, and a call that keeps its deadline itself (or
                        # could not be stopped anyway): a worker thread would only add a hand-off.
                        fut = Future()
                        try:
                            fut.set_result(run_call(self, st, prepared, meta, budget, parent, handle))
                        except BaseException as exc:  # re-raised by fut.result(), as from a worker
                            fut.set_exception(exc)
                    fut.add_done_callback(_finished_callback(st))
                    pending[fut] = _Launched(st, handle, now, now + budget)
                    launched.append(pending[fut])
                    return True
                return False

            launch()
            while pending:
                now = time.monotonic()
                wake = min(min(c.ends for c in pending.values()), deadline_at)
                hedge_at = self._hedge_at(pending, queue, hedged)
                if hedge_at is not None:
                    wake = min(wake, hedge_at)
                # A call run on this thread is done already: no need to wait (wait() costs a lock dance per future).
                done = {f for f in pending if f.done()} or wait(
                    list(pending), timeout=max(0.0, wake - now), return_when=FIRST_COMPLETED
                ).done
                for fut in done:
                    st = pending.pop(fut).state
                    attempt = fut.result()
                    if attempt.prediction is not None and winner is None:
                        winner = (st, attempt)
                    elif attempt.error is not None:
                        failures.append(attempt.error)
                        skipped.append(
                            SkippedDeployment(st.name, failure_reason(attempt.error), describe_error(attempt.error))
                        )
                    else:  # a second good answer in the same instant: the first one won
                        skipped.append(SkippedDeployment(st.name, "hedge_lost", "answered after the winner"))
                if winner is not None:
                    break
                now = time.monotonic()
                for fut, c in list(pending.items()):
                    if (now >= c.ends or now >= deadline_at) and c.call.claim():
                        del pending[fut]  # abandoned: no retry starts; a request in flight is ignored
                        _stop(fut, c)
                        c.state.breaker.record(ok=False)
                        c.state.cut(now - c.at)
                        self.telemetry.metrics.observe(c.state.name, "deadline", now - c.at, error_class="Deadline")
                        skipped.append(
                            SkippedDeployment(c.state.name, "deadline", f"no answer within {c.ends - c.at:.2f} s")
                        )
                hedge_at = self._hedge_at(pending, queue, hedged)
                if hedge_at is not None and now >= hedge_at and launch():
                    hedged = True
                elif not pending:
                    launch()
            now = time.monotonic()
            for fut, c in pending.items():  # the losing side of a hedge, still running: its answer is ignored
                if c.call.claim():
                    c.state.cut(now - c.at)  # for the hedge delay: slower than this, by how much unknown
                    self.telemetry.metrics.observe(c.state.name, "hedge_lost", now - c.at)
                _stop(fut, c)
                skipped.append(SkippedDeployment(c.state.name, "hedge_lost", "another deployment answered first"))
            billed = self._billed(launched)
            attempts = sum(n for _, n in billed)
            latency_ms = (time.perf_counter() - started) * 1000
            span.set_attribute("derm_cloud.attempts", attempts)
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
        if self.telemetry.logs_requests:
            self.telemetry.log_request(
                {
                    "router": self.name,
                    "request_id": request_id,
                    "deployment": st.name,
                    "outcome": "ok",
                    "attempts": attempts,
                    "skipped": ",".join(f"{s.deployment}:{s.reason}" for s in skipped) or "-",
                    "hedged": hedged,
                    "ms": f"{latency_ms:.0f}",
                }
            )
        if self.shadow is not None:
            self.shadow.offer(request_id, st.name, prepared, meta, pred)
        return pred

    def _billed(self, launched: list[_Launched]) -> tuple[tuple[str, int], ...]:
        """Requests sent per deployment, in the order first called; every launched call is stopped first, so
        no retry of a call the router no longer waits for can start after it was counted."""
        billed: dict[str, int] = {}
        for c in launched:
            billed[c.state.name] = billed.get(c.state.name, 0) + c.call.stop()
        for name, n in billed.items():
            self.telemetry.metrics.bill(name, n)
        return tuple(billed.items())

    def _hedge_at(self, pending: dict[Future[Call], _Launched], queue: list[Any], hedged: bool) -> float | None:
        """When to hedge the one call in flight, or ``None`` (hedging off, already hedged, nothing to hedge to)."""
        if self.hedge is None or hedged or len(pending) != 1 or not any(_can_launch(q) for q in queue):
            return None
        c = next(iter(pending.values()))
        return c.at + c.state.hedge_delay(self.hedge)


def _stop(fut: Future[Call], c: _Launched) -> None:
    """The router no longer waits for this call: it sends no further request, and never starts if queued."""
    c.call.stop()
    fut.cancel()


def _finished_callback(st: DeploymentState) -> Callable[[Future[Call]], None]:
    return lambda _future: st.finished()


def _can_launch(st: DeploymentState) -> bool:
    return st.breaker.cooldown_remaining() <= 0
