"""Moved to ``workbench.stats`` (a leaf module: the run store, compare and the trainer use it too).

This re-export keeps ``from workbench.stats import ...`` working.
"""

from workbench.stats import (
    bootstrap_ci,
    mcnemar_exact,
    mean_ci,
    paired_bootstrap,
    paired_outcomes,
    seed_aggregate,
    wilson_ci,
)

__all__ = [
    "bootstrap_ci",
    "mcnemar_exact",
    "mean_ci",
    "paired_bootstrap",
    "paired_outcomes",
    "seed_aggregate",
    "wilson_ci",
]
