"""`debate`: N agents, R rounds; from round 2 each agent sees its own and the others' previous
solutions and updates its own; the majority of the last round is the answer (Du et al. 2023,
"Improving Factuality and Reasoning in Language Models through Multiagent Debate").

    round 1:  task ──► agent-i (independently, all N in one batch)
    round r:  agent-j@r-1 (all j) ──► agent-i@r
    end:      agent-i@R ──► vote ──► answer

Generations per query: N·R. Ties in the final vote go to the answer that reached the top count
first (agent order), as in `vote`.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.config import ConfigError
from workbench.models.base import SamplingParams
from workbench.prompts import DEBATE_ROUND, numbered, question_messages, question_prompt, shared_text
from workbench.protocols.base import ANSWER_NODE, Call, EpisodeContext, Team
from workbench.protocols.vote import majority
from workbench.tasks import Task


@dataclass(frozen=True)
class DebateConfig:
    agents: int = 3  # N debaters
    rounds: int = 2  # R rounds (round 1 is independent answers); generations per query = N·R
    temperature: float = 0.3  # > 0 so that round-1 answers differ (same model for every debater)
    top_p: float = 0.95
    max_tokens: int = 256
    system: str = ""
    share: str = "full"  # full: debaters see whole solutions | answer: only the others' final answers
    members: tuple[str, ...] = ("default",)  # team members the debaters are, in turn

    def __post_init__(self) -> None:
        if self.agents < 2 or self.rounds < 1:
            raise ConfigError(
                f"debate needs protocol.agents >= 2 and protocol.rounds >= 1, got {self.agents}, {self.rounds}"
            )
        if self.share not in ("full", "answer"):
            raise ConfigError(f"protocol.share must be 'full' or 'answer', got '{self.share}'")
        SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)


def node(i: int, r: int) -> str:
    return f"agent-{i}@{r}"


async def run(task: Task, team: Team, cfg: DebateConfig, ctx: EpisodeContext) -> None:
    agents = [
        team.agent(cfg.members[i % len(cfg.members)], f"agent-{i}", "debater", cfg) for i in range(cfg.agents)
    ]
    qp = question_prompt(task.prompt, task.verifier)
    prev = None
    for r in range(1, cfg.rounds + 1):
        last = r == cfg.rounds
        others = tuple(node(j, r + 1) for j in range(cfg.agents))
        calls = []
        for i, agent in enumerate(agents):
            receivers = ("vote",) if last else others
            if prev is None:
                calls.append(
                    Call(agent, question_messages(task.prompt, task.verifier), node(i, r), receivers, r)
                )
                continue
            seen = [shared_text(m.content, m.extracted, cfg.share) for j, m in enumerate(prev) if j != i]
            text = DEBATE_ROUND.format(own=prev[i].content.strip(), others=numbered(seen), question_prompt=qp)
            calls.append(
                Call(
                    agent,
                    [{"role": "user", "content": text}],
                    node(i, r),
                    receivers,
                    r,
                    informed_by=tuple(node(j, r - 1) for j in range(cfg.agents)),
                )
            )
        prev = await ctx.ask(calls)
        winner, counts = majority([m.extracted for m in prev])
        ctx.event("round_summary", round=r, answers=[m.extracted for m in prev], counts=counts)
        if not last:  # the last round's pool is recorded with the vote's message below
            ctx.record_pool(
                r, prev, [f"agent-{i}" for i in range(cfg.agents)], rule="majority", answer=winner
            )
        ctx.propose(winner)
    ctx.add_node("vote", "aggregator", "Majority vote")
    winner, counts = majority([m.extracted for m in prev])
    ctx.event("decision", node="vote", answer=winner, counts=counts)
    decision = ctx.message(
        "vote",
        (ANSWER_NODE,),
        "aggregator",
        f"majority of round {cfg.rounds}: {winner}",
        cfg.rounds,
        extracted=winner,
    )
    ctx.record_pool(cfg.rounds, prev, [f"agent-{i}" for i in range(cfg.agents)], decision, "majority")
    ctx.finish(winner, votes=counts)


def generations(cfg: DebateConfig) -> int:
    return cfg.agents * cfg.rounds


def match(cfg: DebateConfig, target: int) -> dict:
    """Keep R, choose N; if N < 2 would result, use fewer rounds."""
    for rounds in range(cfg.rounds, 0, -1):
        if round(target / rounds) >= 2:
            return {"agents": round(target / rounds), "rounds": rounds}
    return {"agents": 2, "rounds": 1}
