"""The Ray executor: the quality pass (the part that grows with the dataset) spread over Ray actors in shards.

Each actor builds its own backend from the picklable recipe (an emulated backend through the emulator's view,
`derm_cloud.compare.run.emulation`); latency scenarios stay in the driver so that latency is measured from one
place.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from derm_cloud.compare.run.calls import PAYLOADS, outcome_error, outcome_ok
from derm_cloud.compare.run.local_executor import Job, LocalExecutor
from derm_cloud.errors import ConfigError

if TYPE_CHECKING:
    from derm_cloud.compare.run.backends import BackendRecipe, BackendRuntime
    from derm_cloud.data import Sample

__all__ = ["RayExecutor", "ShardWorker"]


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
                out.append(outcome_error(exc, 0.0, time.time(), time.time()))
                continue
            t_start, start = time.time(), time.perf_counter()
            try:
                pred = self.classifier.predict(payload, sample.metadata if self.use_metadata else None)
            except Exception as exc:  # counted, not fatal
                out.append(outcome_error(exc, (time.perf_counter() - start) * 1000, t_start, time.time()))
                continue
            out.append(outcome_ok(pred, (time.perf_counter() - start) * 1000, t_start, time.time()))
        for o in out:
            # Where the request ran: lets reports (and tests) see that workers built their own backend.
            o["extra"] = {**o.get("extra", {}), "executor": "ray", "worker_pid": os.getpid()}
        return out


class RayExecutor(LocalExecutor):
    """Distribute the quality pass over Ray actors; each actor builds its own backend from the recipe.

    Args:
        address: Ray cluster address (`None`: start or join a local instance).
        actors: actors per backend.
        shard_size: images per task; results are stored per finished shard.
        init: extra `ray.init` keyword arguments (`num_cpus` ...).
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
