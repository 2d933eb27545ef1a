"""The layers of docs/architecture.md, enforced by parsing every import (module-level and lazy).

A module may import its own package and anything in a lower layer, never a sibling layer or a higher
one. Changing a layer here means changing the table in docs/architecture.md ("Layers") too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# lowest first; the key is the first name after `workbench.` (a subpackage or a module)
LAYERS: list[set[str]] = [
    {"config", "episode", "redact", "stats", "prompts", "report"},  # leaves: import nothing from workbench
    {"tasks"},
    {"models"},  # tool workers run their programs in the tasks' sandbox
    {"scheduler"},  # batches the protocols' calls to the models
    {"protocols", "runs", "serve"},
    {"run_config"},  # the config types that eval, compare and train build with one builder
    {"evaluate"},
    {"rl", "analysis", "compare"},
    {"viewer"},
    {"cli", "widgets"},
    {"__main__"},
]
APPS = len(LAYERS)  # apps/ sits above everything


def layer_of(part: str) -> int:
    for i, names in enumerate(LAYERS):
        if part in names:
            return i
    raise AssertionError(f"workbench.{part} is in no layer: add it to LAYERS and to docs/architecture.md")


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "workbench" and len(parts) > 1 else None


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every `workbench...` import in ``path``, also those inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == "workbench":  # from workbench import x
                found += [(node.lineno, f"workbench.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in found if m == "workbench" or m.startswith("workbench.")]


def violations() -> list[str]:
    bad = []
    files = [
        (p, _part("workbench." + p.relative_to(ROOT / "workbench").with_suffix("").parts[0]))
        for p in (ROOT / "workbench").rglob("*.py")
    ]
    files += [(p, None) for p in (ROOT / "apps").rglob("*.py")]
    for path, own in files:
        if own == "__init__":  # workbench/__init__.py: the package itself
            continue
        mine = APPS if own is None else layer_of(own)
        for line, module in imports(path):
            part = _part(module)
            if part is None or part == own:
                continue
            if layer_of(part) >= mine:
                bad.append(
                    f"{path.relative_to(ROOT)}:{line} imports {module} (layer {layer_of(part)} >= {mine})"
                )
    return bad


def test_every_import_goes_down_a_layer():
    assert violations() == []


def test_the_checker_sees_lazy_and_upward_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from workbench.rl.trainer import train\n    import workbench.viewer\n")
    assert imports(f) == [(2, "workbench.rl.trainer"), (3, "workbench.viewer")]
    assert (
        layer_of("rl") > layer_of("evaluate") > layer_of("protocols") > layer_of("models") > layer_of("stats")
    )


def test_the_docs_name_the_same_layers():
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    for names in LAYERS:
        for name in names - {"__main__"}:
            assert f"`{name}`" in section, name


def test_stats_is_a_leaf_and_the_old_path_still_imports():
    from workbench.analysis import stats as old
    from workbench.stats import wilson_ci

    assert old.wilson_ci is wilson_ci
    assert imports(ROOT / "workbench" / "stats.py") == []
