"""One prompt builder per synthesising role, shared by evaluation, training and replay.

Maestro's central agent, the leader and the MoA aggregator each have one builder
(``PROTOCOLS[name].synthesiser``). For the same episode state, these must be byte-identical:
1. the chat the protocol sent when the episode ran (captured by the scripted backend),
2. the chat the RL rollouts build from their own inputs (pooled answers as ``{"text", "extracted"}``
   dicts, the resolved protocol config and the team: ``rollouts.offline_messages``),
3. the request the counterfactual replay builds from the run folder (``replay.synth_request``).
Personas (a member's system prompt) included: before the shared builder, the rollouts put only the
protocol's ``system`` in front and would fail here.
"""

from __future__ import annotations

import itertools
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.analysis.pools import Judge, rounds
from workbench.analysis.replay import ReplaySetup, synth_answer, synth_request
from workbench.evaluate import EvalConfig, ProtocolConfig, run_episodes, run_eval
from workbench.models.scripted import ScriptedBackend
from workbench.protocols import PROTOCOLS, Member, Team
from workbench.rl.rollouts import offline_messages
from workbench.runs import read_episodes
from workbench.tasks import TaskConfig, load_tasks

SYNTH_ROLES = ("central", "central-gen", "leader", "aggregator")
# braces and format-like fields: a builder that ran .format() on a persona or a candidate breaks here
PERSONA = "You are Ada, a sceptical judge.\n  Check {every} step; trust no {0} majority."


class Recorder:
    """A scripted team whose every reply is unique, so each recorded message maps to its request."""

    def __init__(self, candidate_texts=None):
        self.sent: dict[str, object] = {}
        self.count = itertools.count()
        self.texts = candidate_texts or [
            "  Let me add: {question}\n\nAnswer: 5 \n",
            "I think it is six.\nAnswer: 6",
            "no idea {0} }{",
            "\t5 + 0 = 5\n\n\nAnswer: 5",
        ]

    def __call__(self, req, j: int) -> str:
        n = next(self.count)
        text = req.messages[-1]["content"]
        if "<choice>" in text:
            m = len(re.findall(r"^\[Candidate \d+\]$", text, re.MULTILINE))
            out = f"<choice>{1 + n % max(m, 1)}</choice><why>ref {n}</why>"
        elif "<answer>" in text:
            out = f"<think>ref {n}</think><answer>{5 + n % 2}</answer>"
        else:
            out = f"{self.texts[n % len(self.texts)]} [ref {n}]"
        self.sent[out] = req
        return out


def synth_inputs(ep: dict):
    """Per synthesising message of an episode: (message, the messages it read, in the order shown).

    Read from the recorded graph (the edges into the synthesiser's node), not from the replay's
    pool decoding, so that the rollouts' path has inputs of its own."""
    by_sender = {m["sender"]: m for m in ep["messages"]}
    for m in ep["messages"]:
        if m["role"] not in SYNTH_ROLES:
            continue
        sources = [e["source"] for e in ep["graph"]["edges"] if e["target"] == m["sender"]]
        yield m, [by_sender[s] for s in sources if s in by_sender]


def check_three_paths(ep, cfg, team, sent, setup: ReplaySetup | None, judge: Judge, task) -> int:
    """Assert byte-identity of the protocol's, the rollouts' and the replay's chats; returns how many
    synthesiser prompts were compared."""
    name = ep["protocol"]
    replay_pools = {r.synth_node: r for r in rounds(ep, judge)} if setup is not None else {}
    compared = 0
    for msg, read in synth_inputs(ep):
        protocol_chat = list(sent[msg["content"]].messages)
        blob = json.dumps(protocol_chat)
        if name in ("maestro", "maestro_gen", "leader"):  # the roles RL trains
            slate = [{"text": r["content"], "extracted": r["extracted"], "correct": False} for r in read]
            rollout_chat = offline_messages(name, task, slate, cfg, team, msg["round"])
            assert json.dumps(rollout_chat) == blob, f"rollouts differ from the protocol at {msg['sender']}"
        if setup is not None:
            rnd = replay_pools[msg["sender"]]
            _, req = synth_request(setup, task, rnd.candidates)
            assert json.dumps(list(req.messages)) == blob, (
                f"replay differs from the protocol at {msg['sender']}"
            )
            assert req.sampling == sent[msg["content"]].sampling
        compared += 1
    return compared


CASES = [
    ("maestro", {"central_member": "judge", "system": "Be careful.", "explorers": 2, "samples": 2}),
    ("maestro", {"central_member": "judge", "rounds": 3}),
    ("maestro", {"system": "Be careful."}),  # no persona: the protocol's system prompt
    ("maestro_gen", {"central_member": "judge"}),
    ("leader", {"leader_member": "judge", "rounds": 2}),
    ("leader", {"leader_member": "judge", "share": "answer", "peer_members": ["judge", "default"]}),
    ("leader", {"system": "Lead well.", "rounds": 3}),
    ("moa", {"aggregator_member": "judge", "layers": [2, 3]}),
]


@pytest.mark.parametrize("protocol,options", CASES)
def test_protocol_rollouts_and_replay_send_byte_identical_synthesiser_prompts(tmp_path, protocol, options):
    backend = ScriptedBackend(recorder := Recorder())
    cfg = EvalConfig.build(
        {"protocol": options, "team": {"judge": {"system": PERSONA}}},
        task="arithmetic",
        protocol=protocol,
        limit=3,
        out=str(tmp_path / "run"),
    )
    run_eval(cfg, backend=backend, progress=False)
    setup, judge = ReplaySetup.for_run(tmp_path / "run"), Judge.for_run(tmp_path / "run")
    team = cfg.build_team()
    compared = 0
    for ep in read_episodes(tmp_path / "run").episodes:
        compared += check_three_paths(
            ep, cfg.protocol.resolved, team, recorder.sent, setup, judge, judge.task(ep)
        )
        if any(options.get(k) == "judge" for k in ("central_member", "leader_member", "aggregator_member")):
            synth = next(m for m in ep["messages"] if m["role"] in SYNTH_ROLES)
            first = recorder.sent[synth["content"]].messages[0]
            assert first == {"role": "system", "content": PERSONA}  # the persona is really in the prompt
    rounds_per_ep = 1 if protocol == "moa" else options.get("rounds", cfg.protocol.resolved.rounds)
    assert compared == 3 * rounds_per_ep


def test_the_rollouts_default_team_is_the_protocols_own_system_prompt():
    """Training has no team section: the rollouts' chat is the protocol's with its ``system``."""
    task = load_tasks(TaskConfig(name="arithmetic", limit=1)).tasks[0]
    slate = [{"text": "Answer: 3", "extracted": "3"}, {"text": "Answer: 4", "extracted": "4"}]
    leader_cfg = ProtocolConfig("leader", {"system": "Lead well."}).resolved
    chat = offline_messages("leader", task, slate, leader_cfg)
    assert chat[0] == {"role": "system", "content": "Lead well."} and len(chat) == 2
    assert "[Agent 1]\nAnswer: 3\n\n[Agent 2]\nAnswer: 4" in chat[1]["content"]
    maestro_cfg = ProtocolConfig("maestro", {}).resolved
    chat = offline_messages("maestro", task, slate, maestro_cfg)
    assert [m["role"] for m in chat] == ["user"] and "Here are 2 candidate solutions" in chat[0]["content"]
    chat = offline_messages("maestro", task, slate, maestro_cfg, Team((Member("default", system=PERSONA),)))
    assert chat[0] == {"role": "system", "content": PERSONA}


# ---- fuzz: hostile candidate texts and personas through all three paths ----
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    protocol=st.sampled_from(["maestro", "maestro_gen", "leader", "moa"]),
    candidates=st.lists(texts, min_size=1, max_size=4),
    persona=st.one_of(st.none(), texts),
    system=texts,
    share=st.sampled_from(["full", "answer"]),
)
def test_fuzzed_episodes_give_the_same_prompt_on_all_three_paths(
    protocol, candidates, persona, system, share
):
    member = {"maestro": "central_member", "maestro_gen": "central_member", "leader": "leader_member"}.get(
        protocol, "aggregator_member"
    )
    options = {member: "judge", "system": system} | ({"share": share} if protocol == "leader" else {})
    if protocol == "moa":
        options["layers"] = [2]
    pc = ProtocolConfig(protocol, options)
    team = Team((Member("default"), Member("judge", system=persona)))
    recorder = Recorder([c + " Answer: 5" if i % 2 else c for i, c in enumerate(candidates)])
    tasks = load_tasks(TaskConfig(name="arithmetic", limit=2)).tasks
    episodes, errors, _ = run_episodes(tasks, pc, ScriptedBackend(recorder), team=team)
    assert not errors
    setup = ReplaySetup(protocol, pc.resolved, team)
    judge = Judge({t.id: t for t in tasks})
    by_id = {t.id: t for t in tasks}
    for episode in episodes:
        ep = json.loads(json.dumps(episode.to_dict()))  # the record as a run folder holds it
        assert check_three_paths(ep, pc.resolved, team, recorder.sent, setup, judge, by_id[ep["task_id"]]) > 0


def test_every_synthesising_protocol_registers_its_builder():
    assert {n for n, spec in PROTOCOLS.items() if spec.synthesiser is not None} == {
        "maestro",
        "maestro_gen",
        "leader",
        "moa",
    }


@pytest.mark.parametrize("lenient", [True, False])
def test_the_replay_reads_a_central_reply_as_the_protocol_did(tmp_path, lenient):
    """A decision without <choice> tags ("the answer is 2"): the replay's reading follows
    ``protocol.lenient`` as the protocol's did (candidate 2, or a failed decision)."""

    def reply(req, j):
        if "<choice>" in req.messages[-1]["content"]:
            return "I think the answer is 2."
        return f"Answer: {4 + len(req.messages[-1]['content']) % 3}"

    cfg = EvalConfig.build(
        {"protocol": {"lenient": lenient}},
        task="arithmetic",
        protocol="maestro",
        limit=2,
        out=str(tmp_path / "r"),
    )
    run_eval(cfg, backend=ScriptedBackend(reply), progress=False)
    setup, judge = ReplaySetup.for_run(tmp_path / "r"), Judge.for_run(tmp_path / "r")
    for ep in read_episodes(tmp_path / "r").episodes:
        for rnd in rounds(ep, judge):
            central = next(m for m in ep["messages"] if m["sender"] == rnd.synth_node)
            read = synth_answer(setup, judge.task(ep), rnd.candidates, central["content"])
            assert read == central["extracted"]
            assert (read is None) == (not lenient)


# ---- later rounds: training slates built by playing the protocol (pool.rounds > 1) ----
@pytest.mark.parametrize(
    "recipe,options",
    [("maestro", {"rounds": 3, "explorers": 2, "samples": 2}), ("leader", {"rounds": 3, "peers": 3})],
)
def test_later_round_slates_give_the_protocols_own_prompt_byte_for_byte(tmp_path, recipe, options):
    """``build_round_pool`` plays the protocol with the frozen model and keeps each round's pool as
    a slate; the trained role's prompt built from a slate of round r (``offline_messages``, what
    ``offline_samples`` sends) is byte-identical to the request the protocol sent in round r."""
    from workbench.rl.rollouts import build_round_pool, draw_slate, shown_count

    recorder = Recorder()
    pc = ProtocolConfig(recipe, options)
    tasks = load_tasks(TaskConfig(name="arithmetic", limit=2)).tasks
    pool = build_round_pool(
        tasks, ScriptedBackend(recorder), recipe, pc, 3, 4, 0, tmp_path / "pool.jsonl", False
    )
    role = "central" if recipe == "maestro" else "leader"
    sent = {
        json.dumps(list(req.messages))
        for req in recorder.sent.values()
        if any(tag in req.messages[-1]["content"] for tag in ("<choice>", "<answer>"))
    }
    by_round = {}
    for task in tasks:
        entry = pool[task.id]
        assert {s["round"] for s in entry.slates} == ({1, 2, 3} if recipe == "maestro" else {0, 1, 2})
        for slate in entry.slates:
            assert len(slate["answers"]) == shown_count(recipe, pc.resolved)
            chat = offline_messages(recipe, task, slate["answers"], pc.resolved, round=slate["round"])
            assert json.dumps(chat) in sent, f"{role} prompt of round {slate['round']} differs"
            by_round.setdefault(slate["round"], 0)
            by_round[slate["round"]] += 1
            first = min(s["round"] for s in entry.slates)
            assert (slate["broadcast"] is None) == (slate["round"] == first)  # later rounds saw one
    assert len(by_round) == 3
    # the trainer draws whole slates, from any round, in the protocol's order
    import random

    drawn = {draw_slate(pool[tasks[0].id], 4, random.Random(i), False)[1] for i in range(40)}
    assert drawn == set(by_round)
    again = build_round_pool(tasks, None, recipe, pc, 3, 4, 0, tmp_path / "pool.jsonl", False)  # reused
    assert again[tasks[0].id].slates == pool[tasks[0].id].slates


def test_pool_rounds_beyond_the_protocols_rounds_is_one_line():
    from workbench.config import ConfigError
    from workbench.rl.config import TrainConfig

    with pytest.raises(ConfigError, match=r"pool.rounds=3 is beyond protocol.rounds=2.*set pool.rounds <= 2"):
        TrainConfig.load("maestro", ["pool.rounds=3"])
    with pytest.raises(ConfigError, match="pool.rounds must be >= 1"):
        TrainConfig.load("leader", ["pool.rounds=0"])
    assert TrainConfig.load("maestro", ["pool.rounds=2"]).pool.rounds == 2
