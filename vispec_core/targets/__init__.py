"""`load_target`: a spec ("default", "tiny:<family>", or a checkpoint folder) to a `Target`."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..cpu.packed import many_rows_dtype, packed_linears   # the CPU weight forms, for HF modules run directly
from .base import Target, TargetInputs
from .llava_next import LlavaNextTarget
from .qwen2_5_vl import ImageOnlyQwenProcessor, Qwen25VLTarget
from .tiny import TINY

FAMILIES = {"llava_next": LlavaNextTarget, "qwen2_5_vl": Qwen25VLTarget}
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device=None) -> torch.device:
    try:
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except (RuntimeError, TypeError):
        raise ValueError(f"Unknown device {device!r}; use 'cpu' or 'cuda'.") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device.type!r} is not supported here; use 'cpu' or 'cuda'.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA device is available here; use device='cpu'.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"numbered from 0.")
    return device


def resolve_dtype(dtype, device: torch.device, default: torch.dtype) -> torch.dtype:
    if dtype is None:
        return default
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"Unknown dtype '{dtype}'; choose one of {sorted(set(DTYPES))}.")
        dtype = DTYPES[dtype]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype {dtype} is not supported; use float32 or bfloat16 (float16 on CUDA).")
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("float16 is not run on the CPU here (slow, and several kernels lack it); "
                         "use bfloat16 or float32 on CPU.")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{torch.cuda.get_device_name(device)} cannot run bfloat16; use float16 or float32.")
    return dtype


def load_target(spec: str = "default", device=None, dtype=None) -> Target:
    """spec: "default" (the embedded VLM), "tiny:llava_next", "tiny:qwen2_5_vl" (random, seed 0; "tiny:<family>:<seed>"
    for another seed), or a LLaVA-NeXT / Qwen2.5-VL checkpoint folder."""
    device = resolve_device(device)
    if spec == "default":
        from .default_vlm import load_default_target

        return load_default_target(device=device, dtype=resolve_dtype(dtype, device, torch.bfloat16))
    if spec.startswith("tiny:"):
        _, family, *seed = spec.split(":")
        if family not in TINY:
            raise ValueError(f"Unknown tiny target '{family}'; choose one of {sorted(TINY)}.")
        if len(seed) > 1 or (seed and not seed[0].isdigit()):
            raise ValueError(f"Target {spec!r}: the part after the family is a seed, a whole number >= 0 "
                             f"(e.g. 'tiny:{family}:1').")
        model, processor = TINY[family](seed=int(seed[0]) if seed else 0)
        return _wrap(family, model, processor, device, resolve_dtype(dtype, device, torch.float32))
    path = Path(spec)
    if not path.is_dir():
        raise ValueError(f"Unknown target '{spec}': use 'default', 'tiny:llava_next', 'tiny:qwen2_5_vl', "
                         "or the folder of a LLaVA-NeXT or Qwen2.5-VL checkpoint (no model hub is reached).")
    return load_checkpoint(path, device, resolve_dtype(dtype, device, torch.bfloat16))


def load_checkpoint(path: Path, device, dtype) -> Target:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path} holds no config.json: not a Hugging Face checkpoint folder.")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(f"{path} holds a '{model_type}' model; supported architectures are "
                         "LlavaNextForConditionalGeneration (llava_next) and Qwen2_5_VLForConditionalGeneration (qwen2_5_vl).")
    from transformers import (AutoTokenizer, LlavaNextForConditionalGeneration, LlavaNextProcessor,
                              Qwen2_5_VLForConditionalGeneration)

    if model_type == "llava_next":
        model = LlavaNextForConditionalGeneration.from_pretrained(path, dtype=dtype)
        processor = LlavaNextProcessor.from_pretrained(path)
    else:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(path)
        template = _chat_template(path) or tok.chat_template
        processor = ImageOnlyQwenProcessor(image_processor=Qwen2VLImageProcessorPil.from_pretrained(path),
                                           tokenizer=tok, video_processor=None, chat_template=template)
    return _wrap(model_type, model, processor, device, dtype)


def _chat_template(path: Path) -> str | None:
    for name in ("chat_template.jinja", "chat_template.json"):
        f = path / name
        if f.is_file():
            return json.loads(f.read_text())["chat_template"] if name.endswith(".json") else f.read_text()
    return None


def _wrap(family, model, processor, device, dtype) -> Target:
    model = model.to(device=device, dtype=dtype)
    return FAMILIES[family](model, processor)


def save_target(target: Target, folder) -> None:
    """Write a target as a checkpoint folder that `load_target(folder)` reads (model, processor, template)."""
    folder = Path(folder)
    target.model.save_pretrained(folder)
    processor = target.processor
    if isinstance(processor, ImageOnlyQwenProcessor):   # no video processor to save: save the parts
        processor.tokenizer.save_pretrained(folder)
        processor.image_processor.save_pretrained(folder)
        (folder / "chat_template.jinja").write_text(processor.chat_template)
    else:
        processor.save_pretrained(folder)   # the tokenizer and the processor's chat template with it


__all__ = ["Target", "TargetInputs", "load_target", "many_rows_dtype", "packed_linears", "resolve_device", "resolve_dtype",
           "save_target"]
