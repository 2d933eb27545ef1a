"""Statistics for reports: confidence intervals for accuracies."""

from __future__ import annotations

import math


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
        "mcnemar_p": round(mcnemar_exact(only_a, only_b), 4),
    }
