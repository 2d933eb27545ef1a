"""A backend for any server that speaks the OpenAI chat API (`POST {base}/chat/completions`).

    backend = load_backend("openai:http://127.0.0.1:8000/v1#smollm2")      # workbench serve, vLLM serve
    backend = load_backend("openai:https://api.openai.com/v1#gpt-4o-mini")  # reads $OPENAI_API_KEY

The `Backend` interface is synchronous; inside, every sample is one HTTP request and all of a
batch's requests are in flight together (at most ``max_concurrency`` at once) on an event loop
that this backend runs in its own thread, so `generate` works the same from plain code, from the
scheduler's event loop and from Jupyter.

How it departs from the obvious client:
- A request with ``sampling.n = k`` becomes k requests with ``n = 1`` and seeds ``seed + j``, the
  contract of `SamplingParams.seed`. Many servers (llama.cpp) ignore ``n``, and per-sample seeds
  make a served model's samples equal the in-process backend's. Hosted APIs bill the prompt k times.
- 429, 5xx, timeouts and connection errors are retried with exponential backoff and jitter, or
  after the server's ``Retry-After``. A request that still fails, or gets an answer we cannot
  parse, is returned as a `Generation` with ``finish_reason="error"`` and the message in
  ``error``: one bad request never loses the rest of the batch, and the episode counts it.
- The API key is read from the environment variable *named* in the config and lives only in the
  HTTP client's headers: never in the backend's repr, its name, a generation or a run file.
- Where keys go: the default variable ($OPENAI_API_KEY) is sent only to the host it belongs to
  (``api.openai.com``); any other host gets a key only from a variable named for it
  (``api_key_env``). No credential (a key, or ``user:pass@`` in the URL) is ever sent over plain
  http to a host that is not loopback: that is refused at load, with the fix. Redirects are not
  followed (a 3xx is an error), so a key never travels on to another host.
- URLs are shown (name, repr, errors) without ``user:pass@`` and with query values hidden
  (`workbench.redact`).
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import os
import random
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from workbench.models.base import Generation, Request
from workbench.models.loading import ModelLoadError
from workbench.redact import redact_text, redact_url

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_KEY_HOSTS = ("api.openai.com",)  # the only hosts the default variable's key is sent to
NO_KEY = "none"  # api_key_env value for remote servers that need no key
SPEC_HELP = "openai:URL#MODEL, e.g. openai:http://127.0.0.1:8000/v1#smollm2"


def parse_openai_spec(spec: str) -> tuple[str, str]:
    """``openai:URL#MODEL`` -> (base URL without a trailing ``/chat/completions``, model name)."""
    body = spec.removeprefix("openai:")
    url, sep, model = body.rpartition("#")
    shown = redact_text(spec)
    if not sep or not url.strip() or not model.strip():
        raise ModelLoadError(f"model spec '{shown}' has no model name; write it as {SPEC_HELP}")
    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:
        raise ModelLoadError(f"model spec '{shown}': {e}; write it as {SPEC_HELP}") from None
    path = parts.path.rstrip("/").removesuffix("/chat/completions")
    url = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ModelLoadError(
            f"'{redact_url(url)}' in model spec '{shown}' is not an http(s) URL; write it as {SPEC_HELP}"
        )
    return url, model.strip()


def _host(url: str) -> str:
    """The host httpx will connect to (its parser decides, so the check and the request agree)."""
    try:
        return httpx.URL(url).host.lower()
    except (httpx.InvalidURL, ValueError, TypeError):
        return ""


def _is_local(url: str) -> bool:
    """A loopback destination: localhost, 127.0.0.0/8, ::1 (and 0.0.0.0, which reaches this machine)."""
    host = _host(url)
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _route(base_url: str, route: str) -> str:
    """``{base}/{route}``, keeping the base's query string (e.g. ``?api-version=``) at the end."""
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, f"{parts.path.rstrip('/')}/{route}", parts.query, ""))


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible server, many requests in flight at once.

    base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended).
    model: the server's name for the model (the ``model`` field of every request).
    api_key_env: NAME of the environment variable holding the key; "" = ``OPENAI_API_KEY`` for
        api.openai.com and no key for any other host; ``"none"`` = never send a key.
    timeout_s: per HTTP request (connect + response); a timed-out request is retried.
    max_concurrency: requests in flight at once (a server's batch or a provider's rate limit).
    max_retries: retries after the first attempt, on 429, 5xx, timeouts and connection errors.
    backoff_s, max_backoff_s: retry k waits backoff_s * 2**k (capped), times a jitter in [0.5, 1];
        a ``Retry-After`` header from the server replaces that wait (capped at max_retry_after_s).
    return_token_ids: ask for prompt and completion token ids (a vLLM and `workbench serve`
        extension, for training rollouts; hosted APIs reject it).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "",
        timeout_s: float = 120.0,
        max_concurrency: int = 32,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_retry_after_s: float = 120.0,
        return_token_ids: bool = False,
        name: str | None = None,
    ):
        if max_concurrency < 1:
            raise ModelLoadError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ModelLoadError(f"max_retries must be >= 0, got {max_retries}")
        if timeout_s <= 0:
            raise ModelLoadError(f"timeout_s must be > 0, got {timeout_s}")
        self.base_url = base_url.rstrip("/")
        self.shown_url = redact_url(self.base_url)  # what names, reprs and errors show
        self.model = model
        self.name = redact_text(name) if name else f"openai:{self.shown_url}#{model}"
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.return_token_ids = return_token_ids
        self.api_key_env = self._key_env(api_key_env)
        self._headers = {"Content-Type": "application/json"}
        parts = urlsplit(self.base_url)
        # $HTTP_PROXY & co. are not used for a plain-http request that carries a credential (it only
        # ever goes to this machine): a proxy elsewhere would read the key
        credential = bool(self.api_key_env or parts.username or parts.password)
        self._trust_env = parts.scheme == "https" or not credential
        if (self.api_key_env or parts.username or parts.password) and parts.scheme != "https":
            if not _is_local(self.base_url):
                what = (
                    f"the key from ${self.api_key_env}"
                    if self.api_key_env
                    else "the user:password in the URL"
                )
                raise ModelLoadError(
                    f"{self.shown_url}: refusing to send {what} over plain http to a host that is not this "
                    f"machine; use https://, or model.api_key_env={NO_KEY} (and no user:password@) for a "
                    f"server that needs no key"
                )
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ModelLoadError(
                    f"{self.shown_url} needs an API key, but the environment variable {self.api_key_env} "
                    f"is not set; export {self.api_key_env}=... (or set model.api_key_env to the name of the "
                    f"variable that holds it; model.api_key_env={NO_KEY} for a server without keys)"
                )
            self._headers["Authorization"] = f"Bearer {key}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self._lock = threading.Lock()

    def _key_env(self, api_key_env: str) -> str | None:
        if api_key_env.lower() == NO_KEY:
            return None
        if api_key_env:
            return api_key_env
        return DEFAULT_KEY_ENV if _host(self.base_url) in DEFAULT_KEY_HOSTS else None

    def __repr__(self) -> str:  # never the key, only the name of its variable
        return f"OpenAIBackend(base_url={self.shown_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    # ---- load-time check ----
    def check(self) -> None:
        """Fail early, with the fix, if the server is unreachable, refuses the key or lacks the model.

        Uses ``GET {base}/models``; servers without that route (404, non-JSON) pass unchecked.
        """
        try:
            with httpx.Client(timeout=min(self.timeout_s, 15.0), trust_env=self._trust_env) as client:
                resp = client.get(_route(self.base_url, "models"), headers=self._headers)
        except httpx.HTTPError as e:
            raise ModelLoadError(
                f"cannot reach {self.shown_url} ({type(e).__name__}: {self._scrub(str(e))}); start the server "
                f"(e.g. workbench serve --model smollm2 --port 8000) or fix the URL in --model {SPEC_HELP}"
            ) from None
        if resp.status_code in (401, 403):
            raise ModelLoadError(f"{self.shown_url}: {self._auth_message(resp.status_code)}")
        if resp.status_code != 200:
            return
        try:
            served = [m["id"] for m in resp.json()["data"]]
        except (ValueError, KeyError, TypeError):
            return
        if served and self.model not in served:
            shown = ", ".join(served[:10]) + (" ..." if len(served) > 10 else "")
            raise ModelLoadError(
                f"{self.shown_url} does not serve a model named '{self.model}'; it serves: {shown} "
                f"(use --model openai:{self.shown_url}#{served[0]})"
            )

    def _scrub(self, text: str) -> str:
        """``text`` (an exception's message) with the raw URL and any credentials taken out."""
        return redact_text(text.replace(self.base_url, self.shown_url))

    def _auth_message(self, status: int) -> str:
        if self.api_key_env:
            return (
                f"HTTP {status}: the server refused the API key from ${self.api_key_env}; "
                f"check the key, or set model.api_key_env to the variable that holds the right one"
            )
        return (
            f"HTTP {status}: the server wants an API key; export it in an environment variable and set "
            f"model.api_key_env to that variable's name"
        )

    # ---- the Backend interface ----
    def generate(self, requests: list[Request]) -> list[Generation]:
        """One generation per sample, in order; failed samples come back with ``finish_reason="error"``."""
        if not requests:
            return []
        future = asyncio.run_coroutine_threadsafe(self._generate_all(requests), self._ensure_loop())
        try:
            return future.result()
        except BaseException:  # Ctrl-C while waiting: stop the requests still in flight
            future.cancel()
            raise

    def close(self) -> None:
        """Close the connections and stop the backend's event-loop thread (a later generate restarts them)."""
        with self._lock:
            loop, thread, client = self._loop, self._thread, self._client
            self._loop = self._thread = self._client = self._sem = None
        if loop is None:
            return
        if client is not None:
            asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- internals ----
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="openai-backend", daemon=True)
                thread.start()

                async def setup() -> None:
                    limits = httpx.Limits(
                        max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
                    )
                    self._client = httpx.AsyncClient(
                        headers=self._headers,
                        limits=limits,
                        follow_redirects=False,
                        trust_env=self._trust_env,
                    )
                    self._sem = asyncio.Semaphore(self.max_concurrency)

                asyncio.run_coroutine_threadsafe(setup(), loop).result()
                self._loop, self._thread = loop, thread
            return self._loop

    async def _generate_all(self, requests: list[Request]) -> list[Generation]:
        jobs = [self._one(req, j) for req in requests for j in range(req.sampling.n)]
        out = await asyncio.gather(*jobs, return_exceptions=True)
        return [
            g
            if isinstance(g, Generation)
            else _failed(f"{type(g).__name__}: {self._scrub(str(g))}", 0.0, self.shown_url)
            for g in out
        ]

    def body(self, req: Request, j: int = 0) -> dict[str, Any]:
        """The JSON body for sample ``j`` of ``req``."""
        s = req.sampling
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in req.messages],
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
        }
        if s.stop:
            body["stop"] = list(s.stop)
        if s.seed is not None:
            body["seed"] = (s.seed + j) % 2**63
        if s.logprobs:
            body["logprobs"] = True
        if self.return_token_ids:
            body["return_token_ids"] = True
        return body

    async def _one(self, req: Request, j: int) -> Generation:
        """One sample: POST with retries; never raises for a network or server problem."""
        url = _route(self.base_url, "chat/completions")
        shown = _route(self.shown_url, "chat/completions")
        body = self.body(req, j)
        t0 = time.perf_counter()
        error = ""
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            async with self._sem:
                try:
                    resp = await self._client.post(url, json=body, timeout=self.timeout_s)
                except httpx.TimeoutException:
                    error = f"no response within timeout_s={self.timeout_s}s"
                except httpx.TransportError as e:
                    error = (
                        f"connection error ({type(e).__name__}: {self._scrub(str(e))}); "
                        f"is the server at {self.shown_url} up?"
                    )
                else:
                    if resp.status_code == 200:
                        return self._parse(resp, req, time.perf_counter() - t0)
                    error = f"HTTP {resp.status_code}: {_server_message(resp)}"
                    if resp.status_code in (401, 403):
                        return _failed(self._auth_message(resp.status_code), time.perf_counter() - t0, shown)
                    if resp.status_code != 429 and resp.status_code < 500:
                        return _failed(error, time.perf_counter() - t0, shown)  # a 3xx/4xx will not change
                    retry_after = _retry_after(resp.headers)
            if attempt < self.max_retries:
                await asyncio.sleep(self._delay(attempt, retry_after))
        tries = f"{self.max_retries + 1} attempt{'s' if self.max_retries else ''}"
        return _failed(f"{error} (gave up after {tries})", time.perf_counter() - t0, shown)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_s)
        return min(self.max_backoff_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)

    def _parse(self, resp: httpx.Response, req: Request, latency: float) -> Generation:
        """A 200 response -> Generation; a body that is not a chat completion is a counted error."""
        url = _route(self.shown_url, "chat/completions")
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
            if not isinstance(text, str):
                raise TypeError(f"message.content is {type(text).__name__}, not a string")
            usage = data.get("usage") or {}
            token_ids = [int(t) for t in choice.get("token_ids") or []]
            prompt_ids = data.get("prompt_token_ids")
            logprobs = None
            if req.sampling.logprobs and choice.get("logprobs"):
                content = choice["logprobs"].get("content")
                logprobs = [float(t["logprob"]) for t in content] if content is not None else None
            completion_tokens = usage.get("completion_tokens")
            if completion_tokens is None:  # no usage block: count what we can see
                completion_tokens = len(token_ids) or (len(logprobs) if logprobs else 0)
            return Generation(
                text=text,
                token_ids=token_ids,
                prompt_tokens=int(usage.get("prompt_tokens") or (len(prompt_ids) if prompt_ids else 0)),
                completion_tokens=int(completion_tokens),
                finish_reason=choice.get("finish_reason") or "stop",
                latency_s=latency,
                logprobs=logprobs,
                prompt_ids=[int(t) for t in prompt_ids] if prompt_ids else None,
            )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            snippet = resp.text[:200].replace("\n", " ")
            return _failed(f"unparseable response ({type(e).__name__}: {e}): {snippet!r}", latency, url)


def _failed(message: str, latency: float, url: str) -> Generation:
    return Generation(
        text="",
        token_ids=[],
        prompt_tokens=0,
        completion_tokens=0,
        finish_reason="error",
        latency_s=latency,
        error=redact_text(f"{url}: {message}"),
    )


def _server_message(resp: httpx.Response) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the start of the body."""
    try:
        err = resp.json()["error"]
        return str(err["message"] if isinstance(err, dict) else err)[:300]
    except (ValueError, KeyError, TypeError):
        return resp.text[:200].replace("\n", " ") or resp.reason_phrase


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``Retry-After`` (seconds or an HTTP date)."""
    if "retry-after-ms" in headers:
        try:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def load_openai_backend(
    spec: str,
    api_key_env: str = "",
    timeout_s: float = 120.0,
    max_concurrency: int = 32,
    max_retries: int = 4,
    check: bool = True,
) -> OpenAIBackend:
    """An `OpenAIBackend` for ``openai:URL#MODEL``; with ``check``, contact the server once now."""
    url, model = parse_openai_spec(spec)
    backend = OpenAIBackend(
        url,
        model,
        api_key_env=api_key_env,
        timeout_s=timeout_s,
        max_concurrency=max_concurrency,
        max_retries=max_retries,
        name=spec,
    )
    if check:
        backend.check()
    return backend
