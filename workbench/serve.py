"""`workbench serve`: any workbench model behind an OpenAI-compatible HTTP endpoint.

    workbench serve --model smollm2 --port 8000                     # the embedded model
    workbench serve --model smollm2+runs/leader/adapter --port 8001  # a base model + a trained LoRA
    curl -s 127.0.0.1:8000/v1/chat/completions -d '{"model": "smollm2", "messages": [...]}'

Routes: ``POST /v1/chat/completions`` (messages, temperature, top_p, max_tokens, n, stop, seed,
logprobs; plus vLLM's ``return_token_ids`` extension), ``GET /v1/models``, ``GET /health`` (the
batcher's state: 503 when it is not running) and ``GET /stats`` (the batch sizes the model received).

Batching: each connection is handled on its own thread, at most ``max_connections`` at once. When
full, a new connection evicts the one that has waited longest (over a second) for its request, so
slow and idle clients cannot starve new ones; if none has, it gets an immediate 503 with
``Retry-After`` from the accepting thread. Handler threads never exceed ``max_threads``
(max_connections plus a quarter for evicted ones on their way out): 10,000 connections never make
10,000 threads. A request is validated there and put on a bounded queue (full: 503
with ``Retry-After``). One batcher thread owns the model: it takes everything queued, plus whatever
keeps arriving with gaps under ``batch_wait_ms`` (10 ms; 100 ms at most, so that a burst of
simultaneous requests travels together), fits each request to the model's context (``max_tokens``
clamped so that prompt + max_tokens <= context; a prompt that fills the context is a 400), and sends
the batch to the backend in ONE `generate` call. A request whose client has disconnected while it
waited is dropped before it reaches the model.

Abuse: a request's line, headers and body must all arrive within ``request_timeout_s`` (a watchdog
thread shuts the socket's read side when it is late: slow clients are answered 408 or dropped),
every socket read and write has a ``io_timeout_s`` timeout, bodies are capped (``MAX_BODY_BYTES``,
413) and must be UTF-8 JSON objects nested at most ``MAX_JSON_DEPTH`` deep (400). The ``Host``
header must name this server (the bound host, localhost, 127.0.0.1, [::1], or ``--allow-host``),
which defeats DNS rebinding, and a browser POST from another origin is refused (403). With
``api_key`` every route but ``/health`` needs ``Authorization: Bearer KEY`` (401).

Failures: a failure inside the model gets 500 for the requests concerned (a failed batch is
retried one request at a time, so one bad request cannot fail the others); a failure elsewhere in
the batcher fails every pending request with 500 and the batcher goes on. The server keeps running
either way.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import json
import math
import os
import queue
import reprlib
import select
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from workbench.config import ConfigError
from workbench.models.base import Backend, Generation, Request, SamplingParams

MAX_BODY_BYTES = 4 * 2**20
MAX_JSON_DEPTH = 32  # a chat body needs 5 levels (body, messages, message, content parts, part)
MAX_N = 64
MAX_TOKENS = 1_000_000  # accepted in a request; then clamped to the model's context
MAX_STOPS = 16
MAX_STOP_CHARS = 1000
API_KEY_ENV = "WORKBENCH_SERVE_API_KEY"
EVICT_AFTER_S = 1.0  # a connection still without its full request after this long may be evicted when full
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")
ROLES = ("system", "user", "assistant")
UNSUPPORTED = {  # request fields we refuse rather than silently ignore: name -> the value that is fine
    "stream": False,
    "tools": None,
    "functions": None,
    "response_format": None,
    "logit_bias": None,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "top_logprobs": 0,
}

_repr = reprlib.Repr()
_repr.maxstring, _repr.maxother, _repr.maxlevel, _repr.maxlist, _repr.maxdict = 60, 60, 3, 6, 6


def _show(value: Any) -> str:
    """A short repr of a client's value for an error message (bounded in length and depth)."""
    text = _repr.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class BadRequest(ValueError):
    """A request the server refuses with HTTP 400; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param = param
        self.status = status


class Unavailable(RuntimeError):
    """The server cannot take the request now (503): the queue is full or the batcher is down."""

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after


# ---- request parsing (pure: a JSON body in, a Request out) ----
def _depth_exceeds(obj: Any, limit: int) -> bool:
    """True if ``obj`` nests lists/objects more than ``limit`` deep (iterative: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        children = o.values() if isinstance(o, dict) else o
        if d > limit:
            return True
        stack.extend((c, d + 1) for c in children if isinstance(c, dict | list))
    return False


def parse_json_body(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """UTF-8 JSON bytes -> the value; `BadRequest` for anything else (never another exception).

    ``json.loads`` is linear and, in C, stops deep nesting with RecursionError at ~1000 levels (caught
    here); the parsed value is then checked iteratively against ``max_depth``, so nothing recursive
    ever runs over a deep body.
    """
    if not isinstance(raw, bytes | bytearray):
        raise BadRequest("the body must be bytes")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(
            f"the body is not UTF-8 text ({e.reason} at byte {e.start}); send UTF-8 JSON"
        ) from None
    try:
        body = json.loads(text)
    except RecursionError:
        raise BadRequest(f"the body is nested too deeply (at most {max_depth} levels)") from None
    except ValueError as e:  # JSONDecodeError, and ints longer than Python's digit limit
        raise BadRequest(f"the body is not valid JSON: {str(e)[:200]}") from None
    if isinstance(body, dict | list) and _depth_exceeds(body, max_depth):
        raise BadRequest(f"the body is nested too deeply (at most {max_depth} levels)")
    return body


def _number(body: dict, key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise BadRequest(f"'{key}' must be a number in [{lo}, {hi}], got {_show(value)}", key)
    return float(value)


def _integer(body: dict, key: str, default: int | None, lo: int, hi: int) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"'{key}' must be an integer in [{lo}, {hi}], got {_show(value)}", key)
    return value


def _content(message: Any, i: int) -> dict[str, str]:
    if not isinstance(message, dict):
        raise BadRequest(f"messages[{i}] must be an object with 'role' and 'content'", "messages")
    role, content = message.get("role"), message.get("content")
    if not isinstance(role, str) or role not in ROLES:
        raise BadRequest(
            f"messages[{i}].role must be one of {', '.join(ROLES)}, got {_show(role)}", "messages"
        )
    if isinstance(content, list):  # content parts: only text is supported
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise BadRequest(f"messages[{i}].content: only text parts are supported", "messages")
            texts.append(part["text"])
        content = "".join(texts)
    if not isinstance(content, str):
        raise BadRequest(f"messages[{i}].content must be a string, got {type(content).__name__}", "messages")
    return {"role": role, "content": content}


def parse_chat_request(body: Any, model_name: str) -> tuple[Request, dict[str, Any]]:
    """Validate a ``/v1/chat/completions`` JSON body; return the Request and response options.

    Raises `BadRequest` naming the field (and only that). Fields that would change the result but
    are not implemented (streaming, tools, penalties, top_logprobs > 0) are refused, not ignored.
    """
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model", model_name)
    if model != model_name:
        raise BadRequest(
            f"the model {_show(model)} does not exist; this server serves '{model_name}'", "model", 404
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list of {role, content} objects", "messages")
    for key, fine in UNSUPPORTED.items():
        value = body.get(key)
        if value is not None and (isinstance(value, bool) is not isinstance(fine, bool) or value != fine):
            raise BadRequest(f"'{key}' is not supported by workbench serve (got {_show(value)})", key)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (
        not isinstance(stop, list)
        or not 0 < len(stop) <= MAX_STOPS
        or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stop)
    ):
        raise BadRequest(
            f"'stop' must be a non-empty string or a list of at most {MAX_STOPS} of them "
            f"(each at most {MAX_STOP_CHARS} characters)",
            "stop",
        )
    logprobs = body.get("logprobs", False)
    if not isinstance(logprobs, bool):
        raise BadRequest(f"'logprobs' must be true or false, got {_show(logprobs)}", "logprobs")
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    sampling = SamplingParams(
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 1e-9, 1.0),
        max_tokens=_integer(body, key, 256, 1, MAX_TOKENS),
        n=_integer(body, "n", 1, 1, MAX_N),
        stop=tuple(stop or ()),
        seed=_integer(body, "seed", None, -(2**63), 2**63 - 1),
        logprobs=logprobs,
    )
    options = {"model": model_name, "return_token_ids": body.get("return_token_ids") is True}
    return Request([_content(m, i) for i, m in enumerate(messages)], sampling), options


# ---- the batcher: one thread owns the model ----
@dataclass
class _Job:
    request: Request
    done: threading.Event = field(default_factory=threading.Event)
    result: list[Generation] | None = None
    tokens: list[list[str]] | None = None  # each sample's tokens as text, when log-probs were asked
    error: str | None = None
    status: int = 500  # the HTTP status of ``error``
    prompt_ids: list[int] | None = None  # set when the backend can tokenize (context check)
    cancelled: bool = False  # the client went away: skip it if it has not reached the model

    def fail(self, message: str, status: int = 500) -> None:
        if self.error is None:
            self.error, self.status, self.result = message, status, None


def context_length(backend: Backend) -> int | None:
    """The model's context in tokens, if the backend says: ``context_length``, the HF config's
    ``max_position_embeddings`` or vLLM's ``max_model_len``; else None (no clamping)."""
    n = getattr(backend, "context_length", None)
    if n is None:  # transformers
        config = getattr(getattr(backend, "model", None), "config", None)
        n = getattr(config, "max_position_embeddings", None)
    if n is None:  # vLLM: the engine's max_model_len
        engine = getattr(getattr(backend, "llm", None), "llm_engine", None)
        n = getattr(getattr(engine, "model_config", None), "max_model_len", None)
    return n if isinstance(n, int) and n > 0 else None


class Batcher:
    """Collects requests from many threads and sends them to the backend together.

    ``max_queue`` requests may wait (more: `Unavailable`); ``context`` (default: the backend's)
    bounds prompt + max_tokens when the backend can tokenize (``encode_chat``).
    """

    def __init__(
        self,
        backend: Backend,
        max_batch_size: int = 64,
        batch_wait_ms: float = 10.0,
        log=None,
        max_queue: int = 256,
        context: int | None = None,
    ):
        self.backend = backend
        # spells out log-prob tokens; used only on the batcher thread (HF tokenizers are not thread-safe)
        self.tokenizer = getattr(backend, "tokenizer", None)
        self.encode = getattr(backend, "encode_chat", None)  # also only on the batcher thread
        self.context = context or context_length(backend)
        self.max_samples = 4 * max_batch_size  # per generate call; the backend decodes max_batch_size at once
        self.batch_wait_s = batch_wait_ms / 1000  # the longest gap between requests of one batch
        self.max_wait_s = 10 * self.batch_wait_s  # the longest a request waits for companions
        self.log = log
        self.queue: queue.Queue[_Job] = queue.Queue(maxsize=max_queue)
        self.lock = threading.Lock()
        self.calls = 0
        self.requests = 0
        self.completion_tokens = 0
        self.busy_s = 0.0
        self.failures = 0  # failures outside generate (each failed every pending request)
        self.last_error: str | None = None
        self.cancelled = 0
        self.rejected = 0  # 503: queue full
        self.clamped = 0  # requests whose max_tokens was cut to fit the context
        self.batch_sizes: deque[int] = deque(maxlen=10_000)  # requests per generate call, latest last
        self._walls: deque[float] = deque(maxlen=20)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="serve-batcher", daemon=True)
        self.thread.start()

    @property
    def state(self) -> str:
        """``running``, ``stopped`` (by `stop`) or ``dead`` (the thread ended by itself)."""
        if self.thread.is_alive() and not self._stop.is_set():
            return "running"
        return "stopped" if self._stop.is_set() else "dead"

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about one generate call, 1 to 30."""
        with self.lock:
            walls = list(self._walls)
        return max(1, min(30, math.ceil(sum(walls) / len(walls)) if walls else 1))

    def submit_job(self, request: Request, gone: Callable[[], bool] | None = None) -> _Job | None:
        """Queue ``request`` and wait for it: the finished job (check ``error``), or None if
        ``gone()`` turned true while it waited (the job is cancelled). Raises `Unavailable` when the
        queue is full or the batcher is not running."""
        if self.state != "running":
            raise Unavailable(f"the model worker is {self.state} ({self.last_error or 'no error recorded'})")
        job = _Job(request)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            with self.lock:
                self.rejected += 1
            raise Unavailable(
                f"the server is busy ({self.queue.maxsize} requests queued); retry later",
                self.retry_after(),
            ) from None
        while not job.done.wait(0.25):
            if self.state != "running":
                job.fail(f"the model worker is {self.state} ({self.last_error or 'no error recorded'})", 503)
                break
            if gone is not None and gone():
                job.cancelled = True
                return None
        return job

    def submit(self, request: Request) -> tuple[list[Generation], list[list[str]] | None]:
        """Blocks until the request is done: (generations, their tokens as text when log-probs were asked).

        Raises RuntimeError with the model's error if generation failed.
        """
        job = self.submit_job(request)
        if job.error is not None:
            raise RuntimeError(job.error)
        return job.result, job.tokens

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=30)
        self._fail_queued("the server is stopping", 503)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            sizes = list(self.batch_sizes)
            return {
                "state": self.state,
                "calls": self.calls,
                "requests": self.requests,
                "completion_tokens": self.completion_tokens,
                "busy_s": round(self.busy_s, 3),
                "max_batch_size": max(sizes, default=0),
                "mean_batch_size": round(sum(sizes) / len(sizes), 2) if sizes else 0.0,
                "batch_sizes": sizes[-1000:],
                "queued": self.queue.qsize(),
                "max_queue": self.queue.maxsize,
                "context": self.context,
                "clamped": self.clamped,
                "cancelled": self.cancelled,
                "rejected_busy": self.rejected,
                "failures": self.failures,
                "last_error": self.last_error,
            }

    def _fail_queued(self, message: str, status: int) -> int:
        n = 0
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return n
            job.fail(message, status)
            job.done.set()
            n += 1

    def _collect(self, jobs: list[_Job]) -> None:
        """Append to ``jobs`` (one job) every job that follows with gaps under ``batch_wait_s`` (for
        at most ``max_wait_s`` in all): a burst of simultaneous requests, which a client sends one by
        one, travels as one batch; a lone request waits only one gap."""
        samples = jobs[0].request.sampling.n
        deadline = time.perf_counter() + self.max_wait_s
        while samples < self.max_samples:
            timeout = min(self.batch_wait_s, deadline - time.perf_counter())
            if timeout <= 0:
                break
            try:
                job = self.queue.get(timeout=timeout)
            except queue.Empty:
                break
            jobs.append(job)
            samples += job.request.sampling.n

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            jobs = [first]
            try:
                self._collect(jobs)
                self._process(jobs)
            except Exception as e:  # noqa: BLE001 - outside generate: fail what is pending, keep serving
                message = f"the batcher failed outside the model ({type(e).__name__}: {str(e)[:300]})"
                with self.lock:
                    self.failures += 1
                    self.last_error = message
                for j in jobs:
                    j.fail(message)
                n = self._fail_queued(message, 500)
                if self.log is not None:
                    self.log(f"{message}; failed {len(jobs) + n} pending requests, still serving")
            finally:
                for j in jobs:
                    j.done.set()

    def _fit(self, job: _Job) -> None:
        """Check the prompt against the context and clamp max_tokens (prompt + max_tokens <= context)."""
        if self.context is None:
            return
        s = job.request.sampling
        limit = self.context
        if self.encode is not None:
            try:
                job.prompt_ids = list(self.encode(job.request.messages))
            except Exception as e:  # noqa: BLE001 - a prompt the tokenizer refuses is the client's
                return job.fail(f"the messages cannot be tokenized ({type(e).__name__}: {str(e)[:200]})", 400)
            limit = self.context - len(job.prompt_ids)
            if limit < 1:
                return job.fail(
                    f"the prompt is {len(job.prompt_ids)} tokens but the model's context is {self.context} "
                    f"tokens (prompt + max_tokens must fit): shorten the messages",
                    400,
                )
        if s.max_tokens > limit:
            job.request = dataclasses.replace(job.request, sampling=dataclasses.replace(s, max_tokens=limit))
            with self.lock:
                self.clamped += 1

    def _process(self, jobs: list[_Job]) -> None:
        ready = []
        for j in jobs:
            if j.cancelled:
                j.fail("the client disconnected", 499)
                with self.lock:
                    self.cancelled += 1
                continue
            self._fit(j)
            if j.error is None:
                ready.append(j)
        if not ready:
            return
        t0 = time.perf_counter()
        self._generate(ready)
        wall = time.perf_counter() - t0
        tokens = sum(int(g.completion_tokens) for j in ready for g in j.result or [])
        with self.lock:
            self.calls += 1
            self.requests += len(ready)
            self.completion_tokens += tokens
            self.busy_s += wall
            self.batch_sizes.append(len(ready))
            self._walls.append(wall)
        if self.log is not None:
            samples = sum(j.request.sampling.n for j in ready)
            self.log(f"batch of {len(ready)} requests ({samples} samples): {tokens} tokens in {wall:.2f}s")

    def _call(self, jobs: list[_Job]) -> list[Generation]:
        from_ids = getattr(self.backend, "generate_from_ids", None)
        if from_ids is not None and all(j.prompt_ids is not None for j in jobs):
            gens = from_ids([(j.prompt_ids, j.request.sampling) for j in jobs])  # tokenized once, in _fit
        else:
            gens = self.backend.generate([j.request for j in jobs])
        expected = sum(j.request.sampling.n for j in jobs)
        if not isinstance(gens, list) or len(gens) != expected:
            got = len(gens) if isinstance(gens, list) else type(gens).__name__
            raise RuntimeError(f"the backend returned {got} generations for {expected} samples")
        return gens

    def _generate(self, jobs: list[_Job]) -> None:
        """One generate call for all jobs; if it fails, each job alone, so only the bad one fails."""
        try:
            gens = self._call(jobs)
        except Exception as e:  # noqa: BLE001 - a model failure must not kill the server
            if len(jobs) == 1:
                jobs[0].fail(f"{type(e).__name__}: {str(e)[:500]}")
                return
            for j in jobs:
                self._generate([j])
            return
        i = 0
        for j in jobs:
            k = j.request.sampling.n
            j.result, i = gens[i : i + k], i + k
            if j.request.sampling.logprobs:
                decode = self.tokenizer.decode if self.tokenizer is not None else (lambda ids: "")
                j.tokens = [[decode([t]) for t in g.token_ids] for g in j.result]


# ---- HTTP ----
def _completion_json(
    gens: list[Generation], tokens: list[list[str]] | None, options: dict[str, Any]
) -> dict[str, Any]:
    """The OpenAI ``chat.completion`` object for one request's generations."""
    choices = []
    for i, g in enumerate(gens):
        logprobs = None
        if g.logprobs is not None:
            texts = (tokens[i] if tokens else []) + [""] * max(0, len(g.logprobs) - len(g.token_ids))
            logprobs = {
                "content": [
                    {"token": tok, "logprob": lp, "bytes": list(tok.encode()), "top_logprobs": []}
                    for tok, lp in zip(texts, g.logprobs, strict=False)
                ]
            }
        choice: dict[str, Any] = {
            "index": i,
            "message": {"role": "assistant", "content": g.text},
            "logprobs": logprobs,
            "finish_reason": g.finish_reason,
        }
        if options["return_token_ids"]:
            choice["token_ids"] = g.token_ids
        choices.append(choice)
    prompt_tokens = gens[0].prompt_tokens if gens else 0
    completion_tokens = sum(g.completion_tokens for g in gens)
    out: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": options["model"],
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    if options["return_token_ids"]:
        out["prompt_token_ids"] = gens[0].prompt_ids if gens else None
    return out


class _Watchdog:
    """One thread for every deadline: a socket still reading its request when its deadline passes
    gets its read side shut (the blocked read returns at once); a refused socket lingers open a
    moment so that the client reads its 503 before the close."""

    MAX_LINGERING = 1024

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deadlines: dict[int, tuple[float, socket.socket, float]] = {}  # deadline, socket, armed at
        self.expired: set[int] = set()
        self.lingering: deque[tuple[float, socket.socket]] = deque()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="serve-watchdog", daemon=True)
        self.thread.start()

    def arm(self, sock: socket.socket, seconds: float) -> None:
        with self.lock:
            now = time.monotonic()
            self.deadlines[id(sock)] = (now + seconds, sock, now)
            self.expired.discard(id(sock))

    def disarm(self, sock: socket.socket) -> bool:
        """Stop watching ``sock``; True if its deadline had already passed."""
        with self.lock:
            self.deadlines.pop(id(sock), None)
            return id(sock) in self.expired

    def evict_oldest(self, min_age_s: float) -> bool:
        """Cut off the connection that has waited longest (at least ``min_age_s``) for its request:
        a slow or idle client gives way to a new one. False if none is that old."""
        now = time.monotonic()
        with self.lock:
            oldest = min(
                ((armed, k, s) for k, (_, s, armed) in self.deadlines.items() if now - armed >= min_age_s),
                default=None,
                key=lambda x: x[0],
            )
            if oldest is None:
                return False
            _, k, sock = oldest
            del self.deadlines[k]
            self.expired.add(k)
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass
        return True

    def is_expired(self, sock: socket.socket) -> bool:
        with self.lock:
            return id(sock) in self.expired

    def forget(self, sock: socket.socket) -> None:
        with self.lock:
            self.deadlines.pop(id(sock), None)
            self.expired.discard(id(sock))

    def linger(self, sock: socket.socket, seconds: float) -> None:
        with self.lock:
            if len(self.lingering) < self.MAX_LINGERING:
                self.lingering.append((time.monotonic() + seconds, sock))
                return
        _close(sock)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        with self.lock:
            while self.lingering:
                _close(self.lingering.popleft()[1])

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            now = time.monotonic()
            with self.lock:
                late = [(k, s) for k, (t, s, _) in self.deadlines.items() if t <= now]
                for k, _ in late:
                    del self.deadlines[k]
                    self.expired.add(k)
                done = []
                while self.lingering and self.lingering[0][0] <= now:
                    done.append(self.lingering.popleft()[1])
                drain = [s for _, s in self.lingering]
            for _, s in late:
                try:
                    s.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
            for s in drain:  # read what a refused client still sends: closing on unread data resets
                try:  # a bounded read per tick: a client that keeps sending cannot hold this thread
                    for _ in range(4):
                        if not s.recv(65536):
                            break
                except OSError:
                    pass
            for s in done:
                _close(s)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


def _host_name(value: str) -> str | None:
    """The host of a ``Host`` header or URL netloc, lower-case, without port, brackets or final dot."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1 :] and not value[end + 1 :].startswith(":")):
            return None
        return value[1:end]
    name, sep, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    if sep and not port.isdigit():
        return None
    return name.rstrip(".") or None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class _Handler(BaseHTTPRequestHandler):
    server: ModelServer
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    server_version = "workbench-serve"
    disable_nagle_algorithm = True  # headers and body leave at once (no 40 ms delayed-ACK stall)

    def setup(self) -> None:
        self.timeout = self.server.io_timeout_s  # every socket read and write (StreamRequestHandler)
        super().setup()

    def finish(self) -> None:
        self.server.watchdog.forget(self.connection)
        super().finish()

    def handle_one_request(self) -> None:
        # the request line, headers and body must all arrive within request_timeout_s (idle keep-alive too)
        self.server.watchdog.arm(self.connection, self.server.request_timeout_s)
        try:
            super().handle_one_request()
        except (TimeoutError, ConnectionError):  # a slow or vanished client: drop the connection
            self.close_connection = True
        finally:
            self.server.watchdog.disarm(self.connection)

    def parse_request(self) -> bool:
        ok = super().parse_request()  # reads the headers
        if ok and self.server.watchdog.is_expired(self.connection):  # cut short by the watchdog
            self.close_connection = True
            self._error(408, f"the request did not arrive within {self.server.request_timeout_s:g} s")
            return False
        return ok

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's errors (bad request line, huge headers, 501) as JSON, always HTTP/1.1."""
        self.request_version = "HTTP/1.1"  # never an HTTP/0.9 answer (no status line)
        self.close_connection = True
        short = self.responses.get(code, ("error", ""))[0]
        self._error(code, (message or short)[:200])

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        if self.server.active >= self.server.max_connections:  # full: free the slot, let others in
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _error(
        self, status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
        self._send(status, body, headers)

    # ---- who may ask ----
    def _guard(self, path: str) -> bool:
        """Host (DNS rebinding), Origin (cross-site browser requests) and the API key; False if refused."""
        srv = self.server
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1:
            self.close_connection = True
            self._error(400, "more than one Host header")
            return False
        if hosts and not srv.host_allowed(hosts[0]):
            self.close_connection = True
            self._error(
                403,
                f"Host {_show(hosts[0][:100])} is not this server's; start workbench serve with "
                f"--allow-host NAME to accept it",
            )
            return False
        origin = self.headers.get("Origin")
        site = (self.headers.get("Sec-Fetch-Site") or "").lower()
        if origin is not None or site in ("cross-site", "same-site"):
            if not srv.origin_allowed(origin, hosts[0] if hosts else None):
                self.close_connection = True
                self._error(
                    403,
                    f"cross-origin requests are refused (Origin {_show((origin or '')[:100])}); "
                    f"allow a web page's host with --allow-host NAME",
                )
                return False
        if srv.api_key and path not in ("/health", "/v1/health"):
            given = self.headers.get("Authorization") or ""
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode("utf-8", "replace"), srv.api_key.encode()
            ):
                self._error(
                    401,
                    "a valid API key is required: send 'Authorization: Bearer KEY'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                return False
        return True

    def _client_gone(self) -> bool:
        """True if the client closed its side (checked without reading: a pipelined request stays)."""
        sock = self.connection
        try:
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
            if not poller.poll(0):
                return False
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        path = self.path.split("?")[0].rstrip("/")
        self.server.watchdog.disarm(self.connection)
        if (
            self.headers.get("Transfer-Encoding") is not None
            or (self.headers.get("Content-Length") or "0").strip() != "0"
        ):
            self.close_connection = True  # a GET with a body: never read it as the next request
        if not self._guard(path):
            return
        if path in ("/health", "/v1/health"):
            batcher = self.server.batcher
            state = batcher.state
            payload = {
                "status": "ok" if state == "running" else "error",
                "batcher": state,
                "model": self.server.model_name,
                "queued": batcher.queue.qsize(),
                "failures": batcher.failures,
                "last_error": batcher.last_error,
            }
            self._send(200 if state == "running" else 503, payload)
        elif path == "/v1/models":
            model = {
                "id": self.server.model_name,
                "object": "model",
                "created": self.server.started,
                "owned_by": "workbench",
            }
            self._send(200, {"object": "list", "data": [model]})
        elif path in ("/stats", "/v1/stats"):
            self._send(200, self.server.batcher.stats() | self.server.connection_stats())
        else:
            self._error(404, f"no route GET {_show(path[:200])}; try /v1/models, /health or /stats")

    def _read_body(self) -> bytes | None:
        """The body, or None after answering (or dropping) a request whose body is refused."""
        lengths = self.headers.get_all("Content-Length") or []
        keep_alive = not self.close_connection  # as the client asked (Connection: close or not)
        self.close_connection = True  # until the body is read in full, the stream cannot be trusted
        if self.headers.get("Transfer-Encoding") is not None:
            self._error(411, "chunked or encoded bodies are not supported; send a Content-Length")
            return None
        if len(set(lengths)) != 1:
            self._error(411, "exactly one Content-Length header is required")
            return None
        value = lengths[0].strip()
        if not value.isascii() or not value.isdigit():
            self._error(400, f"Content-Length must be a non-negative integer, got {_show(value[:40])}")
            return None
        length, cap = int(value), self.server.max_body_bytes
        if length > cap:
            self._error(413, f"the body must be at most {cap} bytes, got Content-Length {length}")
            return None
        try:
            raw = self.rfile.read(length)
        except (TimeoutError, ConnectionError, OSError):
            return None
        late = self.server.watchdog.disarm(self.connection)
        if len(raw) < length:
            if late:
                self._error(408, f"the request did not arrive within {self.server.request_timeout_s:g} s")
            return None
        self.close_connection = not keep_alive
        return raw

    def do_POST(self) -> None:  # noqa: N802 - the base class's name
        path = self.path.split("?")[0].rstrip("/")
        keep_alive = not self.close_connection
        # a refusal leaves the body unread, so its answer must say Connection: close (set after
        # the answer, a client could reuse the connection and meet the server closing it)
        self.close_connection = True
        if not self._guard(path):
            return
        self.close_connection = not keep_alive
        raw = self._read_body()
        if raw is None:
            return
        if path != "/v1/chat/completions":
            return self._error(404, f"no route POST {_show(path[:200])}; use /v1/chat/completions")
        try:
            request, options = parse_chat_request(parse_json_body(raw), self.server.model_name)
        except BadRequest as e:
            return self._error(e.status, str(e), e.param)
        except ValueError as e:  # SamplingParams' own checks
            return self._error(400, str(e)[:300])
        try:
            job = self.server.batcher.submit_job(request, gone=self._client_gone)
        except Unavailable as e:
            retry = e.retry_after or 5
            return self._error(503, str(e), headers={"Retry-After": str(retry)})
        if job is None:  # the client disconnected while it waited
            self.close_connection = True
            return
        if job.error is not None:
            message = job.error if job.status < 500 else f"generation failed: {job.error}"
            return self._error(job.status, message)
        try:
            payload = _completion_json(job.result, job.tokens, options)
        except Exception as e:  # noqa: BLE001 - a malformed generation is the server's fault, not a crash
            return self._error(500, f"generation failed: cannot encode the result ({type(e).__name__})")
        self._send(200, payload)


class ModelServer(ThreadingHTTPServer):
    """A threading HTTP server, at most ``max_connections`` connections at once, that owns a
    `Batcher` over one backend (see the module docstring for the limits)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # listen backlog: a burst of new connections must not be dropped (default 5)

    def __init__(
        self,
        backend: Backend,
        host: str = "127.0.0.1",
        port: int = 8000,
        model_name: str | None = None,
        max_batch_size: int = 64,
        batch_wait_ms: float = 10.0,
        verbose: bool = False,
        log=None,
        *,
        max_connections: int = 512,
        max_queue: int = 256,
        request_timeout_s: float = 10.0,
        io_timeout_s: float = 10.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        allow_hosts: tuple[str, ...] | list[str] = (),
        api_key: str | None = None,
        context: int | None = None,
    ):
        for name, value in (
            ("max_connections", max_connections),
            ("max_queue", max_queue),
            ("request_timeout_s", request_timeout_s),
            ("io_timeout_s", io_timeout_s),
            ("max_body_bytes", max_body_bytes),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        self.model_name = model_name or backend.name
        self.verbose = verbose
        self.started = int(time.time())
        self.max_connections = int(max_connections)
        self.max_threads = self.max_connections + max(4, self.max_connections // 4)  # evicted ones, exiting
        self.evicted = 0
        self.request_timeout_s = float(request_timeout_s)
        self.io_timeout_s = float(io_timeout_s)
        self.max_body_bytes = int(max_body_bytes)
        self.api_key = api_key or None
        self.bind_host = host
        extra = {h for h in (_host_name(a) for a in allow_hosts) if h}  # "*" stays "*": any host
        self.explicit_hosts = frozenset(extra)
        named = _host_name(host) if host not in WILDCARDS else None
        self.allowed_hosts = frozenset(set(LOCAL_NAMES) | extra | ({named} if named else set()))
        self.wildcard = host in WILDCARDS
        self.batcher: Batcher | None = None
        self.watchdog: _Watchdog | None = None
        self._conn_lock = threading.Lock()
        self.active = 0
        self.peak_active = 0
        self.refused = 0
        self.address_family = address_family(host)
        super().__init__((host, port), _Handler)  # binds: raises OSError if the port is taken
        self.watchdog = _Watchdog()
        self.batcher = Batcher(
            backend,
            max_batch_size=max_batch_size,
            batch_wait_ms=batch_wait_ms,
            log=log,
            max_queue=int(max_queue),
            context=context,
        )

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"

    # ---- who may connect ----
    def host_allowed(self, header: str) -> bool:
        name = _host_name(header)
        if name is None:
            return False
        if "*" in self.explicit_hosts or name in self.allowed_hosts:
            return True
        return self.wildcard and _is_ip(name)  # bound to every address: an IP literal cannot be rebound

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """Same origin (the Origin's host:port is the Host header) or a host given with --allow-host."""
        if not origin or origin.strip().lower() == "null":
            return "*" in self.explicit_hosts
        parts = urlsplit(origin.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        if host is not None and parts.netloc.lower() == host.strip().lower():
            return True
        name = _host_name(parts.netloc)
        return "*" in self.explicit_hosts or (name is not None and name in self.explicit_hosts)

    def connection_stats(self) -> dict[str, int]:
        with self._conn_lock:
            return {
                "connections": self.active,
                "peak_connections": self.peak_active,
                "max_connections": self.max_connections,
                "refused_connections": self.refused,
                "evicted_connections": self.evicted,
                "max_threads": self.max_threads,
            }

    # ---- at most max_connections handler threads ----
    def process_request(self, request, client_address) -> None:
        with self._conn_lock:
            active = self.active
        # full: the connection that has waited longest (>= 1 s) for its request gives way to this one
        # (slowloris and idle keep-alives cannot starve new clients); threads stay <= max_threads
        full = active >= self.max_connections and not (
            active < self.max_threads and self.watchdog.evict_oldest(EVICT_AFTER_S)
        )
        with self._conn_lock:
            full = full or self.active >= self.max_threads
            if full:
                self.refused += 1
            else:
                self.active += 1
                self.peak_active = max(self.peak_active, self.active)
                if active >= self.max_connections:
                    self.evicted += 1
        if full:
            return self._refuse(request)
        try:
            threading.Thread(
                target=self.process_request_thread, args=(request, client_address), daemon=True
            ).start()
        except RuntimeError:  # no thread to be had: refuse like a full server
            with self._conn_lock:
                self.active -= 1
            self._refuse(request)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conn_lock:
                self.active -= 1

    def _refuse(self, sock: socket.socket) -> None:
        """503 + Retry-After from the accepting thread, without blocking it; closed a second later."""
        body = json.dumps(
            {
                "error": {
                    "message": f"the server has {self.max_connections} connections open; retry later",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
        ).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        ).encode()
        try:
            sock.setblocking(False)
            sock.send(head + body)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.watchdog.linger(sock, 1.0)

    def handle_error(self, request, client_address) -> None:
        """One line, not a traceback, for a connection that failed (a client that vanished mid-reply)."""
        e = sys.exc_info()[1]
        if self.verbose:
            print(
                f"[serve] connection from {client_address[0]} failed: {type(e).__name__}: {e}",
                file=sys.stderr,
            )

    def server_close(self) -> None:
        super().server_close()
        if self.batcher is not None:
            self.batcher.stop()
        if self.watchdog is not None:
            self.watchdog.stop()


# ---- the CLI's checks, all before the model loads ----
def parse_port(value: Any) -> int:
    """A ``--port`` value -> int in 0..65535, else `ConfigError` with the fix."""
    text = str(value).strip()
    if not (isinstance(value, int) and not isinstance(value, bool)) and not (
        text.isascii() and text.isdigit()
    ):
        raise ConfigError(f"--port {_show(value)}: a port is an integer from 0 to 65535 (0 picks a free one)")
    port = int(text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: a port is an integer from 0 to 65535 (0 picks a free one)")
    return port


def address_family(host: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 address (or a name that resolves only to one), else AF_INET."""
    if host in WILDCARDS:
        return socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(
            f"--host {host}: cannot resolve it ({e}); pass an address of this machine, e.g. 127.0.0.1 or ::1"
        ) from None
    families = [info[0] for info in infos]
    return socket.AF_INET if socket.AF_INET in families else socket.AF_INET6


def _port_message(host: str, port: int, e: OSError) -> str:
    hint = "pick another --port or --host"
    if ":" in host and e.errno in (97, 99):  # EAFNOSUPPORT, EADDRNOTAVAIL: no IPv6 here
        hint = "this machine has no such IPv6 address (IPv6 off?); use --host 127.0.0.1"
    elif e.errno == 99:
        hint = "that address is not one of this machine's; use --host 127.0.0.1 or 0.0.0.0"
    elif e.errno == 13:
        hint = "ports below 1024 need root; pick --port 8000 or above"
    return f"cannot listen on {host}:{port} ({e.strerror or e}); {hint}"


def _check_port(host: str, port: int) -> None:
    """Raise ConfigError now if ``host:port`` cannot be bound (taken, or not an address of this machine)."""
    family = address_family(host)
    try:
        with socket.socket(family) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
            s.bind((host, port))
    except OSError as e:
        raise ConfigError(_port_message(host, port, e)) from None
    except OverflowError:
        raise ConfigError(
            f"--port {port}: a port is an integer from 0 to 65535 (0 picks a free one)"
        ) from None


def resolve_api_key(api_key: str | None) -> str | None:
    """``--api-key``, else $WORKBENCH_SERVE_API_KEY; empty or unset = no key."""
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV, "")
    return api_key.strip() or None


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int | str = 8000,
    max_batch_size: int = 64,
    dtype: str = "auto",
    device: str = "auto",
    served_model_name: str = "",
    batch_wait_ms: float = 10.0,
    verbose: bool = False,
    *,
    max_connections: int = 512,
    max_queue: int = 256,
    request_timeout_s: float = 10.0,
    allow_hosts: tuple[str, ...] | list[str] = (),
    api_key: str | None = None,
) -> int:
    """Load ``model`` and serve it until Ctrl-C / SIGTERM (the path behind `workbench serve`).

    ``api_key`` None reads $WORKBENCH_SERVE_API_KEY (unset or empty: no key). Every check that a
    user can fail (port, host, limits) runs before the model loads.
    """
    from workbench.models import load_backend

    def log(msg: str) -> None:
        print(f"[serve] {msg}", file=sys.stderr, flush=True)

    port = parse_port(port)
    for name, value in (
        ("--max-batch-size", max_batch_size),
        ("--max-connections", max_connections),
        ("--max-queue", max_queue),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {_show(value)}")
    if not isinstance(request_timeout_s, int | float) or not 0 < request_timeout_s <= 3600:
        raise ConfigError(f"--request-timeout must be seconds in (0, 3600], got {_show(request_timeout_s)}")
    api_key = resolve_api_key(api_key)
    _check_port(host, port)  # before the model loads: a taken port fails in a second, not after the load
    t0 = time.perf_counter()
    backend = load_backend(model, dtype=dtype, device=device, max_batch_size=max_batch_size)
    log(f"loaded {model} in {time.perf_counter() - t0:.1f}s")
    try:
        server = ModelServer(
            backend,
            host,
            port,
            model_name=served_model_name or model,
            max_batch_size=max_batch_size,
            batch_wait_ms=batch_wait_ms,
            verbose=verbose,
            log=log,
            max_connections=max_connections,
            max_queue=max_queue,
            request_timeout_s=request_timeout_s,
            allow_hosts=tuple(allow_hosts),
            api_key=api_key,
        )
    except OSError as e:  # taken since the check
        raise ConfigError(_port_message(host, port, e)) from None
    local = host in LOCAL_NAMES or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)
    if not local and api_key is None:
        log(
            f"WARNING: listening on {host} without an API key: anyone who can reach this port can use "
            f"the model (set --api-key or ${API_KEY_ENV})"
        )
    log(
        f"serving '{server.model_name}' at {server.url} (POST /chat/completions, GET /models; /health, /stats)"
        f"{'; API key required' if api_key else ''}"
    )

    def stop(signum, frame) -> None:  # SIGTERM: stop like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log("stopping")
    finally:
        server.server_close()
    return 0
