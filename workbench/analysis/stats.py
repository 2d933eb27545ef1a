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
