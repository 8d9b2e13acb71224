"""The local executor: every backend's requests from this process (asyncio + a thread pool), stored as they arrive.

A run has three phases, so that the comparison never times its own contention:

1. **Quality passes** of every backend (side by side, or one after another with `backends_in_parallel =
   false`): they measure answers, not time.
2. **Latency scenarios of real remote endpoints** (side by side when allowed): their time is mostly the
   network's and the provider's, and nothing of this machine's own computing runs meanwhile.
3. **Latency scenarios of backends that compute on this machine** (`derm_cloud.compare.run.facts.computes_here`:
   local models, emulators, any endpoint on a loopback address), one at a time: the single-stream queries
   round-robin across them, one request in flight in the whole process, so that a slow drift of the
   machine's load falls on every backend alike; then each backend's server, offline and cold-start scenarios
   alone, one backend after another.

Each phase's start and end (with the load average) is kept in `Job.windows` for the run facts. The scenarios'
plans are in `derm_cloud.compare.run.plans`. Each request runs in a worker thread through
`Classifier.apredict`. Every result is written to the run store as it arrives and keys already stored are
skipped, which is what makes a killed run resumable.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from derm_cloud.compare.run.backends import inject_delay
from derm_cloud.compare.run.calls import call, outcome_error
from derm_cloud.compare.run.facts import load_reading, runtime_computes_here
from derm_cloud.compare.run.plans import planned_units, poisson_offsets, query_plan

if TYPE_CHECKING:
    from derm_cloud.compare.run.backends import BackendRuntime
    from derm_cloud.compare.run.config import ComparisonConfig
    from derm_cloud.compare.run.store import RunStore
    from derm_cloud.data import Sample

__all__ = ["Job", "LocalExecutor"]


@dataclass
class Job:
    """Everything an executor needs for one run; `windows` collects what it timed, when, under which load."""

    run_id: str
    store: RunStore
    config: ComparisonConfig
    samples: Sequence[Sample]
    runtimes: list[BackendRuntime]
    progress: Callable[[str, int], Callable[[int], None]] = lambda _name, _total: lambda _n: None
    windows: list[dict[str, Any]] = field(default_factory=list)


Ticks = dict[str, Callable[[int], None]]


class LocalExecutor:
    """Run every backend from this process (asyncio + a thread pool), in the three phases the module describes."""

    def run(self, job: Job) -> None:
        asyncio.run(self._main(job))

    async def _main(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        # The default pool (cores + 4 threads) would cap concurrency across backends on small machines.
        threads = sum(max(rt.cfg.max_concurrency, 16) for rt in job.runtimes) + 8
        loop.set_default_executor(ThreadPoolExecutor(max_workers=min(512, threads), thread_name_prefix="derm"))
        ticks: Ticks = {}
        for rt in job.runtimes:
            todo = planned_units(job.config, len(job.samples), rt.name) - len(job.store.done_keys(job.run_id, rt.name))
            ticks[rt.name] = job.progress(rt.name, max(0, todo))
        here = [rt for rt in job.runtimes if runtime_computes_here(rt)]
        away = [rt for rt in job.runtimes if rt not in here]
        parallel = job.config.backends_in_parallel
        if job.config.scenarios["quality"].enabled:
            async with self._window(job, "quality", job.runtimes, concurrent=parallel, timed=False):
                await self._each(job.runtimes, parallel, lambda rt: self.quality(job, rt, ticks[rt.name]))
        if away:
            async with self._window(job, "latency", away, concurrent=parallel, timed=True):
                await self._each(away, parallel, lambda rt: self._latency(job, rt, ticks[rt.name]))
        if here and job.config.scenarios["single_stream"].enabled:
            async with self._window(job, "single_stream", here, concurrent=False, timed=True):
                await self.single_stream_rounds(job, here, ticks)
        alone = [name for name in ("server", "offline", "cold_start") if job.config.scenarios[name].enabled]
        for rt in here if alone else []:
            async with self._window(job, ", ".join(alone), [rt], concurrent=False, timed=True):
                await self._latency(job, rt, ticks[rt.name], single_stream=False)

    async def _each(self, runtimes: Sequence[BackendRuntime], parallel: bool, work: Callable[[Any], Any]) -> None:
        """`work(rt)` for every runtime: side by side when `parallel`, else one after another."""
        if parallel:
            await asyncio.gather(*(work(rt) for rt in runtimes))
        else:
            for rt in runtimes:
                await work(rt)

    @contextlib.asynccontextmanager
    async def _window(
        self, job: Job, phase: str, runtimes: Sequence[BackendRuntime], *, concurrent: bool, timed: bool
    ) -> AsyncIterator[None]:
        """Record a phase's backends, start and end (time and load average) in `job.windows`."""
        window: dict[str, Any] = {
            "phase": phase,
            "backends": [rt.name for rt in runtimes],
            "concurrent": concurrent and len(runtimes) > 1,
            "timed": timed,
            "start": load_reading(),
        }
        try:
            yield
        finally:
            window["end"] = load_reading()
            job.windows.append(window)

    async def _latency(
        self, job: Job, rt: BackendRuntime, tick: Callable[[int], None], single_stream: bool = True
    ) -> None:
        """One backend's latency scenarios, in order (single stream unless it ran round-robin already)."""
        sc = job.config.scenarios
        if single_stream and sc["single_stream"].enabled:
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

    async def single_stream_rounds(self, job: Job, runtimes: Sequence[BackendRuntime], ticks: Ticks) -> None:
        """Single stream for backends that compute on this machine: one request in flight, round-robin.

        Query `q` goes to every backend before query `q + 1` goes to any, starting with a different backend
        each round, so a change in the machine's load during the scenario falls on all of them alike.
        """
        s = job.config.scenarios["single_stream"]
        plan = query_plan(len(job.samples), s["queries"], job.config.seed, "single_stream")
        done = {rt.name: job.store.done_keys(job.run_id, rt.name, "single_stream") for rt in runtimes}
        keys = [(job.samples[i].image_id, q) for q, i in enumerate(plan)]
        active = [rt for rt in runtimes if any(key not in done[rt.name] for key in keys)]
        for rt in active:
            await self._warmup(job, rt, plan)
        for q, i in enumerate(plan):
            turn = q % len(active) if active else 0
            for rt in active[turn:] + active[:turn]:
                if (job.samples[i].image_id, q) in done[rt.name]:
                    continue
                await self._acquire(rt)
                self._write(job, rt, job.samples[i].image_id, "single_stream", q, await call(rt, job.samples[i]))
                ticks[rt.name](1)

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
                    job, rt, first.image_id, "cold_start", trial, outcome_error(exc, 0.0, time.time(), time.time())
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
            inject_delay(rt.emulator, delay)
        return calls

    def _restore_faults(self, rt: BackendRuntime) -> None:
        if rt.emulator is None:
            return
        rt.emulator.clear_faults()
        delay = float(rt.cfg.emulator.get("delay_ms", 0.0)) / 1000
        if delay:
            inject_delay(rt.emulator, delay)
