"""The OpenAI-compatible backend against a real local HTTP server that misbehaves on purpose.

The server (standard library, in this file) picks its behaviour from the URL's first path
segment: ``/ok/v1`` answers, ``/r429/v1`` rate-limits the first tries, ``/r500/v1`` always fails,
``/slow/v1`` answers too late, ``/garbage/v1`` returns non-JSON, ``/auth/v1`` wants a key.
Every request it receives is recorded (time, path, headers, body) for the assertions.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from workbench.models import ModelLoadError, Request, SamplingParams, load_backend
from workbench.models.openai import OpenAIBackend, parse_openai_spec

SECRET = "sk-test-5ecret-never-logged"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802
        scenario = self.path.split("/")[1]
        if scenario == "auth" and self.headers.get("Authorization") != f"Bearer {SECRET}":
            return self._send(401, b'{"error": {"message": "bad key"}}')
        self._send(200, json.dumps({"object": "list", "data": [{"id": "test-model"}]}).encode())

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        scenario = self.path.split("/")[1]
        content = body["messages"][-1]["content"]
        srv = self.server
        with srv.lock:
            srv.log.append(
                {"t": time.perf_counter(), "path": self.path, "headers": dict(self.headers), "body": body}
            )
            srv.tries[(scenario, content)] = srv.tries.get((scenario, content), 0) + 1
            tries = srv.tries[(scenario, content)]
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            if scenario == "moved":  # a redirect to another route: must not be followed (key included)
                where = f"http://127.0.0.1:{srv.server_address[1]}/ok/v1/chat/completions"
                return self._send(307, b"{}", {"Location": where})
            if scenario == "r429" and tries <= 2:
                return self._send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "0.3"})
            if scenario == "r500" or (scenario == "ok" and content.startswith("fail")):
                return self._send(500, b'{"error": {"message": "internal trouble"}}')
            if scenario == "slow":
                time.sleep(1.0)
            if scenario == "garbage":
                return self._send(200, b"<html>not json{")
            if scenario == "auth" and self.headers.get("Authorization") != f"Bearer {SECRET}":
                return self._send(401, b'{"error": {"message": "bad key"}}')
            if scenario == "ok":
                time.sleep(0.05)  # long enough for concurrent requests to overlap
            self._send(200, json.dumps(_completion(body, content)).encode())
        finally:
            with srv.lock:
                srv.in_flight -= 1


def _completion(body: dict, content: str) -> dict:
    """Echo the request: the text names the content and seed, so order and seeds can be checked."""
    text = f"echo {content} seed={body.get('seed')}"
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if body.get("logprobs"):
        choice["logprobs"] = {
            "content": [{"token": w, "logprob": -0.5, "top_logprobs": []} for w in text.split()]
        }
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [choice],
        "usage": {"prompt_tokens": 11, "completion_tokens": len(text.split()), "total_tokens": 0},
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.log: list[dict] = []
        self.tries: dict = {}
        self.in_flight = 0
        self.max_in_flight = 0

    def url(self, scenario: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{scenario}/v1"


@pytest.fixture
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _req(content: str, **sampling) -> Request:
    return Request([{"role": "user", "content": content}], SamplingParams(**sampling))


def _backend(url: str, **kw) -> OpenAIBackend:
    kw = {"max_retries": 2, "backoff_s": 0.05, "timeout_s": 5.0, **kw}
    return OpenAIBackend(url, "test-model", **kw)


# ---- specs ----
def test_spec_parsing():
    assert parse_openai_spec("openai:http://127.0.0.1:8000/v1#smollm2") == (
        "http://127.0.0.1:8000/v1",
        "smollm2",
    )
    assert parse_openai_spec("openai:https://h/v1/chat/completions#org/m:1") == ("https://h/v1", "org/m:1")
    for bad, msg in [
        ("openai:http://127.0.0.1:8000/v1", "has no model name"),
        ("openai:127.0.0.1:8000/v1#m", r"is not an http\(s\) URL"),
    ]:
        with pytest.raises(ModelLoadError, match=msg):
            parse_openai_spec(bad)


# ---- the happy path ----
def test_batch_in_order_with_usage_seeds_stop_and_logprobs(server):
    with _backend(server.url("ok")) as b:
        gens = b.generate(
            [
                _req("a"),
                _req("b", temperature=0.7, n=3, seed=10, stop=("###",), logprobs=True),
                _req("c", max_tokens=7),
            ]
        )
    assert [g.text for g in gens] == [
        "echo a seed=None",
        "echo b seed=10",
        "echo b seed=11",
        "echo b seed=12",
        "echo c seed=None",
    ]
    assert all(g.finish_reason == "stop" and g.error is None and g.prompt_tokens == 11 for g in gens)
    assert gens[0].completion_tokens == 3 and gens[0].logprobs is None
    assert gens[1].logprobs == [-0.5, -0.5, -0.5]
    bodies = {(e["body"]["messages"][0]["content"], e["body"].get("seed")): e["body"] for e in server.log}
    assert bodies[("b", 11)]["stop"] == ["###"] and bodies[("b", 11)]["logprobs"] is True
    assert bodies[("b", 11)]["temperature"] == 0.7 and bodies[("c", None)]["max_tokens"] == 7
    assert "n" not in bodies[("b", 11)]  # k samples travel as k requests with seeds seed + j


def test_concurrency_limit_is_respected(server):
    with _backend(server.url("ok"), max_concurrency=3) as b:
        gens = b.generate([_req(f"q{i}") for i in range(12)])
    assert [g.text for g in gens] == [f"echo q{i} seed=None" for i in range(12)]
    assert server.max_in_flight == 3  # concurrent, but never more than the limit


def test_works_from_inside_a_running_event_loop(server):
    """The scheduler calls generate() from its event loop; the backend runs its own loop thread."""
    import asyncio

    async def main():
        with _backend(server.url("ok")) as b:
            return b.generate([_req("x")])

    assert asyncio.run(main())[0].text == "echo x seed=None"


# ---- retries, backoff, timeouts, counted errors ----
def test_429_is_retried_after_retry_after(server):
    with _backend(server.url("r429")) as b:
        [g] = b.generate([_req("q")])
    assert g.text == "echo q seed=None" and g.error is None
    times = [e["t"] for e in server.log]
    assert len(times) == 3
    assert all(b - a >= 0.28 for a, b in zip(times, times[1:], strict=False))  # Retry-After: 0.3 honoured


def test_500_gives_up_with_an_error_generation_after_exponential_backoff(server):
    with _backend(server.url("r500"), max_retries=3, backoff_s=0.1) as b:
        [g] = b.generate([_req("q")])
    assert g.finish_reason == "error" and g.text == "" and g.completion_tokens == 0
    assert "HTTP 500: internal trouble" in g.error and "gave up after 4 attempts" in g.error
    assert server.url("r500") in g.error
    times = [e["t"] for e in server.log]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) == 4
    assert all(gap >= 0.5 * 0.1 * 2**k for k, gap in enumerate(gaps))  # backoff 0.1 * 2^k, jitter >= 0.5


def test_one_failing_request_does_not_lose_the_others(server):
    with _backend(server.url("ok"), max_retries=1) as b:
        gens = b.generate([_req("a"), _req("fail-me"), _req("c", n=2, seed=1, temperature=1.0)])
    assert [g.finish_reason for g in gens] == ["stop", "error", "stop", "stop"]
    assert gens[0].text == "echo a seed=None" and gens[3].text == "echo c seed=2"
    assert "HTTP 500" in gens[1].error


def test_timeout_is_a_counted_error(server):
    with _backend(server.url("slow"), timeout_s=0.2, max_retries=1) as b:
        [g] = b.generate([_req("q")])
    assert g.finish_reason == "error" and "no response within timeout_s=0.2s" in g.error
    assert len(server.log) == 2  # timeouts are retried


def test_garbage_json_is_a_counted_error_not_retried(server):
    with _backend(server.url("garbage")) as b:
        [g] = b.generate([_req("q")])
    assert g.finish_reason == "error" and "unparseable response" in g.error and "not json" in g.error
    assert len(server.log) == 1


def test_connection_refused_is_a_counted_error_and_a_load_error(server):
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    with _backend(f"http://127.0.0.1:{port}/ok/v1", max_retries=1) as b:
        [g] = b.generate([_req("q")])
    assert g.finish_reason == "error" and "connection error" in g.error and f"127.0.0.1:{port}" in g.error
    with pytest.raises(ModelLoadError, match=f"cannot reach http://127.0.0.1:{port}/ok/v1.*workbench serve"):
        load_backend(f"openai:http://127.0.0.1:{port}/ok/v1#test-model")


def test_load_checks_the_model_name(server):
    with pytest.raises(ModelLoadError, match="does not serve a model named 'other'; it serves: test-model"):
        load_backend(f"openai:{server.url('ok')}#other")
    assert load_backend(f"openai:{server.url('ok')}#test-model").model == "test-model"


# ---- API keys ----
def test_api_key_is_sent_but_never_exposed(server, monkeypatch, tmp_path):
    monkeypatch.setenv("WB_TEST_KEY", SECRET)
    b = load_backend(f"openai:{server.url('auth')}#test-model", api_key_env="WB_TEST_KEY", max_retries=0)
    gens = b.generate([_req("q", logprobs=True)])
    assert gens[0].text == "echo q seed=None"
    assert all(e["headers"]["Authorization"] == f"Bearer {SECRET}" for e in server.log)
    exposed = repr(b) + str(vars(b).get("name")) + "".join(repr(dataclasses.asdict(g)) for g in gens)
    assert SECRET not in exposed and "WB_TEST_KEY" in repr(b)
    b.close()

    # a whole eval through the backend: the run folder names the variable, never the key
    from workbench.evaluate import EvalConfig, run_eval

    cfg = EvalConfig.build(
        {"model": {"api_key_env": "WB_TEST_KEY", "max_retries": 0}},
        task="arithmetic",
        model=f"openai:{server.url('auth')}#test-model",
        limit=3,
        out=str(tmp_path / "run"),
    )
    result = run_eval(cfg, progress=False)
    assert result.summary["n"] == 3
    files = "".join(p.read_text() for p in Path(result.run_dir).iterdir() if p.is_file())
    assert "WB_TEST_KEY" in files and SECRET not in files


def test_wrong_or_missing_key(server, monkeypatch):
    monkeypatch.setenv("WB_TEST_KEY", "sk-wrong")
    with pytest.raises(ModelLoadError, match=r"refused the API key from \$WB_TEST_KEY"):
        load_backend(f"openai:{server.url('auth')}#test-model", api_key_env="WB_TEST_KEY")
    b = _backend(server.url("auth"), api_key_env="WB_TEST_KEY")
    [g] = b.generate([_req("q")])  # a key revoked mid-run: an error generation, not retried
    assert g.finish_reason == "error" and "WB_TEST_KEY" in g.error and "sk-wrong" not in g.error
    assert len(server.log) == 1
    b.close()
    monkeypatch.delenv("WB_TEST_KEY")
    with pytest.raises(ModelLoadError, match="environment variable WB_TEST_KEY is not set"):
        _backend(server.url("auth"), api_key_env="WB_TEST_KEY")
    with pytest.raises(ModelLoadError, match="the server wants an API key"):
        load_backend(f"openai:{server.url('auth')}#test-model")  # localhost: no key by default


def test_the_default_key_goes_only_to_its_own_host(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ModelLoadError, match="OPENAI_API_KEY is not set"):
        OpenAIBackend("https://api.openai.com/v1", "m")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert OpenAIBackend("https://API.OpenAI.com/v1", "m").api_key_env == "OPENAI_API_KEY"
    for url in (
        "https://api.example.com/v1",
        "https://api.openai.com.evil.example/v1",
        "https://evil.example/api.openai.com/v1",
        "https://api.openai.com@evil.example/v1",
        "http://localhost:8000/v1",
    ):
        b = OpenAIBackend(url, "m")
        assert b.api_key_env is None and "Authorization" not in b._headers, url
    assert OpenAIBackend("https://api.example.com/v1", "m", api_key_env="none").api_key_env is None
    # named explicitly for this model: the user's choice
    assert OpenAIBackend("https://api.example.com/v1", "m", api_key_env="OPENAI_API_KEY").api_key_env


def test_no_default_key_reaches_another_server(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    b = load_backend(f"openai:{server.url('ok')}#test-model", max_retries=0)
    assert b.generate([_req("q")])[0].text == "echo q seed=None"
    assert server.log and all("Authorization" not in e["headers"] for e in server.log)
    b.close()


@pytest.mark.parametrize(
    "url, key_env, what",
    [
        ("http://10.1.2.3:8000/v1", "WB_TEST_KEY", "the key from $WB_TEST_KEY"),
        ("http://api.openai.com/v1", "", "the key from $OPENAI_API_KEY"),
        ("http://localhost.evil.example/v1", "WB_TEST_KEY", "the key from $WB_TEST_KEY"),
        ("http://127.0.0.1.nip.io/v1", "WB_TEST_KEY", "the key from $WB_TEST_KEY"),
        ("http://127.0.0.1:8000\\@evil.example/v1", "WB_TEST_KEY", "the key from $WB_TEST_KEY"),
        ("http://[::1]@evil.example/v1", "WB_TEST_KEY", "the key from $WB_TEST_KEY"),
        ("http://2130706433/v1", "WB_TEST_KEY", "the key from $WB_TEST_KEY"),
        ("http://bob:hunter2@10.0.0.9/v1", "", "the user:password in the URL"),
        ("http://bob@192.168.1.5/v1", "none", "the user:password in the URL"),
    ],
)
def test_no_credential_over_plain_http_to_another_machine(monkeypatch, url, key_env, what):
    monkeypatch.setenv("WB_TEST_KEY", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with pytest.raises(ModelLoadError) as err:
        OpenAIBackend(url, "m", api_key_env=key_env)
    message = str(err.value)
    assert f"refusing to send {what} over plain http" in message and "use https://" in message
    assert "hunter2" not in message and SECRET not in message and "\n" not in message


def test_keys_over_http_to_loopback_and_https_are_fine(monkeypatch):
    monkeypatch.setenv("WB_TEST_KEY", SECRET)
    for url in (
        "http://127.0.0.2:8000/v1",
        "http://[::1]:8000/v1",
        "http://localhost/v1",
        "https://10.1.2.3/v1",
    ):
        assert OpenAIBackend(url, "m", api_key_env="WB_TEST_KEY").api_key_env == "WB_TEST_KEY", url


def test_a_key_over_loopback_http_never_goes_through_a_proxy(server, monkeypatch):
    monkeypatch.setenv("WB_TEST_KEY", SECRET)
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # a proxy that is not there: used, it would fail
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    b = load_backend(f"openai:{server.url('auth')}#test-model", api_key_env="WB_TEST_KEY", max_retries=0)
    [g] = b.generate([_req("q")])
    assert g.text == "echo q seed=None" and server.log[-1]["headers"]["Authorization"] == f"Bearer {SECRET}"
    b.close()


def test_redirects_are_not_followed(server, monkeypatch):
    monkeypatch.setenv("WB_TEST_KEY", SECRET)
    b = _backend(server.url("moved"), api_key_env="WB_TEST_KEY")
    [g] = b.generate([_req("q")])
    assert g.finish_reason == "error" and "HTTP 307" in g.error
    assert [e["path"].split("/")[1] for e in server.log] == ["moved"]
    b.close()


def test_urls_are_recorded_without_credentials(server, tmp_path):
    port = server.server_address[1]
    spec = f"openai:http://bob:hunter2@127.0.0.1:{port}/ok/v1?key=qs3cret&api-version=7#test-model"
    b = load_backend(spec, max_retries=0)
    [g] = b.generate([_req("q")])
    assert g.text == "echo q seed=None"
    assert server.log[-1]["path"].endswith("/chat/completions?key=qs3cret&api-version=7")  # still sent
    assert server.log[-1]["headers"]["Authorization"].startswith("Basic ")  # user:pass as HTTP auth
    shown = repr(b) + b.name
    assert "hunter2" not in shown and "qs3cret" not in shown and "api-version=7" in shown
    b.close()
    down = _backend("http://bob:hunter2@127.0.0.1:1/v1?token=qs3cret", max_retries=0)
    [err] = down.generate([_req("q")])
    assert err.finish_reason == "error" and "hunter2" not in err.error and "qs3cret" not in err.error
    down.close()
    with pytest.raises(ModelLoadError) as e:
        load_backend("openai:http://bob:hunter2@127.0.0.1:1/v1?token=qs3cret#m")
    assert "hunter2" not in str(e.value) and "qs3cret" not in str(e.value)

    # a whole eval: no credential in config.yaml, summary.json, manifest or episodes
    from workbench.evaluate import EvalConfig, run_eval

    cfg = EvalConfig.build(
        {"model": {"max_retries": 0}}, task="arithmetic", model=spec, limit=2, out=str(tmp_path / "run")
    )
    result = run_eval(cfg, progress=False)
    assert result.summary["n"] == 2
    files = "".join(p.read_text() for p in Path(result.run_dir).iterdir() if p.is_file())
    assert "hunter2" not in files and "qs3cret" not in files and f"127.0.0.1:{port}/ok/v1" in files


@pytest.mark.parametrize(
    "text, shown",
    [
        ("https://bob:pw@host/v1", "https://host/v1"),
        ("openai:http://u:p@10.0.0.5:80/v1#m", "openai:http://10.0.0.5:80/v1#m"),
        ("https://h/v1?key=abc&api-version=2024&sig=x", "https://h/v1?key=***&api-version=2024&sig=***"),
        ("https://h/v1?X-Amz-Credential=a%2Fb", "https://h/v1?X-Amz-Credential=***"),
        ("failed: http://a:b@[::1]:9/x and https://c:d@e/f", "failed: http://[::1]:9/x and https://e/f"),
        ("https://h/v1", "https://h/v1"),
        ("no url here: user:pass@host", "no url here: user:pass@host"),
        ("http://[::1/x", "http://[::1/x"),
    ],
)
def test_redaction(text, shown):
    from workbench.redact import redact_secrets, redact_text

    assert redact_text(text) == shown
    assert redact_secrets({"a": [text, 1], "b": (text,)}) == {"a": [shown, 1], "b": (shown,)}
