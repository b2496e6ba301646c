"""PSNR, SSIM, the optional LPIPS wrapper and the nearest-input-frame baseline."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from fsm_hf.metrics import lpips, nearest_input_frame_baseline, psnr, ssim


def _reference_ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """Textbook SSIM (Wang et al. 2004) of two ``[3, H, W]`` images: an 11x11 Gaussian window
    (sigma 1.5) placed at every position where it fits, per channel, averaged."""
    size, sigma = 11, 1.5
    offsets = np.arange(size) - (size - 1) / 2
    g = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    g /= g.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for channel in range(x.shape[0]):
        for i in range(x.shape[1] - size + 1):
            for j in range(x.shape[2] - size + 1):
                a = x[channel, i : i + size, j : j + size]
                b = y[channel, i : i + size, j : j + size]
                mu_a, mu_b = (g * a).sum(), (g * b).sum()
                var_a = (g * (a - mu_a) ** 2).sum()
                var_b = (g * (b - mu_b) ** 2).sum()
                cov = (g * (a - mu_a) * (b - mu_b)).sum()
                values.append(
                    ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
                )
    return float(np.mean(values))


def _image_pair(seed: int, height: int = 16, width: int = 19):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, height, width, generator=g, dtype=torch.float64)
    smooth = torch.nn.functional.avg_pool2d(base[None], 3, stride=1, padding=1)[0]
    noisy = (smooth + 0.1 * torch.randn(3, height, width, generator=g, dtype=torch.float64)).clamp(0, 1)
    return smooth, noisy


# ---- PSNR ----------------------------------------------------------------------------------


def test_psnr_known_values():
    target = torch.zeros(2, 3, 4, 5)
    pred = torch.full_like(target, 0.1)  # MSE 0.01 -> 20 dB
    torch.testing.assert_close(psnr(pred, target), torch.tensor([20.0, 20.0]))
    half = target.clone()
    half[..., :2, :] = 0.5  # MSE = 0.25 * 2/4 = 0.125 -> 10 log10(8)
    torch.testing.assert_close(psnr(half[0], target[0]), torch.tensor(10 * math.log10(8.0)))
    # data_range scales the peak
    torch.testing.assert_close(psnr(pred * 255, target * 255, data_range=255.0), torch.tensor([20.0, 20.0]))
    assert torch.isinf(psnr(target, target)).all()


def test_psnr_keeps_batch_dims_and_is_per_image():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 4, 3, 8, 8, generator=g), torch.rand(2, 4, 3, 8, 8, generator=g)
    values = psnr(pred, target)
    assert values.shape == (2, 4)
    torch.testing.assert_close(values[1, 2], psnr(pred[1, 2], target[1, 2]))


def test_metrics_reject_mismatched_or_non_rgb_inputs():
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, H, W\]"):
        ssim(torch.zeros(1, 16, 16), torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="at least 11 x 11"):
        ssim(torch.zeros(3, 10, 16), torch.zeros(3, 10, 16))


# ---- SSIM ----------------------------------------------------------------------------------


def test_ssim_of_identical_images_is_one():
    image = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ssim(image, image), torch.ones(2), atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_matches_a_straightforward_reference(seed):
    x, y = _image_pair(seed)
    expected = _reference_ssim(x.numpy(), y.numpy())
    assert abs(ssim(x, y).item() - expected) < 1e-10  # float64 in, float64 out
    assert abs(ssim(x.float(), y.float()).item() - expected) < 1e-5
    assert expected < 0.95  # the pair is genuinely different


def test_ssim_reference_with_data_range():
    x, y = _image_pair(5)
    expected = _reference_ssim(255 * x.numpy(), 255 * y.numpy(), data_range=255.0)
    assert abs(ssim(255 * x, 255 * y, data_range=255.0).item() - expected) < 1e-9


def test_ssim_is_symmetric_and_batched():
    pairs = [_image_pair(seed) for seed in range(4)]
    x = torch.stack([p[0] for p in pairs]).reshape(2, 2, 3, 16, 19)
    y = torch.stack([p[1] for p in pairs]).reshape(2, 2, 3, 16, 19)
    values = ssim(x, y)
    assert values.shape == (2, 2)
    torch.testing.assert_close(values, ssim(y, x), atol=1e-12, rtol=0)
    torch.testing.assert_close(values[1, 0], ssim(x[1, 0], y[1, 0]))


def test_ssim_decreases_with_distortion():
    x, _ = _image_pair(3)
    g = torch.Generator().manual_seed(9)
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
    scores = [ssim(x, (x + level * noise).clamp(0, 1)).item() for level in (0.02, 0.1, 0.3)]
    assert 1.0 > scores[0] > scores[1] > scores[2]


# ---- LPIPS ---------------------------------------------------------------------------------


def test_lpips_without_the_package_raises_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # makes `import lpips` fail
    with pytest.raises(ImportError, match="pip install lpips"):
        lpips(torch.zeros(3, 16, 16), torch.zeros(3, 16, 16))


# ---- nearest-input-frame baseline ----------------------------------------------------------


def test_baseline_picks_the_input_nearest_in_time():
    images = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 2, 2)  # image i is all i
    times = torch.tensor([0.0, 0.3, 0.5, 1.0])
    targets = torch.tensor([0.1, 0.16, 0.4, 0.76, 2.0, -1.0])
    chosen = nearest_input_frame_baseline(images, times, targets)
    assert chosen.shape == (6, 3, 2, 2)
    assert chosen[:, 0, 0, 0].tolist() == [0, 1, 1, 3, 3, 0]  # 0.4 is a tie: the earlier input wins


def test_baseline_is_batched_and_needs_matching_shapes():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 5, 3, 4, 4, generator=g)
    times = torch.rand(2, 5, generator=g)
    targets = torch.rand(2, 3, generator=g)
    chosen = nearest_input_frame_baseline(images, times, targets)
    assert chosen.shape == (2, 3, 3, 4, 4)
    for b in range(2):
        for t in range(3):
            nearest = (times[b] - targets[b, t]).abs().argmin()
            assert torch.equal(chosen[b, t], images[b, nearest])
    with pytest.raises(ValueError, match="input_times"):
        nearest_input_frame_baseline(images, times[:, :4], targets)
    with pytest.raises(ValueError, match="target_times"):
        nearest_input_frame_baseline(images, times, targets[0])
