"""The finetuning loss: MSE + LPIPS with an L2-only warm-up (the paper's recipe).

``loss = l2_weight * MSE + lpips_weight * LPIPS`` with LPIPS switched off for the first
``l2_warmup_steps`` optimiser steps (the official ``set_curriculum``). LPIPS comes from the
optional ``lpips`` package (VGG by default, inputs in ``[0, 1]`` mapped to ``[-1, 1]``, frozen,
differentiable w.r.t. the prediction); requesting it without the package raises a clear
ImportError. :func:`fsm_hf.metrics.lpips` is the evaluation metric (no gradients); the loss needs
the network in the autograd graph, so it holds its own frozen copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FSMLoss", "LossOutput", "require_lpips"]


def require_lpips():
    """Import the optional ``lpips`` package, or raise an ImportError saying how to go on without it."""
    try:
        import lpips
    except ImportError as error:
        raise ImportError(
            "lpips_loss_weight > 0 needs the optional `lpips` package (pip install lpips, or "
            "pip install 'fsm-hf[lpips]'). Without it, train with MSE only: --lpips_loss_weight 0."
        ) from error
    return lpips


@dataclass
class LossOutput:
    """``loss`` (scalar, differentiable) and detached terms for logging (``l2``, ``lpips``, ``psnr``)."""

    loss: torch.Tensor
    l2: torch.Tensor
    lpips: Optional[torch.Tensor]
    psnr: torch.Tensor

    def metrics(self) -> Dict[str, float]:
        out = {"loss": float(self.loss.detach()), "l2": float(self.l2), "psnr": float(self.psnr)}
        if self.lpips is not None:
            out["lpips"] = float(self.lpips)
        return out


class FSMLoss(nn.Module):
    """MSE + LPIPS on rendered target views.

    Args:
        l2_weight: weight of the mean squared error.
        lpips_weight: weight of LPIPS (0 disables it and never imports ``lpips``).
        l2_warmup_steps: optimiser steps trained with MSE only.
        lpips_net: ``"vgg"`` (official) or ``"alex"``.
    """

    def __init__(self, l2_weight: float = 1.0, lpips_weight: float = 0.5, l2_warmup_steps: int = 0, lpips_net: str = "vgg"):
        super().__init__()
        self.l2_weight, self.lpips_weight, self.l2_warmup_steps = float(l2_weight), float(lpips_weight), int(l2_warmup_steps)
        self.lpips_net = None
        if self.lpips_weight > 0:
            lpips = require_lpips()
            self.lpips_net = lpips.LPIPS(net=lpips_net, verbose=False).eval()
            self.lpips_net.requires_grad_(False)

    def lpips_active(self, step: int) -> bool:
        """Whether LPIPS contributes at optimiser step ``step`` (0-based)."""
        return self.lpips_net is not None and step >= self.l2_warmup_steps

    def forward(self, pred: torch.Tensor, target: torch.Tensor, step: int) -> LossOutput:
        """``pred``, ``target``: ``[B, T, 3, H, W]`` in ``[0, 1]``; ``step``: current optimiser step."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} shapes differ.")
        pred, target = pred.float(), target.float()
        l2 = F.mse_loss(pred, target)
        loss = self.l2_weight * l2
        lpips_value = None
        if self.lpips_active(step):
            flat_pred = pred.reshape(-1, *pred.shape[-3:]) * 2 - 1  # [B*T, 3, H, W] in [-1, 1]
            flat_target = target.reshape(-1, *target.shape[-3:]) * 2 - 1
            lpips_value = self.lpips_net(flat_pred, flat_target).mean()
            loss = loss + self.lpips_weight * lpips_value
            lpips_value = lpips_value.detach()
        psnr = -10.0 * torch.log10(l2.detach().clamp_min(1e-10))  # batch-level PSNR, for monitoring
        return LossOutput(loss=loss, l2=l2.detach(), lpips=lpips_value, psnr=psnr)
