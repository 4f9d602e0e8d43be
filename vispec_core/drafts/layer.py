"""The draft's one decoder layer: the target's own decoder-layer class (Llama-style for LLaVA-NeXT and
the default VLM, Qwen2-style for Qwen2.5-VL) built from a one-layer copy of its text config, without
the input layernorm (as EAGLE: the input is already a projection of (e, f)) and without a final norm.

The attention runs here, not in the HF layer's forward, so that the same code serves the session (a
preallocated KV cache and a tree mask) and training (whole sequences, unrolled steps)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel

from ..targets.kv_cache import KVCache
from ..cpu import fused_layer
from ..targets.base import UNPLANNED, rotate_half
from ..cpu.packed import cpu_mode, linear


def _apply(m: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return linear(x, m.weight, m.bias)


class DraftDecoderLayer(nn.Module):
    def __init__(self, layer_config, layer_class: type, rotary_class: type):
        super().__init__()
        hf = layer_class(layer_config, 0)
        # Keep the HF layer's parameter names (self_attn.q_proj, mlp.gate_proj, ...) minus input_layernorm.
        self.self_attn = hf.self_attn
        self.mlp = hf.mlp
        self.post_attention_layernorm = hf.post_attention_layernorm
        self.rotary_emb = rotary_class(config=layer_config)
        self.num_heads = layer_config.num_attention_heads
        self.num_kv_heads = layer_config.num_key_value_heads
        self.head_dim = self.self_attn.head_dim

    def new_cache(self, capacity: int, dtype: torch.dtype, device) -> KVCache:
        """In the "widen" form the layer runs as fused_layer.py's one call, on an fp32 cache."""
        if self.fused(dtype, device):
            dtype = torch.float32
        return KVCache(1, self.num_kv_heads, self.head_dim, capacity, dtype, device)

    def fused(self, dtype: torch.dtype, device) -> bool:
        return (torch.device(device).type == "cpu" and cpu_mode(dtype) == "widen" and fused_layer.available()
                and fused_layer.layer_fits(self.self_attn, self.mlp, (self.post_attention_layernorm,)))

    def forward(self, x: torch.Tensor, position_ids: torch.LongTensor, cache: KVCache | None = None,
                mask: torch.BoolTensor | None = None, past: list[tuple[torch.Tensor, torch.Tensor]] = ()):
        """x: [1, n, D] draft inputs (fc(cat(e, f))); position_ids [1, n] or [3, 1, n].

        Keys: the cache's committed prefix (cache given; the new keys are written after it, left
        uncommitted) or the `past` keys of earlier unrolled steps, then the n new ones. mask
        [n, keys] says which keys each new token sees; None: every earlier key and causal among the
        new tokens. Returns h [1, n, D] and this call's (k, v) ([kv_heads, n, hd] each; None where
        fused_layer.py ran the layer on the cache, in the "widen" form)."""
        n = x.shape[1]
        attn = self.self_attn
        cos, sin = self.rotary_emb(x, position_ids)                  # [1, n, hd]
        if (cache is not None and cache.storage.dtype == torch.float32 and x.dtype == torch.bfloat16
                and cos.dim() == 3 and not torch.is_grad_enabled() and self.fused(x.dtype, x.device)):
            cache.check_room(n)
            h = fused_layer.draft_layer(self, x[0].contiguous(), cos[0].contiguous(), sin[0].contiguous(), cache, mask)
            return h[None], None
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = _apply(attn.q_proj, x).view(1, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = _apply(attn.k_proj, x).view(1, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = _apply(attn.v_proj, x).view(1, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = (k * cos + rotate_half(k) * sin)[0]                      # [kv_heads, n, hd]
        v = v[0]
        if cache is not None:
            keys, values = (t.to(q.dtype) for t in cache.write(0, k, v))   # an fp32 cache (widen) the fused path missed
        else:
            keys = torch.cat([p[0] for p in past] + [k], dim=1)
            values = torch.cat([p[1] for p in past] + [v], dim=1)
        prefix = keys.shape[1] - n
        is_causal = False
        if mask is None and prefix > 0 and n > 1:
            mask = torch.ones(n, prefix + n, dtype=torch.bool, device=x.device)
            mask[:, prefix:] = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        elif mask is None and n > 1:
            is_causal = True
        with sdpa_kernel(UNPLANNED):
            o = F.scaled_dot_product_attention(q, keys[None], values[None], attn_mask=mask, is_causal=is_causal,
                                               scale=attn.scaling, enable_gqa=self.num_heads != self.num_kv_heads)
        h = x + _apply(attn.o_proj, o.transpose(1, 2).reshape(1, n, -1))
        m, y = self.mlp, self.post_attention_layernorm(h)
        return h + _apply(m.down_proj, m.act_fn(_apply(m.gate_proj, y)) * _apply(m.up_proj, y)), (k, v)
