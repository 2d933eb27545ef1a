import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    """Runs written without --out go to a temporary folder, never into the checkout."""
    monkeypatch.setenv("WORKBENCH_RUNS_DIR", str(tmp_path / "runs"))


@pytest.fixture
def shared_data(monkeypatch) -> Path:
    """The offline benchmark copies (../shared/data); tests that need them skip when absent."""
    root = Path(os.environ.get("WORKBENCH_DATA_DIR") or SHARED_DATA)
    if not (root / "gsm8k").is_dir():
        pytest.skip(f"offline benchmark data not found at {root}")
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(root))
    return root


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded model, loaded once per test session (bf16 where the CPU has it)."""
    from workbench.models import load_backend

    return load_backend("smollm2")


@pytest.fixture(scope="session")
def smollm2_fp32():
    from workbench.models import load_backend

    return load_backend("smollm2", dtype="fp32")


def child_pids() -> set[int]:
    """The pids whose parent is this process (zombies included), read from /proc/*/stat.

    Tests that check "no child of ours is left" compare this with the set taken before the code
    under test ran: other parts of the suite legitimately keep children (math-verify's helper).
    """
    me, pids = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
        if len(fields) > 1 and int(fields[1]) == me:
            pids.add(int(entry))
    return pids


@pytest.fixture
def children_before() -> set[int]:
    return child_pids()
