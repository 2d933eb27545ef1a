import dataclasses
import re
import typing
from dataclasses import dataclass

import pytest

from workbench.config import ConfigError, from_dict, load_yaml, parse_overrides, to_dict
from workbench.evaluate import EvalConfig


@dataclass(frozen=True)
class Inner:
    rate: float = 0.1
    steps: int = 3
    names: tuple[str, ...] = ()
    flag: bool = False
    maybe: int | None = None


@dataclass(frozen=True)
class Outer:
    inner: Inner = Inner()
    label: str = "x"


def test_parse_overrides_nests_dotted_keys():
    assert parse_overrides(["a.b=1", "a.c=x", "d=2"]) == {"a": {"b": "1", "c": "x"}, "d": "2"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])


def test_from_dict_coerces_strings_from_the_command_line():
    cfg = from_dict(
        Outer, {"inner": {"rate": "0.5", "steps": "4", "names": "a,b", "flag": "true", "maybe": "none"}}
    )
    assert cfg.inner == Inner(0.5, 4, ("a", "b"), True, None)
    assert to_dict(cfg)["inner"]["names"] == ["a", "b"]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"inner": {"rat": 1}}, "unknown key 'inner.rat'; valid keys here: inner.rate"),
        ({"inner": {"steps": "three"}}, "inner.steps must be an integer, got 'three'"),
        ({"inner": {"steps": 2.5}}, "inner.steps must be an integer"),
        ({"inner": {"flag": "maybe"}}, "inner.flag must be true or false"),
        ({"inner": 3}, "inner must be a section"),
        ({"label": {"a": 1}}, "label must be a string"),
    ],
)
def test_from_dict_rejects_with_a_message_naming_the_key(data, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        from_dict(Outer, data)


def test_eval_config_routes_flat_keys_to_family_and_protocol_options():
    cfg = EvalConfig.build(
        {"task": {"digits": "2"}, "protocol": {"n": "7"}}, task="arithmetic", protocol="vote", limit=3
    )
    assert cfg.task.options == {"digits": 2, "ops": "+-", "steps": 1, "style": "expr"}
    assert cfg.task.limit == 3
    assert cfg.protocol.options["n"] == 7
    assert cfg.protocol.resolved.n == 7


@pytest.mark.parametrize(
    "kwargs, overrides, message",
    [
        ({"task": "nope"}, {}, "unknown task 'nope'; available: aime24, amc23, arithmetic"),
        ({"protocol": "nope"}, {}, "unknown protocol 'nope'; available: single, vote"),
        ({}, {"task": {"digitz": "2"}}, "unknown key 'task.digitz'"),
        ({}, {"task": {"digits": "two"}}, "task.digits must be an integer"),
        ({}, {"task": {"digits": "9"}}, "digits must be in 1..6"),
        ({"protocol": "vote"}, {"protocol": {"temperature": "0"}}, "vote with temperature 0"),
        ({}, {"model": {"dtyp": "fp32"}}, "unknown key 'model.dtyp'"),
        ({}, {"seed": "x"}, "seed must be an integer"),
        ({}, {"bogus": "1"}, "unknown key 'bogus'; valid keys here: seed, max_in_flight, out"),
        ({"task": "gsm8k"}, {"task": {"digits": "2"}}, "takes no options"),
        ({"task": "jsonl"}, {}, "needs a path"),
    ],
)
def test_eval_config_errors_name_the_input(kwargs, overrides, message):
    with pytest.raises(ConfigError, match=message):
        EvalConfig.build(overrides, **kwargs)


def test_the_sampling_seed_does_not_change_the_items():
    a, b = EvalConfig.build(seed=0), EvalConfig.build(seed=5)
    assert a.task == b.task and b.seed == 5
    assert EvalConfig.build({"task": {"seed": "3"}}).task.seed == 3


# ---- every coercion is total: a value or a ConfigError naming the key ----


@pytest.mark.parametrize(
    "data, message",
    [
        ({"inner": {"rate": "nan"}}, "inner.rate must be a finite number, got 'nan'"),
        ({"inner": {"rate": "-inf"}}, "inner.rate must be a finite number"),
        ({"inner": {"rate": "1e999"}}, "inner.rate must be a finite number"),
        ({"inner": {"rate": 10**400}}, "inner.rate must be a number"),  # float() would overflow
        ({"inner": {"rate": True}}, "inner.rate must be a number"),
        ({"inner": {"rate": [1]}}, "inner.rate must be a number"),
        ({"inner": {"steps": float("inf")}}, "inner.steps must be an integer"),  # int() would overflow
        ({"inner": {"steps": "9" * 5000}}, "inner.steps must be an integer of at most 19 digits"),
        ({"inner": {"steps": 2**64}}, "the maximum is 9223372036854775807"),
        ({"inner": {"steps": None}}, "inner.steps must be an integer"),
        ({"inner": {"names": 5}}, "inner.names must be a comma-separated list"),  # list(5) would raise
        ({"inner": {"names": {"a": 1}}}, "inner.names must be a comma-separated list"),
        ({"inner": {"names": ",".join("x" * 2000)}}, "inner.names: 2000 items, at most 1024"),
        ({"inner": {"maybe": "lots"}}, "inner.maybe must be an integer"),
        ({"label": None}, "label must be a string"),
        ({"label": [1, 2]}, "label must be a string"),
        ({1: "x"}, "unknown key '1'"),  # a non-string key from YAML
    ],
)
def test_every_coercion_fails_with_a_config_error(data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(Outer, data)


@pytest.mark.parametrize("data", ["abc", 5, [1, 2], True])
def test_a_section_that_is_not_a_mapping_is_refused(data):
    with pytest.raises(ConfigError, match="is a section"):
        from_dict(Outer, data)


def test_ints_accept_integral_spellings():
    assert from_dict(Inner, {"steps": "1e3"}).steps == 1000
    assert from_dict(Inner, {"steps": " 12 "}).steps == 12
    assert from_dict(Inner, {"steps": "1_000"}).steps == 1000
    assert from_dict(Inner, {"steps": 4.0}).steps == 4
    assert from_dict(Inner, {"names": "[a, b]"}).names == ("a", "b")  # the docs' list spelling


@pytest.mark.parametrize(
    "items, message",
    [
        (["a..b=1"], "empty part in the dotted key"),
        ([".a=1"], "empty part"),
        (["a.=1"], "empty part"),
        (["=1"], "--set expects key=value"),
        (["  =1"], "--set expects key=value"),
        ([".".join("a" * 9) + "=1"], "9 dotted parts, at most 8"),
        (["a=1", "a.b=2"], "'a' was set to a value, not a section"),
        (["a.b=1", "a=2"], "'a' is a section; set its keys"),
    ],
)
def test_parse_overrides_rejects_malformed_keys(items, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_overrides(items)


def _protocol_fields(kind):
    from workbench.protocols import PROTOCOLS

    for name, spec in PROTOCOLS.items():
        hints = typing.get_type_hints(spec.config)
        for f in dataclasses.fields(spec.config):
            if hints[f.name] in kind:
                yield name, f.name


@pytest.mark.parametrize("protocol, key", list(_protocol_fields((float, float | None))))
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_no_protocol_float_accepts_nan_or_inf(protocol, key, value):
    with pytest.raises(ConfigError, match=f"protocol.{key} must be a finite number"):
        EvalConfig.build({"protocol": {key: value}}, protocol=protocol)


@pytest.mark.parametrize("protocol, key", list(_protocol_fields((int,))))
def test_every_protocol_count_has_a_maximum_that_the_error_names(protocol, key):
    # the loader's bound, or the protocol's own range check (conductor.max_steps: "must be in 1..10")
    pattern = (
        rf"protocol\.{key}=10000000 is too large: the maximum is \d+|protocol\.{key} must be in \d+\.\.\d+"
    )
    with pytest.raises(ConfigError, match=pattern):
        EvalConfig.build({"protocol": {key: "10000000"}}, protocol=protocol)


@pytest.mark.parametrize(
    "overrides, protocol, message",
    [
        ({"protocol": {"n": "10000000"}}, "vote", "protocol.n=10000000 is too large: the maximum is 256"),
        ({"protocol": {"n": "0"}}, "vote", "protocol.n must be >= 1, got 0"),
        ({"protocol": {"temperature": "nan"}}, "vote", "protocol.temperature must be a finite number"),
        ({"protocol": {"temperature": "-0.5"}}, "vote", "protocol.temperature must be >= 0"),
        ({"protocol": {"temperature": "50"}}, "vote", "the maximum is 5"),
        ({"protocol": {"top_p": "0"}}, "vote", "protocol.top_p must be > 0, got 0.0 (allowed (0, 1])"),
        ({"protocol": {"top_p": "1.01"}}, "vote", "protocol.top_p=1.01 is too large: the maximum is 1"),
        ({"protocol": {"max_tokens": "1000000"}}, "single", "the maximum is 32768"),
        ({"protocol": {"layers": "3,100000"}}, "moa", "protocol.layers=100000 is too large"),
        ({"protocol": {"epsilon": "1.5"}}, "maestro", "protocol.epsilon=1.5 is too large"),
        ({"protocol": {"options": "5"}}, "vote", "protocol.options must be a section, got '5'"),
        ({"task": {"options": "5"}}, None, "task.options must be a section"),
        ({"task": {"limit": "10000000"}}, None, "task.limit=10000000 is too large: the maximum is 1000000"),
        ({"budget": {"max_calls": "1e9"}}, None, "budget.max_calls=1000000000 is too large"),
        ({"budget": {"max_tokens": "nan"}}, None, "budget.max_tokens must be an integer"),
        ({"model": {"timeout_s": "inf"}}, None, "model.timeout_s must be a finite number"),
        ({"model": {"max_batch_size": "100000"}}, None, "model.max_batch_size=100000 is too large"),
        ({"models": {"x": {"timeout_s": "nan"}}}, None, "models.x.timeout_s must be a finite number"),
        ({"team": {"hot": {"temperature": "nan"}}}, None, "team.hot.temperature must be a finite number"),
        ({"team": {"hot": {"top_p": "-1"}}}, None, "team.hot.top_p must be > 0"),
        ({"team": {"hot": "5"}}, None, "'team.hot' is a section"),
        ({"max_in_flight": "1e7"}, None, "max_in_flight=10000000 is too large: the maximum is 65536"),
        ({"seed": "1e400"}, None, "seed must be an integer, got '1e400'"),
    ],
)
def test_eval_config_rejects_non_finite_and_out_of_range_values(overrides, protocol, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        EvalConfig.build(overrides, protocol=protocol)


def test_bounds_leave_the_defaults_and_the_documented_settings_alone():
    from workbench.protocols import PROTOCOLS

    for name in PROTOCOLS:
        EvalConfig.build(protocol=name)  # every protocol's defaults are within range
    cfg = EvalConfig.build({"protocol": {"n": "9", "temperature": "0.5"}}, protocol="vote")
    assert cfg.protocol.resolved.n == 9
    assert EvalConfig.build({"budget": {"max_tokens": "200000"}}).budget.max_tokens == 200000


# ---- YAML files (recipes): one mapping, bounded, no aliases ----


@pytest.mark.parametrize(
    "text, message",
    [
        ("train: {steps: 3\n", "not valid YAML"),
        ("train:\n  steps: 3\n bad: indent\n", "not valid YAML"),
        ("- a\n- b\n", "the top level must be a mapping of sections (task:, train:, ...), got a list"),
        ("42\n", "got a int"),
        ("just text\n", "got a str"),
        ("a: &x [1, 2]\nb: *x\n", "line 2: YAML aliases (*name) are not allowed"),
        ("a: " + "[" * 50 + "]" * 50 + "\n", "nested deeper than 16 levels"),
        ("a: " + "[" * 100_000 + "\n", "recipe.yaml"),  # deep and unclosed: one line, no RecursionError
        ("!!python/object:os.system {}\n", "not valid YAML"),
    ],
)
def test_load_yaml_refuses_what_is_not_one_plain_mapping(tmp_path, text, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        load_yaml(path)
    assert "\n" not in str(e.value)


def test_load_yaml_refuses_binary_huge_and_unreadable_files(tmp_path):
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage\x9c")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_yaml(binary)
    huge = tmp_path / "h.yaml"
    huge.write_text("a: " + "x" * (2 << 20))
    with pytest.raises(ConfigError, match="larger than 1048576"):
        load_yaml(huge)
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml(tmp_path)  # a folder
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml(tmp_path / "missing.yaml")
    empty = tmp_path / "e.yaml"
    empty.write_text("")
    assert load_yaml(empty) == {}


def test_a_billion_laughs_document_is_refused_without_expanding(tmp_path):
    lines = ['a0: ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="aliases"):
        load_yaml(path)


@pytest.mark.parametrize(
    "protocol, key",
    [("vote", "members"), ("maestro", "explorer_members"), ("debate", "members"), ("leader", "peer_members")]
    + [("moa", "proposer_members")],
)
def test_an_empty_member_list_is_refused_not_left_to_fail_in_every_episode(protocol, key):
    with pytest.raises(ConfigError, match=f"protocol.{key} must name at least one team member"):
        EvalConfig.build({"protocol": {key: ""}}, protocol=protocol)
