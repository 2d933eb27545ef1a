"""Warm start: supervised steps on synthetic demonstrations before RL (``train.warm_start`` steps).

* **leader**: MLPO's optional SFT stage (METHODS.md §3): backtracking / self-correction traces
  built from pooled peer answers and the gold answer. The trace lists the peers' answers, commits
  to the majority first, then checks it: when the majority is wrong it backtracks ("Wait, ...") to
  the gold answer, and says which peers agree. The wording is ours (the paper's traces are not
  public); the structure (first guess, check, correction, tagged answer) is the paper's.
* **conductor**: a format warm start (ours, not the paper's: its 7B Conductor writes the three
  lists from the start). The base SmolLM2-135M Conductor writes no parseable plan (0 of 200 on
  arithmetic), so every GRPO reward is 0 and there is no gradient. A few SFT steps on well-formed
  plans (one solver; solve then check; two solvers then a judge) with random workers give it the
  format. The plans are templates that say nothing about which worker or which shape wins on the
  task, so what RL adds afterwards (the reward rises above 0.5 only for plans that answer right)
  is its own.
* **maestro** has no warm start: ``train.objective=sft`` (SFT on the correct picks) is the paper's
  supervised comparison.

Each warm-start step takes ``train.questions`` questions, one demonstration each, and minimises
the mean token NLL of the demonstration (the same loss as ``objective=sft``).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from typing import Any

from workbench.protocols.base import Team, derive_seed
from workbench.protocols.conductor import conductor_messages, offered_workers, parse_plan
from workbench.rl.rollouts import PoolEntry, Sample, draw_shown, offline_messages, shown_count, trainee_team
from workbench.tasks import Task

RECIPES = ("leader", "conductor")


def leader_trace(task: Task, shown: list[dict[str, Any]]) -> str:
    """A self-correction trace over the shown peer answers, ending in the gold answer."""
    answers = [a.get("extracted") for a in shown]
    listed = ", ".join(
        f"member {i + 1} says {x if x is not None else 'nothing'}" for i, x in enumerate(answers)
    )
    counts = Counter(x for x in answers if x is not None)
    first = counts.most_common(1)[0][0] if counts else None
    agree = [str(i + 1) for i, a in enumerate(shown) if a.get("correct")]
    lines = [f"The team's answers: {listed}."]
    if first is None:
        lines.append(f"No member gives a usable answer, so I solve it myself: the answer is {task.answer}.")
    elif task.is_correct(first):
        lines.append(f"Most say {first}. Let me check it against the problem: it holds, {first} is right.")
    else:
        lines.append(
            f"Most say {first}. Let me check it against the problem. Wait, {first} does not hold: "
            f"solving it again gives {task.answer}."
        )
    if agree:
        who = "member " + agree[0] if len(agree) == 1 else "members " + ", ".join(agree)
        lines.append(f"That matches {who}.")
    else:
        lines.append("No member got it, so the team's answer is my own.")
    return f"<think>{' '.join(lines)}</think><answer>{task.answer}</answer>"


PLANS = (
    (
        "A short calculation; one worker is enough.",
        ["Solve the problem and give the final answer."],
        [[]],
    ),
    (
        "One worker solves, another checks the solution with it in view.",
        ["Solve the problem step by step.", "Check the solution above and give the correct final answer."],
        [[], ["all"]],
    ),
    (
        "Two independent solutions, then a worker compares them.",
        [
            "Solve the problem.",
            "Solve the problem.",
            "Compare the two solutions above and give the correct final answer.",
        ],
        [[], [], ["all"]],
    ),
)


def conductor_plan(n_workers: int, max_steps: int, rng: random.Random, with_subtasks: bool = True) -> str:
    """A well-formed workflow: a template shape (at most ``max_steps`` steps) with random workers
    (``with_subtasks=False``: the two lists of the no-subtasks ablation)."""
    shapes = [p for p in PLANS if len(p[1]) <= max_steps]
    reason, subtasks, access = shapes[rng.randrange(len(shapes))]
    ids = [rng.randrange(n_workers) for _ in subtasks]
    lines = [f"Reasoning: {reason}", f"model_id = {ids!r}"]
    if with_subtasks:
        lines.append(f"subtasks = {subtasks!r}")
    text = "\n".join([*lines, f"access_list = {access!r}"]).replace("'", '"')
    parse_plan(text, n_workers, max_steps, with_subtasks)  # a demonstration that does not parse is a bug here
    return text


def demonstrations(
    recipe: str,
    tasks: list[Task],
    pool: dict[str, PoolEntry],
    policy,
    protocol_cfg,
    seed: int,
    step: int,
    mixed: bool = False,
    team: Team | None = None,
) -> list[Sample]:
    """One demonstration per question, as Samples (prompt ids, target ids ending in EOS, reward 1).

    ``mixed`` (``pool.mixed``): the leader's peer set holds a right and a wrong pooled answer, as in
    the RL steps, so every trace ends in an answer one of the peers gave.
    """
    if recipe not in RECIPES:
        raise ValueError(f"no warm start for recipe '{recipe}' (only {', '.join(RECIPES)})")
    tok = policy.tokenizer
    samples = []
    for q, task in enumerate(tasks):
        rng = random.Random(derive_seed(seed, step, task.id, "warm"))
        if recipe == "leader":
            shown = draw_shown(pool[task.id].answers, shown_count(recipe, protocol_cfg), rng, mixed)
            messages = offline_messages(recipe, task, shown, protocol_cfg)
            target = leader_trace(task, shown)
        else:
            subset_seed = derive_seed(seed, step, "warm-subset")
            n = len(offered_workers(task, protocol_cfg, subset_seed))
            as_trainee = replace(protocol_cfg, conductor_member="trainee")  # as in the RL rollouts
            messages = conductor_messages(task, as_trainee, trainee_team(None, team), subset_seed)
            target = conductor_plan(n, protocol_cfg.max_steps, rng, protocol_cfg.subtasks)
        ids = tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        samples.append(
            Sample(
                q,
                task,
                policy.encode_chat(messages),
                ids,
                None,
                target,
                1.0,
                True,
                False,
                info={"warm": True},
            )
        )
    return samples
