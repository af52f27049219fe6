"""Shared types and conventions used across modules."""

from __future__ import annotations

import torch

__all__ = ["model_input"]


def model_input(images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """A loader batch's ``img`` as network input: float in [0, 1], time-major for event clips.

    Args:
        images: uint8 [B, C, H, W] (static images) or [B, T, C, H, W] (event frames, as loaders
            batch them).

    Returns:
        float [B, C, H, W] or [T, B, C, H, W] scaled by 1/255.
    """
    if device is not None:
        images = images.to(device, non_blocking=True)
    images = images.float() / 255
    if images.dim() == 5:
        images = images.transpose(0, 1)  # [B, T, C, H, W] -> [T, B, C, H, W]
    return images
