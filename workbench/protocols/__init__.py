"""Collaboration protocols, by name: a function from (task, team, config, context) to an episode.

Each protocol lives in its own file with its config dataclass; this dict is the only registry.
"""

from __future__ import annotations

from workbench.protocols import single, vote
from workbench.protocols.base import Agent, Call, EpisodeContext, Team

PROTOCOLS = {
    "single": (single.run, single.SingleConfig),
    "vote": (vote.run, vote.VoteConfig),
}

__all__ = ["PROTOCOLS", "Agent", "Call", "EpisodeContext", "Team"]
