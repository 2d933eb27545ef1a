"""`vote` (self-consistency, Wang et al. 2023): n sampled answers, the majority answer wins.

    task ──► sample-0 … sample-(n-1) ──► vote ──► answer

All n samples are one batch. Samples without a parseable answer do not vote; if none has one,
the episode is a format failure. Ties go to the answer that reached the top count first (in
sample order), so the rule is deterministic.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from workbench.config import ConfigError
from workbench.models.base import SamplingParams
from workbench.prompts import question_messages
from workbench.protocols.base import ANSWER_NODE, Call, EpisodeContext, Team
from workbench.tasks import Task


@dataclass(frozen=True)
class VoteConfig:
    n: int = 5  # samples per question (= generations per query)
    temperature: float = (
        0.3  # > 0. Best of 0.3/0.5/0.7 on arithmetic dev with SmolLM2-135M (docs/foundation.md)
    )
    top_p: float = 0.95
    max_tokens: int = 256
    system: str = ""
    members: tuple[str, ...] = ("default",)  # team members that sample, used in turn

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"protocol.n must be >= 1, got {self.n}")
        if self.temperature <= 0 and self.n > 1:
            raise ConfigError(
                "vote with temperature 0 repeats one greedy answer n times; set protocol.temperature > 0"
            )
        SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)


def majority(answers: list[str | None]) -> tuple[str | None, dict[str, int]]:
    """The most frequent non-None answer (ties: first to reach the top count) and all counts."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, {}
    top = max(counts.values())
    winner = next(a for a in answers if a is not None and counts[a] == top)
    return winner, dict(counts)


async def run(task: Task, team: Team, cfg: VoteConfig, ctx: EpisodeContext) -> None:
    prompt = question_messages(task.prompt, task.verifier)
    calls = [
        Call(
            team.agent(cfg.members[i % len(cfg.members)], "sampler", "sampler", cfg),
            prompt,
            f"sample-{i}",
            ("vote",),
        )
        for i in range(cfg.n)
    ]
    samples = await ctx.ask(calls)
    answers = [m.extracted for m in samples]
    winner, counts = majority(answers)
    ctx.add_node("vote", "aggregator", "Majority vote")
    top = counts.get(winner, 0) if winner is not None else 0
    ctx.event("decision", node="vote", answer=winner, counts=counts)
    decision = ctx.message(
        "vote", (ANSWER_NODE,), "aggregator", f"majority: {winner} ({top}/{cfg.n} votes)", 0, extracted=winner
    )
    ctx.record_pool(0, samples, [f"sample-{i}" for i in range(cfg.n)], decision, "majority")
    ctx.finish(winner, votes=counts, parsed_samples=sum(a is not None for a in answers))


def generations(cfg: VoteConfig) -> int:
    return cfg.n


def match(cfg: VoteConfig, target: int) -> dict:
    """Options that make ``vote`` spend ``target`` generations per query."""
    return {"n": max(1, target)}
