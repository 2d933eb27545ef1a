"""What every protocol is made of: agents, a team, and the episode context that records.

A protocol is ``async def run(task, team, cfg, ctx) -> None``. It asks for generations with
``await ctx.generate([Call(...), ...])`` (all calls of one phase together, so they are batched)
and ends with ``ctx.finish(answer)``. The context turns every call into a message, events,
graph edges and usage, so protocols cannot forget to record anything and never touch models or
files themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field, replace

from workbench.episode import Episode, Message, Usage
from workbench.models.base import Generation, Request, SamplingParams
from workbench.scheduler import BatchScheduler
from workbench.tasks import Task

TASK_NODE, ANSWER_NODE = "task", "answer"


@dataclass(frozen=True)
class Agent:
    """A named role bound to a backend, a system prompt and sampling parameters."""

    name: str
    role: str = "agent"
    backend: str = "default"  # key into Team.backends
    system: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)


def agent_from_config(name: str, role: str, backend: str, cfg) -> Agent:
    """An agent whose system prompt and sampling come from a protocol config's common fields
    (``system``, ``temperature``, ``top_p``, ``max_tokens``)."""
    sampling = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens)
    return Agent(name, role, backend, cfg.system or None, sampling)


@dataclass(frozen=True)
class Team:
    """The backends a protocol may use, by name. Protocols build their agents from their config."""

    backends: tuple[str, ...] = ("default",)


@dataclass(frozen=True)
class Call:
    """One generation: ``agent`` (as graph node ``node``) answers ``messages`` and sends to ``receivers``."""

    agent: Agent
    messages: list[dict[str, str]]
    node: str  # graph node of this generation's author (e.g. "sample-3"); defaults to the agent name
    receivers: tuple[str, ...] = (ANSWER_NODE,)
    round: int = 0
    informed_by: tuple[str, ...] = (TASK_NODE,)  # nodes whose output is in this call's prompt


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (run seed, task id, call number)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


class EpisodeContext:
    """Records one episode while a protocol runs it."""

    def __init__(self, task: Task, protocol: str, scheduler: BatchScheduler, seed: int = 0, index: int = 0):
        self.task = task
        self.scheduler = scheduler
        self.seed = seed
        self._t0 = time.perf_counter()
        self._ncalls = 0
        self.episode = Episode(
            episode_id=f"{task.id}#{seed}",
            task_id=task.id,
            protocol=protocol,
            question=task.prompt,
            gold=task.answer,
            index=index,
            seed=seed,
        )
        self._nodes: dict[str, dict] = {}
        self.add_node(TASK_NODE, "task", "Task")
        self.event("episode_started", task_id=task.id)

    # ---- recording ----
    def event(self, type_: str, **data) -> None:
        self.episode.events.append({"ts": time.time(), "type": type_, **data})

    def add_node(self, node: str, role: str, label: str | None = None) -> None:
        if node not in self._nodes:
            self._nodes[node] = {"id": node, "role": role, "label": label or node}
            self.episode.graph["nodes"].append(self._nodes[node])

    def add_edge(self, source: str, target: str, round_: int, message_id: int | None = None) -> None:
        self.episode.graph["edges"].append(
            {"source": source, "target": target, "round": round_, "message_id": message_id}
        )

    def message(
        self,
        sender: str,
        receivers: tuple[str, ...],
        role: str,
        content: str,
        round_: int,
        gen: Generation | None = None,
        extracted: str | None = None,
    ) -> Message:
        msg = Message(
            id=len(self.episode.messages),
            round=round_,
            sender=sender,
            receivers=list(receivers),
            role=role,
            content=content,
            completion_tokens=gen.completion_tokens if gen else 0,
            prompt_tokens=gen.prompt_tokens if gen else 0,
            extracted=extracted,
            finish_reason=gen.finish_reason if gen else None,
        )
        self.episode.messages.append(msg)
        for r in receivers:
            if r == ANSWER_NODE:
                self.add_node(ANSWER_NODE, "answer", "Answer")
            self.add_edge(sender, r, round_, msg.id)
        self.event("message", message_id=msg.id, sender=sender, receivers=list(receivers), round=round_)
        return msg

    # ---- generation ----
    async def generate(self, calls: list[Call]) -> list[Generation]:
        """Run ``calls`` as one batch (per backend) and record each as a message."""
        requests, backends = [], []
        for call in calls:
            self.add_node(call.node, call.agent.role, call.agent.name)
            for src in call.informed_by:
                self.add_edge(src, call.node, call.round)
            messages = (
                [{"role": "system", "content": call.agent.system}] if call.agent.system else []
            ) + list(call.messages)
            sampling = call.agent.sampling
            if sampling.temperature > 0 and sampling.seed is None:
                sampling = replace(sampling, seed=derive_seed(self.seed, self.task.id, self._ncalls))
            self._ncalls += 1
            requests.append(Request(messages, sampling))
            backends.append(call.agent.backend)
            self.event("generation_started", node=call.node, round=call.round)
        # one submit per backend, all awaited together so that no backend waits for another
        groups = {b: [i for i, x in enumerate(backends) if x == b] for b in dict.fromkeys(backends)}
        outs = await asyncio.gather(
            *(self.scheduler.enqueue(b, [requests[i] for i in idx]) for b, idx in groups.items())
        )
        gens: list[Generation] = [None] * len(calls)  # type: ignore[list-item]
        for idx, out in zip(groups.values(), outs, strict=True):
            for i, g in zip(idx, out, strict=True):
                gens[i] = g
        for call, gen in zip(calls, gens, strict=True):
            extracted = self.task.extract(gen.text)
            u = self.episode.usage
            u.calls += 1
            u.prompt_tokens += gen.prompt_tokens
            u.completion_tokens += gen.completion_tokens
            self.event(
                "generation_finished",
                node=call.node,
                round=call.round,
                tokens=gen.completion_tokens,
                finish_reason=gen.finish_reason,
                latency_s=round(gen.latency_s, 4),
            )
            self.message(call.node, call.receivers, call.agent.role, gen.text, call.round, gen, extracted)
        return gens

    # ---- the end ----
    def finish(self, answer: str | None, **meta) -> Episode:
        """Set the final answer (None = no parseable answer: a format failure) and score it."""
        ep = self.episode
        ep.final_answer = answer
        ep.format_failure = answer is None
        ep.correct = answer is not None and self.task.is_correct(answer)
        ep.reward = 1.0 if ep.correct else 0.0
        ep.meta.update(meta)
        ep.usage.wall_s = round(time.perf_counter() - self._t0, 4)
        self.event("episode_finished", final_answer=answer, correct=ep.correct)
        return ep


def usage_total(episodes: list[Episode]) -> Usage:
    total = Usage()
    for ep in episodes:
        total.add(ep.usage)
    return total
