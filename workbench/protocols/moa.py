"""`moa`: Mixture-of-Agents (Wang et al. 2024): layers of proposers, then one aggregator.

    layer 1:  task ──► proposer-i@1                     (independent, one batch)
    layer l:  proposer-j@l-1 (all j) ──► proposer-i@l   (each refines with all previous responses)
    end:      proposer-j@L (all j) ──► aggregator ──► answer

Generations per query: sum(layers) + 1. The aggregator's answer is final; if it has none, the
majority of the last proposer layer (recorded as a fallback in meta).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from workbench.config import ConfigError
from workbench.models.base import SamplingParams
from workbench.prompts import MOA_AGGREGATE, Shown, SynthState, numbered, question_messages, question_prompt
from workbench.protocols.base import Agent, Call, EpisodeContext, Team
from workbench.protocols.vote import majority
from workbench.tasks import Task


@dataclass(frozen=True)
class MoaConfig:
    layers: tuple[int, ...] = (3,)  # proposers per layer; generations per query = sum(layers) + 1
    temperature: float = 0.3  # proposers sample, so that the aggregator sees different responses
    top_p: float = 0.95
    max_tokens: int = 256
    system: str = ""
    aggregator_temperature: float = 0.0  # the aggregator answers greedily
    proposer_members: tuple[str, ...] = ("default",)  # team members the proposers are, in turn
    aggregator_member: str = "default"  # team member that aggregates

    def __post_init__(self) -> None:
        if not self.layers or min(self.layers) < 1:
            raise ConfigError(f"protocol.layers must be a non-empty list of sizes >= 1, got {self.layers}")
        SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)
        SamplingParams(temperature=self.aggregator_temperature, max_tokens=self.max_tokens)


def node(i: int, layer: int) -> str:
    return f"proposer-{i}@{layer}"


# ---- the aggregator's prompt: the one builder the protocol and the replay use ----
def aggregator_agent(team: Team, cfg: MoaConfig) -> Agent:
    """The aggregator as ``cfg`` and the team make it: greedy by default, its member's persona."""
    return team.agent(cfg.aggregator_member, "aggregator", "aggregator", _greedy(cfg))


def aggregator_turns(state: SynthState, cfg: MoaConfig) -> list[dict[str, str]]:
    """MOA_AGGREGATE over the last layer's responses, shown whole (later proposer layers read the
    previous layer through the same builder)."""
    responses = numbered([c.text for c in state.shown], "Response")
    qp = question_prompt(state.question, state.verifier)
    return [{"role": "user", "content": MOA_AGGREGATE.format(responses=responses, question_prompt=qp)}]


async def run(task: Task, team: Team, cfg: MoaConfig, ctx: EpisodeContext) -> None:
    prev: list = []
    for layer, size in enumerate(cfg.layers, start=1):
        nxt = (
            tuple(node(i, layer + 1) for i in range(cfg.layers[layer]))
            if layer < len(cfg.layers)
            else ("aggregator",)
        )
        calls = []
        for i in range(size):
            agent = team.agent(
                cfg.proposer_members[i % len(cfg.proposer_members)], f"proposer-{i}", "proposer", cfg
            )
            if not prev:
                messages = question_messages(task.prompt, task.verifier)
                informed = ("task",)
            else:
                state = SynthState(
                    task.prompt, task.verifier, tuple(Shown(m.content, m.extracted) for m in prev)
                )
                messages = aggregator_turns(replace(state, round=layer, system=agent.system), cfg)
                informed = tuple(node(j, layer - 1) for j in range(len(prev)))
            calls.append(Call(agent, messages, node(i, layer), nxt, layer, informed))
        prev = await ctx.ask(calls)
        ctx.propose(majority([m.extracted for m in prev])[0])
        if layer < len(cfg.layers):  # the last layer's pool is recorded with the aggregator below
            ctx.record_pool(layer, prev, [f"proposer-{i}" for i in range(size)])
    aggregator = aggregator_agent(team, cfg)
    shown = tuple(Shown(m.content, m.extracted) for m in prev)
    state = SynthState(task.prompt, task.verifier, shown, len(cfg.layers) + 1, aggregator.system)
    (final,) = await ctx.ask(
        [
            Call(
                aggregator,
                aggregator_turns(state, cfg),
                "aggregator",
                round=len(cfg.layers) + 1,
                informed_by=tuple(node(j, len(cfg.layers)) for j in range(len(prev))),
            )
        ]
    )
    fallback = final.extracted is None and ctx.provisional is not None
    answer = final.extracted if final.extracted is not None else ctx.provisional
    agents = [f"proposer-{i}" for i in range(len(prev))]
    ctx.record_pool(len(cfg.layers), prev, agents, final, "model", answer, fallback=fallback)
    ctx.finish(answer, aggregator_fallback=fallback)


def _greedy(cfg: MoaConfig):
    return replace(cfg, temperature=cfg.aggregator_temperature, top_p=1.0)


def generations(cfg: MoaConfig) -> int:
    return sum(cfg.layers) + 1


def match(cfg: MoaConfig, target: int) -> dict:
    """Keep the number of layers; spread target - 1 proposers over them as evenly as possible."""
    n_layers = min(len(cfg.layers), max(1, target - 1))
    total = max(n_layers, target - 1)
    base, extra = divmod(total, n_layers)
    return {"layers": [base + (i < extra) for i in range(n_layers)]}
