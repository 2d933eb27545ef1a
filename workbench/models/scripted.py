"""A deterministic backend for unit tests of protocol logic (never used for results).

Replies come from a function of the request (so a test can make agent 2 always right, say), and
every call is logged, so tests can check batch sizes, who saw what, and turn order.
"""

from __future__ import annotations

from collections.abc import Callable

from workbench.models.base import Generation, Request


class ScriptedBackend:
    def __init__(self, reply: Callable[[Request, int], str] | str = "Answer: 0", name: str = "scripted"):
        self.reply = reply if callable(reply) else (lambda req, j: reply)
        self.name = name
        self.calls: list[list[Request]] = []  # one entry per generate() call: the batch it received

    def generate(self, requests: list[Request]) -> list[Generation]:
        self.calls.append(list(requests))
        out = []
        for req in requests:
            prompt_tokens = sum(len(m["content"].split()) for m in req.messages)
            for j in range(req.sampling.n):
                text = self.reply(req, j)
                n_tok = max(1, len(text.split()))
                out.append(
                    Generation(
                        text=text,
                        token_ids=list(range(n_tok)),
                        prompt_tokens=prompt_tokens,
                        completion_tokens=n_tok,
                        finish_reason="stop",
                        latency_s=0.0,
                        logprobs=[0.0] * n_tok if req.sampling.logprobs else None,
                    )
                )
        return out
