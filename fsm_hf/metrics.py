"""Image-quality metrics for novel view-time synthesis, and the nearest-input-frame baseline.

All metrics take images ``[..., 3, H, W]`` with values in ``[0, data_range]`` (``[0, 1]`` by
default) and return one value per image, shape ``[...]``. They are computed in float32 (or
float64 when given float64) and do not track gradients unless the inputs do.

* :func:`psnr`: ``10 log10(data_range^2 / MSE)``; ``+inf`` for identical images.
* :func:`ssim`: the standard SSIM of Wang et al. (2004): an 11 x 11 Gaussian window with
  sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, statistics over the *valid* window positions (no
  padding), averaged over positions and colour channels.
* :func:`lpips`: LPIPS (Zhang et al. 2018) through the optional ``lpips`` package.
* :func:`nearest_input_frame_baseline`: for each target time, the input image closest in time.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

__all__ = ["lpips", "nearest_input_frame_baseline", "psnr", "ssim"]

SSIM_WINDOW_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(pred: torch.Tensor, target: torch.Tensor, name: str):
    if pred.shape != target.shape:
        raise ValueError(
            f"{name}: pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}."
        )
    if pred.dim() < 3 or pred.shape[-3] != 3:
        raise ValueError(f"{name}: expected images [..., 3, H, W], got shape {tuple(pred.shape)}.")
    dtype = torch.float64 if torch.float64 in (pred.dtype, target.dtype) else torch.float32
    return pred.to(dtype), target.to(dtype)


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB.

    Args:
        pred, target: ``[..., 3, H, W]`` with values in ``[0, data_range]``.
        data_range: the peak value (1 for ``[0, 1]`` images).

    Returns:
        ``[...]``: ``10 log10(data_range^2 / mean((pred - target)^2))`` over channels and
        pixels of each image (``+inf`` where they are identical).
    """
    pred, target = _check_pair(pred, target, "psnr")
    mse = (pred - target).pow(2).mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device) -> torch.Tensor:
    """Normalised 1-D Gaussian ``[size]`` centred on the middle tap."""
    offsets = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    weights = torch.exp(-(offsets**2) / (2.0 * sigma**2))
    return weights / weights.sum()


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = SSIM_WINDOW_SIZE,
    sigma: float = SSIM_SIGMA,
) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004), averaged over colour channels.

    Local means, variances and covariance are weighted by a ``window_size x window_size``
    Gaussian window (``sigma``), evaluated at every position where the window fits inside the
    image (no padding); ``SSIM = (2 mu_x mu_y + C1)(2 cov_xy + C2) / ((mu_x^2 + mu_y^2 + C1)
    (var_x + var_y + C2))`` with ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, ``L = data_range``,
    averaged over positions and channels.

    Args:
        pred, target: ``[..., 3, H, W]``, ``H, W >= window_size``.

    Returns:
        ``[...]`` SSIM values (1 for identical images).
    """
    pred, target = _check_pair(pred, target, "ssim")
    height, width = pred.shape[-2:]
    if height < window_size or width < window_size:
        raise ValueError(f"ssim: images must be at least {window_size} x {window_size} pixels, got {height} x {width}.")
    batch_shape = pred.shape[:-3]
    x = pred.reshape(-1, 3, height, width)  # [B, 3, H, W]
    y = target.reshape(-1, 3, height, width)
    # the five local statistics of all images in one separable depthwise convolution
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # [B, 15, H, W]
    window = _gaussian_window(window_size, sigma, x.dtype, x.device)
    channels = stacked.shape[1]
    filtered = F.conv2d(stacked, window.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    filtered = F.conv2d(filtered, window.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    mu_x, mu_y, e_xx, e_yy, e_xy = filtered.split(3, dim=1)  # each [B, 3, H-10, W-10]
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(-3, -2, -1)).reshape(batch_shape)


_LPIPS_MODELS: Dict[tuple, torch.nn.Module] = {}


def lpips(pred: torch.Tensor, target: torch.Tensor, net: str = "alex") -> torch.Tensor:
    """LPIPS distance per image (lower is better) using the optional ``lpips`` package.

    The network (``"alex"`` or ``"vgg"``) is built once per (net, device) and cached; the
    package loads its own weights (and torchvision's backbone weights, which may need a
    download the first time). Inputs in ``[0, 1]`` are mapped to ``[-1, 1]``.

    Args:
        pred, target: ``[..., 3, H, W]`` in ``[0, 1]``.

    Returns:
        ``[...]`` LPIPS distances.

    Raises:
        ImportError: when the ``lpips`` package is not installed.
    """
    try:
        import lpips as lpips_package
    except ImportError as error:
        raise ImportError(
            "fsm_hf.metrics.lpips needs the optional `lpips` package (pip install lpips, or "
            "pip install 'fsm-hf[lpips]'); PSNR and SSIM work without it."
        ) from error
    pred, target = _check_pair(pred, target, "lpips")
    key = (net, str(pred.device))
    if key not in _LPIPS_MODELS:
        _LPIPS_MODELS[key] = lpips_package.LPIPS(net=net, verbose=False).to(pred.device).eval()
    model = _LPIPS_MODELS[key]
    batch_shape = pred.shape[:-3]
    x = pred.reshape(-1, *pred.shape[-3:]).float() * 2 - 1  # [B, 3, H, W] in [-1, 1]
    y = target.reshape(-1, *target.shape[-3:]).float() * 2 - 1
    with torch.no_grad():
        distance = model(x, y)  # [B, 1, 1, 1]
    return distance.reshape(batch_shape)


def nearest_input_frame_baseline(
    input_images: torch.Tensor, input_times: torch.Tensor, target_times: torch.Tensor
) -> torch.Tensor:
    """The trivial prediction: for each target, the input image nearest to it in time.

    Ties go to the earlier input (the first in ``input_images`` order among equal distances).

    Args:
        input_images: ``[..., V, 3, H, W]``.
        input_times: ``[..., V]`` (any time unit, same as ``target_times``).
        target_times: ``[..., T]``.

    Returns:
        ``[..., T, 3, H, W]``: copies of the chosen input images.
    """
    if input_images.dim() < 4 or input_images.shape[-3] != 3:
        raise ValueError(f"input_images must be [..., V, 3, H, W], got {tuple(input_images.shape)}.")
    if input_times.shape != input_images.shape[:-3]:
        raise ValueError(
            f"input_times must be [..., V] matching input_images {tuple(input_images.shape)}, "
            f"got {tuple(input_times.shape)}."
        )
    if target_times.shape[:-1] != input_times.shape[:-1]:
        raise ValueError(
            f"target_times [..., T] must share the batch dims of input_times {tuple(input_times.shape)}, "
            f"got {tuple(target_times.shape)}."
        )
    if input_times.shape[-1] == 0:
        raise ValueError("nearest_input_frame_baseline needs at least one input frame.")
    distance = (target_times[..., :, None] - input_times[..., None, :]).abs()  # [..., T, V]
    nearest = distance.argmin(dim=-1)  # [..., T]
    index = nearest[..., None, None, None].expand(*nearest.shape, *input_images.shape[-3:])
    return torch.gather(input_images, -4, index)  # [..., T, 3, H, W]

