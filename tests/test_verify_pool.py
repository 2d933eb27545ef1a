"""Slow verification off the event loop (workbench.tasks.verify.verifier_pool, EpisodeContext.score).

Checks of a slow verifier kind (code: the sandbox; math: math-verify's helper) run on a thread
pool while the other episodes keep generating. What must not change: the verdicts, events and
meta of an episode (the same checks in the same order as on the loop, `WORKBENCH_VERIFY_WORKERS=0`),
an exception in a verifier is a counted outcome, and the episode's verification budget applies on
the worker thread. Ordering is asserted by events, never by wall-clock time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading

import pytest

from workbench.config import ConfigError
from workbench.evaluate import ProtocolConfig, run_episodes
from workbench.models.scripted import ScriptedBackend
from workbench.protocols.base import Agent, Call, EpisodeContext, Team, play
from workbench.scheduler import BatchScheduler, run_all
from workbench.tasks import Task
from workbench.tasks import verify as verify_mod
from workbench.tasks.verify import (
    VERIFIERS,
    Verifier,
    budget_left,
    math_equal,
    safe_extract,
    verifier_pool,
    verify_workers,
)

FENCE = "```"


@pytest.fixture
def sandboxed():
    """Skip where no OS-level sandbox works (a code check would only report that)."""
    from workbench.tasks.sandbox import sandbox_mode

    if sandbox_mode() == "none":
        pytest.skip("no OS-level sandbox on this machine (bubblewrap or unshare)")


def he_task() -> Task:
    """HumanEval/0 with a 1 s sandbox limit, so that the looping answer times out quickly."""
    from workbench.tasks.humaneval import problems, task_from_problem

    task = task_from_problem(problems()[0], "test")
    return dataclasses.replace(task, meta={**task.meta, "timeout_s": 1.0})


def code_replies(task: Task) -> list[str]:
    """Right, wrong, crashing, looping (a sandbox timeout), no code at all (a format failure)."""
    sig = task.meta["prompt"]

    def block(body: str) -> str:
        return f"Here it is:\n{FENCE}python\n{sig}{body}\n{FENCE}\n"

    return [
        block("    return False\n"),  # wrong
        f"{FENCE}python\n{task.answer}\n{FENCE}",  # right (the canonical completion)
        block("    raise RuntimeError('crash')\n"),  # crash
        block("    while True:\n        pass\n"),  # timeout
        block("    return False\n"),  # wrong again: a majority for vote
        "I cannot write this function.",  # no code
    ]


def cycling(replies: list[str]) -> ScriptedBackend:
    """Replies in turn, in the order the backend receives requests (one episode at a time)."""
    turn = itertools.cycle(replies)
    return ScriptedBackend(lambda req, j: next(turn))


def comparable(ep) -> dict:
    """An episode without its clock readings (timestamps, wall time, latencies)."""
    d = ep.to_dict()
    d["events"] = [{k: v for k, v in e.items() if k not in ("ts", "latency_s")} for e in d["events"]]
    d["usage"] = {k: v for k, v in d["usage"].items() if k != "wall_s"}
    return d


def run_code_episodes(protocol: ProtocolConfig, tasks: list[Task], workers: int, monkeypatch) -> list[dict]:
    from workbench.tasks.code import _cached_check

    monkeypatch.setenv("WORKBENCH_VERIFY_WORKERS", str(workers))
    _cached_check.cache_clear()  # every run executes its programs in the sandbox again
    eps, errors, _ = run_episodes(tasks, protocol, cycling(code_replies(tasks[0])), max_in_flight=1)
    assert errors == []
    return [comparable(e) for e in sorted(eps, key=lambda e: e.index)]


# ---------------------------------------------------------------------------------------------
# (a) the same verdicts as on the event loop
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "protocol",
    [
        ProtocolConfig("vote", {"n": 5}),
        ProtocolConfig("leader", {"peers": 2, "rounds": 2}),  # verdicts during the run (round summaries)
        ProtocolConfig("maestro", {"explorers": 2, "samples": 2, "rounds": 1}),  # slates' verdicts
    ],
    ids=lambda p: p.name,
)
def test_pool_verdicts_equal_the_inline_ones(protocol, sandboxed, monkeypatch):
    task = he_task()
    broken = dataclasses.replace(task, id="humaneval-broken", meta={**task.meta, "kind": "bogus"})
    inline = run_code_episodes(protocol, [task, broken], 0, monkeypatch)
    pooled = run_code_episodes(protocol, [task, broken], 2, monkeypatch)
    assert pooled == inline
    ep, bad = pooled
    verdicts = {m["extracted"]: m["correct"] for m in ep["messages"] if m["extracted"] is not None}
    right = safe_extract(task, code_replies(task)[1])[0]
    assert verdicts.get(right, True) is True  # the right program passed wherever it was answered
    assert len(verdicts) >= 2 and not any(v for a, v in verdicts.items() if a != right)  # no other did
    # a task whose tests cannot run is a counted verifier error, not a crashed episode
    errors = [e for e in bad["events"] if e["type"] == "verifier_error"]
    assert errors and all(e["error"].startswith("ValueError: code task kind must be") for e in errors)
    assert bad["correct"] is False and bad["meta"]["verifier_errors"] == len(errors)


@pytest.mark.timeout(120)
def test_pool_scoring_equals_finish_outside_play(sandboxed, monkeypatch):
    """`finish` outside `play` (a training sample turned into an episode) checks at once; under
    `play` the same episode is checked on the pool: the same episode either way."""
    from workbench.tasks.code import _cached_check

    task = he_task()
    replies = code_replies(task)
    agent = Agent("agent")

    async def protocol(task, team, cfg, ctx):
        msgs = await ctx.ask(
            [Call(agent, [{"role": "user", "content": "q"}], f"agent-{i}") for i in range(6)]
        )
        ctx.record_pool(0, msgs, [f"agent-{i}" for i in range(6)], msgs[1], "model")
        ctx.finish(msgs[3].extracted, note="x")  # the looping program is the final answer

    def episode(deferred: bool) -> dict:
        _cached_check.cache_clear()
        sched = BatchScheduler({"default": cycling(replies)})
        out = []

        async def job():
            ctx = EpisodeContext(task, "custom", sched)
            if deferred:
                return await play(protocol, task, Team(), None, ctx)
            await protocol(task, Team(), None, ctx)  # finish checked everything inline
            return ctx.episode

        asyncio.run(run_all([job], sched, 1, lambda i, r, e: out.append((r, e))))
        ((ep, err),) = out
        assert err is None
        return comparable(ep)

    monkeypatch.setenv("WORKBENCH_VERIFY_WORKERS", "2")
    pooled, inline = episode(True), episode(False)
    assert pooled == inline
    assert pooled["correct"] is False and pooled["pools"][0]["correct"] is True
    assert [m["correct"] for m in pooled["messages"]] == [False, True, False, False, False, None]


# ---------------------------------------------------------------------------------------------
# (b) other episodes generate while one episode's slow check runs
# ---------------------------------------------------------------------------------------------


def overlap_run(monkeypatch, workers: int, wait_s: float) -> tuple[list[str], dict]:
    """Episode "slow" (one round, a blocking check) and episode "fast" (three rounds) run together.
    The slow check waits until the backend has received the fast episode's third round (or
    ``wait_s``, so that the inline path, which blocks the loop, cannot hang the test)."""
    monkeypatch.setenv("WORKBENCH_VERIFY_WORKERS", str(workers))
    log: list[str] = []
    started, release = threading.Event(), threading.Event()
    released: list[bool] = []

    def blocking_check(answer, task):
        log.append("check started")
        started.set()
        released.append(release.wait(wait_s))
        log.append("check ended")
        return released[-1]

    monkeypatch.setitem(
        VERIFIERS, "blocking", Verifier(lambda text, task: text.strip(), blocking_check, slow=True)
    )

    def reply(req, j):
        text = req.messages[-1]["content"]
        if text in ("fast round 1", "fast round 2"):
            started.wait(wait_s)  # the slow episode's check may still be starting on its thread
        log.append(f"generate {text}")
        if text == "fast round 2":
            release.set()
        return "Answer: 7"

    sched = BatchScheduler({"default": ScriptedBackend(reply)})
    tasks = [
        Task("slow", "q", "Answer: 7", "blocking", {"rounds": 1}),
        Task("fast", "q", "7", "numeric", {"rounds": 3}),
    ]
    agent = Agent("agent")

    async def rounds(task, team, cfg, ctx):
        for r in range(task.meta["rounds"]):
            (msg,) = await ctx.ask(
                [Call(agent, [{"role": "user", "content": f"{task.id} round {r}"}], "agent", round=r)]
            )
        ctx.finish(msg.extracted)

    episodes = {}

    def job(task):
        async def go():
            return await play(rounds, task, Team(), None, EpisodeContext(task, "rounds", sched))

        return go

    def done(i, ep, err):
        assert err is None
        episodes[ep.task_id] = ep

    asyncio.run(run_all([job(t) for t in tasks], sched, 8, done))
    return log, {"released": released, **episodes}


@pytest.mark.timeout(120)
def test_generation_requests_reach_the_backend_while_a_slow_check_runs(monkeypatch):
    log, out = overlap_run(monkeypatch, workers=2, wait_s=60)
    started, ended = log.index("check started"), log.index("check ended")
    assert log.index("generate slow round 0") < started
    assert started < log.index("generate fast round 1") < ended  # the fast episode went on meanwhile
    assert started < log.index("generate fast round 2") < ended
    assert out["released"] == [True]  # released by the fast episode's request, not by the time limit
    assert out["slow"].correct and out["fast"].correct


@pytest.mark.timeout(120)
def test_on_the_event_loop_a_slow_check_holds_every_episode(monkeypatch):
    """The contrast (WORKBENCH_VERIFY_WORKERS=0, the old behaviour): the check blocks the loop, so
    the fast episode's next request reaches the backend only after the check gave up."""
    log, out = overlap_run(monkeypatch, workers=0, wait_s=0.5)
    assert log.index("check ended") < log.index("generate fast round 1")
    assert out["released"] == [False] and not out["slow"].correct and out["fast"].correct


# ---------------------------------------------------------------------------------------------
# (c) an exception in a verifier is a counted outcome
# ---------------------------------------------------------------------------------------------


def play_all(tasks: list[Task], run, backend) -> list[tuple]:
    """``(episode, error)`` per task: protocol coroutine ``run`` played on each, all in flight."""
    sched = BatchScheduler({"default": backend})
    out = {}

    def job(i: int):
        async def go():
            return await play(run, tasks[i], Team(), None, EpisodeContext(tasks[i], "custom", sched, index=i))

        return go

    asyncio.run(
        run_all([job(i) for i in range(len(tasks))], sched, 8, lambda i, r, e: out.update({i: (r, e)}))
    )
    return [out[i] for i in range(len(tasks))]


async def two_samples(task, team, cfg, ctx):
    """Two generations; the first one's answer is final."""
    msgs = await ctx.ask(
        [Call(Agent("agent"), [{"role": "user", "content": "q"}], f"agent-{i}") for i in range(2)]
    )
    ctx.finish(msgs[0].extracted)


def test_a_verifier_that_raises_on_the_pool_is_a_counted_wrong_answer(monkeypatch):
    monkeypatch.setenv("WORKBENCH_VERIFY_WORKERS", "2")
    threads = []

    def explode(answer, task):
        threads.append(threading.current_thread().name)
        raise RuntimeError(f"boom on {answer}")

    monkeypatch.setitem(VERIFIERS, "explodes", Verifier(lambda text, task: text.strip(), explode, slow=True))
    results = play_all(
        [Task(f"t{i}", "q", "x", "explodes") for i in range(3)], two_samples, ScriptedBackend("x")
    )
    assert [err for _, err in results] == [None] * 3  # every episode stays in n
    assert threads and all(t.startswith("workbench-verify") for t in threads)
    for ep, _ in results:
        assert ep.correct is False and ep.final_answer == "x" and ep.meta["verifier_errors"] == 1
        (event,) = [e for e in ep.events if e["type"] == "verifier_error"]
        assert event == {**event, "stage": "check", "error": "RuntimeError: boom on x"}
        assert [m.correct for m in ep.messages] == [False, False]  # the answer's cached verdict


def test_a_config_error_in_a_verifier_is_still_the_user_s_to_fix(monkeypatch):
    monkeypatch.setenv("WORKBENCH_VERIFY_WORKERS", "2")

    def misconfigured(answer, task):
        raise ConfigError("task.meta lacks the tests; add them")

    monkeypatch.setitem(VERIFIERS, "misconfigured", Verifier(lambda t, task: t, misconfigured, slow=True))
    ((ep, err),) = play_all([Task("t", "q", "x", "misconfigured")], two_samples, ScriptedBackend("x"))
    assert ep is None and isinstance(err, ConfigError) and str(err) == "task.meta lacks the tests; add them"


# ---------------------------------------------------------------------------------------------
# (d) the episode's verification budget on the worker thread
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_the_episode_budget_applies_on_the_worker_thread(monkeypatch):
    monkeypatch.setenv("WORKBENCH_VERIFY_WORKERS", "2")
    monkeypatch.setattr(verify_mod, "EPISODE_BUDGET_S", 0.5)  # what play gives each episode
    seen = []

    def recording(answer, task):
        seen.append((threading.current_thread().name, budget_left()))
        return math_equal(answer, task.answer)

    math = VERIFIERS["math"]
    monkeypatch.setitem(VERIFIERS, "math", dataclasses.replace(math, check=recording))
    hostile = "10^{10^{7}}+\\frac{1}{7}"  # math-verify spends more than the whole budget on it
    replies = iter([f"\\boxed{{{hostile}}}", "\\boxed{1}"])
    backend = ScriptedBackend(lambda req, j: next(replies))
    agent = Agent("agent")

    async def two_answers(task, team, cfg, ctx):
        msgs = await ctx.ask(
            [Call(agent, [{"role": "user", "content": "q"}], f"agent-{i}") for i in range(2)]
        )
        ctx.finish(msgs[0].extracted)

    sched = BatchScheduler({"default": backend})
    task = Task("t", "q", "1", "math")
    out = []

    async def job():
        return await play(two_answers, task, Team(), None, EpisodeContext(task, "custom", sched))

    asyncio.run(run_all([job], sched, 1, lambda i, r, e: out.append((r, e))))
    ((ep, err),) = out
    assert err is None
    ((thread, left),) = seen  # the hostile answer, on a worker thread, within the episode's budget
    assert thread.startswith("workbench-verify") and left <= 0.5
    first, then = [e["error"] for e in ep.events if e["type"] == "verifier_error"]
    assert first.startswith("VerifierTimeout: math-verify took longer than ")  # cut at the budget
    assert float(first.split("longer than ")[1].split()[0]) <= 0.5  # not at MATH_TIMEOUT_S (20 s)
    assert "verification time is spent" in then  # the right answer "1", refused without a call
    assert ep.correct is False and [m.correct for m in ep.messages] == [False, False]
    assert budget_left() == float("inf")  # the test's own context has no budget


# ---------------------------------------------------------------------------------------------
# the pool's size
# ---------------------------------------------------------------------------------------------


def test_the_pool_size_comes_from_the_environment_or_the_default(monkeypatch):
    monkeypatch.delenv("WORKBENCH_VERIFY_WORKERS", raising=False)
    assert verify_workers() == verify_mod.VERIFY_WORKERS >= 1
    monkeypatch.setenv("WORKBENCH_VERIFY_WORKERS", "3")
    assert verify_workers() == 3 and verifier_pool()._max_workers == 3
    monkeypatch.setenv("WORKBENCH_VERIFY_WORKERS", "0")
    assert verifier_pool() is None
    for bad in ("many", "-1", "65", "2.5"):
        monkeypatch.setenv("WORKBENCH_VERIFY_WORKERS", bad)
        with pytest.raises(ConfigError, match=r"WORKBENCH_VERIFY_WORKERS=.*0\.\.64"):
            verify_workers()
    with pytest.raises(ConfigError, match="WORKBENCH_VERIFY_WORKERS"):  # refused before any episode runs
        run_episodes([Task("t", "q", "1", "numeric")], ProtocolConfig("single"), ScriptedBackend("1"))


def test_only_subprocess_verifiers_are_slow():
    """The cheap kinds stay on the loop: a check costs <= 5 us there, the hop to a thread 130-180 us."""
    assert {kind for kind, v in VERIFIERS.items() if v.slow} == {"code", "math"}


@pytest.mark.timeout(120)
def test_the_driver_sleeps_instead_of_polling_while_only_checks_run(monkeypatch):
    """A task parked on the verifier pool counts as settled, and with nothing queued the driver
    waits for the check (scheduler.external / idle) instead of spinning settle's idle turns."""
    monkeypatch.setenv("WORKBENCH_VERIFY_WORKERS", "2")
    release = threading.Event()

    def blocking_check(answer, task):
        return release.wait(60)

    monkeypatch.setitem(
        VERIFIERS, "blocking", Verifier(lambda text, task: text.strip(), blocking_check, slow=True)
    )
    sched = BatchScheduler({"default": ScriptedBackend("Answer: 7")})
    settles = []
    real_settle = sched.settle

    async def counted(live):
        settles.append(1)
        if len(settles) == 1:  # the check will end 0.2 s from now, long after the episode parks on it
            threading.Timer(0.2, release.set).start()
        return await real_settle(live)

    sched.settle = counted
    task = Task("slow", "q", "Answer: 7", "blocking", {})
    out = []

    async def one(task, team, cfg, ctx):
        (msg,) = await ctx.ask([Call(Agent("agent"), [{"role": "user", "content": "q"}], "agent")])
        ctx.finish(msg.extracted)

    async def go():
        return await play(one, task, Team(), None, EpisodeContext(task, "one", sched))

    asyncio.run(run_all([go], sched, 1, lambda i, r, e: out.append((r, e))))
    assert out[0][1] is None and out[0][0].correct
    assert len(settles) <= 6  # polling would take one settle per ~1000 idle turns for 0.2 s
