"""Protocol logic with the scripted backend: turn order, who sees what, recording, batching."""

import asyncio
import json
import re

import pytest

from workbench.evaluate import EvalConfig, ProtocolConfig, run_episodes, run_eval
from workbench.models.scripted import ScriptedBackend
from workbench.protocols.vote import majority
from workbench.runs import read_episodes
from workbench.scheduler import BatchScheduler, run_all
from workbench.tasks import TaskConfig, load_tasks


def arithmetic(limit):
    return load_tasks(TaskConfig.from_flat({"name": "arithmetic", "limit": limit}))


def solver(req, j):
    """Answers every arithmetic question correctly (it evaluates the expression it is shown)."""
    expr = re.search(r"problem: What is (.+)\?", req.messages[-1]["content"]).group(1)
    return f"{expr} = {eval(expr)}\nAnswer: {eval(expr)}"


def test_single_records_one_message_and_a_three_node_graph():
    tasks = arithmetic(3)
    eps, errors, _ = run_episodes(tasks, ProtocolConfig("single"), ScriptedBackend(solver))
    assert errors == []
    ep = sorted(eps, key=lambda e: e.index)[0]
    assert ep.correct and ep.reward == 1.0 and not ep.format_failure
    assert ep.final_answer == tasks.tasks[0].answer
    assert [m.sender for m in ep.messages] == ["agent"] and ep.messages[0].receivers == ["answer"]
    assert [n["id"] for n in ep.graph["nodes"]] == ["task", "agent", "answer"]
    assert {(e["source"], e["target"]) for e in ep.graph["edges"]} == {("task", "agent"), ("agent", "answer")}
    assert ep.usage.calls == 1 and ep.usage.completion_tokens == ep.messages[0].completion_tokens
    types = [e["type"] for e in ep.events]
    assert types == [
        "episode_started",
        "generation_started",
        "generation_finished",
        "message",
        "episode_finished",
    ]


def test_unparseable_output_is_a_counted_format_failure():
    eps, errors, _ = run_episodes(arithmetic(2), ProtocolConfig("single"), ScriptedBackend("I cannot say."))
    assert errors == [] and all(e.format_failure and not e.correct and e.final_answer is None for e in eps)


def test_episodes_are_batched_across_episodes():
    backend = ScriptedBackend(solver)
    run_episodes(arithmetic(10), ProtocolConfig("vote", {"n": 3}), backend, max_in_flight=4)
    # 4 episodes in flight x 3 samples: the backend sees batches of 12, then 12, then the last 2 episodes
    assert [len(batch) for batch in backend.calls] == [12, 12, 6]


def test_vote_samples_are_seeded_distinctly_and_reproducibly():
    backend = ScriptedBackend(solver)
    run_episodes(arithmetic(2), ProtocolConfig("vote", {"n": 4}), backend, seed=7)
    seeds = [r.sampling.seed for r in backend.calls[0]]
    assert len(set(seeds)) == 8 and all(s is not None for s in seeds)
    again = ScriptedBackend(solver)
    run_episodes(arithmetic(2), ProtocolConfig("vote", {"n": 4}), again, seed=7)
    assert [r.sampling.seed for r in again.calls[0]] == seeds
    other = ScriptedBackend(solver)
    run_episodes(arithmetic(2), ProtocolConfig("vote", {"n": 4}), other, seed=8)
    assert [r.sampling.seed for r in other.calls[0]] != seeds


def test_vote_takes_the_majority_and_records_the_graph():
    replies = ["Answer: 5", "Answer: 7", "no idea", "Answer: 7", "Answer: 5"]
    backend = ScriptedBackend(lambda req, j: replies.pop(0))
    (ep,), _, _ = run_episodes(arithmetic(1), ProtocolConfig("vote", {"n": 5}), backend)
    assert ep.final_answer == "5"  # 5 and 7 tie 2-2; 5 reached the top count first
    assert ep.meta == {"votes": {"5": 2, "7": 2}, "parsed_samples": 4}
    assert ep.usage.calls == 5
    senders = [m.sender for m in ep.messages]
    assert senders == ["sample-0", "sample-1", "sample-2", "sample-3", "sample-4", "vote"]
    assert ep.messages[-1].receivers == ["answer"] and ep.messages[0].receivers == ["vote"]
    edges = {(e["source"], e["target"]) for e in ep.graph["edges"]}
    assert {("task", "sample-0"), ("sample-0", "vote"), ("vote", "answer")} <= edges
    assert "decision" in [e["type"] for e in ep.events]


def test_majority_rule():
    assert majority(["1", "2", "2", None]) == ("2", {"1": 1, "2": 2})
    assert majority(["3", "1", "1", "3"])[0] == "3"
    assert majority([None, None]) == (None, {})


def test_a_failing_episode_does_not_stop_the_others():
    def flaky(req, j):
        if "What is 0 - 1?" in req.messages[-1]["content"]:
            raise RuntimeError("backend exploded")
        return solver(req, j)

    # one episode in flight: the failing batch holds only the failing episode
    eps, errors, _ = run_episodes(
        arithmetic(4), ProtocolConfig("single"), ScriptedBackend(flaky), max_in_flight=1
    )
    assert len(eps) == 3 and len(errors) == 1 and "backend exploded" in errors[0]["error"]


def test_scheduler_waits_for_tasks_awaiting_other_things():
    backend = ScriptedBackend("Answer: 1")
    sched = BatchScheduler({"default": backend})

    async def slow_then_generate():
        await asyncio.sleep(0.01)  # e.g. an HTTP call
        return await sched.submit(
            "default", [__import__("workbench.models", fromlist=["Request"]).Request([])]
        )

    results = []
    asyncio.run(run_all([slow_then_generate] * 3, sched, 3, lambda i, r, e: results.append((r, e))))
    assert len(results) == 3 and all(e is None and r[0].text == "Answer: 1" for r, e in results)


def test_run_eval_writes_a_complete_run_folder(tmp_path):
    cfg = EvalConfig.build(
        task="arithmetic",
        protocol="vote",
        limit=6,
        out=str(tmp_path / "run"),
        overrides={"protocol": {"n": 3}},
    )
    result = run_eval(cfg, backend=ScriptedBackend(solver), progress=False)
    read = read_episodes(tmp_path / "run")
    assert read.problems == [] and len(read.episodes) == 6
    s = result.summary
    assert s["n"] == 6 and s["accuracy"] == 1.0 and s["calls_per_query"] == 3
    assert s["usage"]["calls"] == 18 and s["mean_batch_size"] == 18
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "name: vote" in config and "n: 3" in config and "split: test" in config


@pytest.mark.parametrize("protocol", ["single", "vote"])
def test_greedy_scripted_runs_are_identical(protocol):
    a, _, _ = run_episodes(arithmetic(4), ProtocolConfig(protocol), ScriptedBackend(solver))
    b, _, _ = run_episodes(arithmetic(4), ProtocolConfig(protocol), ScriptedBackend(solver))

    def strip(eps):
        return [
            (e.task_id, e.final_answer, [m.content for m in e.messages])
            for e in sorted(eps, key=lambda e: e.index)
        ]

    assert strip(a) == strip(b)


def test_runs_inside_a_running_event_loop_as_in_jupyter():
    async def notebook_cell():
        return run_episodes(arithmetic(2), ProtocolConfig("single"), ScriptedBackend(solver))

    eps, errors, _ = asyncio.run(notebook_cell())
    assert len(eps) == 2 and errors == []


def test_ctrl_c_keeps_the_written_episodes_and_writes_a_summary(tmp_path):
    class Interrupting(ScriptedBackend):
        def generate(self, requests):
            if len(self.calls) == 2:  # the third batch never comes back
                raise KeyboardInterrupt
            return super().generate(requests)

    cfg = EvalConfig.build(
        task="arithmetic", protocol="single", limit=6, out=str(tmp_path / "run"), max_in_flight=2
    )
    with pytest.raises(KeyboardInterrupt):
        run_eval(cfg, backend=Interrupting(solver), progress=False)
    read = read_episodes(tmp_path / "run")
    assert len(read.episodes) == 4 and read.problems == []
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["n"] == 4 and summary["planned"] == 6


def test_calls_to_two_backends_are_in_flight_together():
    from workbench.models.base import SamplingParams
    from workbench.protocols.base import Agent, Call, EpisodeContext

    a, b = ScriptedBackend("Answer: 1", name="a"), ScriptedBackend("Answer: 2", name="b")
    sched = BatchScheduler({"a": a, "b": b})
    task = arithmetic(1).tasks[0]

    async def episode():
        ctx = EpisodeContext(task, "test", sched)
        calls = [
            Call(Agent(n, backend=n, sampling=SamplingParams()), [{"role": "user", "content": "q"}], n)
            for n in "ab"
        ]
        gens = await ctx.generate(calls)
        return [g.text for g in gens], [m.sender for m in ctx.episode.messages]

    flushes = []
    real_flush = sched.flush
    sched.flush = lambda: (flushes.append(1), real_flush())
    results = []
    asyncio.run(run_all([episode], sched, 1, lambda i, r, e: results.append((r, e))))
    assert results == [((["Answer: 1", "Answer: 2"], ["a", "b"]), None)]
    assert len(flushes) == 1 and len(a.calls) == len(b.calls) == 1  # one flush served both backends


def test_waiting_is_counted_for_the_episode_task_itself():
    sched = BatchScheduler({"a": ScriptedBackend(), "b": ScriptedBackend()})
    seen = []

    async def episode():
        from workbench.models import Request

        futs = [sched.enqueue(n, [Request([])]) for n in "ab"]
        seen.append(sched.waiting[asyncio.current_task()])  # this task, not a helper task, is waiting
        await asyncio.gather(*futs)
        seen.append(sched.waiting.get(asyncio.current_task(), 0))

    asyncio.run(run_all([episode], sched, 1))
    assert seen == [2, 0]


def test_runs_without_out_get_distinct_folders(tmp_path):
    cfg = EvalConfig.build(task="arithmetic", protocol="single", limit=1)
    dirs = {run_eval(cfg, ScriptedBackend(solver), False, runs_root=tmp_path).run_dir for _ in range(3)}
    assert len(dirs) == 3 and all(d.parent == tmp_path for d in dirs)
