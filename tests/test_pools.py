"""Worker pools (models, decodings, personas, tool workers), the one config builder shared by eval,
compare and train, compare variants, flag/--set conflicts, and task mixtures (docs/protocols.md
"Teams and worker pools", docs/tasks.md "Mixtures")."""

import json
import re
from fractions import Fraction

import pytest

from workbench.cli import main
from workbench.compare import CompareConfig, run_compare
from workbench.config import ConfigError, load_yaml, to_dict
from workbench.evaluate import EvalConfig, run_episodes, run_eval
from workbench.models.base import Request, SamplingParams
from workbench.models.scripted import ScriptedBackend
from workbench.models.tools import (
    Calculator,
    CalculatorError,
    PythonTool,
    evaluate_expression,
    find_expression,
    format_value,
)
from workbench.rl.config import TrainConfig
from workbench.tasks import TaskConfig, load_tasks
from workbench.tasks.sandbox import sandbox_mode

SANDBOX = sandbox_mode() != "none"
needs_sandbox = pytest.mark.skipif(not SANDBOX, reason="no OS sandbox on this machine")

POOL = {
    "models": {"api": {"name": "openai:http://127.0.0.1:9/v1#m"}, "tuned": {"name": "smollm2+adapters/x"}},
    "team": {
        "default": {"description": "the base model, greedy"},
        "hot": {"temperature": 0.9, "description": "the base model, sampled", "system": "Be bold."},
        "api": {"model": "api", "description": "a remote model", "max_tokens": 64},
        "tuned": {"model": "tuned", "description": "the base model with a LoRA adapter"},
        "calc": {"tool": "calculator", "description": "evaluates an arithmetic expression exactly"},
    },
}
CONDUCTOR_POOL = {"worker_members": ["default", "hot", "api", "tuned", "calc"]}


def value(req) -> int:
    text = "\n".join(m["content"] for m in req.messages)
    return eval(re.findall(r"What is (.+?)\?", text)[-1])


def arithmetic(limit):
    return load_tasks(TaskConfig.from_flat({"name": "arithmetic", "limit": limit}))


# ---------------------------------------------------------------- one builder, the same keys
def test_the_same_set_keys_mean_the_same_thing_in_eval_compare_and_train():
    shared = {
        "task": {"name": "arithmetic", "digits": 2, "limit": 5, "split": "dev"},
        "model": {"dtype": "fp32"},
        **POOL,
    }
    ev = EvalConfig.build({**shared, "protocol": CONDUCTOR_POOL}, protocol="conductor")
    cmp = CompareConfig.build(
        {**shared, "options": {"conductor": CONDUCTOR_POOL}}, protocols="single,conductor"
    )
    tr = TrainConfig.load("conductor", {**shared, "protocol": CONDUCTOR_POOL})
    for section in ("task", "model", "models", "team"):
        assert (
            to_dict(getattr(ev, section)) == to_dict(getattr(cmp, section)) == to_dict(getattr(tr, section))
        )
    assert ev.build_team() == cmp.build_team()
    assert ev.model_configs() == cmp.model_configs() == tr.model_configs()
    assert set(ev.model_configs()) == {"default", "api", "tuned"}  # the calculator loads no model
    assert ev.team["api"]["max_tokens"] == 64 and ev.team["calc"]["model"] == ""
    # budget: eval and compare alike (train has no budget section)
    b = {"budget": {"max_calls": "7"}}
    assert EvalConfig.build(b).budget == CompareConfig.build(b).budget
    with pytest.raises(ConfigError, match="unknown section 'budget'"):
        TrainConfig.load("conductor", b)


def test_members_carry_their_description_tool_and_decoding():
    team = EvalConfig.build({**POOL, "protocol": CONDUCTOR_POOL}, protocol="conductor").build_team()
    assert team.names == ("default", "hot", "api", "tuned", "calc")
    assert team.member("calc").description == "evaluates an arithmetic expression exactly"
    assert team.description("hot") == "the base model, sampled"
    assert team.member("calc").tool == "calculator" and team.member("calc").backend == "tool:calculator"
    assert team.member("tuned").backend == "tuned" and team.member("default").description
    assert set(team.backends) == {"default", "api", "tuned", "tool:calculator"}


@pytest.mark.parametrize(
    "overrides,protocol,message",
    [
        ({"protocol": {"worker_members": ["default", "ghost"]}}, "conductor", "no team member named 'ghost'"),
        (
            {"team": {"calc": {"tool": "calculator"}}, "protocol": {"worker_members": ["default", "calc"]}},
            "conductor",
            "team.default.description is missing",
        ),
        (
            {
                "team": {"default": {"description": "x"}, "b": {"temperature": 1}},
                "protocol": {"worker_members": ["default", "b"]},
            },
            "conductor",
            "team.b.description is missing",
        ),
        ({"team": {"c": {"tool": "abacus"}}}, None, "tool must be one of python, calculator"),
        ({"team": {"c": {"tool": "calculator", "model": "default"}}}, None, "a calculator uses no model"),
        ({"team": {"x": {"model": "ghost"}}}, None, "team.x.model='ghost' is not a model"),
        ({"team": {"9x": {}}}, None, "member name '9x' must start with a letter"),
        ({"models": {"default": "smollm2"}}, None, "models.default is the `model` section"),
        ({"team": {"default": {"tool": "calculator"}}}, None, "team.default is the `model` section's member"),
        ({"team": {"h": {"description": "two\nlines"}}}, None, "description must be one line"),
        (
            {
                "team": {"c": {"tool": "calculator", "description": "d"}},
                "protocol": {"conductor_member": "c"},
            },
            "conductor",
            "'c' is a calculator tool; a tool answers, it cannot be the conductor",
        ),
    ],
)
def test_bad_pools_are_one_line_errors(overrides, protocol, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        EvalConfig.build(overrides, protocol=protocol)
    assert "\n" not in str(e.value)


def test_a_homogeneous_pool_needs_no_description():
    EvalConfig.build(protocol="conductor")  # three copies of default, as before


def test_a_duplicate_member_name_is_refused_in_a_recipe_and_in_a_team(tmp_path):
    from workbench.protocols import Member, Team

    path = tmp_path / "r.yaml"
    path.write_text("team:\n  calc: {tool: calculator}\n  calc: {tool: python}\n")
    with pytest.raises(ConfigError, match="line 3: key 'calc' is given twice"):
        load_yaml(path)
    with pytest.raises(ConfigError, match="team member 'a' is defined twice"):
        Team((Member("a"), Member("a")))


def test_cli_pool_errors_are_one_line_before_any_model_loads(capsys):
    # a model path that does not exist: reaching the model load would be a different error
    argv = ["eval", "--protocol", "conductor", "--model", "/nonexistent/model", "--set"]
    assert main([*argv, "protocol.worker_members=default,ghost"]) == 2
    assert main([*argv, "team.calc.tool=calculator", "protocol.worker_members=default,calc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no team member named 'ghost'" in err[0]
    assert "team.default.description is missing" in err[1]


def test_python_tool_workers_are_refused_without_an_os_sandbox(monkeypatch):
    monkeypatch.setenv("WORKBENCH_SANDBOX", "none")
    with pytest.raises(
        ConfigError, match=r"team\.py\.tool=python: sandbox: .*tool workers never run without it"
    ):
        EvalConfig.build({"team": {"py": {"tool": "python"}}})
    # and the tool itself refuses too (a config built elsewhere): a counted failure, no code run
    tool = PythonTool(ScriptedBackend("```python\nprint(1)\n```"))
    (gen,) = tool.generate([Request([{"role": "user", "content": "go"}])])
    assert gen.tool["status"] == "error" and "sandbox" in gen.tool["reason"]


# ---------------------------------------------------------------- flags vs --set
@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["eval", "--limit", "5", "--set", "task.limit=9"],
            "--limit 5 and --set task.limit='9' both set task.limit",
        ),
        (["eval", "--task", "gsm8k", "--set", "task.name=bbh"], "both set task.name"),
        (["eval", "--seed", "1", "--set", "seed=2"], "both set seed"),
        (["compare", "--model", "m", "--set", "model.name=n"], "both set model.name"),
        (["compare", "--protocols", "single", "--set", "protocols=vote"], "both set protocols"),
        (["train", "--out", "a", "--set", "out=b"], "both set out"),
    ],
)
def test_a_flag_and_a_set_key_for_the_same_value_conflict(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_flag_alone_or_a_set_key_alone_is_fine():
    assert EvalConfig.build({"task": {"limit": 9}}).task.limit == 9
    assert EvalConfig.build(limit=5).task.limit == 5
    assert EvalConfig.build().task.limit == 8  # defaults come from the config, not the flags


# ---------------------------------------------------------------- pools through the protocols
CALC_PLAN = (
    'model_id = [2, 0]\nsubtasks = ["Compute {expr}.", "Give the final answer."]\naccess_list = [[], ["all"]]'
)


def test_a_conductor_routes_steps_to_different_models_and_a_calculator():
    """default and api are different backends; the calculator answers the first step exactly and the
    second step (a model that copies the earlier answer) sees it."""
    tasks = arithmetic(3)

    def conductor(req, j):
        if req.messages[0]["content"].startswith("You are the Conductor"):
            expr = re.findall(r"What is (.+?)\?", req.messages[-1]["content"])[-1]
            return CALC_PLAN.format(expr=expr)
        earlier = re.findall(r"Answer: (-?\d+)", req.messages[-1]["content"])
        return f"Answer: {earlier[-1] if earlier else 'none'}"

    default, api = ScriptedBackend(conductor, "default"), ScriptedBackend("Answer: 999", "api")
    cfg = EvalConfig.build(
        {
            "models": {"api": "openai:http://127.0.0.1:9/v1#m"},
            "team": {
                "default": {"description": "the base model"},
                "api": {"model": "api", "description": "a remote model"},
                "calc": {"tool": "calculator", "description": "exact arithmetic"},
            },
            "protocol": {"worker_members": ["default", "api", "calc"], "max_steps": 2},
        },
        protocol="conductor",
    )
    backends = cfg.load_backends({"default": default, "api": api})
    assert isinstance(backends["tool:calculator"], Calculator)
    episodes, errors, _ = run_episodes(tasks, cfg.protocol, backends, team=cfg.build_team())
    assert errors == [] and len(episodes) == 3
    for ep in episodes:
        assert ep.correct and ep.meta["pool"] == ["default", "api", "calc"]
        calls = [e for e in ep.events if e["type"] == "tool_call"]
        assert len(calls) == 1 and calls[0]["tool"] == "calculator" and calls[0]["status"] == "ok"
        assert "tool_failures" not in ep.meta
    assert api.calls == []  # the plans never routed to Model 1


def test_members_decoding_and_personas_reach_the_backend():
    backend = ScriptedBackend(lambda r, j: f"Answer: {value(r)}")
    cfg = EvalConfig.build(
        {
            "team": {"short": {"temperature": 0.7, "top_p": 0.5, "max_tokens": 12, "system": "Be brief."}},
            "protocol": {"members": ["default", "short"], "n": 2},
        },
        protocol="vote",
    )
    (ep,), errors, _ = run_episodes(arithmetic(1), cfg.protocol, backend, team=cfg.build_team())
    reqs = backend.calls[0]
    assert errors == [] and ep.correct
    short = [r for r in reqs if r.sampling.max_tokens == 12]
    assert len(short) == 1 and short[0].sampling.temperature == 0.7 and short[0].sampling.top_p == 0.5
    assert short[0].messages[0]["content"].startswith("Be brief.")


# ---------------------------------------------------------------- the calculator
@pytest.mark.parametrize(
    "expr,expected",
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", Fraction(7, 2)),
        ("-3 - -4", 1),
        ("2 ^ 10", 1024),
        ("6 × 7 ÷ 2", 21),
        ("1,234 + 1", 1235),
        ("17 // 5 + 17 % 5", 5),
        ("0.1 + 0.2", Fraction(3, 10)),
        ("2 ** -2", Fraction(1, 4)),
    ],
)
def test_the_calculator_evaluates_arithmetic_exactly(expr, expected):
    assert evaluate_expression(expr) == expected


@pytest.mark.parametrize(
    "expr,message",
    [
        ("__import__('os').system('true')", "not arithmetic"),
        ("(1).__class__", "not arithmetic"),
        ("x + 1", "not arithmetic"),
        ("[1, 2]", "not arithmetic"),
        ("1 / 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("9 ** 9 ** 9", "exponent"),
        ("10 ** 3000", "digits"),
        ("2 ** 0.5", "whole-number exponents"),
        ("1 +", "not an arithmetic expression"),
        ("(" * 200 + "1" + ")" * 200, "nested too deeply|longer than|not an arithmetic"),
        ("1 + " * 200 + "1", "longer than"),
    ],
)
def test_the_calculator_refuses_what_is_not_bounded_arithmetic(expr, message):
    with pytest.raises(CalculatorError, match=message):
        evaluate_expression(expr)


def test_the_calculator_reads_the_instruction_first_and_fails_as_a_counted_result():
    text = "Your instruction: Compute 12 * (3 + 4).\n\nWhat is 1 + 1? End with Answer: <number>."
    assert find_expression(text) == ("12 * (3 + 4)", 84)
    assert format_value(Fraction(1, 4)) == "0.25" and format_value(Fraction(1, 3)) == "1/3"
    assert format_value(Fraction(-5, 2)) == "-2.5"
    gens = Calculator().generate(
        [
            Request([{"role": "user", "content": text}], SamplingParams(n=2)),
            Request([{"role": "user", "content": "Your instruction: summarise the story."}]),
        ]
    )
    assert [g.text.splitlines()[-1] for g in gens[:2]] == ["Answer: 84", "Answer: 84"]
    assert gens[2].tool["status"] == "no_expression" and gens[2].tool["reason"]


# ---------------------------------------------------------------- the python tool
def _python_episode(code_reply: str, timeout_s: float = 10.0):
    """One conductor episode whose only step is a python tool worker writing ``code_reply``."""

    def model(req, j):
        if req.messages[0]["content"].startswith("You are the Conductor"):
            return 'model_id = [0]\nsubtasks = ["Compute it."]\naccess_list = [[]]'
        if req.messages[0]["content"].startswith("You are a Python tool"):
            return code_reply.replace("EXPR", re.findall(r"What is (.+?)\?", req.messages[-1]["content"])[-1])
        return "Answer: none"

    cfg = EvalConfig.build(
        {
            "team": {
                "py": {"tool": "python", "description": "writes and runs Python", "timeout_s": timeout_s}
            },
            "protocol": {"worker_members": ["py"], "max_steps": 1},
        },
        protocol="conductor",
    )
    (ep,), errors, _ = run_episodes(
        arithmetic(1), cfg.protocol, cfg.load_backends(ScriptedBackend(model)), team=cfg.build_team()
    )
    assert errors == []
    return ep


@needs_sandbox
def test_a_python_tool_worker_runs_the_models_program_in_the_sandbox():
    ep = _python_episode("```python\nprint(EXPR)\n```")
    assert ep.correct and ep.messages[-1].content.startswith("```python")
    (call,) = [e for e in ep.events if e["type"] == "tool_call"]
    assert call["tool"] == "python" and call["status"] == "ok" and "tool_failures" not in ep.meta


@needs_sandbox
@pytest.mark.parametrize(
    "code,status,reason",
    [
        ("```python\nraise ValueError('boom')\n```", "failed", "boom"),
        ("```python\nwhile True:\n    pass\n```", "timeout", "timed out"),
        ("```python\nx = 1\n```", "failed", "printed nothing"),
        ("I would rather not write code.", "no_code", "no Python program"),
        (
            "```python\nimport socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\nprint(1)\n```",
            "failed",
            "",
        ),
    ],
)
def test_a_failing_python_tool_is_a_counted_failure_with_a_reason_not_a_crash(code, status, reason):
    ep = _python_episode(code, timeout_s=2.0)
    assert not ep.correct and ep.meta["tool_failures"] == 1
    (err,) = [e for e in ep.events if e["type"] == "tool_error"]
    assert err["tool"] == "python" and reason in err["reason"]
    (call,) = [e for e in ep.events if e["type"] == "tool_call"]
    assert call["status"] == status


# ---------------------------------------------------------------- compare variants
def test_compare_runs_one_protocol_twice_as_named_variants(tmp_path):
    def reply(req, j):
        if req.messages[0]["content"].startswith("You are the Conductor"):
            return 'model_id = [0]\nsubtasks = ["Solve."]\naccess_list = [[]]'
        return f"Answer: {value(req)}" if req.sampling.max_tokens != 33 else "Answer: -999"

    cmp = CompareConfig.build(
        {
            "team": {"weak": {"max_tokens": 33}},
            "options": {"conductor@good": {"max_steps": 2}, "conductor@weak": {"worker_members": ["weak"]}},
        },
        protocols="single,conductor@good,conductor@weak",
        limit=3,
        reference="conductor@good",
        out=str(tmp_path / "cmp"),
    )
    result = run_compare(cmp, backend=ScriptedBackend(reply), progress=False)
    rows = {r["protocol"]: r for r in json.loads((tmp_path / "cmp" / "comparison.json").read_text())["rows"]}
    assert list(rows) == ["single", "conductor@good", "conductor@weak"]
    assert rows["conductor@good"]["accuracy"] == 1.0 and rows["conductor@weak"]["accuracy"] == 0.0
    assert rows["conductor@weak"]["protocol_name"] == "conductor"
    assert rows["conductor@weak"]["vs_reference"]["only_b_right"] == 3
    assert len({d for r in rows.values() for d in r["run_dirs"]}) == 3
    assert "conductor@weak" in result.table


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"protocols": "conductor@a,conductor@a"}, "protocols listed twice"),
        ({"protocols": "conductor@"}, "unknown protocol(s) 'conductor@'"),
        ({"protocols": "nope@a"}, "unknown protocol(s) 'nope@a'"),
        (
            {"protocols": "single", "overrides": {"options": {"conductor@a": {}}}},
            "options.conductor@a: 'conductor@a' is not",
        ),
        (
            {"protocols": "vote@x", "overrides": {"options": {"vote@x": {"members": ["ghost"]}}}},
            "no team member named 'ghost'",
        ),
        ({"protocols": "single", "overrides": {"protocol": {"n": 3}}}, "compare has no 'protocol' section"),
        (
            {"protocols": "single", "overrides": {"taks": {}}},
            "unknown key 'taks'; valid keys here: task, model",
        ),
    ],
)
def test_compare_config_errors_name_the_entry(kwargs, message):
    overrides = kwargs.pop("overrides", None)
    with pytest.raises(ConfigError, match=re.escape(message)):
        CompareConfig.build(overrides, **kwargs)


# ---------------------------------------------------------------- train's pool
def test_the_training_team_is_the_configured_pool_plus_the_trainee():
    cfg = TrainConfig.load(
        "conductor",
        {
            "team": {
                "default": {"description": "base"},
                "calc": {"tool": "calculator", "description": "exact"},
            },
            "protocol": {"worker_members": ["default", "calc"]},
        },
    )
    team = cfg.training_team(1.0)
    assert team.names == ("default", "calc", "trainee") and team.member("trainee").backend == "policy"
    assert cfg.training_protocol().resolved.conductor_member == "trainee"
    backends = cfg.load_backends({"default": ScriptedBackend()})
    assert set(backends) == {"default", "tool:calculator"}
    with pytest.raises(ConfigError, match="team.trainee: 'trainee' is the trained role"):
        TrainConfig.load("conductor", {"team": {"trainee": {}}})
    with pytest.raises(ConfigError, match="no team member named 'ghost'"):
        TrainConfig.load("conductor", {"protocol": {"worker_members": ["ghost"]}})


def test_online_rollouts_play_the_configured_pool():
    from types import SimpleNamespace

    from workbench.rl.rollouts import online_samples, pool_backends

    cfg = TrainConfig.load(
        "conductor",
        {
            "team": {
                "default": {"description": "base"},
                "calc": {"tool": "calculator", "description": "exact"},
            },
            "protocol": {"worker_members": ["default", "calc"], "random_subset": False},
            "train": {"group": 2},
        },
    )

    def model(req, j):
        if req.messages[0]["content"].startswith("You are the Conductor"):
            expr = re.findall(r"What is (.+?)\?", req.messages[-1]["content"])[-1]
            return f'model_id = [1]\nsubtasks = ["Compute {expr}."]\naccess_list = [[]]'
        return "Answer: 0"

    class Policy(ScriptedBackend):
        def generate(self, requests):
            gens = super().generate(requests)
            for g in gens:
                g.prompt_ids = [1, 2]
            return gens

    backends = SimpleNamespace(frozen=ScriptedBackend(model), policy=Policy(model, "policy"))
    pool = pool_backends(cfg, backends)
    assert pool_backends(cfg, backends)["tool:calculator"] is pool["tool:calculator"]  # loaded once
    samples, errors = online_samples(
        "conductor", "conductor", arithmetic(2).tasks, backends, cfg.training_protocol(), cfg.train, 1,
        cfg.build_team(), pool,
    )  # fmt: skip
    assert errors == [] and len(samples) == 4 and all(s.correct for s in samples)


# ---------------------------------------------------------------- task mixtures
MIX = "mix:arithmetic,bbh:date_understanding,mmlu:stem"


def test_a_mixture_is_deterministic_weighted_and_keeps_each_familys_verifier(shared_data):
    cfg = TaskConfig.from_flat({"name": MIX, "weights": "2,1,1", "limit": 8, "split": "test", "seed": 3})
    a, b = load_tasks(cfg).tasks, load_tasks(cfg).tasks
    assert [t.id for t in a] == [t.id for t in b]
    other = load_tasks(TaskConfig.from_flat({**to_dict(cfg), **cfg.options, "options": {}, "seed": 4})).tasks
    assert [t.id for t in other] != [t.id for t in a]
    families = [t.meta["family"] for t in a]
    assert families.count("arithmetic") == 4 and families.count("bbh:date_understanding") == 2
    for t in a:
        fam = t.meta["family"]
        alone = load_tasks(TaskConfig(name=fam, split="test", limit=4, seed=3)).tasks
        (same,) = [x for x in alone if f"{fam}/{x.id}" == t.id]
        assert t.verifier == same.verifier and t.answer == same.answer and t.prompt == same.prompt


def test_mixture_episodes_record_their_family(shared_data, tmp_path):
    cfg = EvalConfig.build(task="mix:arithmetic,bbh:date_understanding", limit=4, out=str(tmp_path / "r"))
    result = run_eval(cfg, backend=ScriptedBackend("Answer: (A)"), progress=False)
    fams = {json.loads(line)["meta"]["family"] for line in open(tmp_path / "r" / "episodes.jsonl")}
    assert fams == {"arithmetic", "bbh:date_understanding"} and result.summary["n"] == 4


def test_a_mixture_component_takes_its_own_options(shared_data):
    # task.arithmetic.digits=2: the mix's arithmetic items are those --task arithmetic --set
    # task.digits=2 loads; the other component is untouched, and the resolved options say so
    cfg = TaskConfig.from_flat(
        {
            "name": "mix:arithmetic,bbh:date_understanding",
            "arithmetic": {"digits": 2},
            "limit": 6,
            "split": "dev",
        }
    )
    assert cfg.options["arithmetic"]["digits"] == 2 and "bbh:date_understanding" not in cfg.options
    two = {t.id: t for t in load_tasks(TaskConfig("arithmetic", "dev", 3, options={"digits": 2})).tasks}
    one = {t.id: t for t in load_tasks(TaskConfig("arithmetic", "dev", 3)).tasks}
    mixed = [t for t in load_tasks(cfg).tasks if t.meta["family"] == "arithmetic"]
    assert len(mixed) == 3 and {t.id for t in mixed} == {f"arithmetic/{i}" for i in two}
    for t in mixed:
        assert t.prompt == two[t.id.split("/", 1)[1]].prompt
    assert not {t.id.split("/", 1)[1] for t in mixed} & set(one)  # not the one-digit items
    again = TaskConfig.from_flat({**to_dict(cfg), **cfg.options, "options": {}})  # a saved config reloads
    assert again.options == cfg.options


@pytest.mark.parametrize(
    "task,message",
    [
        ({"name": "mix:arithmetic,nope"}, "task mix, family 'nope': unknown task 'nope'"),
        ({"name": "mix:arithmetic,bbh", "gsm8k.digits": "2"}, "option 'gsm8k' is neither the mixture's"),
        ({"name": "mix:arithmetic,bbh", "arithmetic": "2"}, "task.arithmetic is the options of component"),
        ({"name": "mix:arithmetic,bbh", "arithmetic.digits": "0"}, "task mix, family 'arithmetic': "),
        (
            {"name": "mix:arithmetic,bbh", "bbh.digits": "2"},
            "task mix, family 'bbh': task 'bbh' takes no options",
        ),
        ({"name": "mix:arithmetic,bbh", "weights": "1,0"}, "the weight of 'bbh' must be a number > 0"),
        ({"name": "mix:arithmetic,bbh", "weights": "1"}, "task.weights has 1 values for 2 families"),
        ({"name": "mix:arithmetic,bbh", "weights": "1,inf"}, "task.weights must be a finite number"),
        (
            {"name": "mix:arithmetic,bbh", "split": "train"},
            "task mix, family 'bbh': bbh has splits dev, test",
        ),
        ({"name": "mix:arithmetic,arithmetic"}, "family 'arithmetic' is listed twice"),
        ({"name": "mix:arithmetic,mix:bbh"}, "is a mixture"),
        ({"name": "mix:"}, "list the families after mix:"),
        ({"name": "mix:arithmetic,bbh:nope"}, "unknown bbh subset 'nope'"),
    ],
)
def test_bad_mixtures_are_one_line_errors(task, message, shared_data, capsys):
    argv = ["eval", "--model", "/nonexistent/model", "--set", *(f"task.{k}={v}" for k, v in task.items())]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


# ---------------------------------------------------------------- the real model
@pytest.mark.slow
@needs_sandbox
def test_the_embedded_model_and_tool_workers_run_a_conductor_workflow(smollm2, tmp_path):
    """The real protocol with the embedded model as a worker and as the python tool's programmer,
    and the calculator. The plan is fixed (a scripted planner member: the 135M model cannot write
    plans), so that every episode reaches both tools; every tool outcome is recorded and counted."""
    plan = (
        'model_id = [1, 2, 0]\nsubtasks = ["Write a program that prints the answer.", "Compute {expr}.", '
        '"Give the final answer."]\naccess_list = [[], [], ["all"]]'
    )

    def planner(req, j):
        return plan.format(expr=re.findall(r"What is (.+?)\?", req.messages[-1]["content"])[-1])

    cfg = EvalConfig.build(
        {
            "models": {"planner": "openai:http://127.0.0.1:9/v1#planner"},  # given below, never contacted
            "team": {
                "planner": {"model": "planner"},
                "default": {"description": "a small general language model"},
                "py": {
                    "tool": "python",
                    "description": "writes a Python program and runs it",
                    "timeout_s": 5,
                },
                "calc": {"tool": "calculator", "description": "evaluates one arithmetic expression exactly"},
            },
            "protocol": {
                "conductor_member": "planner",
                "worker_members": ["default", "py", "calc"],
                "max_steps": 3,
                "max_tokens": 64,
            },
        },
        protocol="conductor",
        limit=2,
        out=str(tmp_path / "run"),
    )
    backends = {"default": smollm2, "planner": ScriptedBackend(planner, "planner")}
    result = run_eval(cfg, backend=backends, progress=False)
    assert result.summary["n"] == 2 and result.summary["errors"] == []
    for ep in result.episodes:
        calls = [e for e in ep.events if e["type"] == "tool_call"]
        assert sorted(c["tool"] for c in calls) == ["calculator", "python"]
        assert [c["status"] for c in calls if c["tool"] == "calculator"] == ["ok"]
        assert ep.meta.get("tool_failures", 0) == sum(c["status"] != "ok" for c in calls)
        assert [m.sender for m in ep.messages] == ["conductor", "step-0", "step-1", "step-2"]
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "tool: calculator" in saved and "description: evaluates one arithmetic" in saved


def test_a_tool_worker_can_answer_alone_in_single_but_plays_no_other_role():
    """`single` with a tool member is the pool's single-member baseline (compare single@calc); a tool
    still cannot be a role that reads others (reflect's critic, an aggregator, the conductor)."""
    team = {"calc": {"tool": "calculator", "description": "evaluates arithmetic"}}
    cfg = EvalConfig.build({"team": team, "protocol": {"name": "single", "member": "calc"}})
    assert cfg.build_team().member("calc").tool == "calculator"
    with pytest.raises(ConfigError, match="a tool answers, it cannot be the "):
        EvalConfig.build({"team": team, "protocol": {"name": "reflect", "member": "calc"}})
    cmp = CompareConfig.build(
        {"team": team, "options": {"single@calc": {"member": "calc"}}}, protocols="single,single@calc"
    )
    assert cmp.protocol_config("single@calc").resolved.member == "calc"
