"""The vision-language model's processor, with image tiles sized for the profile's GPU.

    processor = load_processor(profile)            # notebooks 03 and 04
    image_tiles(processor, chart)                  # how many tiles (and so image tokens) one image costs

SmolVLM's processor resizes an image so its longest edge is `size["longest_edge"]` (2,048 px for
SmolVLM-256M, small images included: they are upscaled) and then cuts it into tiles of
`max_image_size` plus one global view. A ChartQA chart (800x557, 310x400) becomes 13-17 tiles of 64
tokens each, about a thousand image tokens per chart, more than a T4 can train on at a useful batch.
The GPU profiles cap the tiles per side of an image instead: one tile (64 tokens) on `colab`, a 2x2
grid plus the global view on `full`. `tiny` keeps its own processor's settings (one 64 px tile).
"""

from __future__ import annotations

from transformers import AutoProcessor

from helpers.runtime import Profile

# Tiles along an image's longest side, per profile; None keeps the processor's own settings.
TILES_PER_SIDE = {"tiny": None, "colab": 1, "full": 2}


def load_processor(profile: Profile, model_id: str | None = None):
    """The profile's VLM processor, its longest edge capped at TILES_PER_SIDE tiles."""
    processor = AutoProcessor.from_pretrained(model_id or profile.models["vlm"])
    tiles = TILES_PER_SIDE.get(profile.name)
    if tiles is not None:
        tile = processor.image_processor.max_image_size["longest_edge"]
        processor.image_processor.size = {"longest_edge": tiles * tile}
    return processor


def image_tiles(processor, image) -> int:
    """How many tiles the processor makes of `image` (global view included); each tile costs
    `processor.image_seq_len` tokens in the sequence."""
    return int(processor.image_processor(image, return_tensors="pt")["pixel_values"].shape[1])
