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
* ``random_subset`` (the paper's randomised-pools extension; off by default): per question, a
  random subset of the worker members is offered (relabelled Model 0..k-1; the mapping is
  recorded). The subset is a function of the run seed and the question (``meta.question_id`` when
  the task is a copy, as in the GRPO rollouts), so every sample of one GRPO group sees the same pool.
* ``few_shot``: the workflow examples in the conductor's prompt: ``out_of_domain`` (the paper's
  default: four unrelated tasks), ``in_domain`` (four of the item's own kind, by its verifier) or
  ``none``. ``subtasks=false`` (the paper's ablation): the conductor writes only ``model_id`` and
  ``access_list`` and every step gets the question alone (plus earlier responses with ``["all"]``).

Each conductor call is recorded in ``meta.calls`` (``node``, ``parsed``, the ``answer`` standing
after it, the ``reason`` code of a plan error); the RL reward is computed per call from it
(``rl/objectives.conductor_call_rewards``). A plan that cannot be used is an event ``plan_error``
with ``reason`` (one of ``PLAN_ERRORS``) and a message, never an exception.

Generations per query: 1 + steps per workflow (at most 1 + max_steps, more with recursion).
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from workbench.config import ConfigError
from workbench.models.base import SamplingParams
from workbench.prompts import (
    CONDUCTOR_DOMAINS,
    CONDUCTOR_EXAMPLES,
    CONDUCTOR_EXAMPLES_IN_DOMAIN,
    CONDUCTOR_QUESTION,
    CONDUCTOR_QUESTION_DESCRIBED,
    CONDUCTOR_RECURSE,
    CONDUCTOR_RECURSE_NO_SUBTASKS,
    CONDUCTOR_RULES,
    CONDUCTOR_RULES_NO_SUBTASKS,
    CONDUCTOR_WORKER_LINE,
    WORKER_CONTEXT,
    WORKER_INSTRUCTION,
    WORKER_STEP,
    chat_messages,
    question_prompt,
)
from workbench.protocols.base import ANSWER_NODE, Agent, Call, EpisodeContext, Team, derive_seed
from workbench.tasks import Task

MAX_LIST_CHARS = 20_000  # a list literal longer than this is refused before parsing
MAX_RECURSIONS = 3  # the paper caps the recursive calls; deeper is a configuration error
FEW_SHOT = ("out_of_domain", "in_domain", "none")
# why a plan could not be used (``plan_error`` events, ``meta.calls[i].reason``): counted by the analysis
PLAN_ERRORS = (
    "missing_list",  # no "name = [" for a list the plan needs
    "unclosed_list",  # brackets never balance (or the literal is too long)
    "not_a_literal",  # not a Python literal (code, a call, a dict key that is a list)
    "length_mismatch",  # the lists differ in length (e.g. an access list longer than the plan)
    "too_many_steps",  # more than max_steps
    "unknown_worker",  # a model_id that is not one of the offered Model 0..n-1
    "bad_subtask",  # a subtask that is not a non-empty string
    "bad_access",  # an access entry other than [] / ["all"]
    "empty_first_plan",  # three empty lists at the first call (nothing to keep)
)


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
    few_shot: str = "out_of_domain"  # out_of_domain (the paper) | in_domain | none
    subtasks: bool = True  # False: the paper's "without subtasks" ablation (steps get only the question)

    def __post_init__(self) -> None:
        if not self.worker_members:
            raise ConfigError("protocol.worker_members must name at least one team member")
        if not 1 <= self.max_steps <= 10:
            raise ConfigError(f"protocol.max_steps must be in 1..10, got {self.max_steps}")
        if not 0 <= self.max_recursions <= MAX_RECURSIONS:
            raise ConfigError(
                f"protocol.max_recursions must be in 0..{MAX_RECURSIONS} (0 = no recursion), got {self.max_recursions}"
            )
        if self.few_shot not in FEW_SHOT:
            raise ConfigError(
                f"protocol.few_shot must be one of {', '.join(FEW_SHOT)}, got {self.few_shot!r:.60}"
            )
        if not 1 <= self.min_workers <= len(self.worker_members):
            raise ConfigError(
                f"protocol.min_workers must be in 1..{len(self.worker_members)}, got {self.min_workers}"
            )
        SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)
        SamplingParams(temperature=self.conductor_temperature, max_tokens=self.conductor_max_tokens)


class PlanError(ValueError):
    """The conductor's output is not a valid workflow; the message says what is wrong, ``reason``
    names the kind (one of ``PLAN_ERRORS``)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


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
        raise PlanError(f"no '{name} = [...]' list", "missing_list")
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
    raise PlanError(
        f"the '{name}' list is not closed (or longer than {MAX_LIST_CHARS} characters)", "unclosed_list"
    )


def _short(value: object) -> str:
    """A value as the plan wrote it, cut to 60 characters for the error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_plan(text: str, n_workers: int, max_steps: int, subtasks: bool = True) -> Plan:
    """Read and validate the lists; raises PlanError with the reason.

    ``subtasks=False``: only ``model_id`` and ``access_list`` are read (a ``subtasks`` list the
    conductor writes anyway is ignored); each step's subtask is then the empty string."""
    names = ("model_id", "subtasks", "access_list") if subtasks else ("model_id", "access_list")
    values = {}
    for name in names:
        literal = _list_literal(text, name)
        try:
            values[name] = ast.literal_eval(literal)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:  # TypeError: {[]: 1}
            raise PlanError(
                f"'{name}' is not a Python list literal ({type(e).__name__})", "not_a_literal"
            ) from None
        if not isinstance(values[name], list):
            raise PlanError(f"'{name}' is not a list", "not_a_literal")
    ids, access = values["model_id"], values["access_list"]
    subs = values["subtasks"] if subtasks else [""] * len(ids)
    if not len(ids) == len(subs) == len(access):
        lengths = ", ".join(str(len(values[n])) for n in names)
        raise PlanError(f"the lists differ in length ({lengths})", "length_mismatch")
    if len(ids) > max_steps:
        raise PlanError(f"{len(ids)} steps; at most {max_steps} are allowed", "too_many_steps")
    for k, (mid, sub, acc) in enumerate(zip(ids, subs, access, strict=True)):
        if isinstance(mid, bool) or not isinstance(mid, int) or not 0 <= mid < n_workers:
            raise PlanError(
                f"step {k}: model_id {_short(mid)} is not one of Model 0..{n_workers - 1}", "unknown_worker"
            )
        if subtasks and (not isinstance(sub, str) or not sub.strip()):
            raise PlanError(f"step {k}: the subtask is not a non-empty string", "bad_subtask")
        if acc == "all":
            acc = ["all"]
        if acc not in ([], ["all"]):
            raise PlanError(f'step {k}: access {_short(acc)} must be [] or ["all"]', "bad_access")
        access[k] = acc
    return Plan(ids, [s.strip() for s in subs], access)


def question_id(task: Task) -> str:
    """The question a task item asks: ``meta.question_id`` for a copy (a GRPO group's samples are
    copies of one question with ids ``<id>~g<j>``), else its id."""
    qid = task.meta.get("question_id") if isinstance(task.meta, dict) else None
    return qid if isinstance(qid, str) else task.id


def offered_indices(task: Task, cfg: ConductorConfig, seed: int) -> list[int]:
    """Indices into ``worker_members`` of the pool shown as Model 0..n-1: all, or (``random_subset``)
    a random subset per question (seeded by the run seed and the question, never the sample)."""
    n = len(cfg.worker_members)
    if not cfg.random_subset:
        return list(range(n))
    rng = random.Random(derive_seed(seed, question_id(task), "subset"))
    size = rng.randint(cfg.min_workers, n)
    return sorted(rng.sample(range(n), size))


def offered_workers(task: Task, cfg: ConductorConfig, seed: int) -> list[str]:
    """The members shown as Model 0..n-1 (see ``offered_indices``)."""
    return [cfg.worker_members[i] for i in offered_indices(task, cfg, seed)]


def worker_labels(cfg: ConductorConfig, indices: list[int]) -> list[str]:
    """A stable name per offered worker for the routing analysis: the member's name, with its
    position in ``worker_members`` when the pool holds that member more than once."""
    counts = {m: cfg.worker_members.count(m) for m in cfg.worker_members}
    return [
        cfg.worker_members[i] if counts[cfg.worker_members[i]] == 1 else f"{cfg.worker_members[i]}#{i}"
        for i in indices
    ]


def few_shot_examples(task: Task, cfg: ConductorConfig) -> str:
    """The workflow examples of the conductor's prompt ('' for ``few_shot=none``); without
    subtasks, the examples' ``subtasks`` lines are left out."""
    if cfg.few_shot == "none":
        return ""
    if cfg.few_shot == "in_domain":
        text = CONDUCTOR_EXAMPLES_IN_DOMAIN[CONDUCTOR_DOMAINS.get(task.verifier, "math")]
    else:
        text = CONDUCTOR_EXAMPLES
    if not cfg.subtasks:
        text = "\n".join(line for line in text.split("\n") if not line.startswith("subtasks = "))
    return text


def workers_text(descriptions: Sequence[str]) -> str:
    """How the offered workers are listed: "Model 0, Model 1, ..." when no worker has a
    description (today's prompt, byte for byte), else one line per worker, "Model i: <description>"
    (the paper's prompt; a worker without one is listed as "Model i")."""
    if not any(d.strip() for d in descriptions):
        return ", ".join(f"Model {i}" for i in range(len(descriptions)))
    return "\n".join(
        CONDUCTOR_WORKER_LINE.format(index=i, description=d.strip()) if d.strip() else f"Model {i}"
        for i, d in enumerate(descriptions)
    )


def conductor_prompt(
    task: Task, cfg: ConductorConfig, descriptions: Sequence[str]
) -> tuple[str, list[dict[str, str]]]:
    """The Conductor's system prompt and first user turn for the offered workers, given by their
    one-line descriptions in Model-index order ("" for none): the rules, with or without
    subtasks, then the ``few_shot`` examples; the question and the worker list (`workers_text`)."""
    n_workers = len(descriptions)
    rules = CONDUCTOR_RULES if cfg.subtasks else CONDUCTOR_RULES_NO_SUBTASKS
    examples = few_shot_examples(task, cfg)
    system = (f"{rules}\n\n{examples}" if examples else rules).format(
        max_steps=cfg.max_steps, last=n_workers - 1
    )
    described = any(d.strip() for d in descriptions)
    template = CONDUCTOR_QUESTION_DESCRIBED if described else CONDUCTOR_QUESTION
    return system, [
        {"role": "user", "content": template.format(question=task.prompt, workers=workers_text(descriptions))}
    ]


def conductor_start(
    task: Task, cfg: ConductorConfig, team: Team, seed: int
) -> tuple[Agent, list[dict[str, str]]]:
    """The Conductor agent (its system prompt: the member's persona, then the rules and examples)
    and its first user turn (the question and the offered workers, described by the team), as
    `run` uses them for this task and run seed."""
    pool = offered_workers(task, cfg, seed)
    system, chat = conductor_prompt(task, cfg, [team.description(m) for m in pool])
    ccfg = replace(cfg, temperature=cfg.conductor_temperature, top_p=1.0, max_tokens=cfg.conductor_max_tokens)
    return team.agent(cfg.conductor_member, "conductor", "conductor", ccfg, system=system), chat


def conductor_messages(task: Task, cfg: ConductorConfig, team: Team, seed: int) -> list[dict[str, str]]:
    """The Conductor's first chat exactly as the episode sends it (`chat_messages`, as
    ``EpisodeContext.ask`` builds it): the one builder the protocol and the RL warm start share."""
    agent, chat = conductor_start(task, cfg, team, seed)
    return chat_messages(agent.system, chat)


async def run(task: Task, team: Team, cfg: ConductorConfig, ctx: EpisodeContext) -> None:
    indices = offered_indices(task, cfg, ctx.seed)
    pool = [cfg.worker_members[i] for i in indices]
    labels = worker_labels(cfg, indices)
    workers = [team.agent(member, f"model-{i}", "worker", cfg) for i, member in enumerate(pool)]
    conductor, chat = conductor_start(task, cfg, team, ctx.seed)
    qp = question_prompt(task.prompt, task.verifier)
    recurse = CONDUCTOR_RECURSE if cfg.subtasks else CONDUCTOR_RECURSE_NO_SUBTASKS
    plans: list[dict] = []
    calls: list[dict] = []  # per conductor call: node, parsed, the answer standing after it, reason
    meta = {"plans": plans, "calls": calls, "pool": pool, "workers": labels}
    ctx.episode.meta.update(meta)  # kept (and filled in) if the budget ends the episode early
    previous_final = None  # (node, content) of the last workflow's answer, for recursion
    final = None
    for call_no in range(cfg.max_recursions + 1):
        cnode = "conductor" if call_no == 0 else f"conductor-{call_no}"
        informed = ("task",) if previous_final is None else ("task", previous_final[0])
        (written,) = await ctx.ask([Call(conductor, chat, cnode, (), call_no, informed)])
        kept = final.extracted if final is not None else None
        try:
            plan = parse_plan(written.content, len(pool), cfg.max_steps, cfg.subtasks)
            if plan.empty and previous_final is None:
                raise PlanError("the first workflow is empty (nothing to keep)", "empty_first_plan")
        except PlanError as e:
            written.extracted = None
            ctx.event("plan_error", node=cnode, reason=e.reason, error=str(e))
            plans.append({"error": str(e), "reason": e.reason})
            calls.append({"node": cnode, "parsed": False, "answer": kept, "reason": e.reason})
            if previous_final is None:  # no workflow ran: a format failure (reward 0)
                ctx.finish(None, plan_error=str(e), **meta)
                return
            break  # a broken re-plan keeps the previous final answer (its own reward is 0)
        plans.append(plan.to_dict())
        ctx.event("plan", node=cnode, **plan.to_dict())
        calls.append({"node": cnode, "parsed": True, "answer": kept})
        if plan.empty:
            break  # three empty lists: keep the previous answer
        steps: list[tuple[str, str, str]] = []  # (node, instruction, response)
        if previous_final is not None:
            steps.append((previous_final[0], "previous final response", previous_final[1]))
        for k, (mid, sub, acc) in enumerate(zip(plan.model_id, plan.subtasks, plan.access_list, strict=True)):
            node = f"step-{k}" if call_no == 0 else f"step-{call_no}.{k}"
            last = k == len(plan.model_id) - 1
            seen = steps if acc == ["all"] else []
            if cfg.subtasks:
                shown = (
                    WORKER_STEP.format(index=i + 1, instruction=s[1], response=s[2].strip())
                    for i, s in enumerate(seen)
                )
            else:  # without subtasks a step has no instruction: earlier responses only
                shown = (f"Response {i + 1}:\n{s[2].strip()}" for i, s in enumerate(seen))
            context = WORKER_CONTEXT.format(steps="\n\n".join(shown)) if seen else ""
            if cfg.subtasks:
                text = WORKER_INSTRUCTION.format(context=context, instruction=sub)
                if cfg.include_question or last:  # the last step always sees it, with the answer format
                    text = f"{text}\n\n{qp}"
            else:
                text = f"{context}{qp}"  # the question is the whole instruction
            with_question = cfg.include_question or not cfg.subtasks
            informed = (cnode, *(s[0] for s in seen)) + (("task",) if with_question else ())
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
            calls[-1]["answer"] = reply.extracted  # so far: the budget may stop the workflow here
        previous_final = (final.sender, final.content)
        if call_no < cfg.max_recursions:
            chat = [
                *chat,
                {"role": "assistant", "content": written.content},
                {"role": "user", "content": recurse.format(final=final.content.strip())},
            ]
    if not any(
        e["source"] == final.sender and e["target"] == ANSWER_NODE for e in ctx.episode.graph["edges"]
    ):
        ctx.add_node(ANSWER_NODE, "answer", "Answer")  # the workflow ended early (kept answer)
        ctx.add_edge(final.sender, ANSWER_NODE, final.round)
    ctx.finish(final.extracted, steps=sum(len(p.get("model_id", [])) for p in plans), **meta)


def generations(cfg: ConductorConfig) -> int:
    """The most a workflow can spend (the plan decides the actual number)."""
    return (cfg.max_recursions + 1) * (1 + cfg.max_steps)


def match(cfg: ConductorConfig, target: int) -> dict:
    """The conductor chooses its own length: cap the steps (never above the configured cap) so
    that the worst case fits the target."""
    per_call = target / (cfg.max_recursions + 1) - 1
    return {"max_steps": max(1, min(cfg.max_steps, int(per_call)))}
