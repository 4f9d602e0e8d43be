"""How varied an answer is, on token ids: the numbers behind "sampled answers break the one-to-one
correspondence that greedy answers give the draft" (paper Sec. 4.3).

distinct_n(ids, n):  distinct n-grams / n-grams (1.0: no n-gram repeats; a loop drives it to 0)
repetition(ids, n):  share of n-grams already seen earlier in the answer (1 - distinct_n, counted in order)
longest_loop(ids):   the longest suffix made of one repeated block (0: the answer does not end in a loop)
"""
from __future__ import annotations

from collections import Counter

import numpy as np


def ngrams(ids, n: int) -> list[tuple]:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    ids = list(ids)
    return [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]


def distinct_n(ids, n: int = 2) -> float:
    grams = ngrams(ids, n)
    return len(set(grams)) / len(grams) if grams else float("nan")


def repetition(ids, n: int = 4) -> float:
    grams = ngrams(ids, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else float("nan")


def longest_loop(ids, max_period: int = 64) -> int:
    """Tokens at the end covered by >= 2 copies of one block of period <= max_period."""
    ids, best = list(ids), 0
    for p in range(1, min(max_period, len(ids) // 2) + 1):
        k = len(ids) - p
        while k - 1 >= 0 and ids[k - 1] == ids[k - 1 + p]:
            k -= 1
        covered = len(ids) - k
        if covered >= 2 * p:
            best = max(best, covered)
    return best


def corpus_distinct_n(answers, n: int = 2) -> float:
    """Distinct n-grams over all answers pooled / all n-grams: low when answers copy each other."""
    counts = Counter(g for a in answers for g in ngrams(a, n))
    total = sum(counts.values())
    return len(counts) / total if total else float("nan")


def answer_stats(ids) -> dict:
    return {"length": len(ids), "distinct_1": distinct_n(ids, 1), "distinct_2": distinct_n(ids, 2),
            "repetition_4": repetition(ids, 4), "end_loop_tokens": longest_loop(ids)}


def summary(rows: list[dict]) -> dict:
    """Means of answer_stats over answers (NaNs of too-short answers ignored)."""
    keys = ("length", "distinct_1", "distinct_2", "repetition_4", "end_loop_tokens")
    return {k: float(np.nanmean([r[k] for r in rows])) if rows else float("nan") for k in keys}
