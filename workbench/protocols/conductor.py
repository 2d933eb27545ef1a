"""`conductor` (Nielsen et al. 2025, arXiv 2512.04388; METHODS.md §2): a model writes the workflow.

    task ──► conductor ──► step-0 ──► step-1 ──► … ──► step-(n-1) ──► answer
                 │            ▲           ▲
                 └── plan ────┴───────────┘   (each step's worker and instruction come from the plan)

The conductor writes free reasoning, then three Python lists: ``model_id`` (the worker of each
step, shown to it only as "Model i"), ``subtasks`` (the instruction of each step) and
``access_list`` (per step ``[]``: sees no earlier step, or ``["all"]``: sees every earlier step's
instruction and response). At most ``max_steps`` steps run sequentially; the last step's
response is the answer.

* The plan is read by a safe parser: the lists are located in the text and read with
  ``ast.literal_eval`` (literals only, never ``eval``). A plan that cannot be parsed or violates
  the rules is a format failure (reward 0; the episode keeps what the conductor wrote, and
  ``meta.plan_error`` says why).
* ``include_question``: each worker also sees the original question (default on). The last
  step always sees it, with the task's answer-format line, so that its response can be scored.
* ``max_recursions``: afterwards the conductor sees the final response; three empty lists keep
  it, otherwise a new workflow runs in which "all" also includes the previous final response.
* ``random_subset``: per episode, a random subset of the worker members is offered (relabelled
  Model 0..k-1; the mapping is recorded), so a trained conductor adapts to any pool.

Generations per query: 1 + steps per workflow (at most 1 + max_steps, more with recursion).
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass, replace

from workbench.config import ConfigError
from workbench.models.base import SamplingParams
from workbench.prompts import (
    CONDUCTOR_QUESTION,
    CONDUCTOR_RECURSE,
    CONDUCTOR_SYSTEM,
    WORKER_CONTEXT,
    WORKER_INSTRUCTION,
    WORKER_STEP,
    question_prompt,
)
from workbench.protocols.base import ANSWER_NODE, Call, EpisodeContext, Team, derive_seed
from workbench.tasks import Task

MAX_LIST_CHARS = 20_000  # a list literal longer than this is refused before parsing


@dataclass(frozen=True)
class ConductorConfig:
    worker_members: tuple[str, ...] = (
        "default",
        "default",
        "default",
    )  # the pool: team members shown as Model 0..n-1
    conductor_member: str = "default"  # team member that conducts (the trained role)
    max_steps: int = 5  # the paper's cap
    include_question: bool = True  # workers always see the original question
    max_recursions: int = 0  # extra conductor calls that see the final response (0 = off)
    random_subset: bool = False  # offer a random subset of the pool per episode
    min_workers: int = 1  # smallest subset offered when random_subset
    temperature: float = 0.0  # workers
    top_p: float = 1.0
    max_tokens: int = 256  # per worker step
    system: str = ""
    conductor_temperature: float = 0.0  # 1.0 when sampling rollouts for RL (the paper)
    conductor_max_tokens: int = 384  # reasoning + three lists (the paper: 1024)

    def __post_init__(self) -> None:
        if not self.worker_members:
            raise ConfigError("protocol.worker_members must name at least one team member")
        if not 1 <= self.max_steps <= 10:
            raise ConfigError(f"protocol.max_steps must be in 1..10, got {self.max_steps}")
        if self.max_recursions < 0:
            raise ConfigError(f"protocol.max_recursions must be >= 0, got {self.max_recursions}")
        if not 1 <= self.min_workers <= len(self.worker_members):
            raise ConfigError(
                f"protocol.min_workers must be in 1..{len(self.worker_members)}, got {self.min_workers}"
            )
        SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)
        SamplingParams(temperature=self.conductor_temperature, max_tokens=self.conductor_max_tokens)


class PlanError(ValueError):
    """The conductor's output is not a valid workflow; the message says what is wrong."""


@dataclass(frozen=True)
class Plan:
    model_id: list[int]
    subtasks: list[str]
    access_list: list[list[str]]

    @property
    def empty(self) -> bool:
        return not self.model_id

    def to_dict(self) -> dict:
        return {"model_id": self.model_id, "subtasks": self.subtasks, "access_list": self.access_list}


def _list_literal(text: str, name: str) -> str:
    """The bracketed literal after the last ``name =`` in text (brackets balanced, strings respected)."""
    starts = [m.end() for m in re.finditer(rf"\b{name}\s*+=\s*+\[", text)]
    if not starts:
        raise PlanError(f"no '{name} = [...]' list")
    start = starts[-1] - 1
    depth, quote, i = 0, None, start
    while i < len(text) and i - start < MAX_LIST_CHARS:
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
        i += 1
    raise PlanError(f"the '{name}' list is not closed (or longer than {MAX_LIST_CHARS} characters)")


def _short(value: object) -> str:
    """A value as the plan wrote it, cut to 60 characters for the error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_plan(text: str, n_workers: int, max_steps: int) -> Plan:
    """Read and validate the three lists; raises PlanError with the reason."""
    values = {}
    for name in ("model_id", "subtasks", "access_list"):
        literal = _list_literal(text, name)
        try:
            values[name] = ast.literal_eval(literal)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:  # TypeError: {[]: 1}
            raise PlanError(f"'{name}' is not a Python list literal ({type(e).__name__})") from None
        if not isinstance(values[name], list):
            raise PlanError(f"'{name}' is not a list")
    ids, subtasks, access = values["model_id"], values["subtasks"], values["access_list"]
    if not len(ids) == len(subtasks) == len(access):
        raise PlanError(f"the lists differ in length ({len(ids)}, {len(subtasks)}, {len(access)})")
    if len(ids) > max_steps:
        raise PlanError(f"{len(ids)} steps; at most {max_steps} are allowed")
    for k, (mid, sub, acc) in enumerate(zip(ids, subtasks, access, strict=True)):
        if isinstance(mid, bool) or not isinstance(mid, int) or not 0 <= mid < n_workers:
            raise PlanError(f"step {k}: model_id {_short(mid)} is not one of Model 0..{n_workers - 1}")
        if not isinstance(sub, str) or not sub.strip():
            raise PlanError(f"step {k}: the subtask is not a non-empty string")
        if acc == "all":
            acc = ["all"]
        if acc not in ([], ["all"]):
            raise PlanError(f'step {k}: access {_short(acc)} must be [] or ["all"]')
        access[k] = acc
    return Plan(ids, [s.strip() for s in subtasks], access)


def offered_workers(task: Task, cfg: ConductorConfig, seed: int) -> list[str]:
    """The pool shown as Model 0..n-1: every worker, or (``random_subset``) a random subset per episode."""
    pool = list(cfg.worker_members)
    if cfg.random_subset:
        rng = random.Random(derive_seed(seed, task.id, "subset"))
        size = rng.randint(cfg.min_workers, len(pool))
        pool = [pool[i] for i in sorted(rng.sample(range(len(pool)), size))]
    return pool


def conductor_prompt(task: Task, n_workers: int, cfg: ConductorConfig) -> tuple[str, list[dict[str, str]]]:
    """The Conductor's system prompt and first user turn for a pool of ``n_workers``."""
    system = CONDUCTOR_SYSTEM.format(max_steps=cfg.max_steps, last=n_workers - 1)
    names = ", ".join(f"Model {i}" for i in range(n_workers))
    return system, [
        {"role": "user", "content": CONDUCTOR_QUESTION.format(question=task.prompt, workers=names)}
    ]


async def run(task: Task, team: Team, cfg: ConductorConfig, ctx: EpisodeContext) -> None:
    pool = offered_workers(task, cfg, ctx.seed)
    workers = [team.agent(member, f"model-{i}", "worker", cfg) for i, member in enumerate(pool)]
    ccfg = replace(cfg, temperature=cfg.conductor_temperature, top_p=1.0, max_tokens=cfg.conductor_max_tokens)
    system, chat = conductor_prompt(task, len(pool), cfg)
    conductor = team.agent(cfg.conductor_member, "conductor", "conductor", ccfg, system=system)
    qp = question_prompt(task.prompt, task.verifier)
    plans: list[dict] = []
    previous_final = None  # (node, content) of the last workflow's answer, for recursion
    final = None
    for call_no in range(cfg.max_recursions + 1):
        cnode = "conductor" if call_no == 0 else f"conductor-{call_no}"
        informed = ("task",) if previous_final is None else ("task", previous_final[0])
        (written,) = await ctx.ask([Call(conductor, chat, cnode, (), call_no, informed)])
        try:
            plan = parse_plan(written.content, len(pool), cfg.max_steps)
        except PlanError as e:
            written.extracted = None
            ctx.event("plan_error", node=cnode, error=str(e))
            plans.append({"error": str(e)})
            if previous_final is None:  # no workflow ran: a format failure (reward 0)
                ctx.finish(None, plan_error=str(e), plans=plans, pool=pool)
                return
            break  # a broken re-plan keeps the previous final answer
        plans.append(plan.to_dict())
        ctx.event("plan", node=cnode, **plan.to_dict())
        if plan.empty:
            if previous_final is None:
                ctx.finish(None, plan_error="the first workflow is empty", plans=plans, pool=pool)
                return
            break  # three empty lists: keep the previous answer
        steps: list[tuple[str, str, str]] = []  # (node, instruction, response)
        if previous_final is not None:
            steps.append((previous_final[0], "previous final response", previous_final[1]))
        for k, (mid, sub, acc) in enumerate(zip(plan.model_id, plan.subtasks, plan.access_list, strict=True)):
            node = f"step-{k}" if call_no == 0 else f"step-{call_no}.{k}"
            last = k == len(plan.model_id) - 1
            seen = steps if acc == ["all"] else []
            context = (
                WORKER_CONTEXT.format(
                    steps="\n\n".join(
                        WORKER_STEP.format(index=i + 1, instruction=s[1], response=s[2].strip())
                        for i, s in enumerate(seen)
                    )
                )
                if seen
                else ""
            )
            text = WORKER_INSTRUCTION.format(context=context, instruction=sub)
            if cfg.include_question or last:  # the last step always sees it, with the answer format
                text = f"{text}\n\n{qp}"
            informed = (cnode, *(s[0] for s in seen)) + (("task",) if cfg.include_question else ())
            receivers = (ANSWER_NODE,) if last and call_no == cfg.max_recursions else ()
            ctx.add_edge(cnode, node, call_no)
            (reply,) = await ctx.ask(
                [
                    Call(
                        workers[mid],
                        [{"role": "user", "content": text}],
                        node,
                        receivers,
                        call_no,
                        tuple(dict.fromkeys(informed)),
                    )
                ]
            )
            steps.append((node, sub, reply.content))
            ctx.propose(reply.extracted)
            final = reply
        previous_final = (final.sender, final.content)
        if call_no < cfg.max_recursions:
            chat = [
                *chat,
                {"role": "assistant", "content": written.content},
                {"role": "user", "content": CONDUCTOR_RECURSE.format(final=final.content.strip())},
            ]
    if not any(
        e["source"] == final.sender and e["target"] == ANSWER_NODE for e in ctx.episode.graph["edges"]
    ):
        ctx.add_node(ANSWER_NODE, "answer", "Answer")  # the workflow ended early (kept answer)
        ctx.add_edge(final.sender, ANSWER_NODE, final.round)
    ctx.finish(final.extracted, plans=plans, pool=pool, steps=sum(len(p.get("model_id", [])) for p in plans))


def generations(cfg: ConductorConfig) -> int:
    """The most a workflow can spend (the plan decides the actual number)."""
    return (cfg.max_recursions + 1) * (1 + cfg.max_steps)


def match(cfg: ConductorConfig, target: int) -> dict:
    """The conductor chooses its own length: cap the steps (never above the configured cap) so
    that the worst case fits the target."""
    per_call = target / (cfg.max_recursions + 1) - 1
    return {"max_steps": max(1, min(cfg.max_steps, int(per_call)))}
