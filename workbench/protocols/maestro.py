"""`maestro` (Yang et al. 2025, arXiv 2511.06134; METHODS.md §1): parallel execution agents
explore, a central agent converges by *selecting*.

    round r:  task (+ endorsed@r-1) ──► explorer-i.k@r   (N agents × K samples, one batch)
              explorer-*@r ──► central@r                 (reads the slate of m = N·K candidates,
                                                           writes <choice>j</choice><why>…</why>)
              central@r ──► explorer-*@r+1               (the endorsed candidate is broadcast; each
                                                           explorer sample ignores it with prob. ε)
    end:      central@R ──► answer                       (the last endorsed candidate's answer)

Variants (the paper's analysis): `central="gen"` is **Central-Gen** — the central agent writes its
own answer from the pool instead of selecting (registered as `maestro_gen`); with
`central_samples > 1` (and a central temperature > 0) it is **Central-Gen+SC**: several such
answers, then a majority vote.

Generations per query: R·(N·K + central_samples). Per round the episode records its pool
(``ctx.record_pool``: the candidates, the central agent's message, the pick and how it was read)
and an event `slate` with every candidate's answer, which were correct, the pick, and coverage
(does the slate hold a correct candidate): the inputs of the coverage/identification analysis.

Choices left open by the paper (config fields): ε per sample (`epsilon_mode="sample"`) or per
agent (`"agent"`); the decision format; a decision that cannot be parsed keeps the previous
endorsement (counted in `meta.central_format_failures`; with none, the episode is a format
failure); a decision without a well-formed `<choice>j</choice>` is read leniently (the first number
1..m; `lenient=true`, the default, counted in `meta.lenient_decisions`) or, with `lenient=false`
(how training reads decisions), is a failed decision. Numbers shown to the central agent are
1-based; the recorded `pick` is 0-based.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

from workbench.config import ConfigError
from workbench.models.base import SamplingParams
from workbench.prompts import (
    MAESTRO_EXPLORE_ENDORSED,
    MAESTRO_GENERATE,
    MAESTRO_SELECT,
    Shown,
    SynthState,
    numbered,
    question_messages,
    question_prompt,
)
from workbench.protocols.base import ANSWER_NODE, Agent, Call, EpisodeContext, Team, derive_seed
from workbench.protocols.vote import majority
from workbench.tasks import Task

_CHOICE = re.compile(r"<choice>\s*+(?:candidate\s*+)?+(\d+)\s*+</choice>", re.IGNORECASE)
# the lenient reading takes every number in the text: what `(?:candidate|choice|option|number)?\s*#?\s*(\d+)`
# found, without that pattern's cubic backtracking on long runs of spaces
_LENIENT = re.compile(r"\d+")
_OPEN = re.compile(r"<choice\b", re.IGNORECASE)  # every opening tag, closed or not


def _index(digits: str, m: int) -> int | None:
    """``int(digits)`` when it is in 1..m, else None; a number of any length is read (leading
    zeros included) without Python's 4300-digit limit on int()."""
    i = 0
    while i < len(digits) and int(digits[i]) == 0:  # leading zeros, any script's
        i += 1
    rest = digits[i:]
    if not rest or len(rest) > len(str(m)):
        return None
    value = int(rest)
    return value if value <= m else None


@dataclass(frozen=True)
class MaestroConfig:
    explorers: int = 3  # N execution agents
    samples: int = 1  # K candidates per explorer per round (slate size m = N·K)
    rounds: int = 2  # R; generations per query = R·(N·K + central_samples)
    epsilon: float = 0.1  # probability that an explorer (sample) ignores the endorsed candidate
    epsilon_mode: str = "sample"  # sample | agent: is the ε draw made per sample or per explorer
    central: str = "select"  # select (Maestro) | gen (Central-Gen: the central agent writes its own answer)
    central_samples: int = 1  # Central-Gen+SC when > 1 (needs central_temperature > 0)
    temperature: float = 0.3  # explorers sample, so that the slate is diverse
    top_p: float = 0.95
    max_tokens: int = 256
    system: str = ""
    central_temperature: float = 0.0  # the central agent decides greedily by default
    central_max_tokens: int = 128  # enough for <choice>…</choice><why>…</why>
    explorer_members: tuple[str, ...] = ("default",)  # team members the explorers are, in turn
    central_member: str = "default"  # team member that is the central agent (the trained role)
    # a decision without a well-formed <choice>j</choice> is read leniently (the first number 1..m in
    # the text; counted in meta.lenient_decisions); false: it is a failed decision (training's reading)
    lenient: bool = True

    def __post_init__(self) -> None:
        if min(self.explorers, self.samples, self.rounds, self.central_samples) < 1:
            raise ConfigError("protocol.explorers, samples, rounds and central_samples must all be >= 1")
        if not 0 <= self.epsilon <= 1:
            raise ConfigError(f"protocol.epsilon must be in [0, 1], got {self.epsilon}")
        if self.epsilon_mode not in ("sample", "agent"):
            raise ConfigError(f"protocol.epsilon_mode must be 'sample' or 'agent', got '{self.epsilon_mode}'")
        if self.central not in ("select", "gen"):
            raise ConfigError(f"protocol.central must be 'select' or 'gen', got '{self.central}'")
        if self.central_samples > 1 and (self.central != "gen" or self.central_temperature <= 0):
            raise ConfigError(
                "protocol.central_samples > 1 is Central-Gen+SC: it needs protocol.central=gen and "
                "protocol.central_temperature > 0"
            )
        SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)
        SamplingParams(temperature=self.central_temperature, max_tokens=self.central_max_tokens)


@dataclass(frozen=True)
class MaestroGenConfig(MaestroConfig):
    """Central-Gen: same exploration, but the central agent writes its own answer."""

    central: str = "gen"
    central_max_tokens: int = 256


def parse_choice(text: str, m: int, lenient: bool = True) -> tuple[int | None, str]:
    """The 0-based candidate a decision endorses, and how it was read: strict | lenient | failed.

    strict: a well-formed, closed ``<choice>j</choice>`` with 1 <= j <= m; every ``<choice`` tag in
    the text is closed and names the same j (two different picks, or a tag left open, is no decision).
    lenient (``lenient=True``, evaluation's default): failing that, the first ``<choice>`` tag read
    as above, else the first number in 1..m anywhere in the text (e.g. "Candidate 2 is right").
    Training passes ``lenient=False``: "the answer is 2" is a format failure, never candidate 2.
    """
    hits = [_index(h.group(1), m) for h in _CHOICE.finditer(text)]
    opened = len(_OPEN.findall(text))
    if hits and None not in hits and len(set(hits)) == 1 and opened == len(hits):
        return hits[0] - 1, "strict"
    if not lenient:
        return None, "failed"
    if hits and hits[0] is not None:
        return hits[0] - 1, "lenient"
    for num in _LENIENT.findall(text):
        if (j := _index(num, m)) is not None:
            return j - 1, "lenient"
    return None, "failed"


# ---- the central agent's prompt: the one builder the protocol, the rollouts and the replay use ----
def central_agent(team: Team, cfg: MaestroConfig) -> Agent:
    """The central agent as ``cfg`` and the team make it: greedy by default, its member's persona."""
    ccfg = replace(cfg, temperature=cfg.central_temperature, top_p=1.0, max_tokens=cfg.central_max_tokens)
    role = "central" if cfg.central == "select" else "central-gen"
    return team.agent(cfg.central_member, "central", role, ccfg)


def central_turns(state: SynthState, cfg: MaestroConfig) -> list[dict[str, str]]:
    """The central agent's user turn for a slate: MAESTRO_SELECT (pick one) or, for Central-Gen,
    MAESTRO_GENERATE (write your own answer). Candidates are shown whole, numbered from 1."""
    m, slate = len(state.shown), numbered([c.text for c in state.shown], "Candidate")
    if cfg.central == "select":
        text = MAESTRO_SELECT.format(question=state.question, m=m, slate=slate)
    else:
        qp = question_prompt(state.question, state.verifier)
        text = MAESTRO_GENERATE.format(m=m, slate=slate, question_prompt=qp)
    return [{"role": "user", "content": text}]


def explorer_node(i: int, k: int, r: int, samples: int) -> str:
    return f"explorer-{i}.{k}@{r}" if samples > 1 else f"explorer-{i}@{r}"


async def run(task: Task, team: Team, cfg: MaestroConfig, ctx: EpisodeContext) -> None:
    qp = question_prompt(task.prompt, task.verifier)
    rng = random.Random(derive_seed(ctx.seed, task.id, "epsilon"))
    central = central_agent(team, cfg)
    endorsed = None  # the endorsed candidate's message
    failures, slates, lenient_used = 0, [], 0
    for r in range(1, cfg.rounds + 1):
        # ---- explore ----
        calls = []
        for i in range(cfg.explorers):
            agent = team.agent(
                cfg.explorer_members[i % len(cfg.explorer_members)], f"explorer-{i}", "explorer", cfg
            )
            agent_ignores = rng.random() < cfg.epsilon
            for k in range(cfg.samples):
                ignores = agent_ignores if cfg.epsilon_mode == "agent" else rng.random() < cfg.epsilon
                if endorsed is None or ignores:
                    messages, informed = question_messages(task.prompt, task.verifier), ("task",)
                else:
                    text = MAESTRO_EXPLORE_ENDORSED.format(
                        endorsed=endorsed.content.strip(), question_prompt=qp
                    )
                    messages, informed = [{"role": "user", "content": text}], ("task", f"central@{r - 1}")
                calls.append(
                    Call(agent, messages, explorer_node(i, k, r, cfg.samples), (f"central@{r}",), r, informed)
                )
        slate = await ctx.ask(calls)
        m = len(slate)
        answers = [c.extracted for c in slate]
        correct = await ctx.verdicts(answers)  # the task verifier's, cached per answer (off the loop)
        # ---- converge ----
        last = r == cfg.rounds
        receivers = (
            (ANSWER_NODE,)
            if last
            else tuple(
                explorer_node(i, k, r + 1, cfg.samples)
                for i in range(cfg.explorers)
                for k in range(cfg.samples)
            )
        )
        informed = tuple(c.sender for c in slate)
        state = SynthState(
            task.prompt, task.verifier, tuple(Shown(c.content, c.extracted) for c in slate), r, central.system
        )
        turns = central_turns(state, cfg)
        winner = None  # Central-Gen's majority answer
        if cfg.central == "select":
            (decision,) = await ctx.ask([Call(central, turns, f"central@{r}", receivers, r, informed)])
            pick, parse = parse_choice(decision.content, m, cfg.lenient)
            synthesis = decision
            lenient_used += parse == "lenient"
            decision.extracted = slate[pick].extracted if pick is not None else None
            if pick is None:
                failures += 1
            else:
                endorsed = slate[pick]
            pick_correct = correct[pick] if pick is not None else None
        else:
            outs = await ctx.ask(
                [
                    Call(
                        central,
                        turns,
                        f"central@{r}" if j == 0 else f"central-{j}@{r}",
                        receivers,
                        r,
                        informed,
                    )
                    for j in range(cfg.central_samples)
                ]
            )
            winner, _ = majority([o.extracted for o in outs])
            pick, parse = None, "gen"
            if winner is None:
                failures += 1
                synthesis = outs[0]
            else:
                endorsed = synthesis = next(o for o in outs if o.extracted == winner)
            pick_correct = (await ctx.verdicts([winner]))[0]  # False for no winner
        ctx.propose(endorsed.extracted if endorsed is not None else None)
        record = {
            "round": r,
            "candidates": answers,
            "correct": correct,
            "coverage": any(correct),
            "pick": pick,
            "pick_correct": pick_correct,
            "parse": parse,
        }
        slates.append(record)
        ctx.event("slate", **record)
        agents = [f"explorer-{i}" for i in range(cfg.explorers) for _ in range(cfg.samples)]
        ctx.record_pool(r, slate, agents, synthesis, "model", winner, pick=pick, parse=parse)
    final = endorsed.extracted if endorsed is not None else None
    ctx.finish(final, central_format_failures=failures, lenient_decisions=lenient_used, slates=slates)


def generations(cfg: MaestroConfig) -> int:
    return cfg.rounds * (cfg.explorers * cfg.samples + cfg.central_samples)


def match(cfg: MaestroConfig, target: int) -> dict:
    """Keep R; choose N (explorers) and K (samples) so that R·(N·K + c) is closest to ``target``,
    staying as near the configured N as possible."""
    options = [
        (abs(cfg.rounds * (n * k + cfg.central_samples) - target), abs(n - cfg.explorers), k, n)
        for n in range(1, 9)
        for k in range(1, 17)
    ]
    _, _, samples, explorers = min(options)
    return {"explorers": explorers, "samples": samples}
