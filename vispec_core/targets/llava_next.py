"""LLaVA-NeXT (LlavaNextForConditionalGeneration): any-resolution tiles, 1-D positions."""
from __future__ import annotations

import torch
from PIL import Image

from .base import ProcessorTarget, TargetInputs, image_spans, scatter_images


class LlavaNextTarget(ProcessorTarget):
    family = "llava_next"

    @torch.inference_mode()
    def prepare(self, prompt: str, images: list[Image.Image] | None = None) -> TargetInputs:
        images, enc = self.encode(prompt, images)
        ids = enc["input_ids"].to(self.device)
        embeds = self.embed(ids)
        spans, feats = [], []
        if images:
            cfg = self.model.config
            feats = list(self.model.model.get_image_features(
                enc["pixel_values"].to(self.device, self.dtype), enc["image_sizes"].to(self.device),
                vision_feature_layer=cfg.vision_feature_layer,
                vision_feature_select_strategy=cfg.vision_feature_select_strategy, return_dict=True,
            ).pooler_output)
            spans = image_spans(ids, self.image_token_id, [f.shape[0] for f in feats])
            embeds = scatter_images(embeds, spans, feats)
        pos = torch.arange(ids.shape[1], device=self.device).view(1, -1)
        return TargetInputs(ids, embeds, pos, spans, feats)
