"""Decoding: `prefill`, `decode_vanilla`, `decode_speculative`, and `generate` with its `Generation`.

One device-agnostic loop per mode over a preallocated KV cache. Timed regions synchronise the
device, so wall times are honest on CUDA too.
"""
from __future__ import annotations

import functools
import math
import numbers
import sys
import time
from dataclasses import dataclass, field

import torch

from ..targets.base import Target, TargetInputs
from .tree import PAPER_TREE, TreeConfig, chain_tree, check_tree, draft_tree, parse_tree
from .verify import accept_greedy, accept_sampling, sample_token, target_probs


@dataclass
class Generation:
    token_ids: list[int]                 # generated tokens only (EOS included when it ended the answer)
    prompt_ids: list[int]                # ids fed to the target, image tokens expanded
    text: str
    stats: dict = field(default_factory=dict)


class Clock:
    """Seconds between marks, the device synchronised at each mark."""

    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.sync()
        self.t = time.perf_counter()

    def lap(self) -> float:
        self.sync()
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        return dt


def pick(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """The next token from one position's logits [V]: argmax at temperature 0, else a seeded draw."""
    if temperature <= 0:
        return int(logits.argmax())
    return sample_token(target_probs(logits, temperature, top_p), generator)


def check_room(target: Target, inputs: TargetInputs, max_new_tokens: int) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    limit = target.text_config.max_position_embeddings
    prompt = inputs.length + inputs.rope_delta
    need = prompt + max_new_tokens
    if need > limit:
        if prompt >= limit:
            remedy = f"cut at least {need - limit} tokens from the prompt (or fewer images) for max_new_tokens={max_new_tokens}"
        else:
            remedy = f"cut {need - limit} tokens from the prompt, or lower max_new_tokens to {limit - prompt}"
        raise ValueError(f"The prompt ({inputs.length} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the "
                         f"target's context of {limit} positions; {remedy}.")


def _integer(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_arguments(prompt, draft, max_new_tokens, temperature, seed, top_p) -> None:
    """`generate`'s arguments, checked before any work."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}.")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"prompt holds a character that is not valid text ({prompt[e.start]!r} at index "
                         f"{e.start}, a lone surrogate); decode the text properly before passing it.") from None
    if isinstance(draft, str):
        raise TypeError(f"draft must be a loaded draft, not the string {draft!r}; "
                        f"pass load_draft({draft!r}, target) (or draft=None for plain decoding).")
    if not _integer(max_new_tokens) or max_new_tokens < 1:
        raise (ValueError if _integer(max_new_tokens) else TypeError)(
            f"max_new_tokens must be a positive int, got {max_new_tokens!r}.")
    if not isinstance(temperature, numbers.Real) or isinstance(temperature, bool):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}.")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be finite and >= 0 (0: greedy), got {temperature}.")
    if not isinstance(top_p, numbers.Real) or isinstance(top_p, bool):
        raise TypeError(f"top_p must be a number, got {type(top_p).__name__}.")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1: no nucleus cut), got {top_p}.")
    if not _integer(seed):
        raise TypeError(f"seed must be an int, got {seed!r}.")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}.")


PAPER_DEPTH = 3


def max_tree_depth(draft) -> int | None:
    """The deepest tree `draft` builds (None: any). A draft of at most n tokens per path (`max_depth`;
    Medusa: one per head) builds depth n - 1, the root pass giving the first level."""
    tokens = getattr(draft, "max_depth", None)
    return None if tokens is None else tokens - 1


def tree_depth(draft, depth: int | None) -> int:
    """`depth` as given, else the paper's 3 where the draft can build it (Medusa: its heads - 1)."""
    if depth is not None:
        return depth
    limit = max_tree_depth(draft)
    return PAPER_DEPTH if limit is None else min(PAPER_DEPTH, limit)


def check_speculative(target: Target, draft, total_tokens: int, depth: int, top_k: int) -> None:
    """The tree settings against the draft and the target, before any work."""
    for name, value in (("total_tokens", total_tokens), ("depth", depth), ("top_k", top_k)):
        if not _integer(value):
            raise TypeError(f"{name} must be an int, got {value!r}.")
    draft_vocab = getattr(getattr(draft, "config", None), "draft_vocab", None)
    check_tree(total_tokens, depth, top_k, len(draft_vocab) if draft_vocab else target.vocab_size)
    limit = max_tree_depth(draft)
    if limit is not None and depth > limit:
        raise ValueError(f"This {type(draft).__name__} drafts at most {limit + 1} tokens per path, and a tree of "
                         f"depth d drafts d + 1; use depth <= {limit} (asked {depth}).")
    room = getattr(draft, "tree_room", None)      # tree nodes a draft session holds (ViSpec, EAGLE-2)
    if room is not None and top_k * depth > room:
        raise ValueError(f"depth={depth} with top_k={top_k} runs {top_k * depth} draft tree nodes, more than "
                         f"this {type(draft).__name__} holds ({room}); use depth <= {room // top_k} "
                         f"or a smaller top_k.")
    limit = target.text_config.max_position_embeddings
    if total_tokens > limit:
        raise ValueError(f"total_tokens={total_tokens} (tree nodes verified at once) exceeds the target's context "
                         f"of {limit} positions; use a tree of a few dozen nodes (paper: 30).")


def prefill(target: Target, inputs: TargetInputs, capacity: int):
    """Run the prompt; return the cache (prompt committed) and f, the last hidden states [1, T, D]."""
    cache = target.new_cache(capacity)
    f = target.forward(inputs.inputs_embeds, inputs.position_ids, cache)
    cache.commit(inputs.length)
    return cache, f


def _finish(tokens: list[int], eos: frozenset, max_new_tokens: int) -> tuple[list[int], bool]:
    """Cut at the first EOS (kept, as transformers does) or at max_new_tokens; say whether done."""
    for i, t in enumerate(tokens[:max_new_tokens]):
        if t in eos:
            return tokens[: i + 1], True
    return tokens[:max_new_tokens], len(tokens) >= max_new_tokens


def _weights_fixed(decode):
    """The target's weights do not change during one decode: checked once (Target.weights_fixed)."""
    @functools.wraps(decode)
    def run(target, *args, **kwargs):
        with target.weights_fixed():
            return decode(target, *args, **kwargs)
    return run


@_weights_fixed
@torch.inference_mode()
def decode_vanilla(target: Target, inputs: TargetInputs, max_new_tokens: int, temperature: float = 0.0,
                   top_p: float = 1.0, generator: torch.Generator | None = None) -> tuple[list[int], dict]:
    check_room(target, inputs, max_new_tokens)
    clock = Clock(target.device)
    cache, f = prefill(target, inputs, inputs.length + max_new_tokens)
    token = pick(target.logits(f[0, -1]), temperature, top_p, generator)
    prefill_s = clock.lap()
    tokens = [token]
    offset = torch.zeros(1, dtype=torch.long, device=target.device)
    ids = torch.empty(1, 1, dtype=torch.long, device=target.device)
    while token not in target.eos_token_ids and len(tokens) < max_new_tokens:
        ids.fill_(token)
        f = target.forward(target.embed(ids), target.positions(cache.length, offset, inputs.rope_delta), cache)
        cache.commit(1)
        token = pick(target.logits(f[0, -1]), temperature, top_p, generator)
        tokens.append(token)
    decode_s = clock.lap()
    return tokens, dict(prefill_time_s=prefill_s, decode_time_s=decode_s, cycles=len(tokens) - 1,
                        accept_lengths=[], tau=0.0)


@_weights_fixed
@torch.inference_mode()
def decode_speculative(target: Target, draft, inputs: TargetInputs, max_new_tokens: int,
                       temperature: float = 0.0, top_p: float = 1.0, generator: torch.Generator | None = None,
                       total_tokens: int = 30, depth: int | None = None, top_k: int = 8) -> tuple[list[int], dict]:
    """Draft a tree, verify it in one target forward, keep the accepted path and the bonus token.
    `depth`: expansions after the root pass, so a path drafts up to depth + 1 tokens (`tree_depth`)."""
    check_room(target, inputs, max_new_tokens)
    depth = tree_depth(draft, depth)
    check_speculative(target, draft, total_tokens, depth, top_k)
    clock = Clock(target.device)
    capacity = inputs.length + max_new_tokens + total_tokens
    cache, f = prefill(target, inputs, capacity)
    root = pick(target.logits(f[0, -1]), temperature, top_p, generator)
    prefill_s = clock.lap()

    session = draft.begin(target, inputs, capacity)
    root_id = torch.full((1,), root, dtype=torch.long, device=target.device)
    next_embeds = torch.cat([inputs.inputs_embeds[:, 1:], target.embed(root_id[None])], 1)
    session.extend(f, torch.cat([inputs.input_ids[0, 1:], root_id]), next_embeds)
    begin_s = clock.lap()

    tokens, accept_lengths, draft_s, verify_s = [root], [], 0.0, 0.0
    done = root in target.eos_token_ids or max_new_tokens == 1
    while not done:
        if session.proposes:                          # a session with its own proposal (prompt lookup)
            tree = chain_tree(root, session.propose(root), target.device)
        else:
            tree = draft_tree(session, root, total_tokens, depth, top_k, device=target.device)
        draft_s += clock.lap()
        positions = target.positions(cache.length, tree.depths, inputs.rope_delta)
        f = target.forward(target.embed(tree.tokens)[None], positions, cache, tree.mask)   # [1, n, D]
        logits = target.logits(f[0])                                                       # [n, V]
        if temperature <= 0:
            acc = accept_greedy(tree, logits)
        else:
            acc = accept_sampling(tree, logits, temperature, generator, top_p)
        new, index = acc.emitted(tree)                  # host tokens; accepted nodes on the device
        cache.commit(len(tree.tokens), acc.nodes, index)
        accept_lengths.append(acc.accept_length)
        tokens, done = _finish(tokens + new, target.eos_token_ids, max_new_tokens)
        root = acc.bonus_token
        if not done:
            # the draft's next pairs: (f at each accepted node, the token that follows it), built on
            # the device: the accepted nodes' tokens after the root, then the bonus
            next_ids = torch.cat([tree.tokens[index[1:]], torch.full_like(index[:1], root)])
            session.extend(f[:, index], next_ids)
        verify_s += clock.lap()
    return tokens, dict(prefill_time_s=prefill_s + begin_s, decode_time_s=draft_s + verify_s,
                        draft_time_s=draft_s, verify_time_s=verify_s, cycles=len(accept_lengths),
                        accept_lengths=accept_lengths,
                        tau=sum(accept_lengths) / len(accept_lengths) if accept_lengths else 0.0)


def tree_chooser(target: Target, draft, temperature: float, top_p: float, log=None):
    """The 'auto' tree's chooser: `evaluation/tree_choice.choose_tree`, a later stage (it calibrates on the
    benchmark's calibration prompts), installed here by the package's `__init__`."""
    raise RuntimeError("No tree chooser installed: import vispec_core (its __init__ installs one) or pass a tree.")


def resolve_tree(target: Target, draft, tree="auto", total_tokens: int | None = None, depth: int | None = None,
                 top_k: int | None = None, temperature: float = 0.0, top_p: float = 1.0, log=None) -> tuple:
    """`generate`'s tree arguments -> (TreeConfig or None for decoding without the draft, source, choice).
    tree: 'auto' (the tree chosen for this target, draft, device and temperature, `tree_choice`), 'paper'
    (30/3/8; Medusa at its deepest), 'T/D/K' or a TreeConfig; total_tokens / depth / top_k, when given,
    set the tree instead (the paper's values for those left out). A proposing draft (prompt lookup)
    drafts its own chain, so no tree is chosen for it."""
    given = {k: v for k, v in (("total_tokens", total_tokens), ("depth", depth), ("top_k", top_k)) if v is not None}
    if given and tree not in ("auto", None):
        raise ValueError(f"Give the tree either as tree={tree!r} or as total_tokens / depth / top_k ({given}), not both.")
    if given:
        config = TreeConfig(given.get("total_tokens", PAPER_TREE.total_tokens), tree_depth(draft, depth),
                            given.get("top_k", PAPER_TREE.top_k))
        return config, "given", None
    if tree in ("auto", None):
        if getattr(draft, "proposes", False):
            return PAPER_TREE, "chain", None
        choice = tree_chooser(target, draft, temperature, top_p, log=log)
        return choice.tree, "auto", choice
    config = parse_tree(tree) if isinstance(tree, str) else tree
    if not isinstance(config, TreeConfig):
        raise ValueError(f"tree must be 'auto', 'paper', 'TOTAL/DEPTH/TOP_K' or a TreeConfig, got {tree!r}.")
    if config == PAPER_TREE:
        return TreeConfig(config.total_tokens, tree_depth(draft, None), config.top_k), "paper", None
    return config, "given", None


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def generate(target: Target, prompt: str, images=None, draft=None, max_new_tokens: int = 128,
             temperature: float = 0.0, seed: int = 0, top_p: float = 1.0, total_tokens: int | None = None,
             depth: int | None = None, top_k: int | None = None, tree="auto") -> Generation:
    """Answer a prompt about images; with a draft, by speculative decoding (lossless), else token by token.

    tau in `stats` is the mean number of accepted draft tokens per draft-verify cycle, bonus token
    not counted (the paper's convention). The tree (`resolve_tree`): by default 'auto', the tree
    predicted fastest for this target, draft, device and temperature, or no draft at all when no tree
    is predicted to beat plain decoding (`stats['tree_choice']` says which and why); 'paper' is 30/3/8:
    total_tokens nodes, top_k children per node, and `depth` expansions after the root pass (Medusa's
    default depth is its heads - 1).
    """
    check_arguments(prompt, draft, max_new_tokens, temperature, seed, top_p)
    config = choice = source = None
    if draft is not None:
        config, source, choice = resolve_tree(target, draft, tree, total_tokens, depth, top_k, temperature, top_p,
                                              log=_say)
        if config is not None:
            check_speculative(target, draft, config.total_tokens, config.depth, config.top_k)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    clock = Clock(target.device)
    inputs = target.prepare(prompt, images)
    prepare_s = clock.lap()
    if draft is None or config is None:
        tokens, stats = decode_vanilla(target, inputs, max_new_tokens, temperature, top_p, generator)
    else:
        tokens, stats = decode_speculative(target, draft, inputs, max_new_tokens, temperature, top_p, generator,
                                           config.total_tokens, config.depth, config.top_k)
    wall = clock.lap() + prepare_s
    kind = None if draft is None else getattr(getattr(draft, "config", None), "kind", type(draft).__name__)
    stats.update(new_tokens=len(tokens), wall_time_s=wall, prepare_time_s=prepare_s,
                 tokens_per_s=len(tokens) / max(stats["decode_time_s"] + stats["prefill_time_s"], 1e-9),
                 method="vanilla" if draft is None or config is None else kind, draft=kind,
                 tree=None if draft is None or config is None or source == "chain" else config.label,
                 tree_source=source)
    if choice is not None:
        stats["tree_choice"] = choice.as_stats()
    return Generation(tokens, inputs.input_ids[0].tolist(), target.decode_text(tokens), stats)
