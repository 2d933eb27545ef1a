"""Checkpoints that survive SIGKILL: adapter, optimiser, scheduler, RNG states, step and data cursor.

Layout (in the run folder)::

    checkpoints/step-000040/   adapter/ (peft save_pretrained), trainer.pt, state.json
    checkpoints/latest         text file naming the newest complete checkpoint

A checkpoint is written into ``checkpoints/.tmp-step-N``, flushed, then renamed into place and
only then named in ``latest`` (itself replaced atomically), so a kill at any instant leaves
either the previous checkpoint or the new one, never half of one. Older checkpoints beyond
``keep`` are removed after the new one is in place.

``trainer.pt`` holds only tensors and plain Python values (the numpy RNG state is stored as a
tensor and ints), so it is loaded with ``torch.load(weights_only=True)``: a checkpoint file cannot
run code. A checkpoint written before this format (a pickled numpy state) is refused unless
``WORKBENCH_TRUST_CHECKPOINTS=1`` says the file is trusted.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.runs import RunDirError, atomic_write, fsync_tree


class CheckpointError(RunDirError):
    """A checkpoint that cannot be loaded safely (names the file and the fix)."""


def rng_state() -> dict[str, Any]:
    name, key, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {
        "name": str(name),
        "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    if isinstance(n, dict):
        key = n["key"].numpy().astype(np.uint32)
        np.random.set_state((n["name"], key, n["pos"], n["has_gauss"], n["gauss"]))
    else:  # the older, pickled form (a trusted checkpoint)
        np.random.set_state(n)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(x):
    """random.setstate wants the tuples that a round trip may have turned into lists."""
    return tuple(_as_tuples(v) for v in x) if isinstance(x, list | tuple) else x


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model,
    optimizer: torch.optim.Optimizer,
    scheduler,
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically; ``state`` is JSON (cursor, metrics positions, …)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save_pretrained(tmp / "adapter")
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
        tmp / "trainer.pt",
    )
    (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2))
    fsync_tree(tmp)  # the bytes are on disk before the rename makes them visible
    shutil.rmtree(final, ignore_errors=True)  # a leftover from a run resumed before this step
    os.replace(tmp, final)
    atomic_write(root / "latest", final.name)  # fsyncs the folder too, so the rename above is durable
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    root = Path(run_dir) / "checkpoints"
    try:
        name = (root / "latest").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not re.fullmatch(r"step-\d{6,}", name):  # never a path out of checkpoints/
        return None
    path = root / name
    return path if (path / "state.json").exists() and (path / "trainer.pt").exists() else None


def load_checkpoint(path: str | Path, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore adapter weights, optimiser, scheduler and RNG states; return the saved state."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    path = Path(path)
    set_peft_model_state_dict(model, load_peft_weights(str(path / "adapter"), device="cpu"))
    blob = load_trainer_state(path / "trainer.pt")
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    set_rng_state(blob["rng"])
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path / 'state.json'} cannot be read ({type(e).__name__}); "
                              "delete that checkpoint folder to resume from the one before") from None  # fmt: skip
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{path / 'state.json'} holds no step; delete that checkpoint folder")
    return state


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    """trainer.pt with weights_only=True; an older pickled one only when trusted explicitly."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError:
        if os.environ.get("WORKBENCH_TRUST_CHECKPOINTS") != "1":
            raise CheckpointError(
                f"{path} needs full unpickling (written by an older workbench), which can run code from "
                "the file; if you wrote it, resume with WORKBENCH_TRUST_CHECKPOINTS=1"
            ) from None
        return torch.load(path, weights_only=False)
