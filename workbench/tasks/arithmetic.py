"""Procedural arithmetic: unlimited fresh items with known answers and a difficulty knob.

Item i of (split, seed, options) is always the same expression, whatever the limit, so runs on
the same settings are paired item by item. Each split draws from its own random stream, so
`train` items are not `test` items (for tiny spaces, e.g. 1-digit addition, repeats across splits
are unavoidable: there are only 100 such sums).

Difficulty: `digits` bounds every operand (1 -> 0..9, 2 -> 0..99), `ops` is the set of operators
drawn from, `steps` the number of operations (steps=2: "(a + b) * c", evaluated as written).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from workbench.tasks.base import Task, TaskError

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class ArithmeticOptions:
    digits: int = (
        1  # operands are drawn from 0 .. 10**digits - 1 (1 digit: ~60% single-agent on SmolLM2-135M)
    )
    ops: str = "+-"  # operators to draw from: any of + - *
    steps: int = 1  # operations per expression; more steps = harder

    def __post_init__(self) -> None:
        if not 1 <= self.digits <= 6:
            raise TaskError(
                f"arithmetic digits must be in 1..6, got {self.digits}; set e.g. --set task.digits=2"
            )
        if not self.ops or set(self.ops) - set("+-*"):
            raise TaskError(f"arithmetic ops must be a non-empty string of + - *, got '{self.ops}'")
        if not 1 <= self.steps <= 6:
            raise TaskError(f"arithmetic steps must be in 1..6, got {self.steps}")


def make_item(opts: ArithmeticOptions, split: str, seed: int, i: int) -> Task:
    rng = random.Random(f"arithmetic|{split}|{seed}|{i}")
    hi = 10**opts.digits - 1
    expr = str(rng.randint(0, hi))
    value = int(expr)
    for step in range(opts.steps):
        op, b = rng.choice(opts.ops), rng.randint(0, hi)
        value = {"+": value + b, "-": value - b, "*": value * b}[op]
        left = f"({expr})" if step > 0 and op == "*" else expr
        expr = f"{left} {op} {b}"
    return Task(
        id=f"arithmetic-d{opts.digits}-s{opts.steps}-{opts.ops}-{split}-{seed}-{i}",
        prompt=f"What is {expr}?",
        answer=str(value),
        verifier="numeric",
        meta={"expression": expr, "digits": opts.digits, "steps": opts.steps},
    )


def load(split: str, limit: int, seed: int, options: ArithmeticOptions) -> list[Task]:
    if split not in SPLITS:
        raise TaskError(f"arithmetic has splits {', '.join(SPLITS)}; got '{split}'")
    return [make_item(options, split, seed, i) for i in range(limit)]
