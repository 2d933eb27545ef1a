"""Statistics for runs, reports and analyses (a leaf: imports nothing from workbench): confidence intervals, paired tests, seed aggregation."""

from __future__ import annotations

import math
from typing import Any


def error_bars(values: list[float], intervals: list) -> dict[str, Any]:
    """Plotly's ``error_y`` for values with (low, high) intervals, e.g. accuracies with their
    Wilson 95% CI: asymmetric bars from each value to its interval's ends."""
    return {
        "type": "data",
        "symmetric": False,
        "array": [hi - v for v, (_, hi) in zip(values, intervals, strict=True)],
        "arrayminus": [v - lo for v, (lo, _) in zip(values, intervals, strict=True)],
    }


def wilson_ci(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default).

        p̂ = k/n,  centre = (p̂ + z²/2n) / (1 + z²/n),
        half = z·sqrt(p̂(1−p̂)/n + z²/4n²) / (1 + z²/n)

    Unlike the normal approximation it stays inside [0, 1] and is sensible at k = 0 or k = n.
    n = 0 gives (0, 1): nothing is known.
    """
    if n == 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test for paired binary outcomes (same items, two methods).

    b = items only method A got right, c = items only method B got right. Under H0 (equal accuracy)
    the discordant items split as Binomial(b + c, 1/2):

        p = min(1, 2 · Σ_{k=0}^{min(b,c)} C(b+c, k) / 2^(b+c))
    """
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_outcomes(a: list[dict], b: list[dict]) -> dict:
    """Pair two runs' episodes by task_id and count agreements; McNemar p-value on the discordant pairs."""
    right_a = {e["task_id"]: e["correct"] for e in a}
    right_b = {e["task_id"]: e["correct"] for e in b}
    common = sorted(right_a.keys() & right_b.keys())
    only_a = sum(right_a[t] and not right_b[t] for t in common)
    only_b = sum(right_b[t] and not right_a[t] for t in common)
    both = sum(right_a[t] and right_b[t] for t in common)
    return {
        "n_paired": len(common),
        "both_right": both,
        "only_a_right": only_a,
        "only_b_right": only_b,
        "neither": len(common) - both - only_a - only_b,
        "mcnemar_p": float(f"{mcnemar_exact(only_a, only_b):.3g}"),  # 3 significant digits: 1.1e-05, not 0.0
    }


# ---- bootstrap and seeds (the analysis module's statistics) ----
def bootstrap_ci(
    values: list[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (items resampled with replacement).

        θ*_b = mean(x_{i_1..i_n}),  i ~ Uniform{1..n},  b = 1..B;  CI = [q_{α/2}(θ*), q_{1−α/2}(θ*)]

    One value gives (v, v); none gives (nan, nan). Deterministic for a given ``seed``.
    """
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    if n == 1:
        return float(values[0]), float(values[0])
    import numpy as np

    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def mean_ci(values: list[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """{"mean", "ci95", "n"} of a list of numbers (bootstrap CI); mean None when empty."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"mean": None, "ci95": [None, None], "n": 0}
    lo, hi = bootstrap_ci(vals, n_boot=n_boot, seed=seed)
    return {"mean": sum(vals) / len(vals), "ci95": [lo, hi], "n": len(vals)}


def paired_bootstrap(a: dict[str, float], b: dict[str, float], n_boot: int = 5000, seed: int = 0) -> dict:
    """Paired bootstrap of the mean difference a − b over the keys (items) both have.

        d_i = a_i − b_i;  CI from resampling the d_i;  two-sided p = 2·min(P*(d̄* ≤ 0), P*(d̄* ≥ 0))

    (the share of resampled mean differences on the other side of zero, doubled, capped at 1).
    """
    common = sorted(a.keys() & b.keys())
    if not common:
        return {"n_paired": 0, "mean_diff": None, "ci95": [None, None], "p": None}
    import numpy as np

    d = np.array([float(a[k]) - float(b[k]) for k in common])
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    p = min(1.0, 2 * min(float((means <= 0).mean()), float((means >= 0).mean())))
    if np.all(d == 0):
        p = 1.0
    return {
        "n_paired": len(common),
        "mean_diff": float(d.mean()),
        "ci95": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))],
        "p": round(p, 4),
    }


def seed_aggregate(accuracies: list[float]) -> dict:
    """Mean and sample standard deviation of one protocol's accuracy over seeds (runs on the same items).

    mean = Σ a_s / S,  sd = sqrt(Σ (a_s − mean)² / (S − 1))   (sd None for one seed)
    """
    s = len(accuracies)
    if s == 0:
        return {"seeds": 0, "mean": None, "sd": None, "min": None, "max": None}
    mean = sum(accuracies) / s
    sd = math.sqrt(sum((x - mean) ** 2 for x in accuracies) / (s - 1)) if s > 1 else None
    return {"seeds": s, "mean": mean, "sd": sd, "min": min(accuracies), "max": max(accuracies)}
