"""Patch tokenizer: posed images (pose features + rgb + time) to tokens, and tokens back to images."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .rays import pose_features


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``[B, V, C, H, W] -> [B, V * (H/p) * (W/p), p * p * C]`` (channels fastest)."""
    b, v, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, v, c, h // p, p, w // p, p)  # b v c hh ph ww pw
    x = x.permute(0, 1, 3, 5, 4, 6, 2)  # b v hh ww ph pw c
    return x.reshape(b, v * (h // p) * (w // p), p * p * c)


def unpatchify(tokens: torch.Tensor, num_views: int, height: int, width: int, patch_size: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``[B, V * (H/p) * (W/p), p * p * C] -> [B, V, C, H, W]``."""
    b = tokens.shape[0]
    p = patch_size
    hh, ww = height // p, width // p
    c = tokens.shape[-1] // (p * p)
    x = tokens.reshape(b, num_views, hh, ww, p, p, c)  # b v hh ww ph pw c
    x = x.permute(0, 1, 6, 2, 4, 3, 5)  # b v c hh ph ww pw
    return x.reshape(b, num_views, c, height, width)


def build_posed_pixels(
    fxfycxcy: torch.Tensor,
    c2w: torch.Tensor,
    height: int,
    width: int,
    pose_feature_names: Sequence[str],
    images: Optional[torch.Tensor] = None,
    times: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Per-pixel network input ``[pose features..., rgb * 2 - 1, (time)]``.

    Args:
        fxfycxcy: ``[B, V, 4]`` pixel intrinsics.
        c2w: ``[B, V, 4, 4]`` OpenCV camera-to-world.
        images: ``[B, V, 3, H, W]`` in ``[0, 1]``, or ``None`` for target views (zeros in the rgb slot).
        times: ``[B, V]`` model time in ``[-1, 1]``, or ``None`` for models without a time channel.

    Returns:
        ``[B, V, 3 * len(pose_feature_names) + 3 (+ 1), H, W]``.
    """
    pose = pose_features(fxfycxcy, c2w, height, width, pose_feature_names)  # [B, V, 3P, H, W]
    if images is None:
        rgb = pose.new_zeros(pose.shape[0], pose.shape[1], 3, height, width)
    else:
        rgb = images * 2.0 - 1.0
    parts = [pose, rgb]
    if times is not None:
        parts.append(times[:, :, None, None, None].to(pose.dtype).expand(-1, -1, 1, height, width))
    return torch.cat(parts, dim=2)


class FSMPatchEmbeddings(nn.Module):
    """Linear patch embedding followed by a bias-free LayerNorm.

    Args:
        in_channels: channels per pixel (pose features + rgb + optional time).
        patch_size: side of a square patch, in pixels.
        hidden_size: token width.
    """

    def __init__(self, in_channels: int, patch_size: int, hidden_size: int, layer_norm_eps: float = 1e-5):
        super().__init__()
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.linear = nn.Linear(in_channels * patch_size * patch_size, hidden_size, bias=False)
        self.layernorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps, bias=False)

    def forward(self, posed_pixels: torch.Tensor) -> torch.Tensor:
        """``[B, V, C, H, W] -> [B, V * (H/p) * (W/p), D]``."""
        if posed_pixels.shape[2] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} channels per pixel, got {posed_pixels.shape[2]}")
        tokens = patchify(posed_pixels, self.patch_size)
        return self.layernorm(self.linear(tokens))
