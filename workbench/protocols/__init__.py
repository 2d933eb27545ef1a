"""Collaboration protocols, by name: a function from (task, team, config, context) to an episode.

Each protocol lives in its own file with its config dataclass, ``generations(cfg)`` (generations
per query at that config: the unit budgets are matched in) and ``match(cfg, target)`` (the size
options that bring it to ``target`` generations). This dict is the only registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from workbench.prompts import SynthState, chat_messages
from workbench.protocols import conductor, debate, leader, maestro, moa, reflect, single, vote
from workbench.protocols.base import Agent, Budget, BudgetExhausted, Call, EpisodeContext, Member, Team


@dataclass(frozen=True)
class Synthesiser:
    """A protocol's synthesising role (the one RL trains and replay re-asks): how its agent is
    made from the team, and its one prompt builder. The protocol, ``rl/rollouts.py`` and
    ``analysis/replay.py`` all go through these two functions."""

    agent: Callable  # (team, cfg) -> Agent (its system prompt is the member's persona, resolved)
    turns: Callable  # (SynthState, cfg) -> the chat turns after the system prompt

    def messages(self, state: SynthState, cfg) -> list[dict[str, str]]:
        """The whole chat the role receives for ``state`` (system prompt first, when it has one)."""
        return chat_messages(state.system, self.turns(state, cfg))


@dataclass(frozen=True)
class ProtocolSpec:
    run: Callable  # async (task, team, cfg, ctx) -> None
    config: type  # the options dataclass
    generations: Callable  # cfg -> generations per query (the most, for the conductor)
    match: Callable | None  # (cfg, target) -> options reaching target generations; None: fixed size
    synthesiser: Synthesiser | None = None  # the synthesising role, where the protocol has one


_CENTRAL = Synthesiser(maestro.central_agent, maestro.central_turns)


PROTOCOLS: dict[str, ProtocolSpec] = {
    "single": ProtocolSpec(single.run, single.SingleConfig, single.generations, None),
    "vote": ProtocolSpec(vote.run, vote.VoteConfig, vote.generations, vote.match),
    "reflect": ProtocolSpec(reflect.run, reflect.ReflectConfig, reflect.generations, reflect.match),
    "debate": ProtocolSpec(debate.run, debate.DebateConfig, debate.generations, debate.match),
    "moa": ProtocolSpec(
        moa.run,
        moa.MoaConfig,
        moa.generations,
        moa.match,
        Synthesiser(moa.aggregator_agent, moa.aggregator_turns),
    ),
    "maestro": ProtocolSpec(maestro.run, maestro.MaestroConfig, maestro.generations, maestro.match, _CENTRAL),
    "maestro_gen": ProtocolSpec(
        maestro.run, maestro.MaestroGenConfig, maestro.generations, maestro.match, _CENTRAL
    ),
    "leader": ProtocolSpec(
        leader.run,
        leader.LeaderConfig,
        leader.generations,
        leader.match,
        Synthesiser(leader.leader_agent, leader.leader_turns),
    ),
    "conductor": ProtocolSpec(
        conductor.run, conductor.ConductorConfig, conductor.generations, conductor.match
    ),
}

__all__ = [
    "PROTOCOLS",
    "Agent",
    "Budget",
    "BudgetExhausted",
    "Call",
    "EpisodeContext",
    "Member",
    "ProtocolSpec",
    "Synthesiser",
    "Team",
]
