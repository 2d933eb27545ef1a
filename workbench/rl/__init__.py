"""Reinforcement learning for the coordinating models.

Modules:
- ``objectives``: the losses and rewards as pure tensor functions (GRPO, Dr. GRPO, BNPO, CLPO's four
  terms, the Plackett-Luce ranking loss, k3 KL, group advantages, the Conductor's 0 / 0.5 / 1 reward),
  each with its equation and source in the docstring.
- ``config``: a recipe (YAML in ``recipes/``) plus ``--set`` overrides, as one frozen, validated config.
- ``policy``: the base model with its LoRA adapter, served for rollouts and scored for the loss.
- ``rollouts``: the trained role's samples, with token ids, sampling log-probs and rewards.
- ``trainer``: the training loop (sample, score, advantages, loss, step, checkpoint).
- ``checkpoint``: checkpoints that survive SIGKILL.
"""
