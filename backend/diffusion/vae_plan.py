"""Whether the VAE encodes and decodes in tiles, and how large, from the memory left for it.

The VAE's cost grows with the image, not with the model: at its top level the decoder holds
several full-resolution activations of its widest top block (SD's VAE: 128 channels), so a
4096x4096 decode in fp16 needs about 25 GB while the UNet's weights need 2-5 GB. The memory
tier (resident, model offload, sequential offload) is about the weights; this plan is about
the pixels, and is made again before every encode and decode:

  whole   the estimate fits in the memory left (free memory less a margin): one pass, exact
  tiled   it does not, or the model streams layer by layer (sequential offload: the device
          is short even for one component): tiles as large as fit, at least MIN_TILE, blended
          over a quarter of a tile by diffusers' tiled encode/decode

VAE slicing (one image of a batch at a time) is switched on with the offload tiers too, but a
job here decodes one image, so it changes nothing; tiling is what bounds the memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: full-resolution activations alive at the decoder's peak, in units of (top width x pixels):
#: the upsampled input of the last level (twice the width), a resnet's norm and conv outputs
ACTIVATION_COPIES = 6
#: tiles smaller than this show their blending; below it the VAE is run whole regardless
MIN_TILE = 256
#: memory kept back from the estimate's budget (allocator slack, the latents themselves)
MARGIN_BYTES = 256 << 20
#: tile sides are multiples of this (the latent grid times the VAE's factor of 8)
TILE_STEP = 64


@dataclass(frozen=True)
class VaePlan:
    tiled: bool
    tile: int  # pixels; 0 when whole
    need_bytes: int  # the estimate for the whole image
    budget_bytes: int

    def describe(self) -> str:
        if not self.tiled:
            return "whole"
        return f"tiled ({self.tile} px)"


def decode_bytes(height: int, width: int, top_channels: int, element_bytes: int) -> int:
    """The decoder's peak activation memory for one image of height x width pixels."""
    return height * width * top_channels * element_bytes * ACTIVATION_COPIES


def plan(
    height: int,
    width: int,
    top_channels: int,
    element_bytes: int,
    free_bytes: int,
    streaming: bool = False,
) -> VaePlan:
    """The plan for a height x width image with `free_bytes` left; `streaming`: the model runs
    in sequential offload."""
    need = decode_bytes(height, width, top_channels, element_bytes)
    budget = max(free_bytes - MARGIN_BYTES, 0)
    largest = max(height, width)
    if (need <= budget and not streaming) or largest <= MIN_TILE:
        return VaePlan(False, 0, need, budget)
    side = math.isqrt(budget // max(top_channels * element_bytes * ACTIVATION_COPIES, 1))
    tile = max(MIN_TILE, side // TILE_STEP * TILE_STEP)
    if streaming:  # no more than the model was trained at: the device is short
        tile = min(tile, 512)
    if tile >= largest:
        return VaePlan(False, 0, need, budget)
    return VaePlan(True, tile, need, budget)


def apply(vae: Any, chosen: VaePlan) -> None:
    """Switch diffusers' tiled encode/decode on (with the plan's tile) or off."""
    if not chosen.tiled:
        vae.disable_tiling()
        return
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    vae.enable_tiling()
    vae.tile_sample_min_size = chosen.tile
    vae.tile_latent_min_size = chosen.tile // factor


def for_vae(vae: Any, height: int, width: int, free_bytes: int, tier: str = "") -> VaePlan:
    """The plan for `vae` (an AutoencoderKL) at height x width."""
    top = int(vae.config.block_out_channels[0])  # the full-resolution level
    element = next(iter(vae.parameters())).element_size()
    return plan(height, width, top, element, free_bytes, streaming=tier == "sequential_offload")
