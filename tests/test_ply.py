""".ply export of FSM-LRM Gaussians: the 3DGS layout at a chosen time and the lossless 4D layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeling.gaussians import Gaussians4D, covariance_to_quats_scales, slice_gaussians

plyfile = pytest.importorskip("plyfile")

STANDARD_3DGS = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                 "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip


def _gaussians(n: int = 64, k: int = 1, seed: int = 0) -> Gaussians4D:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return Gaussians4D(
        means=r(2, n, 3), times=torch.rand(2, n, generator=g) * 2 - 1, sh=r(2, n, k, 3),
        log_scales=r(2, n, 3) * 0.3 - 2, log_scale_t=-torch.rand(2, n, generator=g),
        quats=r(2, n, 4), quats_r=r(2, n, 4), opacity_logits=r(2, n),
    )  # fmt: skip


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = (q / np.linalg.norm(q, axis=-1, keepdims=True)).T
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1).reshape(-1, 3, 3)  # fmt: skip


def test_3dgs_ply_fields_and_values(tmp_path):
    from fsm_hf import export_ply

    gs = _gaussians()
    path = tmp_path / "scene_t.ply"
    n = export_ply(path, gs, time=0.25, batch_index=1)
    assert n == 64
    vertex = plyfile.PlyData.read(str(path))["vertex"]
    assert [p.name for p in vertex.properties] == STANDARD_3DGS
    assert all(p.val_dtype in ("f4", "float32") for p in vertex.properties)
    col = lambda *names: np.stack([np.asarray(vertex[name], dtype=np.float64) for name in names], -1)  # noqa: E731

    sliced = slice_gaussians(gs.select(1).map(lambda t: t.double()), 0.25)
    np.testing.assert_allclose(col("x", "y", "z"), sliced.means[0].numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(col("nx", "ny", "nz"), 0.0)
    np.testing.assert_allclose(col("f_dc_0", "f_dc_1", "f_dc_2"), gs.sh[1, :, 0].numpy(), rtol=0, atol=0)
    # opacity is stored as a logit of (peak opacity x temporal marginal)
    opacity = 1 / (1 + np.exp(-col("opacity")[:, 0]))
    np.testing.assert_allclose(opacity, sliced.opacities[0].numpy(), rtol=1e-5, atol=1e-7)
    # log-scales and unit quaternions reproduce the conditional covariance
    scales, rot = np.exp(col("scale_0", "scale_1", "scale_2")), col("rot_0", "rot_1", "rot_2", "rot_3")
    np.testing.assert_allclose(np.linalg.norm(rot, axis=-1), 1.0, atol=1e-6)
    mat = _quat_to_matrix(rot)
    covars = mat @ (scales[:, :, None] ** 2 * mat.transpose(0, 2, 1))
    np.testing.assert_allclose(covars, sliced.covars[0].numpy(), rtol=1e-4, atol=1e-9)


def test_3dgs_ply_prunes_and_writes_higher_sh(tmp_path):
    from fsm_hf.ply import export_ply

    gs = _gaussians(k=4, seed=1)
    sliced = slice_gaussians(gs.select(0).map(lambda t: t.double()), 0.9)
    ordered = sliced.marginal[0].sort().values
    threshold = float(ordered[31] + ordered[32]) / 2  # away from every marginal: no rounding ties
    n = export_ply(tmp_path / "pruned.ply", gs, time=0.9, prune_threshold=threshold)
    assert n == int((sliced.marginal[0] > threshold).sum()) and 0 < n < 64
    vertex = plyfile.PlyData.read(str(tmp_path / "pruned.ply"))["vertex"]
    names = [p.name for p in vertex.properties]
    assert names[:9] == STANDARD_3DGS[:9] and names[9:18] == [f"f_rest_{i}" for i in range(9)]
    keep = (sliced.marginal[0] > threshold).numpy()
    rest = gs.sh[0, keep, 1:].transpose(1, 2).reshape(n, 9).numpy()  # channel-major, as 3DGS
    np.testing.assert_array_equal(np.stack([vertex[f"f_rest_{i}"] for i in range(9)], -1), rest)


def test_4d_ply_roundtrip(tmp_path):
    from fsm_hf import export_ply_4d, load_ply_4d

    gs = _gaussians(k=4, seed=2)
    path = tmp_path / "scene_4d.ply"
    assert export_ply_4d(path, gs, batch_index=1) == 64
    data = plyfile.PlyData.read(str(path))
    names = [p.name for p in data["vertex"].properties]
    for field in ("x", "y", "z", "t", "opacity", "scale_0", "scale_t", "rot_0", "rot_r_3", "f_dc_2", "f_rest_8"):
        assert field in names
    assert any("4d gaussians" in c for c in data.comments)
    back = load_ply_4d(path)
    ref = gs.select(1)
    for name in ("means", "times", "sh", "log_scales", "log_scale_t", "quats", "quats_r", "opacity_logits"):
        assert torch.equal(getattr(back, name), getattr(ref, name)), name
    with pytest.raises(ValueError, match="not an fsm-hf 4D"):
        from fsm_hf import export_ply

        export_ply(tmp_path / "3d.ply", gs, time=0.0)
        load_ply_4d(tmp_path / "3d.ply")


def test_covariance_factorisation_roundtrip():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(50, 3, 3, generator=g, dtype=torch.float64)
    covars = a @ a.transpose(1, 2) + 1e-3 * torch.eye(3, dtype=torch.float64)
    quats, scales = covariance_to_quats_scales(covars)
    mat = torch.from_numpy(_quat_to_matrix(quats.numpy()))
    assert (torch.linalg.det(mat) > 0).all() and (quats[:, 0] >= 0).all()
    torch.testing.assert_close(mat @ torch.diag_embed(scales**2) @ mat.transpose(1, 2), covars, atol=1e-10, rtol=1e-8)
