"""`single`: one agent answers once. The baseline every protocol must beat.

task ──► agent ──► answer
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.models.base import SamplingParams
from workbench.prompts import question_messages
from workbench.protocols.base import Call, EpisodeContext, Team
from workbench.tasks import Task


@dataclass(frozen=True)
class SingleConfig:
    temperature: float = 0.0  # 0 = greedy (the default baseline); > 0 = one sampled answer
    top_p: float = 1.0
    max_tokens: int = 256  # completion cap per generation
    system: str = ""  # optional system prompt for the agent
    member: str = "default"  # team member that answers

    def __post_init__(self) -> None:
        SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)


async def run(task: Task, team: Team, cfg: SingleConfig, ctx: EpisodeContext) -> None:
    agent = team.agent(cfg.member, "agent", "agent", cfg)
    (reply,) = await ctx.ask([Call(agent, question_messages(task.prompt, task.verifier), "agent")])
    ctx.record_pool(0, [reply], ["agent"])  # a pool of one, no synthesis
    ctx.finish(reply.extracted)


def generations(cfg: SingleConfig) -> int:
    return 1
