"""Where a comparison's requests run: this process (asyncio + threads, the default) or a Ray cluster.

Backends are described by a picklable :class:`BackendRecipe` (type + options, or the address of an emulator)
and built where they are used, so a Ray worker creates its own backend and no open session or socket is ever
pickled. ``emulate = true`` starts the matching derm-cloud emulator in this process, hosting the configured
model, and points the backend at it through the real SDK.

The local executor runs every backend concurrently (one asyncio task per backend; each request in a worker
thread through :meth:`Classifier.apredict`), each backend's phases one after another: quality pass, then the
latency scenarios (see :mod:`derm_cloud.compare.scenarios`). Every result is written to the run store as it
arrives and keys already stored are skipped, which is what makes a killed run resumable.

The Ray executor distributes the quality pass (the part that grows with the dataset) over Ray actors in
shards; latency scenarios stay in the driver so that latency is measured from one place.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.compare.scenarios import TokenBucket, poisson_offsets, query_plan
from derm_cloud.compare.shared import planned_units
from derm_cloud.errors import ConfigError

if TYPE_CHECKING:
    from derm_cloud.base import Classifier
    from derm_cloud.compare.config import BackendConfig, ComparisonConfig
    from derm_cloud.compare.store import RunStore
    from derm_cloud.data import Sample
    from derm_cloud.payload import Payload

__all__ = [
    "PAYLOADS",
    "BackendRecipe",
    "BackendRuntime",
    "Job",
    "LocalExecutor",
    "PayloadCache",
    "RayExecutor",
    "prepare",
]


@dataclass(frozen=True)
class BackendRecipe:
    """How to build one backend anywhere (this process or a Ray worker); holds no open client.

    Attributes:
        name: the backend's label in the report.
        type: registry name or ``package.module:Class``.
        options: constructor keyword arguments.
        emulated: for ``emulate = true``: a picklable view of the running emulator the backend talks to
            (see :func:`derm_cloud.compare.emulation.capture`).
        use_metadata: send each image's patient metadata (the comparison's metadata mode, see
            :mod:`derm_cloud.compare.metadata_modes`); ``False`` sends none.
    """

    name: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)
    emulated: dict[str, Any] | None = None
    use_metadata: bool = True

    def create(self, emulator: Any | None = None) -> Classifier:
        """Build the backend: against the live ``emulator`` when given (this process), else from the view."""
        if self.emulated is not None:
            from derm_cloud.compare import emulation

            if emulator is not None:
                return emulation.build_local(self.type, emulator, self.options)
            return emulation.build_remote(self.emulated, self.options)
        if ":" in self.type:
            module, _, cls = self.type.partition(":")
            try:
                klass = getattr(importlib.import_module(module), cls)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(f"backend type {self.type!r} cannot be imported: {exc}") from exc
            return klass(**self.options)  # type: ignore[no-any-return]
        from derm_cloud.registry import create

        return create(self.type, **self.options)


def _resolve_model(model_dir: str) -> Path:
    """The model directory an emulator hosts (``"sklesion"`` resolves to the cache)."""
    from derm_cloud.models.cache import resolve_model_dir

    path = resolve_model_dir(model_dir)
    if not (path / "spec.json").is_file() and not (path / "labels.json").is_file():
        raise ConfigError(f"model_dir {model_dir!r} ({path}) is not a model directory (no spec.json)")
    return path


@dataclass
class BackendRuntime:
    """A backend during a run: its config, recipe, live classifier, emulator and rate limiter."""

    cfg: BackendConfig
    recipe: BackendRecipe
    classifier: Classifier
    emulator: Any | None
    bucket: TokenBucket | None
    timeout_s: float
    variant_of: str | None = None

    @property
    def name(self) -> str:
        return self.cfg.name

    def close(self) -> None:
        self.classifier.close()
        if self.emulator is not None:
            self.emulator.stop()


def prepare(cfg: BackendConfig, default_timeout: float) -> BackendRuntime:
    """Start the backend's emulator when asked and create its classifier (in this process)."""
    from derm_cloud.compare import emulation

    emulator = None
    view = None
    if cfg.emulate:
        model = _resolve_model(cfg.model_dir) if cfg.model_dir else None
        emulator = emulation.start(cfg.type, model, options=cfg.options, transport=cfg.emulator.get("transport"))
    try:
        if emulator is not None:
            delay = float(cfg.emulator.get("delay_ms", 0.0)) / 1000
            if delay:
                _inject_delay(emulator, delay)
            view = emulation.capture(cfg.type, emulator)
        recipe = BackendRecipe(cfg.name, cfg.type, dict(cfg.options), view)
        classifier = recipe.create(emulator)
    except BaseException:
        if emulator is not None:
            emulator.stop()
        raise
    bucket = TokenBucket(cfg.rate_limit, cfg.burst) if cfg.rate_limit else None
    return BackendRuntime(cfg, recipe, classifier, emulator, bucket, cfg.timeout_s or default_timeout)


def _inject_delay(emulator: Any, delay: float) -> None:
    from derm_cloud.testing.emulators.base import Fault

    emulator.inject(Fault("slow", times=10**9, delay=delay))


@dataclass
class Job:
    """Everything an executor needs for one run."""

    run_id: str
    store: RunStore
    config: ComparisonConfig
    samples: Sequence[Sample]
    runtimes: list[BackendRuntime]
    progress: Callable[[str, int], Callable[[int], None]] = lambda _name, _total: lambda _n: None


# --- requests ----------------------------------------------------------------------------------------------------


def _outcome_ok(pred: Any, latency_ms: float, t_start: float, t_end: float) -> dict[str, Any]:
    label = pred.label
    if label is None and pred.provider_scores:
        label = max(pred.provider_scores).label
    extra = json.loads(json.dumps(pred.extra, default=str))
    if len(json.dumps(extra)) > 4000:
        extra = {"truncated": True}
    return {
        "ok": True,
        "latency_ms": latency_ms,
        "t_start": t_start,
        "t_end": t_end,
        "probs": pred.vector() if pred.mapped else None,
        "label": label,
        "attempts": pred.attempts,
        "request_id": pred.request_id,
        "extra": extra,
    }


def _outcome_error(exc: BaseException, latency_ms: float, t_start: float, t_end: float) -> dict[str, Any]:
    timeout = isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and not hasattr(exc, "backend")
    return {
        "ok": False,
        "latency_ms": latency_ms,
        "t_start": t_start,
        "t_end": t_end,
        "error_type": "ClientTimeout" if timeout else type(exc).__name__,
        "error_message": "no answer within the client timeout" if timeout else str(exc),
        # An open circuit's rows keep the failure that opened it, so the report can say why (issue 11, fault 9).
        "extra": {"circuit_first_cause": cause} if (cause := getattr(exc, "first_cause", None)) else {},
    }


class PayloadCache:
    """One payload per image, shared by every backend of a run (see :func:`derm_cloud.prepare_payload`).

    Bounded, most recently used kept: backends running side by side ask for the same images at about the same
    time. An image that fell out is prepared again, deterministically, into the same bytes. Concurrent requests
    for one image wait for a single preparation; a bad image's error is shared the same way.
    """

    def __init__(self, maxsize: int = 64) -> None:
        self.maxsize = maxsize
        self.prepared = 0  # how many preparations ran (tests check that it is one per image)
        self._items: OrderedDict[tuple[str, str], Future[Payload]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sample: Sample) -> Payload:
        """The payload of ``sample``, prepared on first request."""
        key = (sample.image_id, str(sample.source))
        with self._lock:
            future = self._items.get(key)
            owner = future is None
            if future is None:
                future = self._items[key] = Future()
                self.prepared += 1
                while len(self._items) > self.maxsize:
                    self._items.popitem(last=False)
            else:
                self._items.move_to_end(key)
        if owner:
            from derm_cloud.images import prepare_payload

            try:
                future.set_result(prepare_payload(sample.read_bytes()))
            except Exception as exc:  # handed to every backend that asks for this image
                future.set_exception(exc)
        return future.result()

    def clear(self) -> None:
        """Forget every payload: a new run reads its images afresh (a file may have changed since)."""
        with self._lock:
            self._items.clear()


#: Shared by every backend of the runs in this process; cleared when a run starts.
PAYLOADS = PayloadCache()
#: The report's timer text reads this: every call gets its payload from PAYLOADS before the clock starts.
PREPARED_OUTSIDE_TIMER = True


async def call(rt: BackendRuntime, sample: Sample, clf: Classifier | None = None) -> dict[str, Any]:
    """One timed request; the image is prepared (once for all backends) before the timer starts.

    Errors, a bad image included, become outcomes.
    """
    clf = clf or rt.classifier
    metadata = sample.metadata if rt.recipe.use_metadata else None
    try:
        payload = await asyncio.to_thread(PAYLOADS.get, sample)
    except Exception as exc:  # a bad image is a result to count, like a failed request
        now = time.time()
        return _outcome_error(exc, 0.0, now, now)
    t_start, start = time.time(), time.perf_counter()
    try:
        pred = await asyncio.wait_for(clf.apredict(payload, metadata), rt.timeout_s)
    except Exception as exc:  # every failure is a result to count, not a reason to stop the run
        return _outcome_error(exc, (time.perf_counter() - start) * 1000, t_start, time.time())
    return _outcome_ok(pred, (time.perf_counter() - start) * 1000, t_start, time.time())


class LocalExecutor:
    """Run every backend concurrently in this process (asyncio + a thread pool)."""

    def run(self, job: Job) -> None:
        asyncio.run(self._main(job))

    async def _main(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        # The default pool (cores + 4 threads) would cap concurrency across backends on small machines.
        threads = sum(max(rt.cfg.max_concurrency, 16) for rt in job.runtimes) + 8
        loop.set_default_executor(ThreadPoolExecutor(max_workers=min(512, threads), thread_name_prefix="derm"))
        if job.config.backends_in_parallel:
            await asyncio.gather(*(self._backend(job, rt) for rt in job.runtimes))
        else:
            for rt in job.runtimes:
                await self._backend(job, rt)

    async def _backend(self, job: Job, rt: BackendRuntime) -> None:
        todo = planned_units(job.config, len(job.samples), rt.name) - len(job.store.done_keys(job.run_id, rt.name))
        tick = job.progress(rt.name, max(0, todo))
        sc = job.config.scenarios
        if sc["quality"].enabled:
            await self.quality(job, rt, tick)
        if sc["single_stream"].enabled:
            await self.single_stream(job, rt, tick)
        if sc["server"].enabled:
            await self.server(job, rt, tick)
        if sc["offline"].enabled:
            await self.offline(job, rt, tick)
        if sc["cold_start"].enabled:
            await self.cold_start(job, rt, tick)

    def _write(
        self, job: Job, rt: BackendRuntime, image_id: str, scenario: str, repeat: int, out: dict[str, Any]
    ) -> None:
        job.store.add_result(job.run_id, backend=rt.name, image_id=image_id, scenario=scenario, repeat=repeat, **out)

    async def _acquire(self, rt: BackendRuntime) -> None:
        if rt.bucket is not None:
            await rt.bucket.acquire()

    async def _warmup(self, job: Job, rt: BackendRuntime, plan: Sequence[int]) -> None:
        for idx in list(plan)[: job.config.scenario_defaults["warmup"]]:
            await self._acquire(rt)
            await call(rt, job.samples[idx])

    async def quality(self, job: Job, rt: BackendRuntime, tick: Callable[[int], None]) -> None:
        done = job.store.done_keys(job.run_id, rt.name, "quality")
        todo = iter([s for s in job.samples if (s.image_id, 0) not in done])
        width = min(rt.cfg.max_concurrency, job.config.scenarios["quality"]["concurrency"])

        async def worker() -> None:
            for sample in todo:  # one shared iterator: each sample is taken by exactly one worker
                await self._acquire(rt)
                self._write(job, rt, sample.image_id, "quality", 0, await call(rt, sample))
                tick(1)

        await asyncio.gather(*(worker() for _ in range(width)))

    async def single_stream(self, job: Job, rt: BackendRuntime, tick: Callable[[int], None]) -> None:
        s = job.config.scenarios["single_stream"]
        plan = query_plan(len(job.samples), s["queries"], job.config.seed, "single_stream")
        done = job.store.done_keys(job.run_id, rt.name, "single_stream")
        todo = [(q, i) for q, i in enumerate(plan) if (job.samples[i].image_id, q) not in done]
        if not todo:
            return
        await self._warmup(job, rt, plan)
        for q, i in todo:
            await self._acquire(rt)
            self._write(job, rt, job.samples[i].image_id, "single_stream", q, await call(rt, job.samples[i]))
            tick(1)

    async def server(self, job: Job, rt: BackendRuntime, tick: Callable[[int], None]) -> None:
        s = job.config.scenarios["server"]
        plan = query_plan(len(job.samples), s["queries"], job.config.seed, "server")
        offsets = poisson_offsets(len(plan), s["target_qps"], job.config.seed)
        done = job.store.done_keys(job.run_id, rt.name, "server")
        todo = [(q, i) for q, i in enumerate(plan) if (job.samples[i].image_id, q) not in done]
        if not todo:
            return
        await self._warmup(job, rt, plan)
        inflight = asyncio.Semaphore(s["max_inflight"])
        base = offsets[todo[0][0]]
        start_pc, start_wall = time.perf_counter() + 0.05, time.time() + 0.05

        async def one(q: int, i: int) -> None:
            due = start_pc + offsets[q] - base
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            async with inflight:
                await self._acquire(rt)
                out = await call(rt, job.samples[i])
            # Server latency counts from the scheduled arrival: waiting for a slot or a token is queueing.
            out["latency_ms"] = (time.perf_counter() - due) * 1000
            out["extra"] = {
                **out.get("extra", {}),
                "issue_delay_ms": (out["t_start"] - (start_wall + due - start_pc)) * 1000,
            }
            out["t_start"] = start_wall + (due - start_pc)
            self._write(job, rt, job.samples[i].image_id, "server", q, out)
            tick(1)

        await asyncio.gather(*(one(q, i) for q, i in todo))

    async def offline(self, job: Job, rt: BackendRuntime, tick: Callable[[int], None]) -> None:
        s = job.config.scenarios["offline"]
        plan = query_plan(len(job.samples), s["queries"], job.config.seed, "offline")
        warmed = False
        for c in s["concurrency"]:
            name = f"offline/c={c}"
            done = job.store.done_keys(job.run_id, rt.name, name)
            pending = [(q, i) for q, i in enumerate(plan) if (job.samples[i].image_id, q) not in done]
            if not pending:
                continue
            todo = iter(pending)
            if not warmed:
                await self._warmup(job, rt, plan)
                warmed = True

            async def worker(name: str = name, todo: Any = todo) -> None:
                for q, i in todo:
                    await self._acquire(rt)
                    self._write(job, rt, job.samples[i].image_id, name, q, await call(rt, job.samples[i]))
                    tick(1)

            await asyncio.gather(*(worker() for _ in range(c)))

    async def cold_start(self, job: Job, rt: BackendRuntime, tick: Callable[[int], None]) -> None:
        s = job.config.scenarios["cold_start"]
        plan = query_plan(len(job.samples), 1 + s["warm_queries"], job.config.seed, "cold_start")
        done = job.store.done_keys(job.run_id, rt.name, "cold_start")
        first = job.samples[plan[0]]
        for trial in range(s["trials"]):
            if (first.image_id, trial) in done:
                continue
            injected = self._inject_cold(rt, s["not_ready_calls"])
            t0 = time.perf_counter()
            try:
                clf = await asyncio.to_thread(rt.recipe.create, rt.emulator)
            except Exception as exc:
                self._write(
                    job, rt, first.image_id, "cold_start", trial, _outcome_error(exc, 0.0, time.time(), time.time())
                )
                tick(1)
                continue
            create_ms = (time.perf_counter() - t0) * 1000
            try:
                await self._acquire(rt)
                out = await call(rt, first, clf)
                warm = []
                for i in plan[1:]:
                    await self._acquire(rt)
                    w = await call(rt, job.samples[i], clf)
                    if w["ok"]:
                        warm.append(w["latency_ms"])
            finally:
                clf.close()
                self._restore_faults(rt)
            out["extra"] = {
                **out.get("extra", {}),
                "create_ms": create_ms,
                "warm_ms": warm,
                "not_ready_injected": injected,
            }
            self._write(job, rt, first.image_id, "cold_start", trial, out)
            tick(1)

    def _inject_cold(self, rt: BackendRuntime, calls: int) -> int:
        if rt.emulator is None or calls <= 0:
            return 0
        from derm_cloud.testing.emulators.base import Fault

        rt.emulator.clear_faults()
        rt.emulator.inject(Fault("not_ready", times=calls))
        delay = float(rt.cfg.emulator.get("delay_ms", 0.0)) / 1000
        if delay:
            _inject_delay(rt.emulator, delay)
        return calls

    def _restore_faults(self, rt: BackendRuntime) -> None:
        if rt.emulator is None:
            return
        rt.emulator.clear_faults()
        delay = float(rt.cfg.emulator.get("delay_ms", 0.0)) / 1000
        if delay:
            _inject_delay(rt.emulator, delay)


class ShardWorker:
    """A Ray actor body: builds its backend once from the recipe, then classifies shards of samples."""

    def __init__(self, recipe: BackendRecipe, rate: float | None, timeout_s: float) -> None:
        self.classifier = recipe.create(None)
        self.use_metadata = recipe.use_metadata
        self.gap = 1.0 / rate if rate else 0.0
        self.timeout_s = timeout_s
        self._next = 0.0

    def predict(self, samples: list[Sample]) -> list[dict[str, Any]]:
        out = []
        for sample in samples:
            if self.gap:
                # A share of the backend's rate limit per actor (token bucket of size 1).
                time.sleep(max(0.0, self._next - time.monotonic()))
                self._next = time.monotonic() + self.gap
            try:
                payload = PAYLOADS.get(sample)  # prepared before the timer, as in the local executor
            except Exception as exc:
                out.append(_outcome_error(exc, 0.0, time.time(), time.time()))
                continue
            t_start, start = time.time(), time.perf_counter()
            try:
                pred = self.classifier.predict(payload, sample.metadata if self.use_metadata else None)
            except Exception as exc:  # counted, not fatal
                out.append(_outcome_error(exc, (time.perf_counter() - start) * 1000, t_start, time.time()))
                continue
            out.append(_outcome_ok(pred, (time.perf_counter() - start) * 1000, t_start, time.time()))
        for o in out:
            # Where the request ran: lets reports (and tests) see that workers built their own backend.
            o["extra"] = {**o.get("extra", {}), "executor": "ray", "worker_pid": os.getpid()}
        return out


class RayExecutor(LocalExecutor):
    """Distribute the quality pass over Ray actors; each actor builds its own backend from the recipe.

    Args:
        address: Ray cluster address (``None``: start or join a local instance).
        actors: actors per backend.
        shard_size: images per task; results are stored per finished shard.
        init: extra ``ray.init`` keyword arguments (``num_cpus`` ...).
    """

    def __init__(
        self, address: str | None = None, actors: int = 2, shard_size: int = 32, init: dict[str, Any] | None = None
    ) -> None:
        self.address = address
        self.actors = max(1, actors)
        self.shard_size = max(1, shard_size)
        self.init = dict(init or {})

    def run(self, job: Job) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("executor = 'ray' needs Ray; run: pip install 'derm-cloud[ray]'") from exc
        started = False
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, **self.init)
            started = True
        try:
            super().run(job)
        finally:
            if started:
                ray.shutdown()

    async def quality(self, job: Job, rt: BackendRuntime, tick: Callable[[int], None]) -> None:
        import ray

        done = job.store.done_keys(job.run_id, rt.name, "quality")
        todo = [s for s in job.samples if (s.image_id, 0) not in done]
        if not todo:
            return
        rate = (rt.cfg.rate_limit / self.actors) if rt.cfg.rate_limit else None
        actor_cls: Any = ray.remote(num_cpus=1)(ShardWorker)
        actors: list[Any] = [actor_cls.remote(rt.recipe, rate, rt.timeout_s) for _ in range(self.actors)]
        shards = [todo[i : i + self.shard_size] for i in range(0, len(todo), self.shard_size)]
        pending: dict[Any, list[Sample]] = {}
        next_shard = 0
        try:
            while next_shard < len(shards) or pending:
                while next_shard < len(shards) and len(pending) < 2 * self.actors:
                    shard = shards[next_shard]
                    pending[actors[next_shard % self.actors].predict.remote(list(shard))] = shard
                    next_shard += 1
                ready, _ = await asyncio.to_thread(ray.wait, list(pending), num_returns=1)
                for ref in ready:
                    shard = pending.pop(ref)
                    for sample, out in zip(shard, ray.get(ref), strict=True):
                        self._write(job, rt, sample.image_id, "quality", 0, out)
                    tick(len(shard))
        finally:
            for actor in actors:
                ray.kill(actor)
