"""Training configuration: a recipe (YAML) plus ``--set`` overrides → one frozen, validated TrainConfig.

    cfg = TrainConfig.load("maestro", ["train.steps=20", "train.objective=grpo"])

Recipes live in ``workbench/rl/recipes/<name>.yaml``; ``--recipe PATH.yaml`` loads any file.
Unknown keys and bad values raise ConfigError naming the key (the strict loader of
workbench/config.py), so a typo never trains silently with a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import ConfigError, from_dict, load_yaml, merge, parse_overrides
from workbench.protocols import Team
from workbench.rl.objectives import TIES
from workbench.rl.policy import LoraSettings
from workbench.rl.rollouts import trainee_options, trainee_team
from workbench.run_config import ModelConfig, PoolMixin, ProtocolConfig, build_shared, check_roles
from workbench.tasks import TaskConfig

RECIPES_DIR = Path(__file__).parent / "recipes"
ROLES = {"maestro": "central", "leader": "leader", "conductor": "conductor"}  # recipe -> trained role
SFT_TARGETS = ("", "self_corrections", "format")  # train.sft_targets ("": the recipe's own)
OBJECTIVES = {
    "maestro": ("clpo", "grpo", "sft"),
    "leader": ("dr_grpo", "grpo"),
    "conductor": ("grpo", "dr_grpo"),
}


@dataclass(frozen=True)
class TrainSettings:
    objective: str = "grpo"  # see OBJECTIVES for each recipe
    rollout: str = (
        "offline"  # offline: pooled answers in the trained role's prompt | online: the protocol runs
    )
    steps: int = 40
    questions: int = 8  # questions per step
    group: int = 8  # samples of the trained role per question (the GRPO group)
    temperature: float = 1.0  # the trained role's sampling temperature during training
    max_tokens: int = 96  # the trained role's completion cap during training
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: int = 2
    schedule: str = "cosine"  # cosine | constant (after warmup)
    max_grad_norm: float = 1.0
    # sequences per backward pass; gradients accumulate over a step. Attention memory grows with
    # micro_batch x prompt length^2: on CPU, maestro slates (~600 tokens), 16 peaked at 15-24 GB
    # (an OOM kill), 4 at 5-9 GB and ran 15% faster (docs/training.md, "Memory")
    micro_batch: int = 4
    epsilon: float = 0.2  # PPO clip range (both sides)
    beta: float = 0.0  # KL to the base model (k3); 0 skips the reference forward pass
    # CLPO's weights (METHODS.md §1; the paper's values are not public): L = w_dec·L_dec + w_rank·L_rank + β·KL − w_ent·H
    # (β is ``beta`` above: the KL is over every sampled token of the central agent, whatever w_dec is)
    w_dec: float = 1.0
    w_rank: float = 0.5
    w_ent: float = 0.0  # −w_ent·H with gradient: > 0 keeps the policy from collapsing onto one pick
    rationale_tokens: int = 48  # CLPO: cap on each justification sampled for the listwise term
    ties: str = "exclude"  # CLPO's Plackett-Luce tie rule: exclude | breslow | index (objectives.TIES)
    # SFT steps before the RL steps (rl/warmstart.py): the leader's own self-corrections, found by
    # sampling (MLPO's SFT stage), the Conductor's well-formed plans and the central agent's
    # well-formed decisions on random picks (format only, ours)
    warm_start: int = 0
    # what the warm start imitates: "" (the recipe's own: the leader's sampled self-corrections, the
    # Conductor's and the central agent's format demonstrations) | "self_corrections" (leader) |
    # "format" (also for the leader: its RL prompt and a tagged answer copied from a random peer)
    sft_targets: str = ""
    # the leader's SFT sampling budget: completions sampled per question, on sft_questions of the
    # training questions (0: every eligible one); the self-corrections among them are the targets
    sft_samples: int = 8
    sft_questions: int = 0
    checkpoint_every: int = 5
    keep_checkpoints: int = 2
    eval_every: int = 0  # steps between dev evaluations (0: only before and after training)
    seed: int = 0
    use_unsloth: bool = False  # CUDA: Unsloth's model + LoRA kernels for the loss (needs rollout_engine=vllm)
    # rollouts: hf (our transformers decode loop, CPU or GPU) | vllm (CUDA: one vLLM engine on the
    # same GPU, the adapter synced after every optimiser step; workbench/rl/engine.py, docs/gpu.md)
    rollout_engine: str = "hf"
    # stop when the engine's sampling log-probs differ from the trainer's by more than this, mean
    # nats per token (0: never); logged every step as logprob_gap_mean / logprob_gap_max
    max_logprob_gap: float = 0.5
    vllm_sleep: bool = False  # vllm: the engine sleeps during the loss pass (frees its memory; slower)
    max_seq_length: int = 2048  # prompt + completion cap: Unsloth's max_seq_length, vLLM's max_model_len
    # the Conductor's recursion fine-tune (METHODS.md §2, the paper's values): a share of each step's
    # questions is played with one forced recursive call (the rest without recursion), and the
    # rewards of the first-round plans of those episodes are scaled by first_round_discount
    recursion_finetune: bool = False
    recursion_share: float = 0.5  # share of each batch's questions forced to recurse once (the paper: half)
    first_round_discount: float = 0.25  # factor on first-round rewards of recursed episodes (the paper: 0.25)

    def __post_init__(self) -> None:
        if self.rollout_engine not in ("hf", "vllm"):
            raise ConfigError(f"train.rollout_engine must be 'hf' or 'vllm', got '{self.rollout_engine}'")
        if not self.max_logprob_gap >= 0:
            raise ConfigError(f"train.max_logprob_gap must be >= 0 (0: no check), got {self.max_logprob_gap}")
        if self.max_seq_length < 16:
            raise ConfigError(f"train.max_seq_length must be >= 16 tokens, got {self.max_seq_length}")
        if self.rollout not in ("offline", "online"):
            raise ConfigError(f"train.rollout must be 'offline' or 'online', got '{self.rollout}'")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"train.schedule must be 'cosine' or 'constant', got '{self.schedule}'")
        for name in ("questions", "group", "max_tokens", "micro_batch", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.steps < 0 or self.steps + self.warm_start < 1:
            raise ConfigError(
                f"train.steps must be >= 1 (or 0 with train.warm_start > 0: supervised steps only), "
                f"got steps={self.steps}, warm_start={self.warm_start}"
            )
        if self.group < 2 and self.objective != "sft":
            raise ConfigError(
                f"train.group must be >= 2 (a GRPO group compares samples of one prompt), got {self.group}"
            )
        if not 0.0 < self.recursion_share <= 1.0:
            raise ConfigError(f"train.recursion_share must be in (0, 1], got {self.recursion_share}")
        if not 0.0 <= self.first_round_discount <= 1.0:
            raise ConfigError(
                f"train.first_round_discount must be in [0, 1], got {self.first_round_discount}"
            )
        if self.temperature <= 0:
            raise ConfigError("train.temperature must be > 0: GRPO needs sampled groups")
        if self.warm_start < 0:
            raise ConfigError(f"train.warm_start must be >= 0 (SFT steps before RL), got {self.warm_start}")
        if self.sft_targets not in SFT_TARGETS:
            raise ConfigError(
                f"train.sft_targets must be one of {', '.join(repr(x) for x in SFT_TARGETS)} "
                f"('' is the recipe's own), got '{self.sft_targets}'"
            )
        if self.sft_samples < 1 or self.sft_questions < 0:
            raise ConfigError(
                f"train.sft_samples must be >= 1 and train.sft_questions >= 0 (0: every question), "
                f"got {self.sft_samples}, {self.sft_questions}"
            )
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        for name in ("beta", "w_dec", "w_rank", "w_ent"):
            if not getattr(self, name) >= 0:  # also refuses NaN
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.rationale_tokens < 1:
            raise ConfigError(
                f"train.rationale_tokens must be >= 1 (tokens per CLPO justification), got {self.rationale_tokens}"
            )
        if self.ties not in TIES:
            raise ConfigError(f"train.ties must be one of {', '.join(TIES)}, got '{self.ties}'")
        if self.objective == "clpo" and not (self.w_dec or self.w_rank or self.beta or self.w_ent):
            raise ConfigError(
                "train.objective=clpo with w_dec, w_rank, beta and w_ent all 0 has an empty loss; "
                "set at least one of them > 0 (e.g. train.w_dec=1)"
            )


@dataclass(frozen=True)
class PoolSettings:
    """The offline pool of frozen-agent answers (MLPO trains on one; Maestro's slates are drawn from one)."""

    size: int = 8  # answers per question
    temperature: float = 0.7
    max_tokens: int = 256
    threshold: float = 0.75  # drop questions whose pooled accuracy is >= this (MLPO; 1.0 keeps all)
    # ours, not the papers': train only on questions whose pool holds a right and a wrong answer, and
    # show at least one of each in every slate / peer set, so that no GRPO group is uninformative
    # because every shown answer is right (or wrong). Training data only: evaluation is unchanged.
    mixed: bool = False
    path: str = ""  # reuse a pool.jsonl built before (same task items); empty: build into the run
    # 1: independent answers to the question (round 1's slates). R > 1: the recipe's protocol is
    # played for R rounds with the frozen model and training slates come from any of its rounds,
    # later ones conditioned on the broadcast candidate, as the protocol produces them
    rounds: int = 1

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"pool.rounds must be >= 1, got {self.rounds}")


@dataclass(frozen=True)
class EvalSettings:
    split: str = "dev"  # never test: tuning decisions are made on these numbers
    limit: int = 64
    max_in_flight: int = 256


@dataclass(frozen=True)
class TrainConfig(PoolMixin):
    recipe: str = "maestro"
    task: TaskConfig = field(default_factory=lambda: TaskConfig(split="train", limit=256))
    model: ModelConfig = field(default_factory=ModelConfig)  # the base: the policy and the frozen "default"
    models: dict[str, Any] = field(default_factory=dict)  # more models by name, as in eval
    team: dict[str, Any] = field(
        default_factory=dict
    )  # the worker pool, as in eval (the trained role: "trainee")
    lora: LoraSettings = field(default_factory=LoraSettings)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)  # where the trained role plays
    train: TrainSettings = field(default_factory=TrainSettings)
    pool: PoolSettings = field(default_factory=PoolSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    out: str = ""

    def __post_init__(self) -> None:
        if self.recipe not in ROLES:
            raise ConfigError(f"unknown recipe '{self.recipe}'; available: {', '.join(ROLES)}")
        if self.protocol.name != self.recipe:
            raise ConfigError(
                f"recipe '{self.recipe}' trains a role of protocol '{self.recipe}', not '{self.protocol.name}'"
            )
        if self.train.objective not in OBJECTIVES[self.recipe]:
            raise ConfigError(
                f"train.objective '{self.train.objective}' is not available for recipe '{self.recipe}'; "
                f"choose one of {', '.join(OBJECTIVES[self.recipe])}"
            )
        if self.recipe == "conductor" and self.train.rollout != "online":
            raise ConfigError(
                "recipe 'conductor' trains on online rollouts (workers execute each plan): "
                "set train.rollout=online"
            )
        if self.train.recursion_finetune and self.recipe != "conductor":
            raise ConfigError("train.recursion_finetune is the Conductor's; use it with --recipe conductor")
        if self.train.objective == "clpo" and self.train.rollout != "offline":
            raise ConfigError("train.objective=clpo scores slates from the pool: set train.rollout=offline")
        if self.train.warm_start and self.recipe == "maestro" and self.protocol.resolved.central != "select":
            raise ConfigError(
                "train.warm_start teaches the central agent the <choice> decision of protocol.central=select; "
                f"protocol.central={self.protocol.resolved.central} writes its own answer: set "
                "train.warm_start=0 or protocol.central=select"
            )
        if self.train.sft_targets == "self_corrections" and self.recipe != "leader":
            raise ConfigError(
                f"train.sft_targets=self_corrections is the leader's SFT stage; recipe '{self.recipe}' "
                "warm-starts on format demonstrations: set train.sft_targets=format (or leave it empty)"
            )
        if self.pool.rounds > 1:
            if self.recipe not in ("maestro", "leader"):
                raise ConfigError(f"pool.rounds is for the maestro and leader recipes, not '{self.recipe}'")
            have = self.protocol.resolved.rounds
            if self.pool.rounds > have:
                raise ConfigError(
                    f"pool.rounds={self.pool.rounds} is beyond protocol.rounds={have}: the protocol has no "
                    f"round {self.pool.rounds} to draw slates from; set pool.rounds <= {have} or "
                    f"protocol.rounds >= {self.pool.rounds}"
                )
        if self.eval.split == "test":
            raise ConfigError("eval.split=test: never tune on the test split; use dev (or train)")
        self._resolve_pool()
        if "trainee" in self.team:
            raise ConfigError("team.trainee: 'trainee' is the trained role's member in training; rename it")
        check_roles(self.training_team(), self.training_protocol())

    def training_team(self, temperature: float | None = None) -> Team:
        """The configured team plus ``trainee`` (the trained role, served by the policy backend)."""
        return trainee_team(temperature, self.build_team())

    def training_protocol(self, max_tokens: int | None = None, **extra: Any) -> ProtocolConfig:
        """The protocol with the trained role bound to the ``trainee`` member."""
        opts = {**self.protocol.options, **trainee_options(self.recipe, self.role, max_tokens), **extra}
        return ProtocolConfig(self.recipe, opts)

    @property
    def role(self) -> str:
        return ROLES[self.recipe]

    @property
    def sampled_traces(self) -> bool:
        """Whether the warm start imitates sampled self-corrections (the leader's SFT stage, the
        default for the leader) rather than format demonstrations (rl/warmstart.py)."""
        return (
            bool(self.train.warm_start)
            and self.recipe == "leader"
            and self.train.sft_targets in ("", "self_corrections")
        )

    @classmethod
    def load(cls, recipe: str, overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
        """A recipe name (``maestro``) or a YAML path, then ``--set``-style overrides."""
        path = Path(recipe)
        if path.suffix not in (".yaml", ".yml"):
            path = RECIPES_DIR / f"{recipe}.yaml"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
            raise ConfigError(f"no recipe '{recipe}' (built in: {known}; or give a path to a .yaml file)")
        data = load_yaml(path)  # one mapping; bounded size and depth, no aliases; ConfigError otherwise
        extra = parse_overrides(overrides) if isinstance(overrides, list) else (overrides or {})
        return cls.build(merge(data, extra))

    @classmethod
    def build(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise ConfigError(
                f"a training config is a mapping of sections (task:, train:, ...), got {data!r:.60}"
            )
        data = dict(data)
        top = from_dict(_TopLevel, {k: data.pop(k) for k in ("recipe", "out") if k in data})
        if top.recipe not in ROLES:
            raise ConfigError(f"unknown recipe {top.recipe[:60]!r}; available: {', '.join(ROLES)}")
        # task, model, models, team: the one builder of eval and compare (workbench/run_config.py)
        shared = build_shared(data, {"split": "train"}, ("task", "model", "models", "team"))
        sections = {
            "protocol": ProtocolConfig.from_flat,
            "lora": lambda d: from_dict(LoraSettings, d, prefix="lora."),
            "train": lambda d: from_dict(TrainSettings, d, prefix="train."),
            "pool": lambda d: from_dict(PoolSettings, d, prefix="pool."),
            "eval": lambda d: from_dict(EvalSettings, d, prefix="eval."),
        }
        built = {}
        for name, make in sections.items():
            value = data.pop(name, {}) or {}
            if not isinstance(value, dict):
                raise ConfigError(f"'{name}' is a section; set its keys, e.g. --set {name}.KEY=VALUE")
            if name == "protocol":
                value = {"name": top.recipe, **value}
            built[name] = make(value)
        if data:
            unknown = sorted(str(k)[:60] for k in data)
            raise ConfigError(
                f"unknown top-level key(s) {', '.join(unknown)}; sections: "
                f"{', '.join((*shared, *sections))}, recipe, out"
            )
        return cls(recipe=top.recipe, out=top.out, **shared, **built)


@dataclass(frozen=True)
class _TopLevel:
    """The top-level scalars of a TrainConfig, validated by the same strict loader."""

    recipe: str = "maestro"
    out: str = ""
