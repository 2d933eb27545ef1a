"""A model served by ``workbench serve`` in a subprocess on 127.0.0.1 and a free port, for a
notebook: the endpoint joins a team as ``openai:URL#NAME`` and is stopped at the end."""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from workbench.config import ConfigError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServedModel:
    """``with ServedModel("smollm2+ADAPTER", name="tuned") as served: ... served.spec ...``

    ``spec`` is the model spec a team member uses; the server's output goes to ``log`` (a file in
    the run folder you pass, or a temporary one). Starting fails with a ConfigError naming the log."""

    def __init__(
        self, model: str, name: str = "served", log: str | Path | None = None, timeout_s: float = 180
    ):
        self.model, self.name, self.timeout_s = model, name, timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.spec = f"openai:{self.url}#{name}"
        self.log = (
            Path(log) if log else Path(os.environ.get("TMPDIR", "/tmp")) / f"workbench-serve-{self.port}.log"
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServedModel:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "workbench", "serve", "--model", self.model, "--host", "127.0.0.1",
               "--port", str(self.port), "--served-model-name", self.name]  # fmt: skip
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        atexit.register(self.stop)  # never left running after the kernel exits
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                raise ConfigError(
                    f"workbench serve --model {self.model} exited ({self.proc.returncode}): {tail[0]}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise ConfigError(f"workbench serve did not answer within {self.timeout_s:.0f}s; see {self.log}")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 20 s; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> ServedModel:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
