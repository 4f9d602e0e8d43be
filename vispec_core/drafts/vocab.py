"""The reduced draft vocabulary (EAGLE-3): the N tokens the target says most often in the training
answers. The draft scores only these (DraftConfig.draft_vocab); the target verifies as before, so a
token outside them can still come out, as the bonus token."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


def frequent_tokens(answers, n: int, always: Iterable[int] = (), fill: Iterable[int] = ()) -> list[int]:
    """The n most frequent token ids of `answers` (a synthesized dataset, whose `answer_ids` are
    counted, or token lists), most frequent first, ties by lower id. `always` (the target's EOS
    ids) are included whatever their count. When fewer than n distinct tokens occur, `fill` (e.g.
    the stage-1 draft's vocabulary) tops the list up in its own order; fewer than n come back only
    when that too runs out."""
    if n < 1:
        raise ValueError(f"A draft vocabulary needs n >= 1 tokens, got {n}.")
    if hasattr(answers, "column_names"):          # a datasets.Dataset from load_synthesized
        answers = answers.with_format(None)["answer_ids"]
    counts = Counter()
    for ids in answers:
        counts.update(int(i) for i in ids)
    forced = sorted({int(i) for i in always})
    if len(forced) > n:
        raise ValueError(f"n={n} cannot hold the {len(forced)} ids that must always be in the draft vocabulary.")
    rank = lambda i: (-counts[i], i)               # noqa: E731
    others = sorted((i for i in counts if i not in forced), key=rank)[:n - len(forced)]
    chosen = sorted(forced + others, key=rank)
    seen = set(chosen)
    for i in fill:
        if len(chosen) >= n:
            break
        if int(i) not in seen:
            chosen.append(int(i))
            seen.add(int(i))
    return chosen

