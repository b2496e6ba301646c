"""Cameras: canonical conventions, conversions, helpers and validation of bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsm_hf.cameras import OPENGL_TO_OPENCV, Cameras

W, H = 64, 48


def random_c2w(n: int, seed: int = 0) -> torch.Tensor:
    """Random rigid OpenCV camera-to-world matrices (float64)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    q[torch.linalg.det(q) < 0, :, 0] *= -1  # proper rotations only
    c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    c2w[:, :3, :3] = q
    c2w[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=torch.float64) * 3
    return c2w


def pixel_intrinsics(n: int) -> torch.Tensor:
    return torch.tensor([[50.0 + i, 52.0 + i, 31.5 + 0.1 * i, 24.25 - 0.1 * i] for i in range(n)], dtype=torch.float64)


def as_K(fxfycxcy: torch.Tensor) -> torch.Tensor:
    K = torch.zeros(fxfycxcy.shape[0], 3, 3, dtype=fxfycxcy.dtype)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = (*fxfycxcy.unbind(-1), 1.0)
    return K


def assert_same(a: Cameras, b: Cameras, atol: float = 1e-5) -> None:
    assert (a.width, a.height) == (b.width, b.height)
    torch.testing.assert_close(a.c2w, b.c2w, atol=atol, rtol=0)
    torch.testing.assert_close(a.fxfycxcy, b.fxfycxcy, atol=atol, rtol=0)


# -- conventions ----------------------------------------------------------------------------------


def test_all_conventions_give_identical_canonical_cameras():
    c2w_cv = random_c2w(5)
    intr = pixel_intrinsics(5)
    reference = Cameras(c2w_cv, intr, W, H)
    assert reference.c2w.dtype == torch.float32 and reference.c2w.shape == (5, 4, 4)

    c2w_gl = c2w_cv @ OPENGL_TO_OPENCV
    w2c_cv = torch.linalg.inv(c2w_cv)
    w2c_gl = torch.linalg.inv(c2w_gl)
    normalized = intr / torch.tensor([W, H, W, H], dtype=torch.float64)
    variants = [
        Cameras.from_arrays(c2w_cv, intr, W, H),
        Cameras.from_arrays(c2w_gl, intr, W, H, convention="opengl"),
        Cameras.from_arrays(w2c_cv, intr, W, H, pose_type="w2c"),
        Cameras.from_arrays(w2c_gl.numpy(), intr.numpy(), W, H, convention="opengl", pose_type="w2c"),
        Cameras.from_arrays(c2w_cv[:, :3, :].numpy(), as_K(intr).numpy(), W, H),
        Cameras.from_arrays(c2w_gl.float(), as_K(normalized), W, H, convention="opengl", intrinsics_type="normalized"),
        Cameras.from_arrays(w2c_cv.tolist(), normalized.tolist(), W, H, pose_type="w2c", intrinsics_type="normalized"),
    ]
    for cams in variants:
        assert_same(cams, reference)


def test_opengl_flip_is_what_the_axes_say():
    # An OpenGL camera at the origin looking down world -z (its +z points backwards) is an OpenCV
    # camera whose forward axis is world -z and whose down axis is world -y.
    cams = Cameras.from_arrays(torch.eye(4), [10.0, 10.0, 5.0, 5.0], 10, 10, convention="opengl")
    torch.testing.assert_close(cams.c2w[0, :3, 2], torch.tensor([0.0, 0.0, -1.0]))
    torch.testing.assert_close(cams.c2w[0, :3, 1], torch.tensor([0.0, -1.0, 0.0]))
    torch.testing.assert_close(cams.to_opengl_c2w()[0], torch.eye(4))


def test_single_intrinsics_broadcast_and_single_pose():
    c2w = random_c2w(3)
    cams = Cameras.from_arrays(c2w, [40.0, 41.0, 32.0, 24.0], W, H)
    assert cams.fxfycxcy.shape == (3, 4)
    assert torch.equal(cams.fxfycxcy[2], torch.tensor([40.0, 41.0, 32.0, 24.0]))
    one = Cameras.from_arrays(c2w[0], as_K(pixel_intrinsics(1))[0], W, H)
    assert len(one) == 1


def test_derived_properties():
    c2w, intr = random_c2w(4, seed=3), pixel_intrinsics(4)
    cams = Cameras(c2w, intr, W, H)
    torch.testing.assert_close(cams.w2c @ cams.c2w, torch.eye(4).expand(4, 4, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(cams.K, as_K(intr).float())
    torch.testing.assert_close(cams.centers, c2w[:, :3, 3].float())
    torch.testing.assert_close(cams.normalized_fxfycxcy * torch.tensor([W, H, W, H]), intr.float())
    assert_same(Cameras.from_arrays(cams.to_opengl_c2w(), cams.K, W, H, convention="opengl"), cams)


def test_select_getitem_cat_to():
    cams = Cameras(random_c2w(6, seed=1), pixel_intrinsics(6), W, H)
    sub = cams.select([4, 1])
    assert len(sub) == 2 and torch.equal(sub.c2w[0], cams.c2w[4]) and torch.equal(sub.fxfycxcy[1], cams.fxfycxcy[1])
    assert len(cams[2]) == 1 and torch.equal(cams[2].c2w[0], cams.c2w[2])
    assert len(cams[1:4]) == 3
    joined = Cameras.cat([cams[:2], cams[2:]])
    assert_same(joined, cams, atol=0)
    double = cams.to(dtype=torch.float64)
    assert double.c2w.dtype == torch.float64 and double.width == W
    with pytest.raises(IndexError, match="out of range for 6 views"):
        cams.select([6])
    other = Cameras(random_c2w(1), pixel_intrinsics(1), W + 1, H)
    with pytest.raises(ValueError, match="one image size"):
        Cameras.cat([cams, other])


def test_scaled_and_cropped():
    cams = Cameras(random_c2w(2), torch.tensor([[50.0, 60.0, 32.0, 24.0], [40.0, 40.0, 30.0, 20.0]]), W, H)
    big = cams.scaled(96, 128)  # x2 in both directions
    assert (big.height, big.width) == (96, 128)
    torch.testing.assert_close(big.fxfycxcy, cams.fxfycxcy * 2)
    torch.testing.assert_close(big.c2w, cams.c2w)
    # The image centre stays the centre: cx = W/2 -> W'/2.
    assert big.fxfycxcy[0, 2].item() == 64.0 and big.fxfycxcy[0, 3].item() == 48.0
    crop = cams.cropped(top=4, left=10, height=40, width=30)
    assert (crop.height, crop.width) == (40, 30)
    torch.testing.assert_close(crop.fxfycxcy, cams.fxfycxcy - torch.tensor([0.0, 0.0, 10.0, 4.0]))
    with pytest.raises(ValueError, match="inside the 48x64 image"):
        cams.cropped(top=10, left=0, height=40, width=64)


def test_projection_is_consistent_after_scale_and_crop():
    """A world point projects to the same content location before and after the image edits."""
    c2w = torch.eye(4)
    cams = Cameras(c2w[None], [[50.0, 55.0, 30.0, 20.0]], W, H)
    point = torch.tensor([0.3, -0.2, 2.0])

    def project(c: Cameras) -> torch.Tensor:
        fx, fy, cx, cy = c.fxfycxcy[0]
        return torch.stack([fx * point[0] / point[2] + cx, fy * point[1] / point[2] + cy])

    u = project(cams)
    edited = cams.scaled(24, 32).cropped(2, 3, 20, 26)
    torch.testing.assert_close(project(edited), u * 0.5 - torch.tensor([3.0, 2.0]))


# -- validation -----------------------------------------------------------------------------------


def test_clear_errors_for_bad_input():
    c2w, intr = random_c2w(3), pixel_intrinsics(3)
    with pytest.raises(ValueError, match=r"extrinsics must have shape \[N, 4, 4\] or \[N, 3, 4\].*got \[3, 3, 3\]"):
        Cameras.from_arrays(c2w[:, :3, :3], intr, W, H)
    with pytest.raises(ValueError, match="extrinsics has 3, intrinsics has 2"):
        Cameras.from_arrays(c2w, intr[:2], W, H)
    with pytest.raises(ValueError, match=r"intrinsics must have shape \[N, 4\].*got \[3, 5\]"):
        Cameras.from_arrays(c2w, torch.ones(3, 5), W, H)
    with pytest.raises(ValueError, match="empty"):
        Cameras.from_arrays(torch.zeros(0, 4, 4), intr, W, H)
    with pytest.raises(ValueError, match="finite.*view\\(s\\) \\[1\\]"):
        bad = c2w.clone()
        bad[1, 0, 3] = float("nan")
        Cameras.from_arrays(bad, intr, W, H)
    with pytest.raises(ValueError, match="rigid.*view 2"):
        bad = c2w.clone()
        bad[2, :3, :3] *= 1.1
        Cameras.from_arrays(bad, intr, W, H)
    with pytest.raises(ValueError, match="det R = -1"):
        Cameras.from_arrays(c2w @ torch.diag(torch.tensor([1.0, 1.0, -1.0, 1.0], dtype=torch.float64)), intr, W, H)
    with pytest.raises(ValueError, match=r"last row .* \[0, 0, 0, 1\]"):
        bad = c2w.clone()
        bad[0, 3, 0] = 0.5
        Cameras(bad, intr, W, H)
    with pytest.raises(ValueError, match="Focal lengths must be positive.*view 1 has fx=-5"):
        bad = intr.clone()
        bad[1, 0] = -5
        Cameras(c2w, bad, W, H)
    with pytest.raises(ValueError, match="width must be a positive integer.*got 0"):
        Cameras(c2w, intr, 0, H)
    with pytest.raises(TypeError, match="height must be a positive integer"):
        Cameras(c2w, intr, W, 10.5)
    with pytest.raises(ValueError, match="convention must be one of"):
        Cameras.from_arrays(c2w, intr, W, H, convention="blender")
    with pytest.raises(ValueError, match=r"\[\[fx, s, cx\], \[0, fy, cy\], \[0, 0, 1\]\]"):
        K = as_K(intr)
        K[:, 2, 2] = 2.0
        Cameras.from_arrays(c2w, K, W, H)
    with pytest.warns(UserWarning, match="skew"):
        K = as_K(intr)
        K[:, 0, 1] = 0.5
        Cameras.from_arrays(c2w, K, W, H)


def test_nearly_rigid_float32_poses_are_accepted():
    c2w = random_c2w(8, seed=5)
    rounded = torch.round(c2w * 1e5) / 1e5  # poses printed with 5 decimals
    assert len(Cameras.from_arrays(rounded, pixel_intrinsics(8), W, H, pose_type="w2c")) == 8


_BAD_KIND = st.sampled_from(["shape_ext", "shape_int", "nonfinite_ext", "nonfinite_int", "nonrigid", "count", "empty", "focal"])


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=_BAD_KIND,
    n=st.integers(1, 5),
    seed=st.integers(0, 10_000),
    value=st.sampled_from([float("nan"), float("inf"), -float("inf")]),
    factor=st.one_of(st.floats(0.2, 0.98), st.floats(1.02, 5.0)),
    shear=st.floats(0.01, 1.0),
    extra_dim=st.integers(1, 6),
    use_numpy=st.booleans(),
)
def test_malformed_input_is_rejected(kind, n, seed, value, factor, shear, extra_dim, use_numpy):
    rng = np.random.default_rng(seed)
    ext = random_c2w(n, seed=seed)
    intr = pixel_intrinsics(n)
    if kind == "shape_ext":
        shape = [n, int(rng.choice([2, 3, 5])), int(rng.choice([3, 5, 6]))]
        ext = torch.zeros(shape)
        expect = r"extrinsics must have shape"
    elif kind == "shape_int":
        intr = torch.ones(n, extra_dim if extra_dim not in (3, 4) else 7)  # [3, 3] would be one K
        expect = r"intrinsics must have shape"
    elif kind == "nonfinite_ext":
        ext[rng.integers(n), rng.integers(3), rng.integers(4)] = value
        expect = "finite"
    elif kind == "nonfinite_int":
        intr[rng.integers(n), rng.integers(4)] = value
        expect = "finite"
    elif kind == "nonrigid":
        i = rng.integers(n)
        if rng.random() < 0.5:
            ext[i, :3, :3] *= factor
        else:
            ext[i, 0, :3] += shear * ext[i, 1, :3]
        expect = "rigid"
    elif kind == "count":
        intr = pixel_intrinsics(n + extra_dim)
        expect = f"extrinsics has {n}, intrinsics has {n + extra_dim}"
    elif kind == "empty":
        ext, intr = torch.zeros(0, 4, 4), torch.zeros(0, 4)
        expect = "empty"
    else:
        intr[rng.integers(n), rng.integers(2)] = -abs(float(rng.normal())) * 10
        expect = "Focal lengths must be positive"
    if use_numpy:
        ext, intr = ext.numpy(), intr.numpy()
    with pytest.raises(ValueError, match=expect):
        Cameras.from_arrays(ext, intr, W, H, pose_type="w2c" if seed % 2 else "c2w")


@settings(max_examples=30, deadline=None, database=None)
@given(n=st.integers(1, 6), seed=st.integers(0, 10_000), fov=st.floats(0.2, 2.5))
def test_round_trips_hold_for_random_cameras(n, seed, fov):
    c2w = random_c2w(n, seed)
    cams = Cameras.from_fov(c2w, fov, W, H)
    assert math.isclose(cams.fxfycxcy[0, 0].item(), 0.5 * W / math.tan(fov / 2), rel_tol=1e-5)
    again = Cameras.from_arrays(cams.w2c, cams.normalized_fxfycxcy, W, H, pose_type="w2c", intrinsics_type="normalized")
    assert_same(again, cams, atol=1e-4)


def test_selection_by_mask_negative_and_reversed_indices_and_no_floats():
    c2w = torch.eye(4).repeat(5, 1, 1)
    c2w[:, 0, 3] = torch.arange(5.0)
    cams = Cameras(c2w, torch.tensor([[20.0, 20.0, 16.0, 16.0]]).repeat(5, 1), width=32, height=32)
    x = lambda c: c.c2w[:, 0, 3].tolist()  # noqa: E731
    assert x(cams[torch.tensor([True, False, True, False, True])]) == [0.0, 2.0, 4.0]
    assert x(cams[np.array([False, True, False, False, False])]) == [1.0]
    assert x(cams[::-1]) == [4.0, 3.0, 2.0, 1.0, 0.0] and x(cams[-1]) == [4.0] and x(cams[np.int64(2)]) == [2.0]
    with pytest.raises(IndexError, match="integer positions or a boolean mask"):
        cams[1.5]
    with pytest.raises(IndexError, match="integer positions or a boolean mask"):
        cams[torch.tensor([1.0])]
    with pytest.raises(IndexError, match=r"boolean mask over 5 views must have shape \[5\]"):
        cams[[True, False]]
