"""Run many episodes at once so that the backend sees large batches.

Each episode is an asyncio coroutine. When it needs generations it awaits
`BatchScheduler.submit(backend_name, requests)` (or several `enqueue` futures at once), which
only queues the requests. The driver (`run_all`) lets every live episode run until each one is
either finished or waiting on the scheduler, then moves the model work forward (`flush`) and
repeats. So the explorers of one round, the samples of a vote, and the same phase of 64
different episodes all reach the model together, whatever the protocol.

How the work moves forward depends on the backend:
- a **streaming** backend (one with ``open``/``step``/``busy``: the transformers backend) keeps one
  running decode. Each turn, what was queued is admitted into it, it takes one decode step, and
  every request group whose rows have all finished is handed back at once. An episode's next
  phase therefore joins the running batch while other episodes are still decoding: no phase
  barrier, no batch left decoding its longest completion alone while requests wait.
- any other backend (vLLM, an HTTP API, a tool, a scripted test backend) gets everything queued
  in one ``generate`` call, and the waiting episodes are resolved when it returns.

Model calls are synchronous and happen in the driver; protocol code never blocks the loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from workbench.models.base import Backend, Generation, Request


@dataclass
class _Pending:
    requests: list[Request]
    future: asyncio.Future


@dataclass
class BatchStats:
    """What the backends received: one entry per generate() call, or per admission of queued
    requests into a streaming backend's running decode."""

    batch_sizes: list[int] = field(default_factory=list)  # requests per call / admission
    wall_s: list[float] = field(default_factory=list)
    decode_steps: int = 0  # streaming backends: decode steps taken
    rows_per_step: list[int] = field(default_factory=list)  # streaming: rows in the batch after each step


def streams(backend: Backend) -> bool:
    """Whether ``backend`` keeps a running decode that requests can join (see the module doc)."""
    return all(hasattr(backend, a) for a in ("open", "step", "busy"))


class BatchScheduler:
    def __init__(self, backends: dict[str, Backend]):
        self.backends = backends
        self.queue: dict[str, list[_Pending]] = defaultdict(list)
        self.waiting: dict[asyncio.Task, int] = defaultdict(int)  # live task -> unresolved submits
        # streaming backends: the request groups admitted into their running decode, with tickets
        self.inflight: dict[str, list[tuple[_Pending, Any]]] = defaultdict(list)
        self.parked: dict[asyncio.Task, asyncio.Future] = {}  # task -> the outside work it awaits
        self.stats = BatchStats()

    def enqueue(self, backend: str, requests: list[Request]) -> asyncio.Future:
        """Queue ``requests`` for ``backend``; the future resolves to their generations.

        The calling task counts as waiting until the future is resolved, so several futures
        (one per backend) can be awaited together with ``asyncio.gather``.
        """
        if backend not in self.backends:
            raise KeyError(f"no backend named '{backend}' (have: {', '.join(self.backends)})")
        owner = asyncio.current_task()
        fut = asyncio.get_running_loop().create_future()
        self.queue[backend].append(_Pending(list(requests), fut))
        self.waiting[owner] += 1

        def resolved(_: asyncio.Future) -> None:
            self.waiting[owner] -= 1
            if self.waiting[owner] <= 0:
                del self.waiting[owner]

        fut.add_done_callback(resolved)
        return fut

    async def submit(self, backend: str, requests: list[Request]) -> list[Generation]:
        return await self.enqueue(backend, requests)

    async def external(self, work: Awaitable[Any]) -> Any:
        """Await ``work`` done outside the event loop (a check on the verifier pool) with the
        calling task counted as parked: the driver does not wait for it before moving the model
        work forward, and when nothing else can run it sleeps until some parked work is done
        instead of polling."""
        fut = asyncio.ensure_future(work)
        owner = asyncio.current_task()
        self.parked[owner] = fut
        try:
            return await fut
        finally:
            self.parked.pop(owner, None)

    async def idle(self, live: set[asyncio.Task]) -> None:
        """Nothing queued and nothing decoding: sleep until a parked task's outside work is done
        (or any live task ends)."""
        futs = {f for t, f in self.parked.items() if t in live and not f.done()}
        if futs:
            await asyncio.wait(futs | {t for t in live if not t.done()}, return_when=asyncio.FIRST_COMPLETED)

    def flush(self) -> None:
        """Move the model work forward once: a streaming backend admits what is queued and takes
        one decode step; any other backend gets everything queued in one generate() call."""
        queue, self.queue = self.queue, defaultdict(list)
        for name, pending in queue.items():
            if streams(self.backends[name]):
                self._admit(name, pending)
            else:
                self._generate(name, pending)
        for name in [n for n, items in self.inflight.items() if items]:
            self._advance(name)

    def _generate(self, name: str, pending: list[_Pending]) -> None:
        flat = [r for p in pending for r in p.requests]
        t0 = time.perf_counter()
        try:
            gens = self.backends[name].generate(flat)
        except Exception as e:  # the backend failed: every episode in this batch gets the error
            for p in pending:
                if not p.future.done():
                    p.future.set_exception(e)
            return
        self.stats.batch_sizes.append(len(flat))
        self.stats.wall_s.append(time.perf_counter() - t0)
        i = 0
        for p in pending:
            k = sum(r.sampling.n for r in p.requests)
            if not p.future.done():
                p.future.set_result(gens[i : i + k])
            i += k

    def _admit(self, name: str, pending: list[_Pending]) -> None:
        backend = self.backends[name]
        for p in pending:
            try:
                self.inflight[name].append((p, backend.open(p.requests)))
            except Exception as e:  # e.g. a request the backend refuses outright: this episode only
                if not p.future.done():
                    p.future.set_exception(e)
        self.stats.batch_sizes.append(sum(len(p.requests) for p in pending))

    def _advance(self, name: str) -> None:
        """One decode step of a streaming backend, then hand back every group that finished."""
        backend, items = self.backends[name], self.inflight[name]
        if any(not t.done for _, t in items) and backend.busy:
            t0 = time.perf_counter()
            try:
                backend.step()
            except Exception as e:  # the decode failed (its rows are marked failed): their episodes get it
                for p, t in items:
                    if not t.done and not p.future.done():
                        p.future.set_exception(e)
                self.inflight[name] = [(p, t) for p, t in items if t.done]
            self.stats.wall_s.append(time.perf_counter() - t0)
            self.stats.decode_steps += 1
            self.stats.rows_per_step.append(getattr(backend, "rows_decoding", 0))
        still = []
        for p, t in self.inflight[name]:
            if not t.done:
                still.append((p, t))
            elif not p.future.done():
                p.future.set_result(t.result())
        if still and not backend.busy:  # cannot happen with a backend that keeps its contract
            raise RuntimeError(f"backend '{name}' went idle with {len(still)} request group(s) unfinished")
        self.inflight[name] = still

    def has_queued(self) -> bool:
        return any(self.queue.values())

    def has_work(self) -> bool:
        """Requests are queued, or a streaming backend is still decoding some."""
        return self.has_queued() or any(self.inflight.values())

    async def settle(self, live: set[asyncio.Task]) -> None:
        """Yield until every live task is done or waiting on this scheduler.

        A task parked on outside work (`external`) counts as settled. A task awaiting anything else
        (a timer, an HTTP call) is given time to progress; after a bounded number of idle turns
        the driver moves on so nothing can hang here. While a streaming backend has rows in flight, the driver moves on
        as soon as a few turns change nothing: the decode must not wait for a slow verifier.
        """
        in_flight = any(self.inflight.values())
        last, unchanged = -1, 0
        for _ in range(1000):
            await asyncio.sleep(0)
            settled = sum(1 for t in live if t.done() or self.waiting.get(t, 0) > 0 or t in self.parked)
            if settled == len(live):
                return
            unchanged = unchanged + 1 if settled == last else 0
            last = settled
            if in_flight and unchanged >= 4:
                return
        await asyncio.sleep(0.001)


def run_sync(coro: Awaitable[Any]) -> Any:
    """``asyncio.run`` that also works where an event loop is already running (Jupyter, Gradio):
    there the coroutine runs to completion on a worker thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def run_all(
    jobs: list[Callable[[], Awaitable[Any]]],
    scheduler: BatchScheduler,
    max_in_flight: int = 256,
    on_done: Callable[[int, Any, BaseException | None], None] | None = None,
) -> None:
    """Run ``jobs`` (coroutine factories) with at most ``max_in_flight`` live at once.

    ``on_done(index, result, error)`` is called as each finishes (error is the exception an
    episode raised, if any: one failing episode does not stop the others).
    """
    pending = deque(enumerate(jobs))
    live: dict[asyncio.Task, int] = {}
    while pending or live:
        while pending and len(live) < max_in_flight:
            i, job = pending.popleft()
            live[asyncio.ensure_future(job())] = i
        await scheduler.settle(set(live))
        for task in [t for t in live if t.done()]:
            i = live.pop(task)
            if on_done is not None:
                err = task.exception()
                on_done(i, None if err else task.result(), err)
        if scheduler.has_work():
            scheduler.flush()
        elif live:
            await scheduler.idle(set(live))
