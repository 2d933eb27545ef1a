"""The Conductor's training pieces: the reward per call, GRPO groups that share their prompt and pool,
the recursion fine-tune, the ablation switches and hostile plans. Protocol logic runs on the scripted
backend; the real-model step is tests/test_rl_train.py::test_leader_offline_and_conductor_online_take_a_step."""

import json
import re
from dataclasses import replace
from types import SimpleNamespace

import pytest
from recording_policy import RecordingPolicy

from workbench.config import ConfigError
from workbench.evaluate import ProtocolConfig, run_episodes
from workbench.models.scripted import ScriptedBackend
from workbench.protocols.conductor import PLAN_ERRORS, ConductorConfig, PlanError, parse_plan
from workbench.rl.config import TrainConfig
from workbench.rl.objectives import conductor_call_rewards, conductor_reward
from workbench.rl.rollouts import check_groups, conductor_rewards, online_samples
from workbench.tasks import TaskConfig, load_tasks
from workbench.tasks.sandbox import sandbox_mode


def arithmetic(limit):
    return load_tasks(TaskConfig.from_flat({"name": "arithmetic", "limit": limit})).tasks


def value(req) -> int:
    text = "\n".join(m["content"] for m in req.messages)
    return eval(re.findall(r"What is (.+?)\?", text)[-1])


def is_conductor(req) -> bool:
    return req.messages[0]["content"].startswith("You are the Conductor")


def replan(req) -> bool:
    return "final response was" in req.messages[-1]["content"]


ONE = 'model_id = [0]\nsubtasks = ["Solve it."]\naccess_list = [[]]'
TWO = 'model_id = [0, 1]\nsubtasks = ["Solve it.", "Check it."]\naccess_list = [[], ["all"]]'


def play(reply, options=None, task=None):
    """One conductor episode on the scripted backend, and its per-call rewards (discount 0.25)."""
    task = task or arithmetic(1)[0]
    backend = ScriptedBackend(reply)
    (ep,), errors, _ = run_episodes([task], ProtocolConfig("conductor", options or {}), backend)
    assert errors == []
    return ep, conductor_rewards(ep, task, 0.25), backend


# ---------------------------------------------------------------- the reward
@pytest.mark.parametrize(
    "parsed, correct, discount, rewards",
    [
        ([False], [False], 0.25, [0.0]),
        ([False], [True], 0.25, [0.0]),  # a right answer never rescues an unparsed plan
        ([True], [False], 0.25, [0.5]),
        ([True], [True], 0.25, [1.0]),
        ([True, True], [False, True], 0.25, [0.125, 1.0]),  # first round discounted
        ([True, False], [True, True], 0.25, [0.25, 0.0]),  # a broken re-plan: its own 0
        ([True, True], [True, True], 1.0, [1.0, 1.0]),
    ],
)
def test_conductor_call_rewards_by_hand(parsed, correct, discount, rewards):
    assert conductor_call_rewards(parsed, correct, discount) == rewards
    assert [conductor_reward(p, c) for p, c in zip(parsed, correct, strict=True)][-1] == rewards[-1]


def test_conductor_call_rewards_refuse_bad_input():
    with pytest.raises(ValueError, match="one parse flag per call"):
        conductor_call_rewards([True], [True, False])
    with pytest.raises(ValueError, match="first_round_discount must be in"):
        conductor_call_rewards([True], [True], 1.5)


def test_reward_of_each_branch_on_real_episodes():
    # unparseable plan: 0
    ep, r, _ = play(lambda req, j: "I would ask Model 1.")
    assert r == [0.0] and ep.meta["calls"][0]["reason"] == "missing_list"
    # well-formed, right: 1; well-formed, wrong: 0.5
    _, r, _ = play(lambda req, j: ONE if is_conductor(req) else f"Answer: {value(req)}")
    assert r == [1.0]
    _, r, _ = play(lambda req, j: ONE if is_conductor(req) else f"Answer: {value(req) + 1}")
    assert r == [0.5]
    # a prose last step: no answer can be extracted, but the plan is well-formed: 0.5, not 0
    ep, r, _ = play(lambda req, j: TWO if is_conductor(req) else "Looks fine to me, nothing to add.")
    assert ep.format_failure and ep.final_answer is None and r == [0.5]
    # an empty first plan has nothing to keep: 0
    ep, r, _ = play(lambda req, j: "model_id = []\nsubtasks = []\naccess_list = []")
    assert r == [0.0] and ep.meta["calls"][0]["reason"] == "empty_first_plan"


def test_reward_of_a_recursion_is_per_call():
    def broken(req, j):  # right first workflow, then a re-plan that does not parse
        if is_conductor(req):
            return "model_id = [0, 1" if replan(req) else ONE
        return f"Answer: {value(req)}"

    ep, r, _ = play(broken, {"max_recursions": 1})
    assert ep.correct and r == [0.25, 0.0]  # the episode keeps its answer; the broken call earns 0
    assert [e["reason"] for e in ep.events if e["type"] == "plan_error"] == ["unclosed_list"]

    def fixes(req, j):  # wrong first workflow; the re-plan's worker, seeing it, gets it right
        if is_conductor(req):
            return 'model_id = [1]\nsubtasks = ["Fix it."]\naccess_list = [["all"]]' if replan(req) else ONE
        seen = "previous final response" in req.messages[-1]["content"]
        return f"Answer: {value(req) + (0 if seen else 1)}"

    opts = {"max_recursions": 1}
    ep, r, _ = play(fixes, opts)
    assert ep.correct and r == [0.125, 1.0]

    def keeps(req, j):  # wrong first answer kept by three empty lists: parsed, wrong
        if is_conductor(req):
            return "model_id = []\nsubtasks = []\naccess_list = []" if replan(req) else ONE
        return f"Answer: {value(req) + 1}"

    ep, r, _ = play(keeps, opts)
    assert not ep.correct and r == [0.125, 0.5]


# ---------------------------------------------------------------- hostile plans
@pytest.mark.parametrize(
    "text, reason",
    [
        ('model_id = [7]\nsubtasks = ["x"]\naccess_list = [[]]', "unknown_worker"),
        ('model_id = [0]\nsubtasks = ["x"]\naccess_list = [[], ["all"], []]', "length_mismatch"),
        ('model_id = [0]\nsubtasks = ["x"]\naccess_list = [[2]]', "bad_access"),
        ('model_id = [0]\nsubtasks = [""]\naccess_list = [[]]', "bad_subtask"),
        ("model_id = [0]\nsubtasks = [open('x')]\naccess_list = [[]]", "not_a_literal"),
        ("model_id = [0,0,0,0]\nsubtasks = ['a','b','c','d']\naccess_list = [[],[],[],[]]", "too_many_steps"),
    ],
)
def test_a_bad_plan_is_a_counted_failure_with_its_reason(text, reason):
    assert reason in PLAN_ERRORS
    with pytest.raises(PlanError) as e:
        parse_plan(text, 3, 3)
    assert e.value.reason == reason
    ep, r, _ = play(lambda req, j: text, {"max_steps": 3})
    (event,) = [e for e in ep.events if e["type"] == "plan_error"]
    assert event["reason"] == reason and event["error"] and ep.format_failure and r == [0.0]


def test_recursion_deeper_than_allowed_is_a_config_error():
    ConductorConfig(max_recursions=3)
    for depth in (4, -1):
        with pytest.raises(ConfigError, match="max_recursions must be"):
            ProtocolConfig("conductor", {"max_recursions": depth})


# ---------------------------------------------------------------- ablation switches
def test_few_shot_modes_and_subtasks_switch():
    task = arithmetic(1)[0]
    prompts = {}
    for mode in ("out_of_domain", "in_domain", "none"):
        _, _, backend = play(lambda req, j: "no plan", {"few_shot": mode}, task)
        prompts[mode] = backend.calls[0][0].messages[0]["content"]
    assert "haiku" in prompts["out_of_domain"] and "Example 4" in prompts["out_of_domain"]
    assert "train travels" in prompts["in_domain"] and "haiku" not in prompts["in_domain"]
    assert "Example" not in prompts["none"] and "model_id = [...]" in prompts["none"]
    with pytest.raises(ConfigError, match="few_shot must be one of"):
        ProtocolConfig("conductor", {"few_shot": "some"})

    def reply(req, j):
        return (
            'model_id = [0, 1]\naccess_list = [[], ["all"]]' if is_conductor(req) else f"Answer: {value(req)}"
        )

    ep, r, backend = play(reply, {"subtasks": False})
    system = backend.calls[0][0].messages[0]["content"]
    assert "subtasks" not in system and "two Python lists" in system
    step_prompts = [b[0].messages[-1]["content"] for b in backend.calls[1:]]
    assert all("Your instruction" not in p and task.prompt in p for p in step_prompts)
    assert "Response 1:" in step_prompts[1] and ep.correct and r == [1.0]
    assert parse_plan("model_id = [1]\naccess_list = [[]]", 2, 5, subtasks=False).subtasks == [""]


# ---------------------------------------------------------------- GRPO groups
class PolicyScript(ScriptedBackend):
    """The scripted backend with the token ids a rollout keeps (a prompt's ids: its characters)."""

    def generate(self, requests):
        gens = super().generate(requests)
        per = [r for r in requests for _ in range(r.sampling.n)]
        return [
            replace(g, prompt_ids=[ord(c) % 256 for m in r.messages for c in m["content"]])
            for g, r in zip(gens, per, strict=True)
        ]


def test_a_group_shares_its_pool_and_prompt_and_is_keyed_by_question_role_round():
    tasks = arithmetic(4)

    def reply(req, j):
        if is_conductor(req):
            return TWO if replan(req) else ONE
        return f"Answer: {value(req)}"

    cfg = TrainConfig.load(
        "conductor",
        [
            "train.group=4",
            "protocol.random_subset=true",
            "protocol.max_recursions=0",
            "train.recursion_finetune=true",
        ],
    )
    protocol = ProtocolConfig("conductor", {**cfg.protocol.options, "conductor_member": "trainee"})
    backends = SimpleNamespace(frozen=ScriptedBackend(reply), policy=PolicyScript(reply))
    samples, errors = online_samples("conductor", "conductor", tasks, backends, protocol, cfg.train, 1)
    assert errors == []
    by_key = {}
    for s in samples:
        by_key.setdefault(tuple(s.info["group_key"]), []).append(s)
    first = {k: v for k, v in by_key.items() if k[2] == 0}
    assert len(first) == 4 and all(len(v) == 4 for v in first.values())
    for (_, role, _), group in first.items():
        assert role == "conductor"
        assert len({tuple(s.prompt_ids) for s in group}) == 1  # one prompt
        assert len({tuple(s.episode.meta["pool"]) for s in group}) == 1  # one pool
        assert len({s.group for s in group}) == 1
    assert len({s.group for s in samples}) == len(by_key)  # one group id per key
    # the recursion fine-tune: half the questions recurse once (a round-1 group each), first-round
    # rewards of those are discounted
    forced = {k[0] for k in by_key if k[2] == 1}
    assert len(forced) == 2 and all(len(by_key[(q, "conductor", 1)]) == 4 for q in forced)
    for s in samples:
        if s.info["group_key"][2] == 1:
            assert s.reward == 1.0
        elif s.task.id in forced:
            assert s.reward == 0.25 and s.episode.meta["forced_recursion"]
        else:
            assert s.reward == 1.0 and "conductor-1" not in {m.sender for m in s.episode.messages}
    # a random subset is per question: across questions, pools may differ; the seed decides
    check_groups(samples, 1, errors)


def test_a_group_of_one_stops_the_run_with_the_reason():
    tasks = arithmetic(2)
    cfg = TrainConfig.load("conductor", ["train.group=2"])
    protocol = ProtocolConfig("conductor", {**cfg.protocol.options, "conductor_member": "trainee"})
    backends = SimpleNamespace(frozen=ScriptedBackend("Answer: 1"), policy=PolicyScript(lambda r, j: ONE))
    samples, errors = online_samples("conductor", "conductor", tasks, backends, protocol, cfg.train, 1)
    check_groups(samples, 1, errors)
    with pytest.raises(ConfigError, match=r"has 1 sample\(s\).*at least 2"):
        check_groups(samples[1:], 3, errors)
    # a later-round group of one (only one first plan ran) is counted, not fatal
    late = replace(samples[0], info={"group_key": [tasks[0].id, "conductor", 1]})
    check_groups([*samples, late], 3, errors)
    with pytest.raises(ConfigError, match="train.group must be >= 2"):
        TrainConfig.load("leader", ["train.group=1"])
    TrainConfig.load("maestro", ["train.group=1", "train.objective=sft"])  # SFT compares nothing


def test_recursion_fields_are_validated():
    cfg = TrainConfig.load("conductor")
    assert not cfg.protocol.options["random_subset"]  # the base recipe: one pool for every sample
    assert (cfg.train.recursion_share, cfg.train.first_round_discount) == (0.5, 0.25)
    for bad, msg in (
        ("train.recursion_share=0", "recursion_share must be in"),
        ("train.first_round_discount=2", "first_round_discount must be in"),
    ):
        with pytest.raises(ConfigError, match=msg):
            TrainConfig.load("conductor", [bad])
    with pytest.raises(ConfigError, match="recursion_finetune is the Conductor's"):
        TrainConfig.load("leader", ["train.recursion_finetune=true"])


# ---------------------------------------------------------------- routing analysis
def _conductor_run(tmp, name, plan):
    from workbench.evaluate import EvalConfig, run_eval

    out = tmp / name
    cfg = EvalConfig.build({}, task="arithmetic", protocol="conductor", limit=4, out=str(out))
    run_eval(
        cfg,
        backend=ScriptedBackend(lambda req, j: plan if is_conductor(req) else f"Answer: {value(req)}"),
        progress=False,
    )
    return out


def test_routing_of_two_runs_in_analyze_and_its_figure(tmp_path):
    import json

    from workbench.analysis.analyze import AnalyzeOptions, analyze
    from workbench.analysis.figures import run_figures

    before = _conductor_run(tmp_path, "untrained", ONE)
    after = _conductor_run(tmp_path, "trained", TWO.replace("[0, 1]", "[1, 2]"))
    result = analyze([before, after], out=tmp_path / "cmp", options=AnalyzeOptions(embed=False, png=False))
    (b,), (a,) = (r["routing"]["rows"] for r in result["runs"])
    assert b["family"] == "arithmetic" and b["phase"] == "run" and b["episodes"] == b["planned"] == 4
    assert b["worker_share"] == {"default#0": 1.0} and b["final_worker"] == {"default#0": 1.0}
    assert a["worker_share"] == {"default#1": 0.5, "default#2": 0.5} and a["final_worker"] == {
        "default#2": 1.0
    }
    assert a["length"] == {"2": 4} and a["mean_length"] == 2 and a["access"] == {"[] all": 4}
    comp = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [len(r["rows"]) for r in comp["routing"]] == [1, 1]
    on_disk = json.loads((after / "analysis.json").read_text())
    assert on_disk["routing"]["rows"][0]["final_worker"] == {"default#2": 1.0}
    assert "routing" in run_figures(on_disk)


def test_routing_before_vs_after_per_family_and_hostile_plans():
    from workbench.analysis.routing import episode_family, routing_analysis

    def ep(task_id, plans, workers=None, **meta):
        return {
            "protocol": "conductor",
            "task_id": task_id,
            "correct": True,
            "messages": [],
            "meta": {"plans": plans, "workers": workers or ["a", "b"], **meta},
        }

    p0 = {"model_id": [0], "subtasks": ["x"], "access_list": [[]]}
    p1 = {"model_id": [0, 1], "subtasks": ["x", "y"], "access_list": [[], ["all"]]}
    eps = [
        ep("math/1", [p0], eval=True, eval_step=0),
        ep("math/2", [{"error": "no list", "reason": "missing_list"}], eval=True, eval_step=0),
        ep("math/1", [p1], eval=True, eval_step=30),
        ep(
            "q7",
            [p1, {"model_id": [], "subtasks": [], "access_list": []}],
            family="code",
            eval=True,
            eval_step=30,
        ),
        ep("math/9~g3", [p1], train_step=4),  # a sampled training episode: not in either phase
        ep("math/3", "not a list", eval=True, eval_step=30),
        ep("math/4", [{"model_id": ["0"], "access_list": [[]]}, 5], eval=True, eval_step=30),
        ep("math/5", [p0], workers="oops", eval=True, eval_step=30),
    ]
    out = routing_analysis(eps, "mix:math,code")
    assert out["eval_steps"] == [0, 30]
    rows = {(r["family"], r["phase"]): r for r in out["rows"]}
    assert set(rows) == {("math", "before"), ("math", "after"), ("code", "after")}
    before, after = rows[("math", "before")], rows[("math", "after")]
    assert (
        before["episodes"] == 2
        and before["planned"] == 1
        and before["failure_reasons"] == {"missing_list": 1}
    )
    assert after["episodes"] == 4 and after["planned"] == 2
    assert after["worker_share"] == {"Model 0": round(1 / 3, 4), "a": round(1 / 3, 4), "b": round(1 / 3, 4)}
    assert after["failure_reasons"] == {"unrecorded": 2}
    assert rows[("code", "after")]["final_worker"] == {"b": 1.0}  # an empty re-plan keeps the workflow
    assert episode_family({"task_id": "x-1", "meta": {}}, "arithmetic") == "arithmetic"
    assert routing_analysis([{"protocol": "vote"}], "x") is None
    from workbench.analysis.conductor import conductor_analysis

    assert conductor_analysis(eps)["failure_reasons"] == {"missing_list": 1, "unrecorded": 2}


def test_routing_family_of_real_mixture_items(tmp_path):
    """Families from real mixture items: ``meta.family`` as the episodes record it, else the
    component the ``COMPONENT/ID`` id starts with (components may hold ':' and '/' themselves)."""
    from workbench.analysis.routing import episode_family, routing_analysis

    path = tmp_path / "extra.jsonl"
    path.write_text(
        "".join(json.dumps({"question": f"{i} + 1 = ?", "answer": str(i + 1)}) + "\n" for i in range(3))
    )
    name = f"mix:arithmetic,jsonl:{path}"
    items = load_tasks(TaskConfig.from_flat({"name": name, "limit": 6, "split": "test"})).tasks
    assert {t.meta["family"] for t in items} == {"arithmetic", f"jsonl:{path}"}
    plan = {"model_id": [1], "subtasks": ["x"], "access_list": [[]]}
    for t in items:
        recorded = {"task_id": t.id, "meta": {"family": t.meta["family"]}}
        old = {"task_id": f"{t.id}~g2", "meta": {}}  # a run without meta.family: read from the id
        assert episode_family(recorded, name) == episode_family(old, name) == t.meta["family"][:60]
        assert episode_family(old, "arithmetic") == "arithmetic"  # not a mixture: the run's task
    eps = [
        {
            "protocol": "conductor",
            "task_id": t.id,
            "correct": True,
            "meta": {"plans": [plan], "workers": ["a", "calc"]},
        }
        for t in items
    ]
    rows = routing_analysis(eps, name)["rows"]
    assert sorted((r["family"], r["episodes"], r["worker_share"]["calc"]) for r in rows) == [
        ("arithmetic", 3, 1.0),
        (f"jsonl:{path}"[:60], 3, 1.0),  # family names are cut to 60 characters
    ]


def test_conductor_prompt_lists_worker_descriptions_from_one_builder():
    """The Conductor's first chat has one builder (`conductor_messages`): the protocol sends it and
    the warm start trains on it, byte for byte, with each offered worker as "Model i: <description>"
    (persona and format-like braces included; random subsets relabel the descriptions with the
    workers). Without descriptions the worker list is today's "Model 0, Model 1, ...", unchanged."""
    from workbench.protocols import Member, Team
    from workbench.protocols.base import derive_seed
    from workbench.protocols.conductor import conductor_messages, offered_workers, workers_text
    from workbench.rl.rollouts import trainee_team
    from workbench.rl.warmstart import demonstrations
    from workbench.tasks import Task

    descriptions = {"a": "solves {arithmetic} step by {0}", "calc": "a calculator", "b": "reads grammar"}
    team = Team(tuple(Member(n, backend="default", description=d) for n, d in descriptions.items()))
    tasks = [Task(f"q{i}", f"What is {i} + 1?", str(i + 1)) for i in range(12)]
    cfg = ConductorConfig(worker_members=("a", "calc", "b"), random_subset=True, conductor_member="trainee")
    sent = {}

    def reply(req, j):
        if req.messages[0]["content"].startswith("You are the Conductor"):
            sent[len(sent)] = req.messages
        return "model_id = [0]\nsubtasks = ['x']\naccess_list = [[]]"

    seed = derive_seed(3, 1, "warm-subset")  # the warm start's subset seed of run seed 3, step 1
    scripted = ScriptedBackend(reply)  # the frozen workers and the trainee (backend "policy") alike
    eps, errors, _ = run_episodes(
        tasks,
        ProtocolConfig("conductor", vars(cfg)),
        {"default": scripted, "policy": scripted},
        seed=seed,
        team=trainee_team(None, team),
    )
    assert errors == [] and len(sent) == len(tasks)
    recorded = {
        ep.task_id: next(m for m in sent.values() if f"What is {ep.task_id[1:]} + 1?" in m[-1]["content"])
        for ep in eps
    }

    policy = RecordingPolicy()
    demonstrations("conductor", tasks, {}, policy, replace(cfg, conductor_member="default"), 3, 1, team=team)
    sizes = set()
    for task, demo_chat in zip(tasks, policy.seen, strict=True):
        built = conductor_messages(task, cfg, trainee_team(None, team), seed)
        assert recorded[task.id] == built == demo_chat
        pool = offered_workers(task, cfg, seed)
        sizes.add(len(pool))
        lines = [f"Model {i}: {descriptions[m]}" for i, m in enumerate(pool)]
        assert built[-1]["content"] == f"Question: {task.prompt}\nAvailable workers:\n" + "\n".join(lines)
    assert len(sizes) > 1  # the subsets differ between questions, and the descriptions follow them
    # no descriptions: the prompt of the default pool, byte for byte as before
    (ep,), _, _ = run_episodes(tasks[:1], ProtocolConfig("conductor", {}), ScriptedBackend(reply), seed=0)
    assert (
        sent[len(sent) - 1][-1]["content"]
        == "Question: What is 0 + 1?\nAvailable workers: Model 0, Model 1, Model 2."
    )
    assert workers_text(["", "x"]) == "Model 0\nModel 1: x"


@pytest.mark.skipif(sandbox_mode() == "none", reason="the pool's python tool worker needs an OS sandbox")
def test_the_pool_recipe_and_the_documented_pool_command_load(monkeypatch):
    """workbench/rl/recipes/conductor-pool.yaml (the run of docs/training.md) and the documented
    `workbench train --recipe conductor --set ...` pool command build the same pool and mixture."""
    from workbench.config import parse_overrides

    monkeypatch.setenv("WORKBENCH_DATA_DIR", "/nonexistent")  # building a config loads no data
    cfg = TrainConfig.load("conductor-pool")
    proto = cfg.protocol.resolved
    assert cfg.task.name == "mix:arithmetic,bbh:hyperbaton" and cfg.task.split == "dev"
    assert proto.worker_members == ("solver", "calc", "py") and proto.max_steps == 2
    team = cfg.build_team()
    assert all(team.description(m) for m in proto.worker_members)
    assert team.member("calc").tool == "calculator" and team.member("py").tool == "python"
    assert cfg.eval.split == "dev" and cfg.train.warm_start > 0
    documented = [  # docs/training.md, "The Conductor over a pool of differing workers"
        "task.name=mix:arithmetic,bbh:hyperbaton",
        "task.split=dev",
        "task.limit=40",
        "team.solver.model=default",
        "team.solver.temperature=0",
        "team.solver.system=You are a careful assistant. Think step by step, then answer.",
        "team.solver.description=a small language model: reads questions in words (grammar, multiple choice)",
        "team.calc.tool=calculator",
        "team.calc.description=a calculator: evaluates an arithmetic expression exactly",
        "team.py.tool=python",
        "team.py.model=default",
        "team.py.description=writes and runs a short Python program",
        "protocol.worker_members=[solver,calc,py]",
        "protocol.max_steps=2",
        "protocol.max_tokens=160",
        "train.warm_start=10",
        "train.steps=2",
        "train.questions=4",
        "train.group=4",
        "train.max_tokens=128",
        "train.lr=5e-4",
        "train.schedule=constant",
        "train.warmup_steps=1",
        "train.checkpoint_every=1",
        "eval.limit=8",
    ]
    flags = TrainConfig.load("conductor", parse_overrides(documented))
    assert flags.team == cfg.team and flags.protocol == cfg.protocol and flags.task == cfg.task
    assert flags.train == cfg.train and flags.eval == cfg.eval
