"""The Ray executor: the quality pass (the part that grows with the dataset) spread over Ray actors in shards.

Each actor builds its own backend from the picklable recipe (an emulated backend through the emulator's view,
`derm_cloud.compare.run.emulation`); latency scenarios stay in the driver so that latency is measured from one
place.

Memory stays flat in the number of images: the driver takes the samples one shard at a time (a
`derm_cloud.compare.run.manifest_samples.ManifestSamples` parses only those rows of a CSV manifest), asks the
store which of them are done (one query a shard), and keeps at most `max_inflight` shards in flight; a shard
carries image references, never image bytes (the worker reads the file), and its results are written to the
store as soon as it finishes, in whatever order shards finish. A worker process that dies mid-shard (killed,
out of memory, a lost node) is restarted by Ray and the shard is sent again, up to `retries` times; after that
its images are stored as `WorkerLost` failures, which the next run of the same config sends again. Nothing
stored is ever sent twice, so a killed driver reruns from where the store stands.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from derm_cloud.compare.run.calls import PAYLOADS, outcome_error, outcome_ok
from derm_cloud.compare.run.local_executor import Job, LocalExecutor
from derm_cloud.errors import ConfigError, DermCloudError

if TYPE_CHECKING:
    from derm_cloud.compare.run.backends import BackendRecipe, BackendRuntime
    from derm_cloud.data import Sample

__all__ = ["RayExecutor", "ShardWorker"]

# Seconds to wait for all of a backend's actors before the first shard; later starters join as they come up.
_START_GRACE_S = 60.0


class ShardWorker:
    """A Ray actor body: builds its backend once from the recipe, then classifies shards of samples.

    Args:
        recipe: how to build the backend (nothing with an open connection is pickled).
        rate: this actor's share of the backend's rate limit (requests a second), or `None`.
        on_sample: called with each sample just before it is classified, in the worker (tests use it to kill
            the worker mid-shard, see `derm_cloud.testing.worker_faults`).
    """

    def __init__(
        self, recipe: BackendRecipe, rate: float | None, on_sample: Callable[[Sample], None] | None = None
    ) -> None:
        self.use_metadata = recipe.use_metadata
        self.gap = 1.0 / rate if rate else 0.0
        self.on_sample = on_sample
        self._next = 0.0
        self.error: Exception | None = None
        try:
            self.classifier = recipe.create(None)
        except Exception as exc:  # raised by ready(): the driver reports the cause, not a dead actor
            self.error = exc

    def ready(self) -> int:
        """The worker's process id, once its backend is built (raises what building it raised)."""
        if self.error is not None:
            raise self.error
        return os.getpid()

    def predict(self, samples: list[Sample]) -> list[tuple[str, dict[str, Any]]]:
        """Classify a shard: `(image_id, outcome)` pairs, a failure being an outcome too."""
        if self.error is not None:
            raise self.error
        out = []
        for sample in samples:
            if self.on_sample is not None:
                self.on_sample(sample)
            if self.gap:
                # A share of the backend's rate limit per actor (token bucket of size 1).
                time.sleep(max(0.0, self._next - time.monotonic()))
                self._next = time.monotonic() + self.gap
            try:
                payload = PAYLOADS.get(sample)  # read here, from the path: no image bytes through the driver
            except Exception as exc:
                out.append((sample.image_id, outcome_error(exc, 0.0, time.time(), time.time())))
                continue
            t_start, start = time.time(), time.perf_counter()
            try:
                pred = self.classifier.predict(payload, sample.metadata if self.use_metadata else None)
            except Exception as exc:  # counted, not fatal
                outcome = outcome_error(exc, (time.perf_counter() - start) * 1000, t_start, time.time())
            else:
                outcome = outcome_ok(pred, (time.perf_counter() - start) * 1000, t_start, time.time())
            out.append((sample.image_id, outcome))
        for _, o in out:
            # Where the request ran: lets reports (and tests) see that workers built their own backend.
            o["extra"] = {**o.get("extra", {}), "executor": "ray", "worker_pid": os.getpid()}
        return out


class RayExecutor(LocalExecutor):
    """Distribute the quality pass over Ray actors; each actor builds its own backend from the recipe.

    Args:
        address: Ray cluster address: `None` starts a local instance (or uses the one this process has
            started), `"auto"` joins the cluster this machine belongs to, `"ray://head:10001"` connects to a
            remote cluster through Ray Client.
        actors: actors per backend.
        shard_size: images per task; results are stored per finished shard.
        init: extra `ray.init` keyword arguments (`num_cpus`, `runtime_env` ...), and the `[ray]` keys
            `max_inflight` (shards in flight per backend, default two per actor), `retries` (how often a shard
            whose worker died is sent again, default 3), `actor_cpus` (CPUs each actor reserves, default 1)
            and `start_timeout_s` (how long to wait for a first actor; default: as long as Ray takes to find it a
            CPU).
        on_sample: run in the worker before each sample (fault injection in tests).
    """

    def __init__(
        self,
        address: str | None = None,
        actors: int = 2,
        shard_size: int = 32,
        init: dict[str, Any] | None = None,
        on_sample: Callable[[Sample], None] | None = None,
    ) -> None:
        self.address = address or None
        self.actors = max(1, int(actors))
        self.shard_size = max(1, int(shard_size))
        options = dict(init or {})
        self.max_inflight = max(1, int(options.pop("max_inflight", 2 * self.actors)))
        self.retries = max(0, int(options.pop("retries", 3)))
        self.actor_cpus = float(options.pop("actor_cpus", 1))
        timeout = options.pop("start_timeout_s", None)
        self.start_timeout_s = float(timeout) if timeout is not None else None
        self.init = options
        self.on_sample = on_sample

    def run(self, job: Job) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("executor = 'ray' needs Ray; run: pip install 'derm-cloud[ray]'") from exc
        started = False
        if not ray.is_initialized():
            self._connect(ray)
            started = True
        try:
            super().run(job)
        finally:
            if started:
                ray.shutdown()

    def _connect(self, ray: Any) -> None:
        if self.address is None:
            ray.init(include_dashboard=False, log_to_driver=False, **self.init)
            return
        clash = sorted({"num_cpus", "num_gpus", "resources"} & set(self.init))
        if clash:
            raise ConfigError(
                f"[ray] {', '.join(clash)} size a local Ray instance, but address = {self.address!r} joins a "
                "cluster that has its own resources: remove them from [ray]"
            )
        try:
            ray.init(address=self.address, **self.init)
        except (ConnectionError, TimeoutError) as exc:
            raise ConfigError(
                f"cannot reach the Ray cluster at address = {self.address!r} ({exc}); start it (`ray start "
                "--head`), give the head's address (`ray://<head>:10001` for Ray Client, `auto` on a cluster "
                "node), or remove [ray] address to run on a local Ray instance"
            ) from exc

    def _shards(self, job: Job, rt: BackendRuntime) -> Iterator[list[Sample]]:
        """The samples still to do, one shard at a time: read lazily, checked against the store per shard."""
        for start in range(0, len(job.samples), self.shard_size):
            chunk = list(job.samples[start : start + self.shard_size])
            stored = job.store.stored_ids(job.run_id, rt.name, "quality", [s.image_id for s in chunk])
            todo = [s for s in chunk if s.image_id not in stored]
            if todo:
                yield todo

    def _start_actors(self, rt: BackendRuntime) -> list[Any]:
        import ray

        rate = (rt.cfg.rate_limit / self.actors) if rt.cfg.rate_limit else None
        # max_restarts=-1: a worker killed mid-shard (or its node lost) comes back; each shard is sent again up
        # to `retries` times. A backend that cannot be built is no crash: ready() raises its error.
        actor_cls: Any = ray.remote(num_cpus=self.actor_cpus, max_restarts=-1, max_task_retries=self.retries)(
            ShardWorker
        )
        return [actor_cls.remote(rt.recipe, rate, self.on_sample) for _ in range(self.actors)]

    def _ready(self, ray: Any, ref: Any, rt: BackendRuntime) -> bool:
        """Whether an actor's backend is built; raises the error that building it raised."""
        try:
            ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, DermCloudError) else None
            if cause is None:
                raise ConfigError(f"backend {rt.name!r} could not be built in a Ray worker: {exc.cause}") from exc
            cause.add_note(f"(raised while building backend {rt.name!r} in a Ray worker)")
            raise cause from None
        except ray.exceptions.RayActorError:
            return False  # died before it was ready, as often as it may: the other actors carry on
        return True

    def _stop(self, actors: list[Any]) -> None:
        import ray

        for actor in actors:
            ray.kill(actor)

    async def quality(self, job: Job, rt: BackendRuntime, tick: Callable[[int], None]) -> None:
        import ray

        shards = self._shards(job, rt)
        shard = next(shards, None)  # nothing left to do: no actor is started
        if shard is None:
            return
        actors = self._start_actors(rt)
        # Shards go only to actors that are up: an actor still waiting for a CPU (another backend's actors hold
        # them, or more actors than CPUs) takes none, so two backends side by side never wait on each other.
        starting = {actors[k].ready.remote(): k for k in range(len(actors))}
        usable: list[int] = []
        # ref -> (actor index, shard); at most max_inflight entries, so memory does not grow with the dataset.
        pending: dict[Any, tuple[int, list[Sample]]] = {}
        load = [0] * len(actors)
        per_actor = -(-self.max_inflight // len(actors))  # no actor hoards the shards in flight
        since = time.monotonic()
        try:
            # Give every actor a moment to come up (starting is slow), so the first shards spread over all.
            while starting and time.monotonic() - since < _START_GRACE_S:
                wait = _START_GRACE_S - (time.monotonic() - since)
                up, _ = await asyncio.to_thread(ray.wait, list(starting), num_returns=1, timeout=max(0.0, wait))
                for ref in up:
                    k = starting.pop(ref)
                    if self._ready(ray, ref, rt):
                        usable.append(k)
            while shard is not None or pending:
                while shard is not None and usable and len(pending) < self.max_inflight:
                    k = min(usable, key=load.__getitem__)  # the least busy actor: a slow one holds up no other
                    if load[k] >= per_actor:
                        break
                    pending[actors[k].predict.remote(shard)] = (k, shard)
                    load[k] += 1
                    shard = next(shards, None)
                if not pending and not starting:
                    raise ConfigError(f"backend {rt.name!r}: no Ray actor could start; see the Ray logs of the cluster")
                timeout = None if pending or self.start_timeout_s is None else 1.0
                ready, _ = await asyncio.to_thread(ray.wait, [*pending, *starting], num_returns=1, timeout=timeout)
                if not ready and self.start_timeout_s is not None and time.monotonic() - since > self.start_timeout_s:
                    resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
                    raise ConfigError(
                        f"backend {rt.name!r}: no Ray actor of {self.actor_cpus:g} CPU started within "
                        f"{self.start_timeout_s:g} s (cluster resources: {resources}); lower [ray] "
                        "actor_cpus, free CPUs for it, or raise start_timeout_s"
                    )
                for ref in ready:
                    if ref in starting:
                        k = starting.pop(ref)
                        if self._ready(ray, ref, rt):
                            usable.append(k)
                        continue
                    k, done = pending.pop(ref)
                    load[k] -= 1
                    for image_id, out in self._collect(ray, ref, done):
                        self._write(job, rt, image_id, "quality", 0, out)
                    tick(len(done))
        finally:
            self._stop(actors)

    def _collect(self, ray: Any, ref: Any, shard: list[Sample]) -> list[tuple[str, dict[str, Any]]]:
        """A finished shard's outcomes; when its worker died on every try, a `WorkerLost` failure per image."""
        try:
            return list(ray.get(ref))
        except ray.exceptions.RayActorError as exc:
            now = time.time()
            message = (
                f"the Ray worker classifying this image's shard ({shard[0].image_id} .. {shard[-1].image_id}) died "
                f"{self.retries + 1} times ({type(exc).__name__}); rerun the same config to send it again"
            )
            lost = {"ok": False, "latency_ms": None, "t_start": now, "t_end": now, "error_type": "WorkerLost"}
            return [(s.image_id, {**lost, "error_message": message, "extra": {"executor": "ray"}}) for s in shard]
