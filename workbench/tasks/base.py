"""The Task record and helpers shared by the task families."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class TaskError(ValueError):
    """Bad task input (unknown name, malformed row, missing file); the message names the fix."""


@dataclass(frozen=True)
class Task:
    id: str  # stable across runs: the same item gets the same id, so runs can be paired
    prompt: str  # the question as shown to the agents
    answer: str  # gold answer (normalised for numeric tasks)
    verifier: str = "numeric"  # key into workbench.tasks.verify.VERIFIERS
    meta: dict[str, Any] = field(default_factory=dict)

    def extract(self, text: str) -> str | None:
        """The answer a model's text commits to, normalised; None when it has none (format failure)
        or when the verifier failed on it (see ``safe_extract``: never an exception)."""
        from workbench.tasks.verify import safe_extract

        return safe_extract(self, text)[0]

    def check(self, text: str) -> tuple[str | None, bool]:
        """Extract the answer from model text and verify it: (extracted or None, correct)."""
        extracted = self.extract(text)
        return extracted, self.is_correct(extracted)

    def is_correct(self, extracted: str | None) -> bool:
        """Verify an already extracted answer against the gold one; a verifier that fails (or times
        out) counts it wrong (see ``safe_check``: never an exception)."""
        from workbench.tasks.verify import safe_check

        return safe_check(self, extracted)[0]


def data_dir(family: str) -> Path | None:
    """The local copy of a benchmark: $WORKBENCH_DATA_DIR/<family>, or None when not configured."""
    root = os.environ.get("WORKBENCH_DATA_DIR")
    if not root:
        return None
    path = Path(root).expanduser() / family
    return path if path.is_dir() else None
