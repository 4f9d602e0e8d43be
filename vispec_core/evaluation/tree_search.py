"""Hardware-aware draft trees: pick (total_tokens, depth, top_k) for the device at hand.

The paper's 30/3/8 was chosen for a GPU, where verifying 30 tokens costs about as much as one. On
a CPU it does not (a 30-token forward costs 1.7x one token in bf16; 2.3x on prepacked
weights, which make the one-token forward cheaper), so the tree size is a hardware choice. Expected decode speed of a config c:

    tokens/s(c) = (tau(c) + 1) / (draft(c) + extend + verify(n(c)) + overhead(n(c)))

and its speedup over vanilla is that times vanilla's time per token, verify(1). Turned around, the
same cycle says what a config can give at best (`ceiling`: its longest path always accepted) and
what tau a wanted speedup S needs (`tau_needed`: S * cycle / verify(1) - 1), which separates what the
hardware allows from what the draft delivers.

* verify(n): the target's forward over n tree tokens after a realistic prefix, logits included
  (`verify_cost_curve`, median of repeats), interpolated between measured n;
* draft(c): the draft's time to build c's tree, extend: its per-cycle pass over accepted tokens;
* overhead(n): what a real cycle costs beyond those three (acceptance, cache commit, the Python around
  them), measured by decoding the model's best tree and the paper's for real (`measure_cycle`) and
  fitted linear in n between them (`overhead_fit`): without it the predictions ran 6-16% fast;
* tau(c): estimated offline at the run's temperature (`calibrate` + `estimate_tau`). Verification
  accepts the longest path of the tree that spells the tokens the target emits: at T=0 its greedy
  continuation y; at T>0 a sample y of the target itself, because `accept_sampling` emits each token
  with the target's own probability and stops exactly where that token is not a child (its residual
  draw excludes the children). So the accepted length at sequence position t only needs the tree c
  would draft at t and y, and at T>0 its average over sampled y is an unbiased estimate of tau
  (a calibration at T=0 used for T=1 predicted 0.93 where T=1 gave 0.45). Calibration
  walks y one token at a time and records, at every position, the tree of every (depth, top_k) in
  the grid with `max_total` nodes; the tree of (T, depth, top_k) is the first T-1 of its rerank
  (EAGLE-2 keeps the T-1 best candidates, and the best T-1 of a stable sort are a prefix of the best
  max_total-1). `estimate_tau` then replays decoding: a cycle at t accepts L tokens and the next one
  starts at t + L + 1, exactly as `decode_speculative` does, so the estimate equals a real run's
  accept lengths when the draft sees the same inputs and y is what the run emitted (tests/test_bench.py
  checks it in fp32, at T=0 and at T=1).
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, replace

import torch

from ..decoding.decode import Clock, max_tree_depth, pick, prefill
from ..decoding.tree import PAPER_TREE, TreeConfig, draft_tree, parse_tree  # noqa: F401 (re-exported)

VERIFY_SIZES = (1, 2, 4, 8, 12, 16, 24, 30, 48, 64)
TOTALS = (2, 4, 8, 12, 16, 24, 30, 48, 64)
DEPTHS = (1, 2, 3, 4, 5, 6)
TOP_KS = (1, 2, 4, 8, 10)


# -- measurements ----------------------------------------------------------------------------------
@torch.inference_mode()
def verify_cost_curve(target, cache, sizes=VERIFY_SIZES, repeats: int = 7, rope_delta: int = 0) -> dict[int, float]:
    """Median seconds of one target forward over n new tokens (tree-masked, logits and argmax included)
    after the cache's committed prefix; the cache is left as it was (nothing committed). The sizes take
    turns, round after round (the first round warms up), so a slow spell of the machine lands on every
    size alike instead of on the few measured during it."""
    clock = Clock(target.device)
    runs = {}
    for n in sizes:
        ids = torch.randint(0, target.vocab_size, (1, n), generator=torch.Generator().manual_seed(n)).to(target.device)
        mask = torch.ones(n, n, dtype=torch.bool, device=target.device).tril()
        runs[n] = (ids, mask, torch.arange(n, device=target.device))
    times = {n: [] for n in sizes}
    for r in range(repeats + 1):
        for n, (ids, mask, offsets) in runs.items():
            clock.lap()
            f = target.forward(target.embed(ids), target.positions(cache.length, offsets, rope_delta), cache, mask)
            target.logits(f[0]).argmax(-1).tolist()
            if r:
                times[n].append(clock.lap())
    return {n: statistics.median(t) for n, t in times.items()}


def cycle_s(row: dict) -> float:
    """A candidate row's predicted seconds per cycle: draft, extend, verification and the measured overhead."""
    return row["draft_s"] + row["extend_s"] + row["verify_s"] + row.get("overhead_s", 0.0)


def tau_needed(row: dict, vanilla_token_s: float, speedup: float) -> float:
    """The tau at which a candidate row's cycle gives `speedup`."""
    return speedup * cycle_s(row) / vanilla_token_s - 1


def ceiling(row: dict, vanilla_token_s: float) -> float:
    """A candidate row's speedup if its longest path were always accepted (tau = depth + 1, or the
    nodes after the root where there are fewer)."""
    longest = min(row["depth"] + 1, row["nodes"] - 1)
    return (longest + 1) * vanilla_token_s / cycle_s(row)


def interpolate(curve: dict[int, float], n: int) -> float:
    xs = sorted(curve)
    if n <= xs[0]:
        return curve[xs[0]] * n / xs[0] if n < xs[0] else curve[xs[0]]
    for a, b in zip(xs, xs[1:]):
        if n <= b:
            return curve[a] + (curve[b] - curve[a]) * (n - a) / (b - a)
    a, b = xs[-2], xs[-1]                       # beyond the grid: extend the last slope
    return curve[b] + (curve[b] - curve[a]) * (n - b) / (b - a)


@dataclass
class Calibration:
    """Per prompt: y (the target's greedy tokens, EOS included) and, per position t, the reranked tree
    (tokens, parents, scores lists) of every (depth, top_k) drafted with root y[t]."""

    max_new_tokens: int
    max_total: int
    eos: frozenset
    ys: list[list[int]] = field(default_factory=list)
    trees: list[list[dict]] = field(default_factory=list)
    draft_times: dict = field(default_factory=dict)       # (depth, top_k) -> [seconds]
    pass_times: dict = field(default_factory=dict)        # top_k -> [seconds of one draft pass over top_k nodes]
    extend_times: list[float] = field(default_factory=list)


class _Recorder:
    """A TreeSession around a draft session that keeps every expand call's output and time, so the
    shallower trees of the same top_k replay them (`draft_tree` with depth d makes exactly the first d + 1
    expand calls of a deeper build) instead of running the draft again."""

    def __init__(self, session, clock):
        self.session, self.clock, self.calls, self.times, self.replay = session, clock, [], [], False

    def expand(self, tokens, parents, depth):
        if self.replay:
            want_tokens, want_parents, out = self.calls[depth]
            assert torch.equal(tokens, want_tokens) and torch.equal(parents, want_parents), "replay mismatch"
            return out
        self.clock.lap()
        out = self.session.expand(tokens, parents, depth)
        self.calls.append((tokens, parents, out))
        self.times.append(self.clock.lap())
        return out


@torch.inference_mode()
def calibrate(target, draft, prompts, max_new_tokens: int, depths=DEPTHS, top_ks=TOP_KS,
              max_total: int = max(TOTALS), keep_cache: bool = False, temperature: float = 0.0,
              top_p: float = 1.0, seed: int = 0, follow: list[list[int]] | None = None):
    """Walk each prompt's answer token by token (greedy at temperature 0, else sampled from the target
    with a generator seeded by `seed` and the prompt's index); at every position draft and record the
    tree of every (depth, top_k). Draft time of (depth, top_k) = its expand calls + its own tree build.
    `follow[i]`: tokens prompt i's answer takes instead, as far as they go (what a real run emitted).
    Returns the Calibration, plus (cache, inputs) of the last prompt if keep_cache."""
    limit = max_tree_depth(draft)
    depths = sorted(d for d in depths if limit is None or d <= limit)
    cal = Calibration(max_new_tokens, max_total, target.eos_token_ids)
    clock = Clock(target.device)
    last = None
    for i, p in enumerate(prompts):
        inputs = target.prepare(p.prompt, p.images)
        steps = max_new_tokens + max(depths) + 1        # y must reach past the last cycle's deepest path
        capacity = inputs.length + steps + max(VERIFY_SIZES) + 1
        forced = list(follow[i]) if follow else []
        generator = torch.Generator(device=target.device).manual_seed(seed * 1_000_003 + i)

        def next_token(logits, at):
            return forced[at] if at < len(forced) else pick(logits, temperature, top_p, generator)

        cache, f = prefill(target, inputs, capacity)
        root = next_token(target.logits(f[0, -1]), 0)
        session = draft.begin(target, inputs, capacity)
        dev = target.device
        next_embeds = torch.cat([inputs.inputs_embeds[:, 1:], target.embed(torch.tensor([[root]], device=dev))], 1)
        session.extend(f, torch.cat([inputs.input_ids[0, 1:], torch.tensor([root], device=dev)]), next_embeds)
        y, trees = [root], []
        while True:
            at = {}
            for k in top_ks:
                rec = _Recorder(session, clock)
                draft_tree(rec, root, max_total, depths[-1], k, device=dev)      # runs the draft
                rec.replay = True
                cal.pass_times.setdefault(k, []).extend(rec.times[1:])       # call 0 returns the root's cached output
                for d in depths:
                    clock.lap()
                    tree = draft_tree(rec, root, max_total, d, k, device=dev)   # replays it: build cost only
                    build = clock.lap()
                    cal.draft_times.setdefault((d, k), []).append(build + sum(rec.times[:d + 1]))
                    at[(d, k)] = (tree.tokens.tolist(), tree.parents.tolist(), tree.scores.tolist())
            trees.append(at)
            if root in target.eos_token_ids or len(y) >= steps:
                break
            f = target.forward(target.embed(torch.tensor([[root]], device=dev)),
                               target.positions(cache.length, torch.zeros(1, dtype=torch.long, device=dev),
                                                inputs.rope_delta), cache)
            cache.commit(1)
            root = next_token(target.logits(f[0, -1]), len(y))
            clock.lap()
            session.extend(f, torch.tensor([root], device=dev))
            cal.extend_times.append(clock.lap())
            y.append(root)
        cal.ys.append(y)
        cal.trees.append(trees)
        last = (cache, inputs)
    return (cal, last) if keep_cache else cal


def _accepted(tree, total_tokens: int, continuation: list[int]) -> int:
    """Accepted draft tokens of the first total_tokens nodes of a reranked tree (node 0 = root) when
    the target's greedy continuation after the root is `continuation`."""
    tokens, parents, scores = tree
    order = sorted(range(1, len(tokens)), key=lambda i: -scores[i])        # stable: ties keep node order
    keep = set(order[: total_tokens - 1])
    node, length = 0, 0
    while length < len(continuation):
        match = next((c for c in keep if parents[c] == node and tokens[c] == continuation[length]), None)
        if match is None:
            break
        node, length = match, length + 1
    return length


def estimate_tau(cal: Calibration, config: TreeConfig) -> tuple[float, list[list[int]]]:
    """Replay greedy speculative decoding with `config` on the calibration; (tau, accept lengths per prompt)."""
    if config.total_tokens > cal.max_total:
        raise ValueError(f"Calibrated up to {cal.max_total} tree tokens, asked for {config.total_tokens}.")
    per_prompt = []
    for y, trees in zip(cal.ys, cal.trees):
        if (config.depth, config.top_k) not in trees[0]:
            raise ValueError(f"Tree {config.label} was not calibrated (depths/top_ks of the grid only).")
        lengths, t, produced = [], 0, 1
        done = y[0] in cal.eos or cal.max_new_tokens == 1
        while not done:
            a = _accepted(trees[t][(config.depth, config.top_k)], config.total_tokens, y[t + 1: t + 2 + config.depth])
            lengths.append(a)
            new = y[t + 1: t + a + 2]
            produced += a + 1
            done = produced >= cal.max_new_tokens or any(x in cal.eos for x in new) or t + a + 1 >= len(trees)
            t += a + 1
        per_prompt.append(lengths)
    flat = [a for lengths in per_prompt for a in lengths]
    return (sum(flat) / len(flat) if flat else 0.0), per_prompt


# -- the search ------------------------------------------------------------------------------------
def candidates(depths=DEPTHS, top_ks=TOP_KS, totals=TOTALS, max_depth: int | None = None) -> list[TreeConfig]:
    """Grid configs, one per distinct tree (total_tokens beyond the candidate count changes nothing)."""
    seen, out = set(), []
    for d in depths:
        if max_depth is not None and d > max_depth:
            continue
        for k in top_ks:
            for t in sorted(totals):
                c = TreeConfig(t, d, k)
                if (c.nodes, d, k) not in seen:
                    seen.add((c.nodes, d, k))
                    out.append(c)
    return out


def _is(row: dict, config: TreeConfig) -> bool:
    return (row["depth"], row["top_k"], row["nodes"]) == (config.depth, config.top_k, config.nodes)


def measure_cycle(target, draft, prompt, config: TreeConfig, max_new_tokens: int, temperature: float = 0.0,
                  top_p: float = 1.0, seed: int = 0) -> dict:
    """A real speculative run of `config` on one prompt: its seconds per cycle (draft, verification,
    acceptance, cache commit, the draft's extend and the Python around them), cycles and tau."""
    from ..decoding.decode import decode_speculative

    inputs = target.prepare(prompt.prompt, prompt.images)
    generator = torch.Generator(device=target.device).manual_seed(seed)
    _, stats = decode_speculative(target, draft, inputs, max_new_tokens, temperature, top_p, generator,
                                  config.total_tokens, config.depth, config.top_k)
    return dict(cycles=stats["cycles"], cycle_s=stats["decode_time_s"] / max(stats["cycles"], 1), tau=stats["tau"])


def overhead_fit(checks: list[dict]):
    """n -> seconds a cycle of n nodes costs beyond the model's draft + extend + verification: the real
    runs' differences, linear in n between two of them and flat beyond (0 without real runs)."""
    points = sorted((c["nodes"], c["measured_cycle_s"] - c["model_cycle_s"]) for c in checks if c["cycles"])
    if not points:
        return lambda n: 0.0
    (n0, o0), (n1, o1) = points[0], points[-1]
    if n1 == n0:
        return lambda n: (o0 + o1) / 2
    return lambda n: o0 + (o1 - o0) * (min(max(n, n0), n1) - n0) / (n1 - n0)


def search_tree(target, draft, prompts, max_new_tokens: int, depths=DEPTHS, top_ks=TOP_KS, totals=TOTALS,
                verify_sizes=VERIFY_SIZES, repeats: int = 7, log=None, temperature: float = 0.0,
                top_p: float = 1.0, seed: int = 0, measure: bool = True) -> dict:
    """Measure, estimate and rank every grid config for decoding at `temperature`; the result
    (JSON-ready) names the best as 'chosen' and carries the paper's 30/3/8 row for comparison (for a
    draft that cannot build it, Medusa with 3 heads, that tree at the draft's depth: 30/2/8).
    `measure`: calibrate the cycle model on real runs (`measure_cycle`) of the model's best tree and
    the paper's on the last prompt, and add what it leaves out (`overhead_fit`) to every candidate."""
    limit = max_tree_depth(draft)
    ref = PAPER_TREE if limit is None or PAPER_TREE.depth <= limit else replace(PAPER_TREE, depth=limit)
    grid_totals = sorted(set(totals) | {ref.total_tokens})
    grid_depths = sorted(set(depths) | {ref.depth})
    grid_ks = sorted(set(top_ks) | {ref.top_k})
    cal, (cache, inputs) = calibrate(target, draft, prompts, max_new_tokens, grid_depths, grid_ks,
                                     max(grid_totals), keep_cache=True, temperature=temperature, top_p=top_p,
                                     seed=seed)
    if log:
        log(f"tree search: calibrated on {len(prompts)} prompt(s), {sum(len(y) for y in cal.ys)} positions, "
            f"T={temperature:g}")
    curve = verify_cost_curve(target, cache, sorted(set(verify_sizes) | {1}), repeats, inputs.rope_delta)
    extend = statistics.median(cal.extend_times) if cal.extend_times else 0.0
    vanilla = curve[1]
    rows = []
    for c in candidates(grid_depths, grid_ks, grid_totals, limit):
        tau, _ = estimate_tau(cal, c)
        draft_s = statistics.median(cal.draft_times[(c.depth, c.top_k)])
        rows.append(dict(asdict(c), label=c.label, nodes=c.nodes, tau=tau, draft_s=draft_s, extend_s=extend,
                         verify_s=interpolate(curve, c.nodes)))
    checks = []
    if measure:        # the model's best and the paper's tree decoded for real: what the model leaves out
        best = max(rows, key=lambda r: (r["tau"] + 1) / (r["draft_s"] + r["extend_s"] + r["verify_s"]))
        for r in dict.fromkeys(id(x) for x in (best, next(x for x in rows if _is(x, ref)))):
            row = next(x for x in rows if id(x) == r)
            run = measure_cycle(target, draft, prompts[-1], TreeConfig(row["total_tokens"], row["depth"], row["top_k"]),
                                max_new_tokens, temperature, top_p, seed)
            checks.append(dict(label=row["label"], nodes=row["nodes"], cycles=run["cycles"], measured_cycle_s=run["cycle_s"],
                               model_cycle_s=row["draft_s"] + row["extend_s"] + row["verify_s"]))
    fit = overhead_fit(checks)
    for row in rows:
        row["overhead_s"] = fit(row["nodes"])
        cycle = cycle_s(row)
        row.update(tokens_per_s=(row["tau"] + 1) / cycle, speedup=(row["tau"] + 1) * vanilla / cycle)
        row["ceiling_speedup"] = ceiling(row, vanilla)
    rows.sort(key=lambda r: -r["tokens_per_s"])
    paper = next(r for r in rows if _is(r, ref))
    if log and checks:
        log("tree search: cycle model against real runs: " + ", ".join(
            f"{c['label']} model {c['model_cycle_s'] * 1e3:.1f} ms, measured {c['measured_cycle_s'] * 1e3:.1f} ms"
            for c in checks))
    return {"chosen": rows[0], "paper": paper, "candidates": rows, "cycle_checks": checks,
            "verify_curve_s": {str(n): s for n, s in curve.items()}, "vanilla_token_s": vanilla,
            "draft_pass_s": {str(k): statistics.median(t) for k, t in sorted(cal.pass_times.items()) if t},
            "draft_extend_s": extend, "temperature": temperature,
            "calibration": {"prompts": [p.prompt_id for p in prompts], "top_p": top_p, "seed": seed,
                                                      "positions": sum(len(y) for y in cal.ys),
                                                      "max_new_tokens": max_new_tokens}}
