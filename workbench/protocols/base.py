"""What every protocol is made of: agents, a team, and the episode context that records.

A protocol is ``async def run(task, team, cfg, ctx) -> None``. It asks for generations with
``await ctx.generate([Call(...), ...])`` (all calls of one phase together, so they are batched)
and ends with ``ctx.finish(answer)``. The context turns every call into a message, events,
graph edges and usage, so protocols cannot forget to record anything and never touch models or
files themselves. A protocol whose rounds pool candidates for a synthesis says so with
``ctx.record_pool(round, candidates, agents, synthesis, rule)`` (episode schema 2: the analyses and
the viewer read pools from there, never from node names), and ``finish`` gives every message that
carries an answer the task verifier's verdict (``Message.correct``; ``await ctx.verdicts(answers)``
during the run, cached per answer).

Slow checks (code in the sandbox, math-verify) never block the event loop: under `play`, ``finish``
only records the answer and `play` then awaits the verdicts, which run on the verifier pool
(`workbench.tasks.verify.verifier_pool`) with the episode's verification budget, while the other
episodes keep queueing generations. The checks, their order, the verdicts and the events are the
same as inline (``finish`` outside `play`, e.g. a training sample turned into an episode, scores
at once).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import time
from dataclasses import dataclass, field, fields, replace

from workbench.config import ConfigError
from workbench.episode import Episode, Message, Usage
from workbench.models.base import Generation, Request, SamplingParams
from workbench.prompts import chat_messages
from workbench.scheduler import BatchScheduler
from workbench.tasks import Task
from workbench.tasks.verify import (
    VERIFIERS,
    safe_check,
    safe_check_all,
    safe_extract,
    start_episode_budget,
    verifier_pool,
)

TASK_NODE, ANSWER_NODE = "task", "answer"


@dataclass(frozen=True)
class Agent:
    """A named role bound to a backend, a system prompt and sampling parameters."""

    name: str
    role: str = "agent"
    backend: str = "default"  # key into the scheduler's backends
    system: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)


TOOLS = ("python", "calculator")  # tool workers (workbench/models/tools.py)


@dataclass(frozen=True)
class Member:
    """A team member: a model (backend name) with optional sampling and system-prompt overrides.

    Protocol configs refer to members by name (``explorers=("cold", "hot")``); a member's
    overrides win over the protocol's defaults for that role, so one model at two temperatures,
    or with two personas, is two members. ``description`` is the one line a Conductor's prompt
    shows for this worker; ``tool`` is "" for a model, or the kind of tool worker it is
    (``python``: its model writes a program that runs in the OS sandbox; ``calculator``: no model,
    an arithmetic expression is evaluated exactly); its backend is then the tool's.
    """

    name: str
    backend: str = "default"
    temperature: float | None = None
    top_p: float | None = None
    system: str | None = None
    description: str = ""
    tool: str = ""
    max_tokens: int | None = None


@dataclass(frozen=True)
class Team:
    """The members a protocol may bind its roles to, by name. ``default`` is always present."""

    members: tuple[Member, ...] = (Member("default"),)

    def __post_init__(self) -> None:
        names = [m.name for m in self.members]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"team member '{twice[0]}' is defined twice; give each member its own name")
        if "default" not in names:
            object.__setattr__(self, "members", (Member("default"), *self.members))

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.backend for m in self.members))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise ConfigError(
            f"no team member named '{name}' (have: {', '.join(m.name for m in self.members)}); "
            f"define it with --set team.{name}.model=MODEL_NAME"
        )

    def description(self, name: str) -> str:
        """The member's one-line description (what a Conductor's prompt shows for it; "" if none)."""
        return self.member(name).description

    def agent(self, member: str, name: str, role: str, cfg, system: str | None = None) -> Agent:
        """The agent ``name`` playing ``role`` as ``member``: sampling from the protocol config's
        ``temperature``/``top_p``/``max_tokens`` (and ``system``), member overrides applied."""
        m = self.member(member)
        temperature = cfg.temperature if m.temperature is None else m.temperature
        top_p = cfg.top_p if m.top_p is None else m.top_p
        max_tokens = cfg.max_tokens if m.max_tokens is None else m.max_tokens
        sampling = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
        if m.system is not None:  # a persona replaces the protocol's system prompt, but a role's own
            system = f"{m.system}\n\n{system}" if system else m.system  # instructions are kept after it
        else:
            system = system or getattr(cfg, "system", "") or None
        return Agent(name, role, m.backend, system, sampling)


@dataclass(frozen=True)
class Call:
    """One generation: ``agent`` (as graph node ``node``) answers ``messages`` and sends to ``receivers``."""

    agent: Agent
    messages: list[dict[str, str]]
    node: str  # graph node of this generation's author (e.g. "sample-3"); defaults to the agent name
    receivers: tuple[str, ...] = (ANSWER_NODE,)
    round: int = 0
    informed_by: tuple[str, ...] = (TASK_NODE,)  # nodes whose output is in this call's prompt


@dataclass(frozen=True)
class Budget:
    """A per-episode cap on generations and/or tokens (None = no cap).

    Checked before each phase (one ``ctx.generate`` call): a phase that would take the episode
    past ``max_calls`` is not started, nor is any phase once ``max_tokens`` (prompt + completion,
    i.e. what an API bills) is reached. A phase's token count is only known after it runs, so
    the last phase may end above ``max_tokens``; the episode records by how much. The protocol
    then stops and the episode ends with its provisional answer (``ctx.propose``), recorded as
    ``meta.budget_exhausted``.
    """

    max_calls: int | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_calls", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"budget.{name} must be >= 1 (or unset for no cap), got {value}")

    def refuses(self, usage: Usage, n_calls: int) -> str | None:
        """Why a phase of ``n_calls`` generations may not start, or None if it may."""
        if self.max_calls is not None and usage.calls + n_calls > self.max_calls:
            return f"{usage.calls} + {n_calls} calls would exceed budget.max_calls={self.max_calls}"
        used = usage.prompt_tokens + usage.completion_tokens
        if self.max_tokens is not None and used >= self.max_tokens:
            return f"{used} tokens used, budget.max_tokens={self.max_tokens}"
        return None


class BudgetExhausted(Exception):
    """Raised by ``ctx.generate`` when the budget refuses a phase; the runner ends the episode."""


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (run seed, task id, call number)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


class EpisodeContext:
    """Records one episode while a protocol runs it."""

    def __init__(
        self,
        task: Task,
        protocol: str,
        scheduler: BatchScheduler,
        seed: int = 0,
        index: int = 0,
        budget: Budget | None = None,
    ):
        self.task = task
        self.scheduler = scheduler
        self.seed = seed
        self.budget = budget or Budget()
        self.provisional: str | None = None  # the answer the episode ends with if the budget runs out
        self.finished = False
        self.defer_scoring = False  # set by `play`: finish records, `score` (awaited there) checks
        self._final: tuple[str | None, dict] | None = None  # what finish was given: answer, meta
        self._checking = asyncio.Lock()  # one episode's checks run one after another, as inline
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
        if isinstance(task.meta.get("family"), str):  # an item of a task mixture (tasks/mix.py)
            self.episode.meta["family"] = task.meta["family"]
        self._nodes: dict[str, dict] = {}
        self._verdicts: dict[str, bool] = {}  # the task verifier's verdict per answer string
        self._pools: list[tuple[dict, list[Message], Message | None]] = []
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

    def verifier_error(self, stage: str, error: str, node: str | None = None) -> None:
        """A verifier raised or timed out (``stage``: extract | check): the answer counts as a format
        failure or a wrong answer, the episode stays in n, and this event says what happened."""
        self.event("verifier_error", stage=stage, node=node, error=error)
        self.episode.meta["verifier_errors"] = self.episode.meta.get("verifier_errors", 0) + 1

    def verdict(self, answer: str | None) -> bool:
        """The task verifier's verdict on ``answer`` (False for None), cached per answer; a verifier
        that fails is recorded as a ``verifier_error`` event and counts the answer wrong.

        This runs the check here and now, on the event loop when called from a protocol: protocols
        use ``await ctx.verdicts(...)``, which sends slow checks to the verifier pool."""
        if answer is None:
            return False
        if answer not in self._verdicts:
            ok, error = safe_check(self.task, answer)
            if error is not None:
                self.verifier_error("check", error)
            self._verdicts[answer] = ok
        return self._verdicts[answer]

    async def verdicts(self, answers: list[str | None]) -> list[bool]:
        """``[ctx.verdict(a) for a in answers]``, with the checks of a slow verifier kind on the
        verifier pool while other episodes run: the same checks in the same order, the same
        verdicts, cache and ``verifier_error`` events."""
        async with self._checking:
            todo = list(dict.fromkeys(a for a in answers if a is not None and a not in self._verdicts))
            for answer, (ok, error) in zip(todo, await self._checked(todo), strict=True):
                if error is not None:
                    self.verifier_error("check", error)
                self._verdicts[answer] = ok
        return [False if a is None else self._verdicts[a] for a in answers]

    async def _checked(self, answers: list[str]) -> list[tuple[bool, str | None]]:
        """`safe_check` of each answer, in order, charged to this episode's verification budget: on
        the verifier pool for a slow verifier kind (code, math), here for the cheap ones."""
        pool = verifier_pool() if answers and VERIFIERS[self.task.verifier].slow else None
        if pool is None:
            return safe_check_all(self.task, answers)
        # the budget is a context variable of this episode's task: a worker thread runs in a copy of
        # that context, which holds the same budget object, so what the check spends is spent here
        run = contextvars.copy_context().run
        work = asyncio.get_running_loop().run_in_executor(pool, run, safe_check_all, self.task, answers)
        if self.scheduler is None:
            return await work
        return await self.scheduler.external(work)  # the driver neither waits for it nor polls it

    def known_verdict(self, answer: str, correct: bool) -> None:
        """Seed the verdict cache with a verdict the same verifier gave before (a pooled answer)."""
        self._verdicts.setdefault(answer, bool(correct))

    def record_pool(
        self,
        round_: int,
        candidates: list[Message],
        agents: list[str],
        synthesis: Message | None = None,
        rule: str | None = None,
        answer: str | None = None,
        **meta,
    ) -> None:
        """Record round ``round_``'s pool: the candidate messages (with their agent positions,
        e.g. ``explorer-1``: the unit of per-agent credit), the message that synthesised them and
        how (``rule``: "model" for a model synthesiser, "majority" for the majority rule, None for
        no synthesis). The synthesis's answer is ``answer`` when given (a majority without a message
        of its own, a fallback), else ``synthesis.extracted`` at ``finish``; its verdict is computed
        there. ``meta``: protocol facts kept with the pool (maestro's pick and parse)."""
        if len(agents) != len(candidates):
            raise ValueError("record_pool: one agent position per candidate")
        if rule not in ("model", "majority", None) or (rule is None and synthesis is not None):
            raise ValueError("record_pool: rule is 'model' or 'majority' (a synthesis), or None (none)")
        entry = {"round": round_, "agents": list(agents), "rule": rule, "answer": answer, "meta": meta}
        self._pools.append((entry, list(candidates), synthesis))

    def propose(self, answer: str | None) -> None:
        """The protocol's current best answer: what the episode ends with if the budget stops it."""
        if answer is not None:
            self.provisional = answer

    # ---- generation ----
    async def ask(self, calls: list[Call]) -> list[Message]:
        """Like ``generate``, but returns the recorded messages (content, extracted answer) in call order."""
        await self.generate(calls)
        return self.episode.messages[-len(calls) :]

    async def generate(self, calls: list[Call]) -> list[Generation]:
        """Run ``calls`` as one batch (per backend) and record each as a message.

        Raises BudgetExhausted, before anything is sent, when the episode's budget refuses the phase.
        """
        refusal = self.budget.refuses(self.episode.usage, len(calls))
        if refusal is not None:
            self.event("budget_exhausted", reason=refusal, phase_calls=len(calls))
            raise BudgetExhausted(refusal)
        requests, backends = [], []
        for call in calls:
            self.add_node(call.node, call.agent.role, call.agent.name)
            linked = {(e["source"], e["target"]) for e in self.episode.graph["edges"]}
            for src in call.informed_by:  # a message already sent to this node is its edge
                if (src, call.node) not in linked:
                    self.add_edge(src, call.node, call.round)
            messages = chat_messages(call.agent.system, call.messages)
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
            if gen.finish_reason == "error":  # a remote call that failed for good: counted, not fatal
                self.event("generation_error", node=call.node, error=gen.error)
                self.episode.meta["generation_errors"] = self.episode.meta.get("generation_errors", 0) + 1
            if gen.warning:  # the request ran changed (e.g. max_tokens clamped to the context): counted
                self.event("generation_warning", node=call.node, warning=gen.warning)
                self.episode.meta["generation_warnings"] = self.episode.meta.get("generation_warnings", 0) + 1
            if gen.tool is not None:  # a tool worker (workbench/models/tools.py): what it ran, how it ended
                self.event("tool_call", node=call.node, **gen.tool)
                if gen.tool.get("status") != "ok":
                    self.event(
                        "tool_error", node=call.node, tool=gen.tool.get("tool"), reason=gen.tool.get("reason")
                    )
                    self.episode.meta["tool_failures"] = self.episode.meta.get("tool_failures", 0) + 1
            extracted, error = safe_extract(self.task, gen.text)
            if error is not None:
                self.verifier_error("extract", error, node=call.node)
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
        """Set the final answer (None = no parseable answer: a format failure) and score it.

        Under `play` (``defer_scoring``) this only records ``answer`` and ``meta``; `play` then
        awaits `score`, which runs the checks off the event loop. Elsewhere it scores at once."""
        if self.finished:
            raise RuntimeError("finish() called twice for one episode")
        self.finished = True
        self._final = (answer, meta)
        if self.defer_scoring:
            return self.episode
        plan = self._finish_plan()
        return self._score(plan, safe_check_all(self.task, plan))

    async def score(self) -> Episode:
        """Score the episode that `finish` recorded (under `play`): its checks run as
        `_checked` runs them, then verdicts, pools and events are filled in as `finish` does."""
        if self._final is None:
            raise RuntimeError("score() before finish()")
        async with self._checking:
            plan = self._finish_plan()
            return self._score(plan, await self._checked(plan))

    def _pool_answer(self, entry: dict, synthesis: Message | None) -> str | None:
        if entry["answer"] is None and synthesis is not None:
            return synthesis.extracted
        return entry["answer"]

    def _finish_plan(self) -> list[str]:
        """The checks scoring runs, in the order it runs them: the final answer (always checked,
        even when an earlier verdict on it is cached), then each answer of a message and of a pool
        synthesis not yet judged, first occurrence first."""
        answer = self._final[0]
        plan = [] if answer is None else [answer]
        seen = set(self._verdicts) | set(plan)
        later = [m.extracted for m in self.episode.messages]
        later += [self._pool_answer(e, s) for e, _, s in self._pools if e["rule"] is not None]
        for a in later:
            if a is not None and a not in seen:
                seen.add(a)
                plan.append(a)
        return plan

    def _score(self, plan: list[str], outcomes: list[tuple[bool, str | None]]) -> Episode:
        """Fill in verdicts, reward, pools and the closing events from ``outcomes`` (`safe_check`
        of each answer of ``plan``, in order), exactly as checking each answer here would."""
        ep = self.episode
        answer, meta = self._final
        pending = iter(zip(plan, outcomes, strict=True))

        def take(a: str) -> bool:  # the outcome of the next planned check, which is for ``a``
            planned, (ok, error) = next(pending)
            if planned != a:
                raise RuntimeError(f"scoring checked {planned!r} where {a!r} was due")
            if error is not None:
                self.verifier_error("check", error)
            return ok

        def verdict(a: str | None) -> bool:
            if a is None:
                return False
            if a not in self._verdicts:
                self._verdicts[a] = take(a)
            return self._verdicts[a]

        ep.final_answer = answer
        ep.format_failure = answer is None
        ep.correct = False
        if answer is not None:
            ep.correct = take(answer)
        ep.reward = 1.0 if ep.correct else 0.0
        if answer is not None:
            self._verdicts.setdefault(answer, ep.correct)
        for m in ep.messages:  # every answer carries the task verifier's verdict (schema 2)
            m.correct = None if m.extracted is None else verdict(m.extracted)
        ep.pools = []
        for entry, candidates, synthesis in self._pools:
            synth_answer = self._pool_answer(entry, synthesis)
            ep.pools.append(
                {
                    "round": entry["round"],
                    "candidates": [m.id for m in candidates],
                    "agents": entry["agents"],
                    "synthesis": None if synthesis is None else synthesis.id,
                    "rule": entry["rule"],
                    "answer": synth_answer,
                    "correct": None if entry["rule"] is None else verdict(synth_answer),
                    "meta": entry["meta"],
                }
            )
        if next(pending, None) is not None:
            raise RuntimeError("scoring ran a check that no verdict used")
        ep.meta.update(meta)
        ep.usage.wall_s = round(time.perf_counter() - self._t0, 4)
        if self.budget.max_tokens is not None:
            over = ep.usage.prompt_tokens + ep.usage.completion_tokens - self.budget.max_tokens
            if over > 0:
                ep.meta["budget_overshoot_tokens"] = over
        self.event("episode_finished", final_answer=answer, correct=ep.correct)
        return ep


async def play(run, task: Task, team: Team, cfg, ctx: EpisodeContext) -> Episode:
    """Run one protocol episode; a budget stop ends it with the protocol's provisional answer.
    Its verifications share one time budget (``verify.EPISODE_BUDGET_S``; this is the episode's task)
    and its final scoring is awaited here, off the event loop for slow verifiers."""
    start_episode_budget()
    ctx.defer_scoring = True
    try:
        await run(task, team, cfg, ctx)
    except BudgetExhausted as e:
        if not ctx.finished:
            ctx.finish(ctx.provisional, budget_exhausted=True, budget_reason=str(e))
    if not ctx.finished:
        raise RuntimeError(f"protocol '{ctx.episode.protocol}' returned without calling ctx.finish()")
    return await ctx.score()


def member_fields(cfg) -> dict[str, tuple[str, ...]]:
    """A protocol config's team-member references: fields named ``*member`` or ``*members``."""
    out = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name.endswith("member"):
            out[f.name] = (value,)
        elif f.name.endswith("members"):
            out[f.name] = tuple(value)
    return out


def usage_total(episodes: list[Episode]) -> Usage:
    total = Usage()
    for ep in episodes:
        total.add(ep.usage)
    return total
