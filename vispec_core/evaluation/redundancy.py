"""Section 4.1 measured: why a shallow draft cannot read long, redundant image spans.

With one attention layer, R identical tokens s and one unique token t, the weight a query puts on t is
    alpha_u = exp(B) / (R exp(A) + exp(B)),   A = q.k_s, B = q.k_t,
which tends to 0 as R grows: the output approaches W_v s, the average of the redundant tokens.
"""
from __future__ import annotations

import math

import torch


def unique_token_weight(R: int | torch.Tensor, A: float, B: float) -> torch.Tensor:
    """The closed form alpha_u for R redundant tokens (scores A) and one unique token (score B)."""
    R = torch.as_tensor(R, dtype=torch.float64)
    return 1.0 / (R * math.exp(A - B) + 1.0)


def single_layer_attention(R: int, d: int = 64, seed: int = 0) -> dict:
    """Build the paper's sequence (R copies of s, then t), run one softmax attention layer with random
    W_q, W_k, W_v (no positions, no scaling, as in the derivation), and read the query at t.

    Returns the measured weight on t, the closed form from the same A and B, and how far the output
    is from W_v s (the redundant average) relative to |W_v s|."""
    g = torch.Generator().manual_seed(seed)
    Wq, Wk, Wv = (torch.randn(d, d, generator=g, dtype=torch.float64) / d for _ in range(3))
    s, t = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    e = torch.cat([s.expand(R, d), t[None]])                            # [R+1, d]
    q, k, v = e @ Wq.T, e @ Wk.T, e @ Wv.T
    alpha = torch.softmax(q[-1] @ k.T, dim=-1)                           # the unique token's query
    y = alpha @ v
    A, B = float(q[-1] @ k[0]), float(q[-1] @ k[-1])
    vs = Wv @ s
    return {"R": R, "measured": float(alpha[-1]), "closed_form": float(unique_token_weight(R, A, B)),
            "A": A, "B": B, "distance_to_average": float((y - vs).norm() / vs.norm())}


@torch.inference_mode()
def image_attention_mass(target, inputs, query_positions: slice | None = None) -> torch.Tensor:
    """Per layer, the mean attention mass that text positions after the last image put on image tokens.

    Runs the target's language model once with eager attention to read its attention weights.
    Returns [layers] in [0, 1]. Compare with the image tokens' share of the prefix: a layer that
    ignored content would put about that share on them."""
    if not inputs.image_spans:
        raise ValueError("The inputs hold no image: give the prompt at least one image.")
    lm = target.language_model
    previous = lm.config._attn_implementation
    lm.set_attn_implementation("eager")
    try:
        out = lm(inputs_embeds=inputs.inputs_embeds, position_ids=inputs.position_ids, output_attentions=True)
    finally:
        lm.set_attn_implementation(previous)
    image = torch.zeros(inputs.length, dtype=torch.bool, device=inputs.inputs_embeds.device)
    for start, end in inputs.image_spans:
        image[start:end] = True
    after = query_positions or slice(inputs.image_spans[-1][1], inputs.length)
    # attentions: per layer [1, heads, T, T]
    return torch.stack([a[0, :, after][..., image].sum(-1).mean() for a in out.attentions]).float().cpu()


def image_share(inputs) -> float:
    """The fraction of the prompt that is image tokens."""
    return sum(e - s for s, e in inputs.image_spans) / inputs.length
