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
