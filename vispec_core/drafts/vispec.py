"""The ViSpec draft (paper Sec. 4.1-4.2): one decoder layer over EAGLE pairs, a vision adaptor that
compresses each image into a few tokens c plus a global feature g, and global injection of g.

EAGLE pairing: the draft's row for sequence index t is built from (f_t, e_{t+1}), f_t the target's
last hidden state at t, e_{t+1} the input embedding of token t+1; it sits at the target's position of
index t and its output h'_t predicts token t+2 through the target's LM head:

    x_t = fc(cat(e_{t+1}, f_aug_t)),   h'_t = layer(x_t),   logits = lm_head(h'_t)   (draft vocabulary rows)

Images: the pairs whose e is an image embedding (t in [s-1, e-1) for a span [s, e)) are replaced by
the image's num_compressed tokens c; they take the last num_compressed of those pairs' positions and,
as f input, the target's f at the same indices (f_t beside the position of index t, as every other
row; the late image f have seen most of the image). Text keeps its original positions, so the draft's
KV cache is shorter than the target's while its positions continue from the original indices.

Global injection: on every text row, f_aug = W [f; g] + b with W initialised to [I | 0] and b = 0
(the identity at start, as the official code); g is the global feature of the latest image whose
pairs precede the row, zero before the first image, and persists while decoding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..cpu.packed import linear
from .base import DraftModel, DraftOutput, as_input
from .config import import_class
from .layer import DraftDecoderLayer
from .session import TreeSession


class VisionAdaptor(nn.Module):
    """Q-Former-like: num_compressed + 1 learnable queries cross-attend (non-causal) to one image's
    embeddings v [r, D] (the projector output the target sees), then an MLP. Output [nq, D]: the
    first nq - 1 rows are the compressed tokens c, the last is the global feature g."""

    def __init__(self, hidden: int, num_queries: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.queries = nn.Parameter(torch.empty(num_queries, hidden))
        self.query_norm = nn.RMSNorm(hidden, eps=eps)
        self.image_norm = nn.RMSNorm(hidden, eps=eps)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(hidden, hidden) for _ in range(4))
        self.mlp_norm = nn.RMSNorm(hidden, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def init_draft_weights(self, init, std: float) -> None:
        init.normal_(self.queries, mean=0.0, std=std)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:           # [n, D] -> [H, n, D / H]
        return x.view(x.shape[0], self.num_heads, -1).transpose(0, 1)

    def forward(self, v: torch.Tensor) -> torch.Tensor:          # v: [r, D] -> [nq, D]
        nq, d = self.queries.shape
        v = self.image_norm(v.to(self.queries.dtype))
        q = self._heads(self.q_proj(self.query_norm(self.queries)))
        o = F.scaled_dot_product_attention(q, self._heads(self.k_proj(v)), self._heads(self.v_proj(v)))  # [H, nq, hd]
        x = self.queries + self.o_proj(o.transpose(0, 1).reshape(nq, d))
        return x + self.mlp(self.mlp_norm(x))

    def attention(self, v: torch.Tensor) -> torch.Tensor:
        """Where each query looks: its attention weights over the image's embeddings, [H, nq, r]
        (each row sums to 1), as `forward` uses them."""
        v = self.image_norm(v.to(self.queries.dtype))
        q = self._heads(self.q_proj(self.query_norm(self.queries)))
        k = self._heads(self.k_proj(v))
        return torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)


class GlobalInjection(nn.Module):
    """f_aug = W [f; g] + b (paper: f + W_g g). W = [I | 0], b = 0 at init: the identity."""

    def __init__(self, hidden: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(hidden, 2 * hidden))
        self.bias = nn.Parameter(torch.empty(hidden))

    def init_draft_weights(self, init, std: float) -> None:
        d = self.bias.shape[0]
        init.copy_(self.weight, torch.cat([torch.eye(d), torch.zeros(d, d)], dim=1).to(self.weight))
        init.zeros_(self.bias)

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return linear(torch.cat([f, g.expand_as(f)], dim=-1), self.weight, self.bias)


def video_global_feature(globals_: list[torch.Tensor]) -> list[torch.Tensor]:
    """Frames of one video (paper Sec. 8.2): every frame's g becomes the frames' average."""
    if not globals_:
        return []
    mean = torch.stack(globals_).mean(dim=0)
    return [mean] * len(globals_)


@dataclass
class DraftRows:
    """The draft's rows for a run of pairs: text pairs as they are, image pairs replaced."""

    f: torch.Tensor                   # [1, L, D] f input before injection
    e: torch.Tensor                   # [1, L, D] token / image / compressed embedding
    position_ids: torch.LongTensor    # [1, L] or [3, 1, L]
    pair_index: torch.LongTensor      # [L] sequence index t of each row; -1: compressed token
    is_image: torch.BoolTensor        # [L]


class ViSpecDraft(DraftModel, kind="vispec"):
    def __init__(self, config):
        super().__init__(config)
        d = config.hidden_size
        layer_config = config.layer_config()
        self.fc = nn.Linear(2 * d, d)
        self.layer = DraftDecoderLayer(layer_config, import_class(config.layer_class),
                                       import_class(config.rotary_class))
        self.adaptor = VisionAdaptor(d, config.num_compressed + 1, layer_config.num_attention_heads,
                                     layer_config.rms_norm_eps) if config.uses_adaptor else None
        self.injection = GlobalInjection(d) if config.use_global_injection else None
        self.post_init()

    # -- the paper's pieces -------------------------------------------------------------------
    def compress(self, image_embeds: list[torch.Tensor], frames_as_video: bool = False):
        """Each image on its own -> (c [num_compressed, D] per image, g [D] per image); Nones
        where the draft has no adaptor."""
        if self.adaptor is None:
            return [None] * len(image_embeds), [None] * len(image_embeds)
        out = [self.adaptor(v) for v in image_embeds]
        compressed = [o[:-1] for o in out] if self.config.use_compression else [None] * len(out)
        globals_ = [o[-1] for o in out]
        return compressed, video_global_feature(globals_) if frames_as_video else globals_

    def layout(self, f: torch.Tensor, e: torch.Tensor, position_ids: torch.LongTensor, start: int,
               spans: list[tuple[int, int]], compressed: list) -> DraftRows:
        """Rows for the pairs t = start .. start+m-1 given f, e [1, m, D] and their positions."""
        m = f.shape[1]
        end, cursor, pieces = start + m, start, []

        def rows(a, b, image):      # pairs a..b-1 as they are
            idx = torch.arange(a, b, device=f.device)
            pieces.append((f[:, a - start:b - start], e[:, a - start:b - start],
                           position_ids[..., a - start:b - start], idx, image))

        for (s, stop), c in zip(spans, compressed):
            a, b = max(s - 1, 0), stop - 1            # pairs whose e is this image's embedding
            if b <= start or a >= end:
                continue
            if a < start or b > end:
                raise ValueError(f"The image at tokens [{s}, {stop}) is split across two extend calls "
                                 f"(this one covers pairs [{start}, {end})); extend the prompt in one call.")
            rows(cursor, a, False)
            if c is None:
                rows(a, b, True)
            else:
                nc = c.shape[0]
                if b - a < nc:
                    raise ValueError(f"An image of {stop - s} tokens cannot give {nc} compressed tokens; "
                                     "lower num_compressed.")
                local = slice(b - nc - start, b - start)                  # c_j sits at pair b-nc+j
                pieces.append((f[:, local], c[None].to(e.dtype), position_ids[..., local],
                               torch.full((nc,), -1, device=f.device), True))
            cursor = b
        rows(cursor, end, False)
        pieces = [p for p in pieces if p[3].numel()]
        return DraftRows(
            f=torch.cat([p[0] for p in pieces], dim=1), e=torch.cat([p[1] for p in pieces], dim=1),
            position_ids=torch.cat([p[2] for p in pieces], dim=-1),
            pair_index=torch.cat([p[3] for p in pieces]),
            is_image=torch.cat([torch.full((p[3].numel(),), p[4], device=f.device) for p in pieces]))

    def global_table(self, spans, globals_, device) -> tuple[torch.Tensor, torch.LongTensor] | None:
        """What `row_globals` looks rows up in: (table [images + 1, D]: zero, then each image's g;
        ends [images]: the pair index where each image's pairs end). None without injection."""
        if self.injection is None:
            return None
        table = torch.zeros(len(spans) + 1, self.config.hidden_size, dtype=self.fc.weight.dtype, device=device)
        if spans:
            table[1:] = torch.stack(globals_).to(table.dtype)
        return table, torch.tensor([stop - 1 for _, stop in spans], device=device)

    def row_globals(self, pair_index: torch.LongTensor, spans, globals_, table=None) -> torch.Tensor | None:
        """g of each row [1, L, D]: the latest image whose pairs end at or before the row (zero before
        the first image). None without injection. table: `global_table(spans, globals_)`, if kept."""
        table = table or self.global_table(spans, globals_, pair_index.device)
        if table is None:
            return None
        table, ends = table
        which = torch.searchsorted(ends, pair_index.clamp_min(0), right=True)   # 0: before any image
        return table[which][None]

    def pair_input(self, f: torch.Tensor, e: torch.Tensor, is_image: torch.BoolTensor,
                   g: torch.Tensor | None) -> torch.Tensor:
        """x = fc(cat(e, f_aug)), f_aug = injection(f, g) on text rows."""
        if self.injection is not None:
            f = torch.where(is_image[None, :, None], f, self.injection(f, g))
        return linear(torch.cat([e.to(f.dtype), f], dim=-1), self.fc.weight, self.fc.bias)

    # -- training -----------------------------------------------------------------------------
    def forward(self, f: torch.Tensor, inputs, unroll: int = 0, frames_as_video: bool = False,
                return_logits: bool = True) -> DraftOutput:
        """Teacher-forced over a whole sequence (batch 1): f [1, N, D] the target's last hidden states
        on `inputs` (a TargetInputs of the full sequence, prompt + answer). Rows are the pairs
        t = 0..N-2. unroll=K adds K steps that feed the draft its own hidden states (multi-token
        prediction): step k's row r takes f = step k-1's output at row r-1 and attends to step 0's
        rows <= r-k and to step j's row r-k+j (j = 1..k), which is exactly what a tree node at depth
        k+1 sees (the committed prefix and its ancestors). Every step's row t predicts token t+2."""
        n, f = inputs.length, as_input(f)
        compressed, globals_ = self.compress([as_input(v) for v in inputs.image_embeds], frames_as_video)
        rows = self.layout(f[:, :n - 1], as_input(inputs.inputs_embeds[:, 1:]), inputs.position_ids[..., :n - 1], 0,
                           inputs.image_spans, compressed)
        g = self.row_globals(rows.pair_index, inputs.image_spans, globals_)
        h, kv = self.layer(self.pair_input(rows.f, rows.e, rows.is_image, g), rows.position_ids)
        hidden, past = [h], [kv]
        length = h.shape[1]
        for k in range(1, unroll + 1):
            f_k = torch.cat([rows.f[:, :1], hidden[-1][:, :-1]], dim=1)
            h, kv = self.layer(self.pair_input(f_k, rows.e, rows.is_image, g), rows.position_ids,
                               mask=unroll_mask(length, k, h.device), past=past)
            hidden.append(h)
            past.append(kv)
        hidden = torch.cat(hidden)                                          # [K+1, L, D]
        return DraftOutput(hidden, self.logits(hidden) if return_logits else None, rows.pair_index,
                           rows.is_image)

    # -- inference ----------------------------------------------------------------------------
    tree_room = 256      # tree nodes a session holds besides the root: top_k * depth of them are run

    def begin(self, target, inputs, capacity: int, tree_room: int | None = None, frames_as_video: bool = False):
        """Start one generation: compress the images, allocate the KV cache (capacity target
        positions plus tree_room tree nodes)."""
        self.config.check_target(target)
        return DraftSession(self, target, inputs, capacity, tree_room or self.tree_room, frames_as_video)


def unroll_mask(length: int, k: int, device) -> torch.BoolTensor:
    """[L, (k+1) L]: step k's row r sees step 0's rows <= r-k and step j's row r-k+j (j = 1..k)."""
    r = torch.arange(length, device=device)
    blocks = [r[None, :] <= (r[:, None] - k)]
    blocks += [r[None, :] == (r[:, None] - k + j) for j in range(1, k + 1)]
    return torch.cat(blocks, dim=1)


class DraftSession(TreeSession):
    """One generation's draft state. The KV cache holds committed pairs only; tree nodes are written
    after them and discarded by the next `extend`. Nothing here waits for the device: the tree's
    tokens and parents stay device tensors (`tokens` and `parents` read them back on demand)."""

    def __init__(self, draft: ViSpecDraft, target, inputs, capacity: int, tree_room: int = 256,
                 frames_as_video: bool = False):
        self.draft, self.target, self.inputs = draft, target, inputs
        self.tree_room = tree_room
        dtype, device = draft.fc.weight.dtype, draft.fc.weight.device
        with torch.inference_mode():
            self.compressed, self.globals = draft.compress(inputs.image_embeds, frames_as_video)
            self.global_table = draft.global_table(inputs.image_spans, self.globals, device)
            self.cache = draft.layer.new_cache(capacity + tree_room, dtype, device)
            self.ancestors = torch.zeros(tree_room + 1, tree_room + 1, dtype=torch.bool, device=device)
        self.committed = 0          # draft cache rows of committed pairs
        self.next_index = 0         # sequence index of the next pair (the target's length - 1 after extend)
        self.last_token = None      # [1] the last extended token, the next tree's root
        self.root_hidden = self.root_logprobs = None
        self.nodes = 0              # tree nodes so far in expand numbering (0: the root)
        self.hidden = None          # [nodes, D] the draft's output hidden per node (root: the last pair's)
        self.depths: list[int] = []
        self.calls = []             # (tokens, parents) of each expand call since the root

    @property
    def tokens(self) -> list[int]:
        """The tree's tokens in expand numbering (read back from the device)."""
        return torch.cat([self.last_token] + [t for t, _ in self.calls]).tolist()

    @property
    def parents(self) -> list[int]:
        """The tree's parents in expand numbering (read back from the device)."""
        return [-1] + sum((p.tolist() for _, p in self.calls), [])

    def _embeds(self, start: int, next_ids: torch.LongTensor, next_embeds) -> torch.Tensor:
        """e_{t+1} for pairs t = start..: the prompt's input embeddings (images included), then ids."""
        if next_embeds is not None:
            return next_embeds
        in_prompt = max(0, min(self.inputs.length - 1 - start, next_ids.numel()))
        parts = [self.inputs.inputs_embeds[:, start + 1:start + 1 + in_prompt]]
        if in_prompt < next_ids.numel():
            parts.append(self.draft.embed(next_ids[in_prompt:].to(self.cache.storage.device))[None])
        return torch.cat(parts, dim=1)

    def _positions(self, start: int, m: int) -> torch.LongTensor:
        """Position ids of sequence indices start..start+m-1: the prompt's, then the target's rule."""
        n_prompt = max(0, min(self.inputs.length - start, m))
        parts = [self.inputs.position_ids[..., start:start + n_prompt]]
        if n_prompt < m:
            offsets = torch.arange(m - n_prompt, device=self.inputs.position_ids.device)
            parts.append(self.target.positions(start + n_prompt, offsets, self.inputs.rope_delta))
        return torch.cat(parts, dim=-1)

    @torch.inference_mode()
    def extend(self, f: torch.Tensor, next_ids: torch.LongTensor, next_embeds: torch.Tensor | None = None):
        """Commit pairs (f_t, e_{t+1}) for the next m sequence indices (f [1, m, D], next_ids [m]);
        return the log-probs [V] of the token after the last pair's token."""
        d, start, m = self.draft, self.next_index, f.shape[1]
        next_ids = next_ids.reshape(-1)
        if next_ids.numel() != m:
            raise ValueError(f"extend got {m} hidden states but {next_ids.numel()} next tokens.")
        self.cache.truncate(self.committed)
        rows = d.layout(f, self._embeds(start, next_ids, next_embeds), self._positions(start, m), start,
                        self.inputs.image_spans, self.compressed)
        g = d.row_globals(rows.pair_index, self.inputs.image_spans, self.globals, self.global_table)
        h, _ = d.layer(d.pair_input(rows.f, rows.e, rows.is_image, g), rows.position_ids, cache=self.cache)
        self.cache.commit(h.shape[1])
        self.committed, self.next_index = self.cache.length, start + m
        self.last_token = next_ids[-1:].to(self.cache.storage.device)
        self.root_hidden = h[0, -1:]                               # [1, D]: the root's parent hidden
        self.root_logprobs = d.token_log_probs(self.root_hidden)[0]     # [V]
        self._new_tree()
        return self.root_logprobs

    def _new_tree(self) -> None:
        """Drop the tree rows; the tree is the root alone (node 0, its hidden = the last pair's)."""
        self.cache.truncate(self.committed)
        self.hidden, self.nodes = self.root_hidden, 1
        self.depths, self.calls = [0], []

    @torch.inference_mode()
    def expand(self, tokens: torch.LongTensor, parents: torch.LongTensor, depth: int) -> torch.Tensor:
        """TreeSession.expand: run k nodes at tree depth `depth`; return their children's
        log-probs [k, V]. Node i >= 1 (expand numbering) lives in cache row committed + i - 1.
        The checks on token and parent values run on the device (asynchronously)."""
        if self.root_logprobs is None:
            raise RuntimeError("expand before extend: commit the prompt's pairs first.")
        d, k, n = self.draft, tokens.numel(), self.nodes
        device = self.cache.storage.device
        tokens, parents = tokens.to(device), parents.to(device).long()
        if depth == 0:
            if k != 1:
                raise ValueError(f"The root call passes one token (the last extended one), got {k}.")
            torch._assert_async((tokens == self.last_token).all(),
                                "The root call must pass the last extended token.")
            self._new_tree()
            return self.root_logprobs[None]
        if n + k > self.tree_room + 1:
            raise ValueError(f"The draft tree outgrew tree_room={self.tree_room} nodes; begin with a larger one.")
        lo = self.depths.index(depth - 1) if depth - 1 in self.depths else n
        hi = lo + self.depths.count(depth - 1)
        if self.depths[lo:hi] != [depth - 1] * (hi - lo):
            raise ValueError(f"expand at depth {depth}: the nodes at depth {depth - 1} came in several runs; "
                             "expand level by level.")
        torch._assert_async(((parents >= lo) & (parents < hi)).all(),
                            f"expand at depth {depth}: parents must be the nodes at depth {depth - 1}, {lo}..{hi - 1}.")
        new = torch.arange(n, n + k, device=device)
        # a node's ancestors: its parent's and itself (scatter fills a scalar; `[new, new] = True` would
        # copy True from the host and wait)
        self.ancestors[new] = self.ancestors[parents].scatter(1, new[:, None], True)
        mask = torch.cat([torch.ones(k, self.committed, dtype=torch.bool, device=device),
                          self.ancestors[new, 1:n + k]], dim=1)     # prefix + ancestors among tree rows
        index = torch.full((k,), self.next_index + depth - 1, device=device)
        positions = self.target.positions(self.next_index + depth - 1, torch.zeros(k, dtype=torch.long, device=device),
                                          self.inputs.rope_delta)
        is_image = torch.zeros(k, dtype=torch.bool, device=device)
        g = d.row_globals(index, self.inputs.image_spans, self.globals, self.global_table)
        x = d.pair_input(self.hidden[parents][None], d.embed(tokens)[None], is_image, g)
        h, _ = d.layer(x, positions, cache=self.cache, mask=mask)
        self.cache.commit(k)       # tree rows, above self.committed: the next extend drops them
        self.hidden = torch.cat([self.hidden, h[0]])
        self.depths += [depth] * k
        self.calls.append((tokens, parents))
        self.nodes = n + k
        return d.token_log_probs(h[0])
