"""`workbench serve` under abuse: slow and vanished clients, floods, hostile bodies, other origins.

Every test runs the real `ModelServer` (HTTP parsing, watchdog, batcher) in-process on 127.0.0.1
with a scripted backend (a real `Backend`: deterministic replies, calls logged), so that what is
measured is the server. The gated variant holds `generate` until the test releases it, to fill
the queue or leave a request waiting; the broken one returns a malformed generation, which fails
outside `generate`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.config import ConfigError
from workbench.models.scripted import ScriptedBackend
from workbench.serve import (
    MAX_JSON_DEPTH,
    BadRequest,
    ModelServer,
    _check_port,
    parse_chat_request,
    parse_json_body,
    parse_port,
    resolve_api_key,
)

USER = [{"role": "user", "content": "What is 2 + 3?"}]


class CountingBackend(ScriptedBackend):
    """Scripted replies plus a tokenizer (one token per word) and a context, so limits apply."""

    def __init__(self, context: int = 64, **kw):
        super().__init__("Answer: 5", **kw)
        self.context_length = context

    def encode_chat(self, messages) -> list[int]:
        return list(range(sum(len(m["content"].split()) + 1 for m in messages)))


class GatedBackend(CountingBackend):
    """`generate` waits for `release`; `entered` is set when a call starts."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.entered = threading.Event()
        self.release = threading.Event()

    def generate(self, requests):
        self.entered.set()
        assert self.release.wait(30), "the test never released the backend"
        return super().generate(requests)


class BrokenBackend(CountingBackend):
    """A prompt with BREAK gets a generation whose token count is not a number (a backend bug)."""

    def generate(self, requests):
        gens = super().generate(requests)
        for g, r in zip(gens, requests, strict=False):
            if "BREAK" in r.messages[-1]["content"]:
                g.completion_tokens = "many"
        return gens


class Served:
    def __init__(self, backend, **kw):
        kw.setdefault("request_timeout_s", 1.0)
        kw.setdefault("io_timeout_s", 2.0)
        self.backend = backend
        self.server = ModelServer(backend, "127.0.0.1", 0, model_name="m", batch_wait_ms=2, **kw)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.addr = self.server.server_address[:2]
        self.base = f"http://{self.addr[0]}:{self.addr[1]}"
        self.chat = f"{self.base}/v1/chat/completions"
        self.client = httpx.Client(timeout=20)

    def close(self) -> None:
        self.client.close()
        self.server.shutdown()
        self.server.server_close()

    def raw(self, data: bytes, timeout: float = 15.0) -> bytes:
        """Send ``data`` on a fresh connection; everything the server sends until it closes."""
        with socket.create_connection(self.addr, timeout=timeout) as s:
            s.sendall(data)
            return _read_all(s)


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


def _post(body: bytes, host: bytes = b"127.0.0.1", extra: bytes = b"") -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: "
        + host
        + b"\r\nConnection: close\r\n"
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


@pytest.fixture(scope="module")
def served():
    """One server for the tests that leave it as they found it."""
    s = Served(CountingBackend())
    yield s
    s.close()


def _ok(served: Served) -> None:
    """The server still answers a normal request."""
    r = served.client.post(served.chat, json={"messages": USER, "max_tokens": 4})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Answer: 5"


# ---- slow clients ----
def test_half_a_body_is_answered_408_and_dropped(served):
    with socket.create_connection(served.addr, timeout=15) as s:
        s.sendall(
            b'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n{"mes'
        )
        reply = _read_all(s)  # returns only because the server closes the connection
    assert _status(reply) == 408 and b"did not arrive within 1 s" in reply
    _ok(served)


def test_headers_sent_slowly_are_cut_off(served):
    with socket.create_connection(served.addr, timeout=15) as s:
        s.sendall(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed = b""
        for _ in range(100):  # one header byte every 50 ms: each read alone is quick, the whole is not
            try:
                s.sendall(b"X")
            except OSError:
                break
            time.sleep(0.05)
            s.setblocking(False)
            try:
                closed = s.recv(65536)
            except BlockingIOError:
                closed = None
            finally:
                s.setblocking(True)
            if closed is not None:
                break
    assert closed is not None, "the slow client was never cut off"
    assert closed == b"" or _status(closed) == 408  # never served
    _ok(served)


def test_an_idle_connection_is_closed(served):
    with socket.create_connection(served.addr, timeout=15) as s:
        assert _read_all(s) == b""  # nothing sent: closed after request_timeout_s, no reply


# ---- floods ----
def test_connections_beyond_the_cap_get_503_and_no_threads():
    s = Served(CountingBackend(), max_connections=8, request_timeout_s=5.0)
    try:
        before = threading.active_count()
        socks = [socket.create_connection(s.addr, timeout=15) for _ in range(300)]
        try:
            time.sleep(0.3)
            grown = threading.active_count() - before
            assert grown <= s.server.max_threads == 12, f"{grown} new threads for 300 connections (cap 8)"
            refused = socks[-1]
            refused.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            reply = _read_all(refused)
            assert _status(reply) == 503 and b"Retry-After: 1" in reply and b"retry later" in reply
            stats = s.server.connection_stats()
            # connections still without a request after EVICT_AFTER_S give way to new ones (a loaded
            # machine takes that long to open 300), so the peak may reach max_threads, never more
            assert stats["peak_connections"] <= s.server.max_threads
            assert stats["refused_connections"] + stats["evicted_connections"] >= 250
        finally:
            for sock in socks:
                sock.close()
        deadline = time.monotonic() + 10
        while s.server.connection_stats()["connections"] and time.monotonic() < deadline:
            time.sleep(0.05)
        _ok(s)
    finally:
        s.close()


def test_when_full_the_longest_waiting_slow_client_gives_way():
    s = Served(CountingBackend(), max_connections=4, request_timeout_s=30.0)
    try:
        slow = [socket.create_connection(s.addr, timeout=15) for _ in range(4)]
        for c in slow:
            c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and then nothing
        deadline = time.monotonic() + 10
        while s.server.connection_stats()["connections"] < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.1)  # older than EVICT_AFTER_S
        for _ in range(3):  # each new client evicts the oldest slow one instead of getting 503
            _ok(s)
        stats = s.server.connection_stats()
        assert stats["evicted_connections"] >= 1 and stats["refused_connections"] == 0
        cut = 0
        for c in slow:  # the evicted ones were answered 408 or closed; the rest still wait
            c.settimeout(0.5)
            try:
                reply = c.recv(100)
                cut += reply == b"" or _status(reply) == 408
            except TimeoutError:
                pass
            c.close()
        assert cut >= 1
    finally:
        s.close()


def test_a_full_queue_answers_503_with_retry_after_then_serves():
    backend = GatedBackend()
    s = Served(backend, max_queue=2, max_connections=16)
    results: dict[int, httpx.Response] = {}

    def post(i: int) -> None:
        results[i] = httpx.post(s.chat, json={"messages": [{"role": "user", "content": f"q{i}"}]}, timeout=30)

    try:
        first = threading.Thread(target=post, args=(0,))
        first.start()
        assert backend.entered.wait(10)  # request 0 is inside generate, holding the model
        queued = [threading.Thread(target=post, args=(i,)) for i in (1, 2)]
        for t in queued:
            t.start()
        deadline = time.monotonic() + 10
        while s.server.batcher.queue.qsize() < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        busy = s.client.post(s.chat, json={"messages": USER})
        assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
        assert "busy" in busy.json()["error"]["message"]
        backend.release.set()
        for t in [first, *queued]:
            t.join(30)
        assert [results[i].status_code for i in range(3)] == [200, 200, 200]
        assert s.server.batcher.stats()["rejected_busy"] == 1
    finally:
        backend.release.set()
        s.close()


def test_a_disconnected_clients_queued_request_never_reaches_the_model():
    backend = GatedBackend()
    s = Served(backend)
    try:
        holder = threading.Thread(target=lambda: httpx.post(s.chat, json={"messages": USER}, timeout=30))
        holder.start()
        assert backend.entered.wait(10)
        body = json.dumps({"messages": [{"role": "user", "content": "CANCEL ME"}]}).encode()
        with socket.create_connection(s.addr, timeout=15) as c:
            c.sendall(_post(body))
            deadline = time.monotonic() + 10
            while s.server.batcher.queue.qsize() < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
        # the client is gone; its handler notices (polls every 0.25 s) and leaves
        deadline = time.monotonic() + 10
        while s.server.connection_stats()["connections"] > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        backend.release.set()
        holder.join(30)
        _ok(s)
        seen = [m["content"] for call in backend.calls for r in call for m in r.messages]
        assert "CANCEL ME" not in seen and s.server.batcher.stats()["cancelled"] == 1
    finally:
        backend.release.set()
        s.close()


# ---- n, max_tokens and the context ----
def test_max_tokens_is_clamped_to_the_context(served):
    before = served.server.batcher.stats()["clamped"]
    r = served.client.post(served.chat, json={"messages": USER, "max_tokens": 1_000_000, "n": 2})
    assert r.status_code == 200 and len(r.json()["choices"]) == 2
    sent = served.backend.calls[-1][0].sampling
    prompt = len(served.backend.encode_chat(USER))
    assert sent.max_tokens == 64 - prompt and served.server.batcher.stats()["clamped"] == before + 1
    small = served.client.post(served.chat, json={"messages": USER, "max_tokens": 3})
    assert small.status_code == 200 and served.backend.calls[-1][0].sampling.max_tokens == 3


def test_a_prompt_longer_than_the_context_is_400(served):
    long = [{"role": "user", "content": "word " * 80}]
    r = served.client.post(served.chat, json={"messages": long})
    assert r.status_code == 400 and "context is 64 tokens" in r.json()["error"]["message"]
    _ok(served)


@pytest.mark.parametrize(
    "field, value",
    [
        ("n", 0),
        ("n", 65),
        ("n", 10**9),
        ("n", True),
        ("n", 1.5),
        ("n", "2"),
        ("max_tokens", 0),
        ("max_tokens", -1),
        ("max_tokens", 10**7),
        ("max_tokens", 1e308),
        ("max_tokens", [1]),
        ("max_completion_tokens", 0),
        ("temperature", float("inf")),
        ("seed", 2**64),
        ("stop", ["x"] * 17),
        ("stop", "x" * 1001),
        ("stop", ""),
        ("stream", 0),
    ],
)
def test_bad_sampling_values_are_400_naming_the_field(served, field, value):
    r = served.client.post(
        served.chat,
        content=json.dumps({"messages": USER, field: value}),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field and len(error["message"]) < 300


# ---- bodies ----
DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    "raw, status, words",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'"messages"', 400, "must be a JSON object"),
        (b"null", 400, "must be a JSON object"),
        (b"\xff\xfe{}", 400, "not UTF-8"),
        (DEEP, 400, "nested too deeply"),
        (b'{"messages": ' + b"[" * 40 + b"]" * 40 + b"}", 400, "nested too deeply"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "seed": 1' + b"0" * 5000 + b"}", 400, "JSON"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400, "temperature"),
        (b'{"model": ' + b"[" * 30 + b"]" * 30 + b', "messages": []}', 404, "does not exist"),
    ],
)
def test_hostile_bodies_get_a_json_error_and_the_server_lives(served, raw, status, words):
    reply = served.raw(_post(raw))
    assert _status(reply) == status, reply[:300]
    error = json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]
    assert words in error["message"] and len(error["message"]) < 400
    _ok(served)


@pytest.mark.parametrize(
    "head, status",
    [
        (b"Content-Length: 99999999999\r\n", 413),
        (b"Content-Length: -5\r\n", 400),
        (b"Content-Length: 1e3\r\n", 400),
        (b"Content-Length: 2\r\nContent-Length: 3\r\n", 411),
        (b"Transfer-Encoding: chunked\r\n", 411),
        (b"", 411),
    ],
)
def test_bad_content_lengths(served, head, status):
    reply = served.raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n" + head + b"\r\n{}")
    assert _status(reply) == status, reply[:300]
    _ok(served)


def test_a_get_with_a_body_cannot_smuggle_a_second_request(served):
    hidden = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % len(hidden)
    reply = served.raw(head + hidden)
    assert _status(reply) == 200 and reply.count(b"HTTP/1.1 ") == 1  # answered once, then closed


def test_an_oversized_header_block_is_refused(served):
    reply = served.raw(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n")
    assert _status(reply) == 431
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(200))
    assert _status(served.raw(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many + b"\r\n")) == 431
    _ok(served)


# ---- the batcher's health ----
def test_a_failure_outside_generate_fails_the_pending_requests_and_the_batcher_goes_on():
    s = Served(BrokenBackend())
    try:
        bad = s.client.post(s.chat, json={"messages": [{"role": "user", "content": "BREAK"}]})
        assert bad.status_code == 500 and "outside the model" in bad.json()["error"]["message"]
        health = s.client.get(f"{s.base}/health")
        assert health.status_code == 200 and health.json()["failures"] == 1
        _ok(s)
    finally:
        s.close()


def test_health_is_503_when_the_batcher_is_down():
    served = Served(CountingBackend())
    try:
        assert served.client.get(f"{served.base}/health").json()["batcher"] == "running"
        served.server.batcher.stop()
        health = served.client.get(f"{served.base}/health")
        assert health.status_code == 503 and health.json()["status"] == "error"
        r = served.client.post(served.chat, json={"messages": USER})
        assert r.status_code == 503 and "stopped" in r.json()["error"]["message"]
    finally:
        served.close()


# ---- who may ask ----
@pytest.mark.parametrize(
    "headers, status",
    [
        ({"Host": "evil.example"}, 403),
        ({"Host": "evil.example:80"}, 403),
        ({"Host": "127.0.0.1.evil.example"}, 403),
        ({"Host": "localhost"}, 200),
        ({"Host": "LOCALHOST."}, 200),
        ({"Host": "[::1]:9"}, 200),
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Host": "localhost:1234", "Origin": "http://localhost:3000"}, 403),  # another local page
        ({"Host": "localhost:1234", "Origin": "http://localhost:1234"}, 200),  # same origin
    ],
)
def test_host_and_origin_checks(served, headers, status):
    r = served.client.post(served.chat, json={"messages": USER}, headers=headers)
    assert r.status_code == status, r.text
    if status == 403:
        assert "--allow-host" in r.json()["error"]["message"]


def test_allow_host_admits_a_name_and_its_pages():
    s = Served(CountingBackend(), allow_hosts=("box.lan",))
    try:
        headers = {"Host": "box.lan:8000", "Origin": "https://box.lan"}
        assert s.client.post(s.chat, json={"messages": USER}, headers=headers).status_code == 200
        assert s.client.get(f"{s.base}/health", headers={"Host": "other.lan"}).status_code == 403
    finally:
        s.close()


def test_api_key():
    s = Served(CountingBackend(), api_key="s3cret")
    try:
        assert s.client.get(f"{s.base}/health").status_code == 200  # open, for probes
        none = s.client.post(s.chat, json={"messages": USER})
        assert none.status_code == 401 and none.headers["WWW-Authenticate"] == "Bearer"
        # its body went unread: the answer closes the connection rather than leave it to a race
        assert none.headers["Connection"] == "close"
        wrong = s.client.post(s.chat, json={"messages": USER}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "s3cret" not in wrong.text
        assert s.client.get(f"{s.base}/v1/models").status_code == 401
        good = s.client.post(s.chat, json={"messages": USER}, headers={"Authorization": "Bearer s3cret"})
        assert good.status_code == 200
    finally:
        s.close()


def test_api_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("WORKBENCH_SERVE_API_KEY", " k1 ")
    assert resolve_api_key(None) == "k1" and resolve_api_key("k2") == "k2"
    monkeypatch.delenv("WORKBENCH_SERVE_API_KEY")
    assert resolve_api_key(None) is None and resolve_api_key("") is None


# ---- ports and hosts, before the model loads ----
@pytest.mark.parametrize("value", ["70000", "-1", "abc", "", "8000.5", "٨٠٠٠", 65536, True])
def test_bad_ports_are_config_errors(value):
    with pytest.raises(ConfigError, match="a port is an integer from 0 to 65535"):
        parse_port(value)
    assert parse_port("8000") == 8000 and parse_port(0) == 0


@pytest.mark.parametrize("args", [["--port", "70000"], ["--port", "x1"], ["--host", "no-such-host.invalid"]])
def test_serve_cli_bad_port_or_host_is_one_line_before_the_model_loads(args):
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "serve", "--model", "smollm2", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"WORKBENCH_SERVE_API_KEY": ""},
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("workbench: error: --"), (
        proc.stderr
    )
    assert "loaded" not in proc.stderr


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ipv6_host_serves_or_fails_early_with_the_right_hint():
    if not _has_ipv6_loopback():
        with pytest.raises(ConfigError, match="use --host 127.0.0.1"):
            _check_port("::1", 0)
        return
    _check_port("::1", 0)
    server = ModelServer(CountingBackend(), "::1", 0, model_name="m")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert server.url.startswith("http://[::1]:")
        r = httpx.post(f"{server.url}/chat/completions", json={"messages": USER}, timeout=20)
        assert r.status_code == 200
    finally:
        server.shutdown()
        server.server_close()


# ---- fuzz: any body gets a 4xx OpenAI error or a completion, never a traceback or a drop ----
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["m", "other"]) | JSON,
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "system", "assistant", "robot"]) | JSON, "content": JSON}
            )
            | JSON,
            max_size=3,
        )
        | JSON,
        "n": st.integers(-3, 70) | JSON,
        "max_tokens": st.integers(-3, 2_000_000) | JSON,
        "temperature": st.floats(allow_nan=True) | JSON,
        "top_p": st.floats() | JSON,
        "stop": st.lists(st.text(max_size=5), max_size=18) | JSON,
        "seed": st.integers(-(2**65), 2**65) | JSON,
        "logprobs": JSON,
        "stream": JSON,
        "tools": JSON,
    },
)
BODIES = (
    FIELDS.map(lambda d: json.dumps(d).encode())
    | JSON.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
    | st.integers(0, 5000).map(lambda k: b'{"messages": ' + b"[" * k + b"]" * k + b"}")
    | st.integers(0, 3000).map(lambda k: b"[" * k)
)


@settings(max_examples=300, deadline=None)
@given(BODIES)
def test_fuzz_parsing_raises_only_bad_request(raw):
    try:
        request, _ = parse_chat_request(parse_json_body(raw), "m")
    except BadRequest as e:
        assert e.status in (400, 404) and len(str(e)) < 500 and "\n" not in str(e)
    except ValueError as e:  # SamplingParams' own checks, answered 400
        assert len(str(e)) < 500
    else:
        assert request.messages and 1 <= request.sampling.n <= 64


@pytest.fixture(scope="module")
def fuzz_server():
    s = Served(CountingBackend(context=4096))
    yield s
    s.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(BODIES)
def test_fuzz_http_bodies(fuzz_server, raw):
    r = fuzz_server.client.post(fuzz_server.chat, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code in (200, 400, 404), r.text[:300]
    data = r.json()
    if r.status_code == 200:
        assert data["object"] == "chat.completion" and data["choices"]
    else:
        assert set(data["error"]) == {"message", "type", "param", "code"}
    assert fuzz_server.server.batcher.state == "running"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=300))
def test_fuzz_raw_requests_never_kill_the_server(fuzz_server, junk):
    """Arbitrary bytes as a whole request (request line, headers and all)."""
    with socket.create_connection(fuzz_server.addr, timeout=15) as s:
        try:
            s.sendall(junk + b"\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        reply = _read_all(s)
    assert reply == b"" or reply.startswith(b"HTTP/"), reply[:200]
    assert fuzz_server.client.get(f"{fuzz_server.base}/health").status_code == 200


def test_parse_json_body_depth_limit_is_exact():
    ok = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert parse_json_body(ok) is not None
    with pytest.raises(BadRequest, match="nested too deeply"):
        parse_json_body(b"[" + ok + b"]")


@pytest.mark.slow
def test_the_real_models_context_bounds_max_tokens(smollm2):
    """On the embedded model: the context comes from its config, the prompt from its tokenizer."""
    from workbench.models.base import Request, SamplingParams
    from workbench.serve import Batcher, _Job, context_length

    ctx = context_length(smollm2)
    assert ctx == smollm2.model.config.max_position_embeddings and ctx >= 2048
    batcher = Batcher(smollm2)
    try:
        job = _Job(Request(USER, SamplingParams(max_tokens=10**6)))
        batcher._fit(job)
        prompt = len(smollm2.encode_chat(USER))
        assert job.error is None and job.request.sampling.max_tokens == ctx - prompt
        huge = _Job(Request([{"role": "user", "content": "hello " * ctx}], SamplingParams(max_tokens=4)))
        batcher._fit(huge)
        assert huge.status == 400 and f"context is {ctx} tokens" in huge.error
    finally:
        batcher.stop()
