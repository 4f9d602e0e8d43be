"""Tiny random-initialised LLaVA-NeXT and Qwen2.5-VL: the real classes and real tokenizers, built
offline in about a second, seed-deterministic. For tests and teaching, not for quality."""
from __future__ import annotations

import torch
from transformers import (CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                          LlavaNextProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration)
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from ..assets import qwen_tokenizer, smollm2_tokenizer
from .chat import tiny_chat_template
from .qwen2_5_vl import ImageOnlyQwenProcessor

TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096)


def tiny_llava_next(seed: int = 0):
    """(model, processor): CLIP 32 px tiles of 8 px patches (16 tokens a tile, any-resolution grid), Llama text
    model, SmolLM2's tokenizer with an added <image> token."""
    tok = smollm2_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    pinpoints = [[32, 64], [64, 32], [64, 64]]
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                    image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=8,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=tiny_chat_template("<image>\n"))
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32),
        text_config=LlamaConfig(vocab_size=len(tok), tie_word_embeddings=False, **TEXT),
        image_token_index=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1, vision_feature_select_strategy="default")
    return _seeded(LlavaNextForConditionalGeneration, config, seed, tok), processor


def tiny_qwen2_5_vl(seed: int = 0):
    """(model, processor): a 2-block Qwen2.5-VL vision tower (14 px patches merged 2x2, 4 to 16 image tokens),
    Qwen2 text model with M-RoPE sections [2, 3, 3], Qwen's tokenizer."""
    tok = qwen_tokenizer()
    ip = Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16, patch_size=14, merge_size=2,
                                  temporal_patch_size=2)
    processor = ImageOnlyQwenProcessor(image_processor=ip, tokenizer=tok, video_processor=None,
                                       chat_template=tiny_chat_template("<|vision_start|><|image_pad|><|vision_end|>"))
    ids = tok.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                               "mrope_section": [2, 3, 3]}, **TEXT),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1], in_channels=3),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    return _seeded(Qwen2_5_VLForConditionalGeneration, config, seed, tok), processor


def _seeded(cls, config, seed, tok):
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = cls(config)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return model


TINY = {"llava_next": tiny_llava_next, "qwen2_5_vl": tiny_qwen2_5_vl}
