"""`leader` (MLPO, Estornell et al. 2025, arXiv 2507.08960; METHODS.md §3): K peers and one
leader over T rounds.

    round 0:  task ──► peer-i@0 (independent, one batch) ──► leader@0
    round t:  peer-i@t-1 + leader@t-1 ──► peer-i@t (revise) ──► leader@t
    end:      leader@T-1 ──► answer      (the leader's last <answer>…</answer>)

The leader writes ``<think>…</think><answer>…</answer>``. ``share="full"`` shows whole texts
between peers and leader; ``share="answer"`` only final answers (the paper's ablation).
``solo=True`` is the leader alone: it answers in its format, then revises its own previous
response for T-1 rounds (the paper's "leader without a team" setting).

Generations per query: (K+1)·T (T with ``solo``). With ``strict_format`` (what RL rewards), a
leader output without ``<answer>`` tags is a format failure; by default the answer is read from
the tags when present, else from the whole text (recorded in ``meta.leader_tagged``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from workbench.config import ConfigError
from workbench.models.base import SamplingParams
from workbench.prompts import (
    LEADER_SOLO,
    LEADER_SOLO_REVISE,
    LEADER_SYNTHESISE,
    PEER_REVISE,
    Shown,
    SynthState,
    numbered,
    question_messages,
    question_prompt,
    shared_text,
)
from workbench.protocols.base import ANSWER_NODE, Agent, Call, EpisodeContext, Team
from workbench.tasks import Task

_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class LeaderConfig:
    peers: int = 3  # K (the paper: 3)
    rounds: int = 5  # T, the paper's; generations per query = (K+1)·T (a CPU preset: rounds=2)
    share: str = "full"  # full: whole texts are shared | answer: only final answers
    solo: bool = False  # the leader alone (no peers)
    strict_format: bool = False  # True: no <answer> tag = format failure (the RL reward's rule)
    temperature: float = 0.3  # peers sample, so that their answers differ
    top_p: float = 0.95
    max_tokens: int = 256
    system: str = ""
    leader_temperature: float = 0.0
    leader_max_tokens: int = 256
    peer_members: tuple[str, ...] = ("default",)  # team members the peers are, in turn
    leader_member: str = "default"  # team member that leads (the trained role)

    def __post_init__(self) -> None:
        if self.peers < 1 or self.rounds < 1:
            raise ConfigError(
                f"protocol.peers and protocol.rounds must be >= 1, got {self.peers}, {self.rounds}"
            )
        if self.share not in ("full", "answer"):
            raise ConfigError(f"protocol.share must be 'full' or 'answer', got '{self.share}'")
        SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)
        SamplingParams(temperature=self.leader_temperature, max_tokens=self.leader_max_tokens)


def leader_answer(text: str, task: Task, strict: bool) -> tuple[str | None, bool]:
    """(extracted answer, whether it came from <answer> tags). Tags missing: None if strict."""
    hits = _ANSWER.findall(text)
    if hits and hits[-1].strip():
        inner = hits[-1].strip()
        return task.extract(inner) or task.extract(f"Answer: {inner}"), True
    return (None if strict else task.extract(text)), False


# ---- the leader's prompt: the one builder the protocol, the rollouts and the replay use ----
def leader_agent(team: Team, cfg: LeaderConfig) -> Agent:
    """The leader as ``cfg`` and the team make it: greedy by default, its member's persona."""
    lcfg = replace(cfg, temperature=cfg.leader_temperature, top_p=1.0, max_tokens=cfg.leader_max_tokens)
    return team.agent(cfg.leader_member, "leader", "leader", lcfg)


def leader_turns(state: SynthState, cfg: LeaderConfig) -> list[dict[str, str]]:
    """The leader's user turn: LEADER_SYNTHESISE over the peers' messages (whole, or only their
    answers with ``share="answer"``); solo: LEADER_SOLO, then LEADER_SOLO_REVISE of ``previous``."""
    if not cfg.solo:
        answers = numbered([shared_text(c.text, c.answer, cfg.share) for c in state.shown])
        text = LEADER_SYNTHESISE.format(answers=answers, question=state.question)
    elif state.previous is None:
        text = LEADER_SOLO.format(question=state.question)
    else:
        text = LEADER_SOLO_REVISE.format(previous=state.previous.strip(), question=state.question)
    return [{"role": "user", "content": text}]


async def run(task: Task, team: Team, cfg: LeaderConfig, ctx: EpisodeContext) -> None:
    qp = question_prompt(task.prompt, task.verifier)
    leader = leader_agent(team, cfg)
    peers = (
        []
        if cfg.solo
        else [
            team.agent(cfg.peer_members[i % len(cfg.peer_members)], f"peer-{i}", "peer", cfg)
            for i in range(cfg.peers)
        ]
    )
    prev_peers, prev_lead = None, None
    tagged = []
    for t in range(cfg.rounds):
        last = t == cfg.rounds - 1
        # ---- peers ----
        if peers:
            calls = []
            for i, peer in enumerate(peers):
                if prev_peers is None:
                    messages, informed = question_messages(task.prompt, task.verifier), ("task",)
                else:
                    text = PEER_REVISE.format(
                        own=prev_peers[i].content.strip(),
                        leader=shared_text(prev_lead.content, prev_lead.extracted, cfg.share),
                        question_prompt=qp,
                    )
                    messages, informed = (
                        [{"role": "user", "content": text}],
                        (f"peer-{i}@{t - 1}", f"leader@{t - 1}"),
                    )
                calls.append(Call(peer, messages, f"peer-{i}@{t}", (f"leader@{t}",), t, informed))
            prev_peers = await ctx.ask(calls)
        # ---- leader ----
        receivers = (
            (ANSWER_NODE,)
            if last
            else (tuple(f"peer-{i}@{t + 1}" for i in range(len(peers))) or (f"leader@{t + 1}",))
        )
        if peers:
            informed = tuple(m.sender for m in prev_peers)
        else:
            informed = ("task",) if prev_lead is None else (f"leader@{t - 1}",)
        state = SynthState(
            task.prompt,
            task.verifier,
            tuple(Shown(m.content, m.extracted) for m in prev_peers) if peers else (),
            t,
            leader.system,
            prev_lead.content if prev_lead is not None and not peers else None,
        )
        (prev_lead,) = await ctx.ask(
            [Call(leader, leader_turns(state, cfg), f"leader@{t}", receivers, t, informed)]
        )
        prev_lead.extracted, ok = leader_answer(prev_lead.content, task, cfg.strict_format)
        tagged.append(ok)
        ctx.event(
            "round_summary",
            round=t,
            peer_answers=[m.extracted for m in prev_peers] if peers else [],
            peer_correct=(await ctx.verdicts([m.extracted for m in prev_peers])) if peers else [],
            leader_answer=prev_lead.extracted,
            leader_tagged=ok,
        )
        pool = prev_peers if peers else []
        ctx.record_pool(t, pool, [f"peer-{i}" for i in range(len(pool))], prev_lead, "model")
        ctx.propose(prev_lead.extracted)
    ctx.finish(prev_lead.extracted, leader_tagged=tagged)


def generations(cfg: LeaderConfig) -> int:
    return cfg.rounds * (1 if cfg.solo else cfg.peers + 1)


def match(cfg: LeaderConfig, target: int) -> dict:
    """Keep K; choose T."""
    per_round = 1 if cfg.solo else cfg.peers + 1
    return {"rounds": max(1, round(target / per_round))}
