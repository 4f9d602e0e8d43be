"""LLaVA-NeXT (LlavaNextForConditionalGeneration): any-resolution tiles, 1-D positions."""
from __future__ import annotations

import torch
from PIL import Image

from ..images import interleave, load_images
from .base import Target, TargetInputs, image_spans, scatter_images


class LlavaNextTarget(Target):
    family = "llava_next"

    def __init__(self, model, processor):
        tok = processor.tokenizer
        eos = {tok.eos_token_id} | set(_as_list(model.generation_config.eos_token_id))
        super().__init__(model, tok, model.model.language_model, model.lm_head, model.config.text_config,
                         eos - {None})
        self.processor = processor
        self.image_token_id = model.config.image_token_id

    @torch.inference_mode()
    def prepare(self, prompt: str, images: list[Image.Image] | None = None) -> TargetInputs:
        images = load_images(images)
        text = self.processor.apply_chat_template(
            [{"role": "user", "content": interleave(prompt, len(images))}], add_generation_prompt=True, tokenize=False)
        enc = self.processor(images=images or None, text=text, return_tensors="pt")
        ids = enc["input_ids"].to(self.device)
        embeds = self.embed(ids)
        spans, feats = [], []
        if images:
            cfg = self.model.config
            feats = self.model.model.get_image_features(
                enc["pixel_values"].to(self.device, self.dtype), enc["image_sizes"].to(self.device),
                vision_feature_layer=cfg.vision_feature_layer,
                vision_feature_select_strategy=cfg.vision_feature_select_strategy, return_dict=True,
            ).pooler_output
            feats = list(feats)
            spans = image_spans(ids, self.image_token_id, [f.shape[0] for f in feats])
            embeds = scatter_images(embeds, spans, feats)
        pos = torch.arange(ids.shape[1], device=self.device).view(1, -1)
        return TargetInputs(ids, embeds, pos, spans, feats)


def _as_list(x):
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]
