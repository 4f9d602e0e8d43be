"""Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration): native-resolution patches, 3-D M-RoPE positions."""
from __future__ import annotations

import torch
from PIL import Image
from transformers import Qwen2_5_VLProcessor

from .base import ProcessorTarget, TargetInputs, image_spans, scatter_images
from .images import load_images


class ImageOnlyQwenProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor without a video processor (that one needs torchvision, never installed here)."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)


MAX_ASPECT_RATIO = 200      # Qwen2.5-VL's image processor refuses longer sides (smart_resize)


class Qwen25VLTarget(ProcessorTarget):
    family = "qwen2_5_vl"
    mrope = True

    def __init__(self, model, processor):
        super().__init__(model, processor, extra_eos=[processor.tokenizer.convert_tokens_to_ids("<|im_end|>")])

    @torch.inference_mode()
    def prepare(self, prompt: str, images: list[Image.Image] | None = None) -> TargetInputs:
        images = load_images(images)           # read once; encode takes the loaded images
        for i, im in enumerate(images):
            w, h = im.size
            if max(w, h) / max(min(w, h), 1) >= MAX_ASPECT_RATIO:
                raise ValueError(f"Image {i} is {w} x {h} pixels: Qwen2.5-VL takes aspect ratios under "
                                 f"{MAX_ASPECT_RATIO}; crop or pad it first.")
        images, enc = self.encode(prompt, images)
        ids = enc["input_ids"].to(self.device)
        embeds = self.embed(ids)
        spans, feats, delta = [], [], 0
        pos = torch.arange(ids.shape[1], device=self.device).view(1, 1, -1).expand(3, 1, -1)
        if images:
            grid = enc["image_grid_thw"].to(self.device)
            feats = list(self.model.model.get_image_features(
                enc["pixel_values"].to(self.device, self.dtype), grid, return_dict=True).pooler_output)
            spans = image_spans(ids, self.image_token_id, [f.shape[0] for f in feats])
            embeds = scatter_images(embeds, spans, feats)
            pos, deltas = self.model.model.get_rope_index(ids, enc["mm_token_type_ids"].to(self.device), grid)
            delta = int(deltas[0, 0])
        return TargetInputs(ids, embeds, pos, spans, feats, rope_delta=delta)
