"""Rollouts: the trained role's samples, with token ids, sampling log-probs and rewards.

Two ways to get them (``train.rollout``):

* **offline** (MLPO's setting; also how the Maestro central agent is trained here): a pool of
  frozen-agent answers per question is built once (``build_pool``, stored as ``pool.jsonl`` and
  reusable). Each step draws, per question, the answers the trained role sees (the leader's K
  peer answers, the central agent's slate of N·K candidates) and samples the trained role
  ``group`` times on that one prompt (one GRPO group). The reward needs no other model call:
  the pool says which answers are right.
* **online**: the whole protocol runs (``run_episodes``) with the trained role on the policy
  (adapter on) and every other role frozen (adapter off); each question is played ``group``
  times with different sampling seeds. Every generation of the trained role in an episode gets
  that episode's reward (the Conductor's 0 / 0.5 / 1; correctness otherwise). This is the
  interactive variant the MLPO reviewers asked for, and the only way to train the Conductor,
  whose plans must be executed to be scored.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from workbench.config import ConfigError
from workbench.models.base import Generation, Request, SamplingParams
from workbench.prompts import Shown, SynthState, question_messages
from workbench.protocols import PROTOCOLS, EpisodeContext, Member, Team
from workbench.protocols.base import ANSWER_NODE, TASK_NODE, derive_seed
from workbench.protocols.leader import leader_answer
from workbench.protocols.maestro import parse_choice
from workbench.tasks import Task


# ---------------------------------------------------------------- the offline pool
@dataclass
class PoolEntry:
    task_id: str
    answers: list[dict[str, Any]]  # {"text", "extracted", "correct"}
    # pool.rounds > 1: whole slates as the protocol produced them, each {"round", "episode",
    # "answers", "broadcast"} (later rounds conditioned on the broadcast candidate); [] otherwise
    slates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return sum(a["correct"] for a in self.answers) / len(self.answers) if self.answers else 0.0


def build_pool(
    tasks: list[Task],
    backend,
    size: int,
    temperature: float,
    max_tokens: int,
    seed: int,
    path: Path,
    progress: bool = True,
    chunk: int = 32,
) -> dict[str, PoolEntry]:
    """Sample ``size`` answers per question from the frozen model; append them to ``path`` (JSONL).

    Questions already in ``path`` are kept and not sampled again, so an interrupted build resumes.
    """
    pool = read_pool(path)
    todo = [t for t in tasks if t.id not in pool]
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="pool", unit="q")
    with open(path, "a", encoding="utf-8") as f:
        for s in range(0, len(todo), chunk):
            part = todo[s : s + chunk]
            sampling = [
                SamplingParams(
                    temperature=temperature,
                    top_p=0.95,
                    max_tokens=max_tokens,
                    n=size,
                    seed=derive_seed(seed, t.id, "pool"),
                )
                for t in part
            ]
            gens = backend.generate(
                [
                    Request(question_messages(t.prompt, t.verifier), sp)
                    for t, sp in zip(part, sampling, strict=True)
                ]
            )
            for i, t in enumerate(part):
                answers = []
                for g in gens[i * size : (i + 1) * size]:
                    ext = t.extract(g.text)
                    answers.append(
                        {"text": g.text, "extracted": ext, "correct": ext is not None and t.is_correct(ext)}
                    )
                pool[t.id] = PoolEntry(t.id, answers)
                f.write(json.dumps({"task_id": t.id, "answers": answers}) + "\n")
            f.flush()
            if bar is not None:
                bar.update(len(part))
    if bar is not None:
        bar.close()
    return pool


def read_pool(path: Path) -> dict[str, PoolEntry]:
    """A pool file's entries by task id (a torn last line, from a killed build, is skipped)."""
    pool: dict[str, PoolEntry] = {}
    if not Path(path).exists():
        return pool
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            d = json.loads(line)
            pool[d["task_id"]] = PoolEntry(d["task_id"], list(d["answers"]), list(d.get("slates") or []))
        except (ValueError, KeyError, TypeError):
            continue
    return pool


def build_round_pool(
    tasks: list[Task],
    backend,
    recipe: str,
    protocol,
    rounds: int,
    size: int,
    seed: int,
    path: Path,
    progress: bool = True,
    chunk: int = 16,
) -> dict[str, PoolEntry]:
    """``pool.rounds > 1``: slates of every round 1..``rounds`` as the protocol produces them.

    The recipe's protocol (``protocol``: its ProtocolConfig, run at ``rounds`` rounds) plays each
    question ``ceil(size / m)`` times with the frozen model in every role (m: the slate size), and
    each round's pool it records (episode schema 2) becomes one slate: from round 2 on its
    candidates were written after the broadcast candidate (maestro: the endorsed candidate; the
    leader: its last message). Slates are kept whole and in the protocol's order, so a training
    prompt built from one is the protocol's own prompt for that round (tests/test_prompt_parity.py).
    Appended to ``path`` per question; questions already there with slates are not played again."""
    import math

    from workbench.evaluate import ProtocolConfig, run_episodes

    pool = read_pool(path)
    todo = [t for t in tasks if t.id not in pool or not pool[t.id].slates]
    pc = ProtocolConfig(recipe, {**protocol.options, "rounds": rounds})
    per_q = max(1, math.ceil(size / shown_count(recipe, pc.resolved)))
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"pool ({rounds} rounds)", unit="q")
    with open(path, "a", encoding="utf-8") as f:
        for s in range(0, len(todo), chunk):
            part = todo[s : s + chunk]
            copies = [replace(t, id=f"{t.id}~p{j}") for t in part for j in range(per_q)]
            episodes, errors, _ = run_episodes(
                copies, pc, {"default": backend}, seed=derive_seed(seed, "pool-rounds") % (2**31)
            )
            if errors:
                print(f"[pool] {len(errors)} pool episode(s) failed, e.g. {errors[0]}", file=sys.stderr)
            by_task: dict[str, list] = {t.id: [] for t in part}
            for ep in episodes:
                by_task[ep.task_id.rsplit("~p", 1)[0]].append(ep)
            for t in part:
                slates = []
                for ep in sorted(by_task[t.id], key=lambda e: e.task_id):
                    slates += episode_slates(ep)
                answers = [a for sl in slates for a in sl["answers"]]
                pool[t.id] = PoolEntry(t.id, answers, slates)
                f.write(json.dumps({"task_id": t.id, "answers": answers, "slates": slates}) + "\n")
            f.flush()
            if bar is not None:
                bar.update(len(part))
    if bar is not None:
        bar.close()
    return pool


def episode_slates(ep) -> list[dict[str, Any]]:
    """Every recorded pool of an episode as a slate ``{"round", "episode", "answers", "broadcast"}``."""
    msgs = {m.id: m for m in ep.messages}
    slates, broadcast = [], None
    for p in ep.pools:
        answers = [
            {"text": msgs[i].content, "extracted": msgs[i].extracted, "correct": bool(msgs[i].correct)}
            for i in p["candidates"]
        ]
        slates.append(
            {"round": p["round"], "episode": ep.task_id, "answers": answers, "broadcast": broadcast}
        )
        pick = (p.get("meta") or {}).get("pick")
        if ep.protocol.startswith("maestro"):  # the endorsed candidate, kept until a new pick
            if pick is not None:
                broadcast = answers[pick]["text"]
        elif p.get("synthesis") is not None:  # the leader's message of this round
            broadcast = msgs[p["synthesis"]].content
    return slates


def draw_slate(entry: PoolEntry, m: int, rng: random.Random, mixed: bool) -> tuple[list[dict[str, Any]], int]:
    """The answers one training prompt shows, and the protocol round they come from.

    Without recorded slates (``pool.rounds=1``): ``draw_shown`` from the pooled answers (round 0).
    With them: one whole slate at random, from any round (with ``mixed``, among the slates holding
    a right and a wrong answer when there are such), in the protocol's order."""
    if not entry.slates:
        return draw_shown(entry.answers, m, rng, mixed), 0
    slates = entry.slates
    if mixed:
        both = [sl for sl in slates if len({bool(a["correct"]) for a in sl["answers"]}) == 2]
        slates = both or slates
    slate = slates[rng.randrange(len(slates))]
    return list(slate["answers"]), int(slate["round"])


# ---------------------------------------------------------------- samples
@dataclass
class Sample:
    """One completion of the trained role, and everything the loss and the episode log need."""

    group: int  # GRPO group: samples of the same prompt
    task: Task
    prompt_ids: list[int]
    completion_ids: list[int]
    sample_logprobs: list[float] | None
    text: str
    reward: float
    correct: bool
    format_failure: bool
    episode: Any = None  # the Episode this sample belongs to (online) or was recorded as (offline)
    decision_tokens: int | None = None  # maestro: completion tokens up to </choice> (CLPO's decision span)
    info: dict[str, Any] = field(default_factory=dict)
    shown: list[str] = field(default_factory=list)  # offline: the pooled answers in the prompt
    shown_correct: list[bool] = field(default_factory=list)  # offline: the pool's verdict on each


@dataclass
class Slate:
    """CLPO's listwise data for one question: a justification per candidate, conditioned on endorsing it."""

    group: int
    prompt_ids: list[list[int]]  # per candidate: chat prompt + "<choice>k</choice><why>"
    rationale_ids: list[list[int]]  # per candidate: the sampled justification tokens
    rewards: list[float]  # per candidate: 1 if the candidate is correct


def _decision_span(tokenizer, ids: list[int]) -> int | None:
    """How many leading completion tokens make up ``...</choice>`` (None: never closed)."""
    for n in range(1, len(ids) + 1):
        if "</choice>" in tokenizer.decode(ids[:n], skip_special_tokens=True):
            return n
    return None


def _decision_length(tokenizer, m: int) -> int:
    """Tokens in the longest well-formed decision ``<choice>m</choice>``: the span a decision that
    never closes is trained on (its format failure is pushed down there, not over the whole text)."""
    return len(tokenizer(f"<choice>{m}</choice>", add_special_tokens=False)["input_ids"])


def offline_samples(
    recipe: str,
    tasks: list[Task],
    pool: dict[str, PoolEntry],
    policy,
    protocol_cfg,
    train,
    step: int,
    with_slates: bool = False,
    mixed: bool = False,
) -> tuple[list[Sample], list[Slate]]:
    """Sample the trained role ``train.group`` times per question on prompts built from the pool.

    ``mixed`` (``pool.mixed``): every slate / peer set shows at least one right and one wrong
    pooled answer when the pool has both (see ``draw_shown``).
    """
    rng = random.Random(derive_seed(train.seed, step, "offline"))
    prompts, shown, rounds = [], [], []
    for task in tasks:
        slate, rnd = draw_slate(pool[task.id], shown_count(recipe, protocol_cfg), rng, mixed)
        shown.append(slate)
        rounds.append(rnd)
        sp = SamplingParams(
            temperature=train.temperature,
            max_tokens=train.max_tokens,
            n=train.group,
            seed=derive_seed(train.seed, step, task.id),
            logprobs=True,
        )
        chat = offline_messages(recipe, task, slate, protocol_cfg, round=rnd)
        prompts.append((policy.encode_chat(chat), sp))
    gens = policy.generate_from_ids(prompts)
    samples = []
    for q, task in enumerate(tasks):
        slate = shown[q]
        for g in gens[q * train.group : (q + 1) * train.group]:
            sample = _score_offline(recipe, q, task, slate, g, policy.tokenizer, protocol_cfg)
            sample.info["round"] = rounds[q]
            samples.append(sample)
    slates = _rationales(tasks, shown, prompts, policy, train, step) if with_slates else []
    return samples, slates


def shown_count(recipe: str, protocol_cfg) -> int:
    """How many pooled answers the trained role sees: Maestro's N·K slate, the leader's K peers."""
    return protocol_cfg.explorers * protocol_cfg.samples if recipe == "maestro" else protocol_cfg.peers


def offline_messages(
    recipe: str,
    task: Task,
    slate: list[dict[str, Any]],
    protocol_cfg,
    team: Team | None = None,
    round: int = 0,
) -> list[dict[str, str]]:
    """The trained role's chat for one question and the pooled answers it is shown: the protocol's
    own prompt builder (``PROTOCOLS[recipe].synthesiser``: maestro.central_turns for the central
    agent, leader.leader_turns for the leader), with the system prompt the protocol would give the
    role's member of ``team`` (default: the base team, i.e. the protocol's ``system``)."""
    synth = PROTOCOLS[recipe].synthesiser
    agent = synth.agent(team or Team(), protocol_cfg)
    shown = tuple(Shown(a["text"], a["extracted"]) for a in slate)
    return synth.messages(SynthState(task.prompt, task.verifier, shown, round, agent.system), protocol_cfg)


def draw_shown(
    answers: list[dict[str, Any]], m: int, rng: random.Random, mixed: bool
) -> list[dict[str, Any]]:
    """``m`` pooled answers (all when fewer), in random order.

    ``mixed``: when the pool has both, one right and one wrong answer are drawn first and the rest
    at random from what is left, then the slate is shuffled (the position of the right answer is
    uniform, so the policy cannot learn a position).
    """
    m = min(m, len(answers))
    right = [i for i, a in enumerate(answers) if a["correct"]]
    wrong = [i for i, a in enumerate(answers) if not a["correct"]]
    if not (mixed and right and wrong and m >= 2):
        return [answers[i] for i in rng.sample(range(len(answers)), m)]
    first = [rng.choice(right), rng.choice(wrong)]
    rest = [i for i in range(len(answers)) if i not in first]
    picked = first + rng.sample(rest, m - 2)
    rng.shuffle(picked)
    return [answers[i] for i in picked]


def _score_offline(recipe, q, task, slate, g: Generation, tokenizer, protocol_cfg) -> Sample:
    if recipe == "maestro":
        # training reads decisions strictly: only a well-formed <choice>j</choice> is a decision; "the
        # answer is 2" is a format failure with reward 0, never candidate 2
        pick, how = parse_choice(g.text, len(slate), lenient=False)
        correct = pick is not None and bool(slate[pick]["correct"])
        answer = slate[pick]["extracted"] if pick is not None else None
        info = {
            "pick": pick,
            "parse": how,
            "coverage": any(a["correct"] for a in slate),
            "slate_correct": [bool(a["correct"]) for a in slate],
            "answer": answer,
        }
        fmt = pick is None
        span = _decision_span(tokenizer, g.token_ids)
        if span is None:  # never closed: the decision term sees the tokens a decision takes, not all
            span = min(len(g.token_ids), _decision_length(tokenizer, len(slate)))
    else:
        answer, tagged = leader_answer(g.text, task, strict=True)
        correct = answer is not None and task.is_correct(answer)
        peers = [bool(a["correct"]) for a in slate]
        info = {"answer": answer, "tagged": tagged, "peers_right": sum(peers), "peers": len(peers)}
        fmt, span = answer is None, None
    info["group_key"] = [task.id, "central" if recipe == "maestro" else "leader", 0]  # one prompt, one group
    return Sample(
        q,
        task,
        list(g.prompt_ids),
        list(g.token_ids),
        g.logprobs,
        g.text,
        float(correct),
        correct,
        fmt,
        decision_tokens=span,
        info=info,
        shown=[a["text"] for a in slate],
        shown_correct=[bool(a["correct"]) for a in slate],
    )


def _rationales(tasks, shown, prompts, policy, train, step) -> list[Slate]:
    """Per question and candidate k: the justification the policy writes after ``<choice>k</choice><why>``."""
    tok = policy.tokenizer
    requests, index = [], []
    for q, slate in enumerate(shown):
        chat_ids = prompts[q][0]
        for k in range(len(slate)):
            prefix = tok(f"<choice>{k + 1}</choice><why>", add_special_tokens=False)["input_ids"]
            sp = SamplingParams(
                temperature=train.temperature,
                max_tokens=train.rationale_tokens,
                stop=("</why>",),
                seed=derive_seed(train.seed, step, q, k, "why"),
            )
            requests.append((chat_ids + prefix, sp))
            index.append((q, k))
    gens = policy.generate_from_ids(requests)
    slates = []
    for q, slate in enumerate(shown):
        rows = [i for i, (qq, _) in enumerate(index) if qq == q]
        slates.append(
            Slate(
                q,
                [requests[i][0] for i in rows],
                [list(gens[i].token_ids) or [tok.eos_token_id] for i in rows],
                [float(a["correct"]) for a in slate],
            )
        )
    return slates


def offline_episode(recipe: str, role: str, sample: Sample, step: int, k: int = 0):
    """A training sample as an Episode (for the run's episodes.jsonl and the live viewer).

    ``k`` numbers the sample within its group; the episode id ``<task>#<step>.<k>`` is unique in a run.
    """
    ctx = EpisodeContext(sample.task, recipe, scheduler=None, seed=step, index=sample.group)
    ctx.episode.episode_id = f"{sample.task.id}#{step}.{k}"
    peer_role = "explorer" if recipe == "maestro" else "peer"
    candidates = []
    for i, text in enumerate(sample.shown):
        node = f"{peer_role}-{i}"
        ctx.add_node(node, peer_role)
        ctx.add_edge(TASK_NODE, node, 0)
        msg = ctx.message(node, (role,), peer_role, text, 0)
        msg.extracted = sample.task.extract(text)
        if i < len(sample.shown_correct) and msg.extracted is not None:
            ctx.known_verdict(msg.extracted, sample.shown_correct[i])  # the pool's verdict, same verifier
        candidates.append(msg)
    ctx.add_node(role, role)
    msg = ctx.message(role, (ANSWER_NODE,), role, sample.text, 0)
    msg.extracted = sample.info.get("answer")
    agents = [f"{peer_role}-{i}" for i in range(len(candidates))]
    facts = {k: sample.info[k] for k in ("pick", "parse") if k in sample.info}
    ctx.record_pool(sample.info.get("round", 0), candidates, agents, msg, "model", **facts)
    return ctx.finish(
        sample.info.get("answer"),
        train_step=step,
        rollout="offline",
        **{k: v for k, v in sample.info.items() if k != "answer"},
    )


# ---------------------------------------------------------------- online
class TracingContext(EpisodeContext):
    """An EpisodeContext that also keeps the policy backend's generations (token ids, log-probs)."""

    # episode_id -> the trained role's generations, in order, with the round each was asked in
    traces: dict[str, list[tuple[int, Generation]]]

    async def generate(self, calls):
        gens = await super().generate(calls)
        for call, gen in zip(calls, gens, strict=True):
            if call.agent.backend == "policy" and gen.finish_reason != "error":
                self.traces.setdefault(self.episode.episode_id, []).append((call.round, gen))
        return gens


class WithLogprobs:
    """The policy backend, asked for sampling log-probs on every request (rollouts need them)."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name

    def generate(self, requests: list[Request]) -> list[Generation]:
        return self.inner.generate(
            [replace(r, sampling=replace(r.sampling, logprobs=True)) for r in requests]
        )


def trainee_team(temperature: float | None = None, team: Team | None = None) -> Team:
    """The configured team (``team``: TrainConfig.build_team(); default: the frozen base alone) plus
    ``trainee``, the trained role, served by the policy backend."""
    members = (team or Team()).members
    return Team((*members, Member("trainee", backend="policy", temperature=temperature)))


def pool_backends(cfg, backends) -> dict[str, Any]:
    """The backends of the training team: ``default`` is the frozen base, the team's other models
    and tool workers are loaded once (cached on ``backends``); ``policy`` is added by the caller."""
    cached = getattr(backends, "pool_cache", None)
    if cached is None:
        cached = cfg.load_backends({"default": backends.frozen})
        backends.pool_cache = cached
    return dict(cached)


def trainee_options(recipe: str, role: str, max_tokens: int | None = None) -> dict[str, Any]:
    """Protocol options that bind the trained role to the ``trainee`` member."""
    opts: dict[str, Any] = {f"{role}_member": "trainee"}
    if max_tokens is not None:
        opts[f"{role}_max_tokens"] = max_tokens
    return opts


def online_samples(
    recipe, role, tasks, backends, protocol, train, step, team=None, pool=None
) -> tuple[list[Sample], list[dict]]:
    """Play each question ``train.group`` times with the trained role on the policy (``team``, ``pool``:
    the configured team and its backends, TrainConfig.build_team() and `pool_backends`).

    The ``group`` plays of a question are copies of one item (ids ``<id>~g<j>``, ``meta.question_id``
    the original id) that differ only in their sampling seeds: the trained role's first prompt,
    and the Conductor's worker subset, are the same for all of them. A GRPO group is keyed
    explicitly (question, role, round): the trained role's generations in round t of the group's
    episodes (the Conductor's call t: 0 the first plan, t ≥ 1 a recursive re-plan). Rewards: the
    Conductor's per call (``conductor_rewards``), correctness of the episode otherwise.

    ``train.recursion_finetune`` (conductor): a ``train.recursion_share`` of the questions, drawn per
    step, is played with one forced recursive call (``max_recursions=1``), the rest without
    recursion; first-round rewards of the recursed episodes are scaled by ``first_round_discount``.

    Returns the samples and the episodes that failed (each ``{"task_id", "error"}``: counted in
    the step's metrics, never fatal)."""
    from workbench.evaluate import run_episodes

    def copies(qs: list[int]) -> list[Task]:
        return [
            replace(tasks[q], id=f"{tasks[q].id}~g{j}", meta={**tasks[q].meta, "question_id": tasks[q].id})
            for q in qs
            for j in range(train.group)
        ]

    plays = [(list(range(len(tasks))), protocol)]  # (questions, protocol they are played with)
    forced: set[int] = set()
    if recipe == "conductor" and train.recursion_finetune:
        rng = random.Random(derive_seed(train.seed, step, "recurse"))
        forced = set(rng.sample(range(len(tasks)), round(train.recursion_share * len(tasks))))
        plays = [
            ([q for q in range(len(tasks)) if q in forced], _with(protocol, max_recursions=1)),
            ([q for q in range(len(tasks)) if q not in forced], _with(protocol, max_recursions=0)),
        ]
    traces: dict[str, list[tuple[int, Generation]]] = {}
    context = type("Tracing", (TracingContext,), {"traces": traces})
    episodes, errors = [], []
    for qs, proto in plays:
        if not qs:
            continue
        eps, errs, _ = run_episodes(
            copies(qs),
            proto,
            {"default": backends.frozen, **(pool or {}), "policy": WithLogprobs(backends.policy)},
            seed=derive_seed(train.seed, step, "online") % (2**31),
            team=trainee_team(train.temperature, team),
            context=context,
        )
        episodes += eps
        errors += errs
    by_id = {t.id: q for q, t in enumerate(tasks)}
    keys: dict[tuple[str, str, int], int] = {}
    samples = []
    for ep in episodes:
        q = by_id[ep.task_id.rsplit("~g", 1)[0]]
        if recipe == "conductor":
            discount = train.first_round_discount if q in forced else 1.0
            rewards = conductor_rewards(ep, tasks[q], discount)
            parsed = [bool(c.get("parsed")) for c in ep.meta.get("calls", [])]
            ep.reward = rewards[-1] if rewards else 0.0
            ep.meta.update(call_rewards=rewards, forced_recursion=q in forced)
        else:
            rewards, parsed = [], []
            ep.reward = float(ep.correct)
        ep.meta.update(train_step=step, rollout="online")
        for rnd, g in traces.get(ep.episode_id, []):
            if recipe == "conductor" and rnd >= len(rewards):
                continue  # a call the episode did not record (cannot happen; never guessed)
            reward = rewards[rnd] if recipe == "conductor" else ep.reward
            fmt = not parsed[rnd] if recipe == "conductor" else ep.format_failure
            key = (tasks[q].id, role, rnd)
            samples.append(
                Sample(
                    keys.setdefault(key, len(keys)),
                    tasks[q],
                    list(g.prompt_ids),
                    list(g.token_ids),
                    g.logprobs,
                    g.text,
                    reward,
                    ep.correct,
                    fmt,
                    episode=ep,
                    info={"group_key": list(key)},
                )
            )
    return samples, errors


def _with(protocol, **options):
    """The protocol config with some options replaced (validated again)."""
    from workbench.evaluate import ProtocolConfig

    return ProtocolConfig(protocol.name, {**protocol.options, **options})


def conductor_rewards(episode, task: Task, first_round_discount: float = 1.0) -> list[float]:
    """The reward of each Conductor call of an episode (``objectives.conductor_call_rewards``), read
    from ``meta.calls``: whether each call's plan parsed, and whether the answer standing after it is
    right (the episode's final answer for the last call; a recorded answer is checked by the task's
    verifier for the earlier ones)."""
    from workbench.rl.objectives import conductor_call_rewards

    calls = episode.meta.get("calls") or []
    parsed = [bool(c.get("parsed")) for c in calls]
    correct = [
        bool(episode.correct)
        if k == len(calls) - 1
        else c.get("answer") is not None and task.is_correct(c["answer"])
        for k, c in enumerate(calls)
    ]
    return conductor_call_rewards(parsed, correct, first_round_discount)


def check_groups(samples: list[Sample], step: int, errors: list[dict]) -> None:
    """Stop the run when a GRPO group scheduled by the step has fewer than two samples: a group of
    one has nothing to compare with (advantage 0), so the step would silently not train it.

    Scheduled groups are the first-round ones (round 0 of every question). Later rounds exist only
    for episodes whose earlier plan ran (recursion), so their size varies; a later-round group of
    one is counted by the trainer (``small_groups``) and trained with advantage 0."""
    sizes: Counter = Counter()
    for s in samples:
        key = tuple(s.info.get("group_key", (s.task.id, "?", 0)))
        sizes[key] += 1
    small = [k for k, n in sizes.items() if n < 2 and k[2] == 0]
    if small:
        task_id, role, rnd = small[0]
        why = f"; {len(errors)} rollout episode(s) failed, e.g. {errors[0]}" if errors else ""
        raise ConfigError(
            f"step {step}: the GRPO group of question '{task_id}' (role {role}, round {rnd}) has "
            f"{sizes[small[0]]} sample(s) ({len(small)} such group(s)); every group needs at least 2 "
            f"samples of one prompt: set train.group >= 2{why}"
        )
