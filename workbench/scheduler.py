"""Run many episodes at once so that the backend sees large batches.

Each episode is an asyncio coroutine. When it needs generations it awaits
`BatchScheduler.submit(backend_name, requests)` (or several `enqueue` futures at once), which
only queues the requests. The driver
(`run_all`) lets every live episode run until each one is either finished or waiting on the
scheduler, then sends everything queued for a backend to it in one `generate` call, resolves
the waiting episodes, and repeats. So the explorers of one round, the samples of a vote, and the
same phase of 64 different episodes all reach the model together, whatever the protocol.

Model calls are synchronous and happen in the driver; protocol code never blocks the loop.
"""

from __future__ import annotations

import asyncio
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
    """What the backends received: one entry per generate() call."""

    batch_sizes: list[int] = field(default_factory=list)  # requests per call
    wall_s: list[float] = field(default_factory=list)


class BatchScheduler:
    def __init__(self, backends: dict[str, Backend]):
        self.backends = backends
        self.queue: dict[str, list[_Pending]] = defaultdict(list)
        self.waiting: dict[asyncio.Task, int] = defaultdict(int)  # live task -> unresolved submits
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

    def flush(self) -> None:
        """Send everything queued to its backend, one generate() call per backend."""
        import time

        queue, self.queue = self.queue, defaultdict(list)
        for name, pending in queue.items():
            flat = [r for p in pending for r in p.requests]
            t0 = time.perf_counter()
            try:
                gens = self.backends[name].generate(flat)
            except Exception as e:  # the backend failed: every episode in this batch gets the error
                for p in pending:
                    if not p.future.done():
                        p.future.set_exception(e)
                continue
            self.stats.batch_sizes.append(len(flat))
            self.stats.wall_s.append(time.perf_counter() - t0)
            i = 0
            for p in pending:
                k = sum(r.sampling.n for r in p.requests)
                if not p.future.done():
                    p.future.set_result(gens[i : i + k])
                i += k

    def has_queued(self) -> bool:
        return any(self.queue.values())

    async def settle(self, live: set[asyncio.Task]) -> None:
        """Yield until every live task is done or waiting on this scheduler.

        A task awaiting something else (a timer, an HTTP call) is given time to progress; after
        a bounded number of idle turns the driver moves on so nothing can hang here.
        """
        for _ in range(1000):
            await asyncio.sleep(0)
            if all(t.done() or self.waiting.get(t, 0) > 0 for t in live):
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
        if scheduler.has_queued():
            scheduler.flush()
