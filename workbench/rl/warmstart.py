"""Warm start: supervised steps before RL (``train.warm_start`` steps).

* **leader**: MLPO's SFT stage (METHODS.md §3), on the model's **own** self-corrections, found by
  sampling (``sample_leader_traces``): for each training question the leader (the base model: the
  adapter is still zero) is shown K pooled peer answers, as in the RL steps, and samples
  ``train.sft_samples`` completions. A completion is kept when it ends right (its tagged
  ``<answer>`` passes the task's verifier, and it finished: not cut at ``train.max_tokens``) *and*
  it corrects something on the way:

  - ``wrong_majority``: a strict majority of the peers gave one answer, the verifier says it is
    wrong, and the leader's answer differs from it (it disagreed with a wrong majority), or
  - ``revised``: in its own reasoning (the text before ``<answer>``, sentences that do not quote
    the team) the leader first states a wrong answer, and a later sentence revises it (a
    correction marker: "wait", "actually", "mistake", ... ``CORRECTION_MARKERS``) before it ends
    on the right one.

  Everything else is rejected and counted by why (``wrong``, ``untagged``, ``cut``,
  ``no_correction``: right, but it followed a right majority without revising anything). The
  targets are the kept completions exactly as sampled (their token ids): no gold answer is ever
  written into a target by us; one appears there only where the model wrote it. The kept traces
  go to ``sft_traces.jsonl`` in the run folder and the counts to ``summary.json``
  (``sft_sampling``). Fewer traces than one step's batch (``train.questions``) is said in a
  message and in the summary, and the SFT steps then make no update: never a silent fallback to
  templates. (Until 2026-12-07 the leader's SFT stage trained on templates that spliced the gold
  answer into a "Wait, X does not hold: solving it again gives GOLD" trace.)
  With ``train.sft_targets=format`` the leader's warm start is a format warm start instead (ours,
  for a base model that writes no tagged answer: the SmolLM2-135M leader tagged 1 of 640 samples):
  its RL prompt on a peer set drawn from the pool and
  ``<think>Agent k answered A.</think><answer>A</answer>`` for a peer k drawn uniformly among
  the peers that gave an answer, right or wrong (``leader_format``). It teaches the tags, not
  which peer is right.
* **conductor**: a format warm start (ours, not the paper's: its 7B Conductor writes the three
  lists from the start). The base SmolLM2-135M Conductor writes no parseable plan (0 of 200 on
  arithmetic), so every GRPO reward is 0 and there is no gradient. A few SFT steps on well-formed
  plans (one solver; solve then check; two solvers then a judge) with random workers give it the
  format. The plans are templates that say nothing about which worker or which shape wins on the
  task, so what RL adds afterwards (the reward rises above 0.5 only for plans that answer right)
  is its own.
* **maestro**: a format warm start for the central agent (ours, not the paper's: its 3-8B central
  agents write ``<choice>`` from the start). Training reads decisions strictly, and the base
  SmolLM2-135M central agent writes no well-formed ``<choice>j</choice>`` (0 of 2,560 sampled
  decisions, docs/training.md), so GRPO has no reward variance, SFT on correct picks has nothing to
  imitate and CLPO's decision term only pushes down what was sampled. Each demonstration is the
  RL steps' own prompt (a slate drawn from the pool as ``offline_samples`` draws it, built by the
  protocol's prompt builder) and the decision ``<choice>j</choice><why>Candidate j gives the answer
  A.</why>`` for a candidate j drawn **uniformly at random**, whatever its correctness (A is what
  the task's extractor read from candidate j). It teaches the format and nothing about which
  candidate is right: after it the central agent picks about as well as chance, and what the
  objectives add on top (CLPO vs GRPO vs SFT on correct picks) is theirs.
  ``train.objective=sft`` (SFT on the correct picks) remains the paper's supervised comparison.

Each warm-start step takes ``train.questions`` demonstrations (leader: kept traces, in a seeded
order, cycled) and minimises their mean token NLL (the same loss as ``objective=sft``).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from workbench.models.base import SamplingParams
from workbench.protocols.base import Team, derive_seed
from workbench.protocols.conductor import conductor_messages, offered_workers, parse_plan
from workbench.protocols.leader import leader_answer
from workbench.rl.rollouts import PoolEntry, Sample, draw_slate, offline_messages, shown_count, trainee_team
from workbench.tasks import Task

RECIPES = ("leader", "conductor", "maestro")
TRACES_FILE = "sft_traces.jsonl"
SAMPLING_FILE = "sft_sampling.json"
KEPT = ("wrong_majority", "revised")
REJECTED = ("wrong", "untagged", "cut", "no_correction")
# words that mark a revision of what the leader said before (lower case; matched on word starts)
CORRECTION_MARKERS = (
    "wait",
    "actually",
    "however",
    "but",
    "mistake",
    "wrong",
    "incorrect",
    "not correct",
    "recheck",
    "re-check",
    "double-check",
    "double check",
    "let me check",
    "instead",
    "correction",
    "reconsider",
    "re-evaluate",
    "hmm",
    "oops",
)
# a sentence that mentions the team quotes it: not the leader's own first answer
TEAM_WORDS = ("agent", "member", "peer", "team", "solution", "candidate", "says", "said", "answered")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_MARKER = re.compile(r"\b(?:" + "|".join(re.escape(m) for m in CORRECTION_MARKERS) + r")\b", re.IGNORECASE)
_TEAM = re.compile(r"\b(?:" + "|".join(TEAM_WORDS) + r")", re.IGNORECASE)


def strict_majority(shown: list[dict[str, Any]]) -> str | None:
    """The answer more than half of the shown peers gave (None when no answer has a strict majority)."""
    counts = Counter(a.get("extracted") for a in shown if a.get("extracted") is not None)
    if not counts:
        return None
    answer, n = counts.most_common(1)[0]
    return answer if 2 * n > len(shown) else None


def first_own_answer(task: Task, text: str) -> tuple[str | None, bool]:
    """(the first answer the leader states in its own reasoning, whether a later sentence revises it).

    The reasoning is the text before the last ``<answer>``; its sentences that mention the team
    (``TEAM_WORDS``) are quotes, not the leader's own answer. The first remaining sentence from
    which the task's extractor reads an answer gives it; a later sentence holding a correction
    marker (``CORRECTION_MARKERS``) counts as a revision."""
    cut = text.lower().rfind("<answer>")
    reasoning = text[:cut] if cut >= 0 else text
    sentences = [s for s in _SENTENCE.split(reasoning) if s.strip()]
    for i, sentence in enumerate(sentences):
        if _TEAM.search(sentence):
            continue
        answer = task.extract(sentence)
        if answer is not None:
            revised = any(_MARKER.search(later) for later in sentences[i + 1 :])
            return answer, revised
    return None, False


def classify_trace(task: Task, shown: list[dict[str, Any]], text: str, finish_reason: str | None) -> dict:
    """Why a sampled leader completion is kept (``wrong_majority`` | ``revised``) or rejected
    (``wrong`` | ``untagged`` | ``cut`` | ``no_correction``), with what the decision read.

    ``shown``: the peer answers in the prompt, each ``{"extracted", "correct"}`` (the pool's
    verdicts, by the task's verifier)."""
    answer, tagged = leader_answer(text, task, strict=True)
    majority = strict_majority(shown)
    majority_right = majority is not None and any(
        a.get("correct") for a in shown if a.get("extracted") == majority
    )
    first, revised = first_own_answer(task, text)
    out = {"answer": answer, "majority": majority, "majority_right": majority_right, "first_answer": first}
    if finish_reason == "length":
        return out | {"reason": "cut"}
    if answer is None:
        return out | {"reason": "untagged"}
    if not task.is_correct(answer):  # the task's own verifier
        return out | {"reason": "wrong"}
    if majority is not None and not majority_right and answer != majority:
        return out | {"reason": "wrong_majority"}
    if first is not None and revised and first != answer and not task.is_correct(first):
        return out | {"reason": "revised"}
    return out | {"reason": "no_correction"}


def sample_leader_traces(
    tasks: list[Task],
    pool: dict[str, PoolEntry],
    policy,
    protocol_cfg,
    train,
    mixed: bool = False,
    progress: bool = False,
    chunk: int = 16,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Sample ``train.sft_samples`` leader completions on each question's peer set (drawn as the RL
    steps draw them) and keep the self-corrections (``classify_trace``).

    Returns (kept traces, counts). A trace holds the prompt ids and the sampled completion ids (the
    SFT target, exactly as sampled), the text, the shown peer answers and why it was kept."""
    m = shown_count("leader", protocol_cfg)
    prompts, shown = [], []
    for task in tasks:
        rng = random.Random(derive_seed(train.seed, task.id, "sft-peers"))
        slate, rnd = draw_slate(pool[task.id], m, rng, mixed)
        shown.append((slate, rnd))
        sp = SamplingParams(
            temperature=train.temperature,
            max_tokens=train.max_tokens,
            n=train.sft_samples,
            seed=derive_seed(train.seed, task.id, "sft-sample"),
        )
        prompts.append(
            (policy.encode_chat(offline_messages("leader", task, slate, protocol_cfg, round=rnd)), sp)
        )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc="sft sampling", unit="q")
    gens = []
    for s in range(0, len(prompts), chunk):
        gens += policy.generate_from_ids(prompts[s : s + chunk])
        if bar is not None:
            bar.update(len(prompts[s : s + chunk]))
    if bar is not None:
        bar.close()
    kept, reasons = [], Counter()
    examples: dict[str, str] = {}  # the first rejected completion of each kind, for the record
    n = train.sft_samples
    for q, task in enumerate(tasks):
        slate, rnd = shown[q]
        for g in gens[q * n : (q + 1) * n]:
            verdict = classify_trace(task, slate, g.text, g.finish_reason)
            reasons[verdict["reason"]] += 1
            if verdict["reason"] in REJECTED:
                examples.setdefault(verdict["reason"], g.text[:600])
            if verdict["reason"] in KEPT:
                kept.append(
                    {
                        "task_id": task.id,
                        "round": rnd,
                        **verdict,
                        "completion": g.text,
                        "prompt_ids": list(prompts[q][0]),
                        "completion_ids": list(g.token_ids),
                        "shown": [
                            {
                                "text": a["text"],
                                "extracted": a.get("extracted"),
                                "correct": bool(a.get("correct")),
                            }
                            for a in slate
                        ],
                    }
                )
    counts = {
        "questions": len(tasks),
        "samples_per_question": n,
        "samples": len(tasks) * n,
        "kept": len(kept),
        "by_reason": {r: reasons.get(r, 0) for r in (*KEPT, *REJECTED)},
        "questions_with_a_trace": len({t["task_id"] for t in kept}),
        "needed": train.questions,
        "too_few": len(kept) < train.questions,
        "rejected_examples": examples,
    }
    return kept, counts


def too_few_message(counts: dict[str, Any]) -> str:
    return (
        f"SFT sampling found {counts['kept']} self-correction trace(s) in {counts['samples']} leader samples "
        f"({counts['questions']} questions x {counts['samples_per_question']}; rejected: "
        + ", ".join(f"{k} {counts['by_reason'][k]}" for k in REJECTED)
        + f"), fewer than one step's batch (train.questions={counts['needed']}): the SFT stage makes no "
        "update. Raise train.sft_samples or train.sft_questions, set train.sft_targets=format (a format "
        "warm start, for a base model that writes no tagged answer), or set train.warm_start=0 to train "
        "with RL alone"
    )


def write_traces(run_dir: Path, traces: list[dict[str, Any]], counts: dict[str, Any]) -> None:
    from workbench.runs import atomic_write

    atomic_write(run_dir / TRACES_FILE, "".join(json.dumps(t) + "\n" for t in traces))
    atomic_write(run_dir / SAMPLING_FILE, json.dumps(counts, indent=1) + "\n")


def read_traces(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """The traces and counts a run sampled before (None when it has not: sample them)."""
    from workbench.runs import read_json, read_jsonl

    counts = read_json(run_dir / SAMPLING_FILE)
    if not isinstance(counts, dict) or not (run_dir / TRACES_FILE).is_file():
        return None
    rows = read_jsonl(run_dir / TRACES_FILE).rows
    ok = all(
        isinstance(r.get("prompt_ids"), list) and isinstance(r.get("completion_ids"), list) for r in rows
    )
    return (rows, counts) if ok and len(rows) == counts.get("kept") else None


def trace_samples(
    traces: list[dict[str, Any]], tasks_by_id: dict[str, Task], seed: int, step: int, n: int
) -> list[Sample]:
    """Step ``step``'s ``n`` demonstrations: the kept traces in a seeded order, cycled."""
    if len(traces) < n:
        return []
    order = list(range(len(traces)))
    random.Random(derive_seed(seed, "sft-order")).shuffle(order)
    picked = [traces[order[((step - 1) * n + j) % len(order)]] for j in range(n)]
    return [
        Sample(
            q,
            tasks_by_id[t["task_id"]],
            list(t["prompt_ids"]),
            list(t["completion_ids"]),
            None,
            t["completion"],
            1.0,
            True,
            False,
            info={"warm": True, "reason": t["reason"]},
        )
        for q, t in enumerate(picked)
    ]


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


def central_decision(slate: list[dict[str, Any]], rng: random.Random) -> tuple[int, str]:
    """A well-formed decision of the central agent on ``slate``: (the 0-based pick, the text).

    The pick is uniform over the slate, independent of which candidates are right: a format
    demonstration, not a selection one."""
    j = rng.randrange(len(slate))
    answer = slate[j].get("extracted")
    said = f"gives the answer {answer}" if answer not in (None, "") else "gives no final answer"
    text = f"<choice>{j + 1}</choice><why>Candidate {j + 1} {said}.</why>"
    return j, text


def leader_format(shown: list[dict[str, Any]], rng: random.Random) -> tuple[int, str] | None:
    """A tagged leader answer on peer set ``shown``: (the 0-based peer it copies, the text), the
    peer drawn uniformly among those with an answer (None when no peer gave one)."""
    answered = [k for k, a in enumerate(shown) if a.get("extracted") not in (None, "")]
    if not answered:
        return None
    k = answered[rng.randrange(len(answered))]
    answer = shown[k]["extracted"]
    return k, f"<think>Agent {k + 1} answered {answer}.</think>\n<answer>{answer}</answer>"


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
    """The format demonstrations of the Conductor (a plan), of Maestro's central agent (a decision
    on a slate drawn from ``pool``) and of the leader (``train.sft_targets=format``: a tagged answer
    on a peer set drawn from ``pool``): one per question, as Samples (prompt ids, target ids ending
    in EOS, reward 1). The leader's SFT stage proper samples its own traces instead
    (``sample_leader_traces``, ``trace_samples``)."""
    if recipe not in ("conductor", "maestro", "leader"):
        raise ValueError(f"no format warm start for recipe '{recipe}' (conductor, maestro, leader)")
    if recipe in ("maestro", "leader"):
        return _pick_demonstrations(recipe, tasks, pool, policy, protocol_cfg, seed, step, mixed)
    tok = policy.tokenizer
    samples = []
    for q, task in enumerate(tasks):
        rng = random.Random(derive_seed(seed, step, task.id, "warm"))
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


def _pick_demonstrations(recipe, tasks, pool, policy, protocol_cfg, seed, step, mixed) -> list[Sample]:
    """The central agent's and the leader's format demonstrations: the RL prompt on a slate / peer
    set drawn as ``offline_samples`` draws it, and a well-formed output that picks or copies a
    random candidate (``central_decision``, ``leader_format``). A leader question whose peers gave
    no answer has no demonstration."""
    tok = policy.tokenizer
    m = shown_count(recipe, protocol_cfg)
    samples = []
    for task in tasks:
        rng = random.Random(derive_seed(seed, step, task.id, "warm"))
        slate, rnd = draw_slate(pool[task.id], m, rng, mixed)
        made = central_decision(slate, rng) if recipe == "maestro" else leader_format(slate, rng)
        if made is None:
            continue
        pick, target = made
        ids = tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        prompt = policy.encode_chat(offline_messages(recipe, task, slate, protocol_cfg, round=rnd))
        samples.append(
            Sample(
                len(samples),
                task,
                prompt,
                ids,
                None,
                target,
                1.0,
                True,  # a demonstration: imitated whatever its pick (the SFT loss keeps correct=True)
                False,
                info={"warm": True, "pick": pick, "pick_correct": bool(slate[pick]["correct"]), "round": rnd},
                shown=[a["text"] for a in slate],
                shown_correct=[bool(a["correct"]) for a in slate],
            )
        )
    return samples
