"""The one backend interface: a batch of generation requests in, a batch of generations out.

Every protocol, trainer, notebook and the app reach models only through `Backend.generate`.
A request with ``sampling.n = k`` yields k generations, in order, so the output list is the
concatenation of each request's samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy (deterministic); > 0 samples
    top_p: float = 1.0  # nucleus mass kept when sampling
    max_tokens: int = 256  # completion length cap; the generation ends with finish_reason="length"
    n: int = 1  # samples for this request
    stop: tuple[str, ...] = ()  # the completion is cut before the first of these strings
    seed: int | None = None  # per-request seed: sample j of a request uses seed + j
    logprobs: bool = False  # also return each sampled token's log-probability

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if isinstance(self.stop, str | list):
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(
                f"stop strings must be non-empty strings (an empty one would end every reply at once), got {self.stop!r}"
            )


@dataclass(frozen=True)
class Request:
    messages: tuple[Message, ...] | list[Message]
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass
class Generation:
    text: str
    token_ids: list[int]  # completion token ids (without the prompt, without the cut stop string's tail)
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn or a stop string) | "length" | "error" (see `error`)
    latency_s: float  # wall time of the backend call that produced it
    logprobs: list[float] | None = None  # one per completion token, when asked
    prompt_ids: list[int] | None = None  # the prompt's token ids (for training rollouts)
    error: str | None = None  # why the request failed for good (then finish_reason="error", text "")
    warning: str | None = None  # the request ran, changed: e.g. max_tokens clamped to the model's context
    # a tool worker's run (workbench/models/tools.py): {"tool", "status": ok|failed|timeout|no_code|
    # no_expression|error, "reason", ...}; a status other than ok is counted in the episode's events
    tool: dict | None = None


class Backend(Protocol):
    """Anything that turns a batch of requests into generations.

    `name` identifies the model in run files; `generate` must return, for each request,
    `request.sampling.n` generations in order.
    """

    name: str

    def generate(self, requests: list[Request]) -> list[Generation]: ...
