"""The Target interface: one VLM family behind the calls the decoder and the drafts make.

A family (LLaVA-NeXT, Qwen2.5-VL, the embedded default) only says how (prompt, images) become
input embeddings; the language model's forward over new tokens, with a preallocated KV cache and an
arbitrary mask among those tokens (a draft tree), is shared here and runs the family's own HF decoder
layers' weights.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel

from .chat import holds_special, render_with_sentinel, splice
from .images import interleave, load_images
from .kv_cache import KVCache
from ..cpu import fused_layer
from ..cpu.packed import PackedWeights, packing_mode, upcast_wanted


@dataclass
class TargetInputs:
    input_ids: torch.LongTensor        # [1, T] prompt ids, image tokens expanded as the processor does
    inputs_embeds: torch.Tensor        # [1, T, D] what the language model sees (image embeddings scattered in)
    position_ids: torch.LongTensor     # [1, T], or [3, 1, T] for M-RoPE
    image_spans: list[tuple[int, int]] = field(default_factory=list)   # [start, end) of each image in input_ids
    image_embeds: list[torch.Tensor] = field(default_factory=list)     # [r_i, D] per image, projector output
    rope_delta: int = 0                # M-RoPE: position = sequence index + rope_delta after the prompt

    @property
    def length(self) -> int:
        return self.input_ids.shape[1]


SMALL_N = 64   # new tokens up to which attention runs as two batched matmuls (decode steps, draft trees)
# cuDNN's fused attention builds a plan for every new shape (about 35 ms of host time on an H200), and
# the shapes change every call while decoding: keep to the kernels that need no plan.
UNPLANNED = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def small_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.BoolTensor | None,
                    scale: float, upcast: bool = False) -> torch.Tensor:
    """Softmax attention of a few queries over the cache, heads grouped onto their KV head (GQA).

    q: [heads, n, hd]; keys, values: [kv_heads, L, hd]; mask: [n, L] or None (all visible).
    On CPU this is several times faster than the fused kernel for n = 1, which is most of decoding.
    upcast: both products in fp32, the result in q's dtype (packed.py's "upcast" form)."""
    if upcast:
        return small_attention(q.float(), keys.float(), values.float(), mask, scale).to(q.dtype)
    heads, n, hd = q.shape
    kv_heads, L = keys.shape[0], keys.shape[1]
    qg = q.reshape(kv_heads, heads // kv_heads * n, hd)                    # [kv, G*n, hd]
    scores = torch.bmm(qg, keys.transpose(1, 2)).float() * scale          # [kv, G*n, L]
    if mask is not None:
        scores = scores.view(kv_heads, -1, n, L).masked_fill(~mask, float("-inf")).view(kv_heads, -1, L)
    probs = torch.softmax(scores, dim=-1).to(values.dtype)
    return torch.bmm(probs, values).view(heads, n, hd)                    # [heads, n, hd]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class ModuleLinears:
    """The HF modules' own linears behind cpu.PackedWeights' interface: the plain path of `Target.forward`."""

    fp32_attention = False      # attention of a few queries (`small_attention`) in the weights' dtype

    def __init__(self, language_model):
        self.layers = language_model.layers

    def qkv(self, i: int, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn = self.layers[i].self_attn
        return attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)

    def o(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.layers[i].self_attn.o_proj(x)

    def mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.layers[i].mlp(x)


class Target:
    """A loaded VLM. Subclasses set `model`, `tokenizer`, `family`, `language_model` (the HF text
    model: `layers`, `norm`, `rotary_emb`, `embed_tokens`), `lm_head` and implement `prepare`."""

    family: str = ""
    mrope: bool = False             # 3-D positions (Qwen2.5-VL)
    image_token_id: int | None = None

    def __init__(self, model, tokenizer, language_model, lm_head, text_config, eos_token_ids):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.language_model = language_model
        self.lm_head = lm_head
        self.text_config = text_config
        self.eos_token_ids = frozenset(int(e) for e in eos_token_ids)
        c = text_config
        self.hidden_size = c.hidden_size
        self.vocab_size = lm_head.weight.shape[0]
        self.num_layers = c.num_hidden_layers
        self.num_heads = c.num_attention_heads
        self.num_kv_heads = c.num_key_value_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self._packed = (None, None)     # ((device, dtype) it was decided for, PackedWeights or None)
        self._weights_fixed = False

    # -- identity -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def describe(self) -> dict:
        """What a draft records to prove it was built for this target."""
        return {"family": self.family, "hidden_size": self.hidden_size, "vocab_size": self.vocab_size}

    def weights_id(self, images: bool = True) -> str:
        """Names the weights behind the target's answers (with or without images): a synthesized
        dataset records it, so data from other weights is never mixed in on resume."""
        return str(getattr(self.model.config, "_name_or_path", "") or "")

    # -- inputs -------------------------------------------------------------------------------
    def prepare(self, prompt: str, images: list[Image.Image] | None = None) -> TargetInputs:
        raise NotImplementedError

    def check_images(self, prompt_images: int, images: list) -> None:
        if prompt_images != len(images):
            raise ValueError(
                f"The prompt has {prompt_images} image place(s) but {len(images)} image(s) were given; "
                "pass one image per place (or none and no place)."
            )

    def embed(self, ids: torch.LongTensor) -> torch.Tensor:
        return self.language_model.embed_tokens(ids)

    def positions(self, start: int, offsets: torch.LongTensor, rope_delta: int = 0) -> torch.LongTensor:
        """Position ids of new tokens at sequence index start + offsets (tree nodes: offset = depth)."""
        pos = (offsets + start + rope_delta).view(1, -1)          # [1, n]
        return pos.unsqueeze(0).expand(3, 1, -1) if self.mrope else pos

    # -- language model -----------------------------------------------------------------------
    def packed_weights(self, refresh: bool = False) -> PackedWeights | None:
        """The linear weights held in the form this CPU multiplies fastest (bf16 / fp16: packed.py), or
        None: the HF modules' own. Packed again after the weights moved, changed or were replaced (checked at
        every call, or once per `weights_fixed` block); `refresh` decides again (after VISPEC_PREPACK changed)."""
        key, packed = self._packed
        if refresh or key != (self.device, self.dtype) or (
                packed is not None and not self._weights_fixed and not packed.current()):
            mode = packing_mode(self.language_model, self.lm_head)
            packed = PackedWeights(self.language_model, self.lm_head, mode) if mode else None
            self._packed = ((self.device, self.dtype), packed)
        return packed

    @contextlib.contextmanager
    def weights_fixed(self):
        """Inside, the weights are taken as unchanged: `packed_weights` checks them once on entry instead of
        at every forward and logits call (reading 271 weights' identity and version costs ~0.6 ms a call
        on the default target, ~3% of a decode step). A decode runs inside one."""
        if self._weights_fixed:
            yield self
            return
        self.packed_weights()
        self._weights_fixed = True
        try:
            yield self
        finally:
            self._weights_fixed = False

    def fused_layers(self, packed: PackedWeights | None) -> bool:
        """Whether the layers run as fused_layer.py's one C++ call each: in the "widen" form, on 1-D
        positions, for Llama / Qwen2-kind layers, where the extension could be built."""
        if packed is None or packed.mode != "widen" or self.mrope:
            return False
        if getattr(self, "_fused_for", None) is not packed:
            self._fused_for, self._fused = packed, fused_layer.available() and fused_layer.fits(self.language_model)
        return self._fused

    def new_cache(self, capacity: int) -> KVCache:
        """Where attention runs in fp32 (packed.py's "upcast" and "widen" forms) the cache holds the keys and
        values in fp32, their bf16 values exactly, so no step widens the whole cache again."""
        packed = self.packed_weights()
        return KVCache(self.num_layers, self.num_kv_heads, self.head_dim, capacity,
                       torch.float32 if packed is not None and packed.fp32_attention else self.dtype, self.device)

    @torch.inference_mode()
    def forward(self, embeds: torch.Tensor, position_ids: torch.LongTensor, cache: KVCache,
                tree_mask: torch.BoolTensor | None = None) -> torch.Tensor:
        """Run new tokens after the cache's committed prefix; return f, the last hidden states
        after the final norm ([1, n, D]). Keys and values are written after the prefix and stay
        uncommitted until `cache.commit`. tree_mask [n, n]: which new tokens each new token sees
        (itself and its ancestors); None means causal."""
        n = embeds.shape[1]
        cache.check_room(n)
        start = cache.length
        cos, sin = self.language_model.rotary_emb(embeds, position_ids)   # [1, n, hd]
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        mask, is_causal = None, False
        if n > SMALL_N and start == 0 and tree_mask is None:
            is_causal = True                      # a long prefill: the fused kernel's own causal mask
        elif tree_mask is not None or n > 1:
            mask = torch.ones(n, start + n, dtype=torch.bool, device=embeds.device)
            mask[:, start:] = tree_mask if tree_mask is not None else torch.ones(
                n, n, dtype=torch.bool, device=embeds.device).tril()
        # The backend hook: on a CPU in bf16 / fp16 the linears run on cpu/packed.py's weight forms (and
        # the layers as cpu/fused_layer.py's C++ calls where it applies); elsewhere the HF modules' own.
        packed = self.packed_weights()
        fused = self.fused_layers(packed) and cache.storage.dtype == torch.float32
        if fused and n <= SMALL_N:
            return fused_layer.forward(self, packed, embeds, cos, sin, cache, start, mask)
        linears = packed or ModuleLinears(self.language_model)
        upcast = upcast_wanted(packed and packed.mode, embeds)       # the long path's attention in fp32
        x = embeds
        for i, layer in enumerate(self.language_model.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q, k, v = linears.qkv(i, h)
            q = q.view(1, n, self.num_heads, self.head_dim).transpose(1, 2)
            k = k.view(1, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(1, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            keys, values = cache.write(i, k[0], v[0])                    # [kv_heads, start+n, hd]
            if n <= SMALL_N:
                o = small_attention(q[0], keys, values, mask, attn.scaling, linears.fp32_attention)[None]
            else:
                with sdpa_kernel(UNPLANNED):
                    kv = (keys[None].float(), values[None].float()) if upcast else (keys[None], values[None])
                    o = F.scaled_dot_product_attention(q.float() if upcast else q, *kv, attn_mask=mask,
                                                       is_causal=is_causal, scale=attn.scaling,
                                                       enable_gqa=self.num_heads != self.num_kv_heads).to(q.dtype)
            o = o.transpose(1, 2).reshape(1, n, -1)
            x = x + linears.o(i, o)
            h = layer.post_attention_layernorm(x)
            x = x + linears.mlp(i, h)
        return fused_layer.rms_norm(x[0], self.language_model.norm)[None] if fused else self.language_model.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        packed = None if hidden.requires_grad and torch.is_grad_enabled() else self.packed_weights()
        return (packed.logits(hidden) if packed else self.lm_head(hidden)).float()

    def decode_text(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def image_spans(input_ids: torch.LongTensor, image_token_id: int, lengths: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each image's placeholder run, given each image's number of tokens."""
    where = (input_ids[0] == image_token_id).nonzero().flatten().tolist()
    if len(where) != sum(lengths):
        raise ValueError(f"{len(where)} image placeholder tokens in the prompt but the images give {sum(lengths)} embeddings.")
    spans, i = [], 0
    for n in lengths:
        start, end = where[i], where[i + n - 1] + 1
        if end - start != n:
            raise ValueError("An image's placeholder tokens are not contiguous in the prompt.")
        spans.append((start, end))
        i += n
    return spans


def scatter_images(embeds: torch.Tensor, spans: list[tuple[int, int]], image_embeds: list[torch.Tensor]) -> torch.Tensor:
    embeds = embeds.clone()
    for (start, end), v in zip(spans, image_embeds):
        embeds[0, start:end] = v.to(embeds.dtype)
    return embeds


class ProcessorTarget(Target):
    """A transformers VLM family (LLaVA-NeXT, Qwen2.5-VL) driven by its own processor and chat template."""

    def __init__(self, model, processor, extra_eos=()):
        tok = processor.tokenizer
        eos = model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) | {tok.eos_token_id, *extra_eos}
        super().__init__(model, tok, model.model.language_model, model.lm_head, model.config.text_config,
                         eos - {None})
        self.processor = processor
        self.image_token_id = model.config.image_token_id

    def encode(self, prompt: str, images) -> tuple[list[Image.Image], dict]:
        """The family processor's output for one user turn: ids with image tokens expanded, pixels.
        Special-token strings typed in the prompt stay text (chat.py)."""
        images = load_images(images)
        content = interleave(prompt, len(images))

        def run(content):
            text = self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                      add_generation_prompt=True, tokenize=False)
            return self.processor(images=images or None, text=text, return_tensors="pt")

        texts = [item["text"] for item in content if item["type"] == "text"]
        if not holds_special(self.tokenizer, texts):
            return images, run(content)

        def render(stand_in):
            enc = run([{"type": "text", "text": stand_in} if item["type"] == "text" else item for item in content])
            return enc, int((enc["input_ids"] == self.tokenizer.convert_tokens_to_ids(stand_in)).sum())

        enc, stand_in = render_with_sentinel(self.tokenizer, texts, render,
                                             avoid={self.tokenizer.convert_ids_to_tokens(self.image_token_id)})
        old_ids = enc["input_ids"][0].tolist()
        ids, is_text = splice(old_ids, stand_in, self.tokenizer, texts)
        enc["input_ids"] = torch.tensor([ids])
        enc["attention_mask"] = torch.ones_like(enc["input_ids"])
        if "mm_token_type_ids" in enc:     # 0 for text, the kind of media elsewhere (as the processor set it)
            kinds = iter(k for t, k in zip(old_ids, enc["mm_token_type_ids"][0].tolist()) if t != stand_in)
            enc["mm_token_type_ids"] = torch.tensor([[0 if t else next(kinds) for t in is_text]])
        return images, enc
