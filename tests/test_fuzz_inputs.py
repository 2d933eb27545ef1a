"""Fuzz the inputs a user controls: --set values, whole command lines, JSONL files, recipe YAML.

The property everywhere: zero tracebacks. A config builder returns a config or raises
ConfigError; `workbench.cli.main` exits 2 with exactly one line on stderr; the JSONL loader
returns tasks or raises one TaskError, and with ``on_bad_row=skip`` counts every bad line; the
recipe loader returns a TrainConfig or raises ConfigError.

Command lines are kept cheap and real: every generated argv carries at least one element that
must be rejected before a model loads or a run starts (a non-finite temperature, a zero limit,
an unknown key, a missing run folder...), and the entry points past validation (`run_eval`,
`run_compare`, `train`, `load_backend` (serve's too), the viewer, `analyze`) are tripwires that fail the test if
reached. Nothing else is patched: parsing, coercion, validation and task loading run for real.
Each test is bounded (``max_examples=400``): the file runs 2,400 cases in about 15 s on 2 cores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from workbench.config import MAX_INT, ConfigError, parse_overrides, to_dict
from workbench.protocols import PROTOCOLS
from workbench.protocols.base import Budget
from workbench.tasks import TaskConfig, TaskError, load_tasks
from workbench.tasks.arithmetic import ArithmeticOptions
from workbench.tasks.jsonl import JsonlOptions

FUZZ = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ---- values and keys ----

NASTY = [
    "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", "1e309", "9" * 30, "9" * 5000,
    "-1", "0", "-0", "0.0", "1.5", "1e3", "1e-400", "10000000", "2**64", "0x10", "1_000",
    "", " ", "none", "null", "None", "true", "false", "yes", "maybe", "[a,b]", "[]", "a,b,,c",
    ",", "{}", "{a: 1}", "\x00", "\n", "é", "💥", "=", "a=b", "..", "%s%n", "'; DROP TABLE",
]  # fmt: skip


def _value() -> st.SearchStrategy[str]:
    plausible = st.one_of(
        st.integers(0, 8).map(str), st.sampled_from(["0.5", "1.0", "true", "default", "fp32"])
    )
    return st.one_of(
        plausible,
        plausible,
        st.sampled_from(NASTY),
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(max_size=12),
    )


def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _eval_keys() -> list[str]:
    from workbench.evaluate import MemberConfig, ModelConfig

    keys = {f"protocol.{k}" for spec in PROTOCOLS.values() for k in _fields(spec.config)}
    keys |= {f"task.{k}" for k in _fields(TaskConfig) + _fields(ArithmeticOptions) + _fields(JsonlOptions)}
    keys |= {f"model.{k}" for k in _fields(ModelConfig)} | {f"models.big.{k}" for k in _fields(ModelConfig)}
    keys |= {f"team.hot.{k}" for k in _fields(MemberConfig)} | {f"budget.{k}" for k in _fields(Budget)}
    return sorted(keys | {"seed", "max_in_flight", "protocol", "task", "protocol.options", "team.hot"})


EVAL_KEYS = _eval_keys()
COMPARE_KEYS = sorted(
    {"tolerance", "pilot_items", "match", "reference", "seeds", "max_in_flight", "options.vote"}
    | {f"options.{p}.{k}" for p in ("vote", "maestro", "debate") for k in _fields(PROTOCOLS[p].config)}
    | {k for k in EVAL_KEYS if k.startswith(("task.", "model."))}
)


def _item(keys: list[str]) -> st.SearchStrategy[str]:
    key = st.one_of(
        st.sampled_from(keys),
        st.sampled_from(keys).map(lambda k: k.upper()),
        st.text(alphabet="abcz._ =", min_size=0, max_size=12),
        st.lists(st.sampled_from(["a", "protocol", "n", "", "task"]), min_size=1, max_size=12).map(".".join),
    )
    return st.builds(lambda k, v, sep: f"{k}{sep}{v}", key, _value(), st.sampled_from(["=", "=", "", "=="]))


def _walk(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _walk(v)
    else:
        yield obj


def _sane(cfg) -> None:
    """What an accepted config must hold: finite floats, 64-bit ints."""
    for v in _walk(to_dict(cfg)):
        if isinstance(v, float):
            assert math.isfinite(v), cfg
        if isinstance(v, int):
            assert abs(v) <= MAX_INT, cfg


# ---- --set values through the config builders ----


@FUZZ
@given(items=st.lists(_item(EVAL_KEYS), max_size=6), protocol=st.sampled_from([None, *PROTOCOLS]))
def test_fuzz_set_items_through_the_eval_config(items, protocol):
    from workbench.evaluate import EvalConfig

    try:
        cfg = EvalConfig.build(parse_overrides(items), protocol=protocol)
    except ConfigError:
        event("rejected")
        return
    event("accepted")
    _sane(cfg)


@FUZZ
@given(
    items=st.lists(_item(COMPARE_KEYS), max_size=6),
    seeds=st.one_of(
        st.sampled_from(NASTY), st.lists(st.integers(-5, 5)).map(lambda s: ",".join(map(str, s)))
    ),
    protocols=st.sampled_from(["single,vote,maestro", "vote,debate", "vote,vote", "", "nope", "single"]),
)
def test_fuzz_set_items_through_the_compare_config(items, seeds, protocols):
    from workbench.compare import CompareConfig

    try:
        cfg = CompareConfig.build(parse_overrides(items), protocols=protocols, seeds=seeds)
    except ConfigError:
        event("rejected")
        return
    event("accepted")
    _sane(cfg)


def _train_keys() -> list[str]:
    from workbench.rl.config import EvalSettings, PoolSettings, TrainSettings
    from workbench.rl.policy import LoraSettings

    keys = {f"train.{k}" for k in _fields(TrainSettings)} | {f"pool.{k}" for k in _fields(PoolSettings)}
    keys |= {f"eval.{k}" for k in _fields(EvalSettings)} | {f"lora.{k}" for k in _fields(LoraSettings)}
    keys |= {f"protocol.{k}" for k in _fields(PROTOCOLS["maestro"].config)}
    return sorted(keys | {"recipe", "out", "task.limit", "train", "bogus"})


@FUZZ
@given(data=st.data(), recipe=st.sampled_from(["maestro", "leader", "conductor"]))
def test_fuzz_set_items_through_the_train_config(data, recipe):
    from workbench.rl.config import TrainConfig

    items = data.draw(st.lists(_item(_train_keys()), max_size=6))
    try:
        cfg = TrainConfig.load(recipe, items)
    except ConfigError:
        event("rejected")
        return
    event("accepted")
    _sane(cfg)


# ---- whole command lines through workbench.cli.main ----


class Tripwire(AssertionError):
    pass


@pytest.fixture
def tripwires(monkeypatch, tmp_path):
    """Fail the test if any argv gets past validation; runs without --out land in a watched root."""
    import workbench.analysis.analyze
    import workbench.compare
    import workbench.evaluate
    import workbench.models
    import workbench.rl.trainer
    import workbench.viewer

    def trip(name):
        def f(*a, **k):
            raise Tripwire(f"{name} reached: an invalid command line got past validation")

        return f

    for module, name in (
        (workbench.evaluate, "run_eval"),
        (workbench.compare, "run_compare"),
        (workbench.rl.trainer, "train"),
        (workbench.models, "load_backend"),
        (workbench.viewer, "load_app"),
        (workbench.analysis.analyze, "analyze"),
    ):
        monkeypatch.setattr(module, name, trip(f"{module.__name__}.{name}"))
    root = tmp_path / "runs-root"
    monkeypatch.setenv("WORKBENCH_RUNS_DIR", str(root))
    yield root
    assert not root.exists(), "a run folder was created"


def _junk() -> st.SearchStrategy[str]:
    # never --help / -h (argparse prints help and exits 0, as it should) nor abbreviations of it
    return st.one_of(
        st.sampled_from(["--bogus", "-x", "--", "--set", "--limit", "--=", "---", "--out"]),
        st.text(max_size=10).filter(lambda t: not t.startswith("-")),
    )


def _flags(sub: str, tmp: str) -> st.SearchStrategy[list[str]]:
    """Random (often valid) flags of a subcommand; paths always inside ``tmp``."""
    path = st.text(alphabet="abc./", max_size=8).map(lambda p: os.path.join(tmp, p.lstrip("/") or "x"))
    task = st.one_of(
        st.sampled_from(["arithmetic", "gsm8k", "bbh:nope", "mmlu:stem", "jsonl:", "nope", "humaneval:x"]),
        path.map(lambda p: f"jsonl:{p}"),
        st.text(max_size=8),
    )
    num = st.one_of(st.integers(-(2**65), 2**65).map(str), st.sampled_from(NASTY))
    options = {
        "eval": {
            "--task": task,
            "--protocol": st.sampled_from([*PROTOCOLS, "nope", ""]),
            "--model": st.sampled_from(["smollm2", "nope", "openai:", "vllm:x", "a+b"]),
            "--limit": num,
            "--split": st.sampled_from(["train", "dev", "test", "validation", ""]),
            "--seed": num,
            "--out": path,
            "--runs": path,
        },
        "compare": {
            "--task": task,
            "--protocols": st.sampled_from(["single,vote", "vote,vote", "", ",", "nope,vote"]),
            "--limit": num,
            "--match": st.sampled_from(["generations", "tokens", "none", "x"]),
            "--reference": st.sampled_from(["", "vote", "nope"]),
            "--seeds": st.one_of(num, st.sampled_from(["0,1", "0,x", "0,,1", "1,1"])),
            "--out": path,
            "--runs": path,
        },
        "train": {
            "--recipe": st.one_of(st.sampled_from(["maestro", "leader", "conductor", "nope"]), path),
            "--out": path,
            "--runs": path,
        },
        "demo": {"--model": st.sampled_from(["smollm2", "nope"]), "--runs": path},
        "serve": {
            "--port": num,
            "--host": st.sampled_from(["127.0.0.1", "::1", "0.0.0.0", "nope", ""]),
            "--dtype": st.sampled_from(["auto", "fp32", "x"]),
            "--device": st.sampled_from(["auto", "cpu", "x"]),
        },
        "app": {"--port": num, "--host": st.sampled_from(["127.0.0.1", "0.0.0.0", "x"])},
        "analyze": {
            "--out": path,
            "--embed-model": st.sampled_from(["bundled", "x"]),
            "--max-exact": num,
            "--permutations": num,
        },
    }[sub]
    pair = st.sampled_from(sorted(options)).flatmap(lambda flag: options[flag].map(lambda v: [flag, v]))
    return st.lists(st.one_of(pair, pair, pair, _junk().map(lambda j: [j])), max_size=5).map(
        lambda chunks: [x for c in chunks for x in c]
    )


def _bad_tail(sub: str, tmp: str) -> st.SearchStrategy[list[str]]:
    """The last arguments of an argv: at least one of them must be rejected before anything runs."""
    missing = os.path.join(tmp, "no-such-run")
    set_bad = st.sampled_from(
        [
            "protocol.temperature=nan",
            "protocol.temperature=inf",
            "protocol.top_p=0",
            "protocol.max_tokens=1e400",
            "protocol.options=5",
            "task.limit=0",
            "budget.max_calls=0",
            "seed=1e400",
            "zz_unknown=1",
            "a..b=1",
            "nonsense",
        ]
    )
    train_bad = st.sampled_from(
        ["train.lr=nan", "train.temperature=inf", "train.steps=1e12", "pool.threshold=nan", "zz=1", "train=5"]
    )
    tails = {
        "eval": st.one_of(
            st.builds(
                lambda items, bad: ["--set", *items, bad], st.lists(_item(EVAL_KEYS), max_size=4), set_bad
            ),
            st.sampled_from([["--limit", "0"], ["--limit", "-3"], ["--limit", "x"], ["--seed", "1e400"]]),
        ),
        "compare": st.one_of(
            st.builds(
                lambda items, bad: ["--set", *items, bad], st.lists(_item(COMPARE_KEYS), max_size=4), set_bad
            ),
            st.sampled_from([["--seeds", "0,x"], ["--seeds", ","], ["--limit", "0"], ["--match", "x"]]),
        ),
        "train": st.one_of(
            st.builds(
                lambda items, bad: ["--set", *items, bad],
                st.lists(_item(_train_keys()), max_size=4),
                train_bad,
            ),
            st.just(["--resume", missing, "--set", "a=1"]),
        ),
        "demo": st.sampled_from([["--limit", "0"], ["--limit", "-1"], ["--limit", "x"], ["--bogus"]]),
        "serve": st.sampled_from([["--max-batch-size", "0"], ["--max-batch-size", "-5"], ["--port", "x"]]),
        "app": st.just(["--runs", missing]),
        "analyze": st.one_of(
            st.just([missing]),
            st.sampled_from(
                [["--replay", "-1", missing], ["--rationale", "3", missing], ["--permutations", "0", missing]]
            ),
        ),
    }
    return tails[sub]


@contextlib.contextmanager
def _in_fresh_folder():
    old = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            yield tmp
        finally:
            os.chdir(old)


@FUZZ
@given(data=st.data(), sub=st.sampled_from(["eval", "compare", "train", "demo", "serve", "app", "analyze"]))
def test_fuzz_command_lines_fail_in_one_line_before_anything_runs(data, sub, tripwires, capsys):
    from workbench.cli import main

    with _in_fresh_folder() as tmp:
        argv = [sub, *data.draw(_flags(sub, tmp)), *data.draw(_bad_tail(sub, tmp))]
        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and err.startswith("workbench") and "Traceback" not in err, (argv, err)
        assert os.listdir(tmp) == [], (argv, os.listdir(tmp))  # nothing written


# ---- JSONL files through the task loader ----

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
_row = st.fixed_dictionaries(
    {},
    optional={
        "question": _json,
        "answer": st.one_of(_json, st.sampled_from(["7", "#### 12", "1/3", "x"])),
        "id": _json,
    },
).map(json.dumps)
_line = st.one_of(
    _row.map(str.encode),
    _json.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
    st.sampled_from(
        [
            b'{"question": "q", "answer": NaN}',
            b'{"question": "q", "answer": ' + b"[" * 5000,
            b'{"question": "q", "answer": ' + b"9" * 5000 + b"}",
            b"\xef\xbb\xbf{}",
            b"\x00" * 10,
            b"",
        ]
    ),
)


def _non_blank_lines(path: Path) -> int:
    """Lines the loader must account for: not UTF-8 (a bad row), or text with something on it."""
    count = 0
    for i, raw in enumerate(path.read_bytes().split(b"\n")):
        try:
            count += bool(raw.decode("utf-8-sig" if i == 0 else "utf-8").strip())
        except UnicodeDecodeError:
            count += 1
    return count


@FUZZ
@given(lines=st.lists(_line, max_size=8), id_field=st.sampled_from(["", "id"]))
def test_fuzz_jsonl_files_load_or_fail_in_one_line_and_skips_are_counted(lines, id_field):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.jsonl"
        path.write_bytes(b"\n".join(lines))
        base = {"name": f"jsonl:{path}", "limit": 1000, "id_field": id_field}
        try:
            load_tasks(TaskConfig.from_flat(base))
        except TaskError as e:
            assert "\n" not in str(e) and "fuzz.jsonl" in str(e)
        try:
            got = load_tasks(TaskConfig.from_flat({**base, "on_bad_row": "skip"}))
        except TaskError as e:  # only when no row is usable
            assert str(e).startswith(f"no usable rows in jsonl:{path}")
            return
        assert len(got.tasks) + len(got.skipped) == _non_blank_lines(path)  # each: a task or a counted skip
        assert all("\n" not in m and "fuzz.jsonl:" in m for m in got.skipped)
        assert all(isinstance(t.prompt, str) and t.prompt.strip() for t in got.tasks)
        assert len({t.id for t in got.tasks}) == len(got.tasks)


# ---- recipe YAML through the recipe loader ----

_yaml_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


def _recipe_like() -> st.SearchStrategy[str]:
    base = yaml.safe_load((Path(__file__).parents[1] / "workbench/rl/recipes/maestro.yaml").read_text())
    sections = st.dictionaries(
        st.sampled_from([*base, "bogus", "recipe", "out"]),
        st.one_of(_yaml_value, st.sampled_from(list(base.values()))),
        max_size=4,
    )
    mutated = st.builds(
        lambda text, at, junk: text[:at] + junk + text[at:],
        st.just(yaml.safe_dump(base)),
        st.integers(0, 400),
        st.sampled_from(["{", "[", ":", "&a ", "*a", "!!python/object:os.system ", "\t", "- ", "'", "\x00"]),
    )
    return st.one_of(
        sections.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
        _yaml_value.map(yaml.safe_dump),
        mutated,
        st.text(max_size=60),
        st.sampled_from(
            ["a: &x [1]\nb: *x\n", "- " * 500 + "x\n", "[" * 3000, "{a: " * 3000, "--- 1\n--- 2\n"]
        ),
    )


@FUZZ
@given(text=_recipe_like())
def test_fuzz_recipe_yaml_loads_or_fails_with_a_config_error(text):
    from workbench.rl.config import TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            cfg = TrainConfig.load(str(path))
        except ConfigError:
            return
        _sane(cfg)
