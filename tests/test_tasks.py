import json
import re

import pytest

from workbench.config import ConfigError
from workbench.tasks import TaskConfig, TaskError, load_tasks
from workbench.tasks.arithmetic import ArithmeticOptions, make_item
from workbench.tasks.gsm8k import gold_from_solution


def _load(**kw):
    return load_tasks(TaskConfig.from_flat(kw)).tasks


def test_arithmetic_gold_is_the_value_of_the_expression():
    for steps in (1, 2, 3):
        for t in _load(name="arithmetic", limit=50, steps=steps, ops="+-*", digits=2):
            assert int(t.answer) == eval(t.meta["expression"])  # our own generated expression
            assert t.prompt == f"What is {t.meta['expression']}?"


def test_arithmetic_is_seeded_and_stable_under_limit():
    a = _load(name="arithmetic", limit=20, seed=3)
    assert a == _load(name="arithmetic", limit=20, seed=3)
    assert a[:5] == _load(name="arithmetic", limit=5, seed=3)  # item i does not depend on the limit
    assert a != _load(name="arithmetic", limit=20, seed=4)
    assert len({t.id for t in a}) == 20


def test_arithmetic_splits_are_different_streams():
    opts = ArithmeticOptions(digits=4)
    test = {make_item(opts, "test", 0, i).prompt for i in range(200)}
    dev = {make_item(opts, "dev", 0, i).prompt for i in range(200)}
    assert len(test & dev) < 5  # 4-digit sums: collisions are possible but rare


def test_arithmetic_difficulty_knobs():
    easy = _load(name="arithmetic", limit=30, digits=1, ops="+")
    assert all(0 <= int(t.answer) <= 18 for t in easy)
    hard = _load(name="arithmetic", limit=30, digits=3, ops="*", steps=2)
    assert max(abs(int(t.answer)) for t in hard) > 10_000


def test_gsm8k_gold_extraction():
    assert gold_from_solution("She has 3 + 4 = <<3+4=7>>7.\n#### 7") == "7"
    assert gold_from_solution("#### 1,200") == "1200"
    assert gold_from_solution("no marker") is None


def test_gsm8k_from_the_offline_copy(shared_data):
    test = _load(name="gsm8k", split="test", limit=5)
    assert test[0].id == "gsm8k-test-0" and test[0].answer == "18"  # Janet's ducks
    assert test[0].prompt.startswith("Janet")
    dev = _load(name="gsm8k", split="dev", limit=3)
    train = _load(name="gsm8k", split="train", limit=10_000)
    assert len(train) == 7473 - 500
    assert dev[0].id == f"gsm8k-train-{7473 - 500}"  # dev is held out from train
    assert not {t.id for t in dev} & {t.id for t in train}


def test_gsm8k_without_data_or_network_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path))
    (tmp_path / "gsm8k").mkdir()
    with pytest.raises(TaskError, match="gsm8k/test.jsonl is missing"):
        _load(name="gsm8k", limit=1)


def _write(tmp_path, lines):
    p = tmp_path / "mine.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_jsonl_custom_fields(tmp_path):
    p = _write(
        tmp_path, [json.dumps({"q": "2+2?", "a": "4", "key": "x1"}), json.dumps({"q": "3+3?", "a": 6})]
    )
    tasks = _load(name=f"jsonl:{p}", limit=10, question_field="q", answer_field="a", id_field="key")
    assert [(t.id, t.prompt, t.answer) for t in tasks] == [("x1", "2+2?", "4"), ("mine-2", "3+3?", "6")]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"question": "x", "answer": ', r"mine.jsonl:2: not valid JSON"),
        ('{"question": "x"}', r"mine.jsonl:2: missing field 'answer'"),
        ('{"question": "x", "answer": "many"}', r"mine.jsonl:2: answer 'many' is not a number"),
        ("[1, 2]", r"mine.jsonl:2: expected a JSON object"),
    ],
)
def test_jsonl_bad_row_names_file_line_and_fix(tmp_path, line, message):
    p = _write(tmp_path, [json.dumps({"question": "1+1?", "answer": 2}), line])
    with pytest.raises(TaskError, match=message + r".*on_bad_row=skip"):
        _load(name=f"jsonl:{p}", limit=10)


def test_jsonl_skip_bad_rows_counts_them(tmp_path):
    p = _write(
        tmp_path,
        [
            json.dumps({"question": "1+1?", "answer": 2}),
            "{oops",
            json.dumps({"question": "2+2?", "answer": 4}),
        ],
    )
    ts = load_tasks(TaskConfig.from_flat({"name": f"jsonl:{p}", "limit": 10, "on_bad_row": "skip"}))
    assert [t.answer for t in ts.tasks] == ["2", "4"]
    assert len(ts.skipped) == 1 and "mine.jsonl:2" in ts.skipped[0]


def test_jsonl_missing_file(tmp_path):
    with pytest.raises(TaskError, match="does not exist"):
        _load(name=f"jsonl:{tmp_path}/nope.jsonl", limit=1)


def test_arithmetic_default_items_are_unchanged():
    """Docs and other tests quote these: the default options must keep producing the same items."""
    tasks = _load(name="arithmetic", limit=5)
    assert [(t.id, t.prompt, t.answer) for t in tasks[:3]] == [
        ("arithmetic-d1-s1-+--test-0-0", "What is 0 - 1?", "-1"),
        ("arithmetic-d1-s1-+--test-0-1", "What is 7 - 9?", "-2"),
        ("arithmetic-d1-s1-+--test-0-2", "What is 8 - 2?", "6"),
    ]
    hard = _load(name="arithmetic", split="dev", seed=1, limit=3, digits=2, ops="+-*", steps=3)
    assert hard[2].prompt == "What is ((4 + 80) * 56) * 65?" and hard[2].answer == "305760"
    assert _load(name="arithmetic", limit=5, style="expr") == tasks


def test_arithmetic_word_problems():
    for steps in (1, 2, 3):
        for ops in ("+", "-", "*", "+-*"):
            tasks = _load(
                name="arithmetic", split="dev", limit=40, style="word", steps=steps, ops=ops, digits=2
            )
            assert len({t.id for t in tasks}) == 40 and all("-word-" in t.id for t in tasks)
            for t in tasks:
                assert int(t.answer) == eval(t.meta["expression"]) >= 0  # stories never go negative
                assert t.prompt.endswith("have now?") and t.meta["style"] == "word"
                # one sentence per operation, plus the opening and the question (a first '*' merges two)
                assert t.prompt.count(".") + 1 >= steps + 1
    t = _load(name="arithmetic", split="dev", limit=1, style="word", ops="+", steps=1)[0]
    assert " more " in t.prompt and t.verifier == "numeric"
    assert _load(name="arithmetic", limit=10, style="word") == _load(
        name="arithmetic", limit=10, style="word"
    )


def test_arithmetic_bad_style_names_the_choices():
    with pytest.raises(ConfigError, match="style must be one of expr, word"):
        TaskConfig.from_flat({"name": "arithmetic", "style": "poem"})


# ---- hostile data files: every bad row is a TaskError naming file and line (or a counted skip) ----


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\xff\xfe\x00garbage", "mine.jsonl:2: not UTF-8 text (byte 0)"),
        (b'{"question": "x", "answer": ' + b"[" * 50_000, "mine.jsonl:2: JSON nested too deeply to read"),
        (
            b'{"question": "x", "answer": ' + b'{"a": ' * 50_000,
            "mine.jsonl:2: JSON nested too deeply to read",
        ),
        (
            b'{"question": "x", "answer": Infinity}',
            "mine.jsonl:2: not valid JSON (Infinity is not a JSON number)",
        ),
        (b'{"question": "x", "answer": -NaN}', "mine.jsonl:2: not valid JSON"),
        (b'{"question": "x", "answer": ' + b"1" * 5000 + b"}", "mine.jsonl:2: not valid JSON"),
        (b'{"question": "x", "answer": "' + b"7" * 5000 + b'"}', "mine.jsonl:2: answer is 5000 characters"),
        (b'{"question": {"a": 1}, "answer": 2}', "field 'question' must be text or a number, got dict"),
        (b'{"question": "x", "answer": null}', "field 'answer' must be text or a number, got NoneType"),
        (b'{"question": "x", "answer": true}', "field 'answer' must be text or a number, got bool"),
        (b'{"question": "x", "answer": [1]}', "field 'answer' must be text or a number, got list"),
        (b'{"question": "   ", "answer": 2}', "the question field 'question' is empty"),
        (b'"just a string"', "expected a JSON object, got str"),
        (b"\x00\x00\x00", "mine.jsonl:2: not valid JSON"),
    ],
)
def test_jsonl_hostile_row_names_file_and_line(tmp_path, raw, message):
    p = tmp_path / "mine.jsonl"
    p.write_bytes(json.dumps({"question": "1+1?", "answer": 2}).encode() + b"\n" + raw + b"\n")
    with pytest.raises(TaskError, match=re.escape(message)) as e:
        _load(name=f"jsonl:{p}", limit=10)
    assert "on_bad_row=skip" in str(e.value) and "\n" not in str(e.value)
    ts = load_tasks(TaskConfig.from_flat({"name": f"jsonl:{p}", "limit": 10, "on_bad_row": "skip"}))
    assert [t.answer for t in ts.tasks] == ["2"] and len(ts.skipped) == 1 and "mine.jsonl:2" in ts.skipped[0]


def test_jsonl_ids_must_be_unique_and_scalar(tmp_path):
    rows = [{"q": "a", "a": 1, "k": "x"}, {"q": "b", "a": 2, "k": "x"}, {"q": "c", "a": 3, "k": [1]}]
    p = _write(tmp_path, [json.dumps(r) for r in rows])
    opts = {"question_field": "q", "answer_field": "a", "id_field": "k", "on_bad_row": "skip"}
    ts = load_tasks(TaskConfig.from_flat({"name": f"jsonl:{p}", "limit": 10, **opts}))
    assert [t.id for t in ts.tasks] == ["x"]
    assert "mine.jsonl:2: duplicate id 'x' (first on line 1)" in ts.skipped[0]
    assert "mine.jsonl:3: field 'k' must be text or a number" in ts.skipped[1]


def test_jsonl_a_byte_order_mark_and_blank_lines_are_fine(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_bytes(
        b'\xef\xbb\xbf{"question": "1+1?", "answer": 2}\n\n   \n{"question": "2+2?", "answer": "4"}\n'
    )
    assert [t.answer for t in _load(name=f"jsonl:{p}", limit=10)] == ["2", "4"]


def test_jsonl_a_binary_file_stops_at_its_first_line(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(TaskError, match=r"mine\.jsonl:1: not"):
        _load(name=f"jsonl:{p}", limit=10)


def test_jsonl_an_unreadable_path_is_a_task_error(tmp_path):
    with pytest.raises(TaskError, match="does not exist"):
        _load(name=f"jsonl:{tmp_path}", limit=1)  # a folder
    with pytest.raises(TaskError, match="does not exist"):
        _load(name="jsonl:bad\x00path.jsonl", limit=1)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("test.json", b"\xff\xfe", "not UTF-8 text"),
        ("test.json", b"[" * 50_000, "JSON nested too deeply"),
        ("test.json", b"[1, 2]", "expected a list of row objects"),
        ("test.json", b'{"examples": 5}', "expected a list of row objects"),
        ("test.json", b"[1e999999999999999999999", "not valid JSON"),
        ("test.csv", b"a,b\n\xff\xfe,1\n", "not UTF-8 text"),
        ("test.csv", b"a,b\n" + b'"' + b"x" * 200_000 + b'",1\n', "not a readable CSV file"),
    ],
)
def test_a_damaged_local_benchmark_copy_is_a_task_error(tmp_path, name, content, message):
    from workbench.tasks.hub import read_local

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TaskError, match=re.escape(message)):
        read_local(path)


def test_a_loader_tripped_by_a_malformed_row_gives_a_task_error(monkeypatch):
    """The net under every family loader: a row that lacks a field or holds a wrong type (a partial
    download, an edited copy) is a TaskError naming the task, not a KeyError/TypeError traceback."""
    from workbench.tasks import math500

    def broken(split, limit):
        return [row["problem"] for row in [{"answer": 1}]]

    monkeypatch.setattr(math500, "load", broken)
    with pytest.raises(TaskError, match=r"task 'math500': a row of its test data is malformed \(KeyError"):
        _load(name="math500", limit=5)


def test_a_local_copy_with_a_question_of_the_wrong_type_is_a_task_error(tmp_path, monkeypatch):
    (tmp_path / "gsm8k").mkdir()
    row = {"question": {"text": "How many?"}, "answer": "#### 5"}
    (tmp_path / "gsm8k" / "test.jsonl").write_text(json.dumps(row) + "\n")
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path))
    with pytest.raises(TaskError, match=r"task 'gsm8k': item gsm8k-test-0 has a dict question"):
        _load(name="gsm8k", limit=5)
