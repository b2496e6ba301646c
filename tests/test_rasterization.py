"""The torch Gaussian compositor (modeling.rasterization) against a plain per-pixel reference.

The reference below is written independently and deliberately plainly: numpy float64, one
Gaussian and one pixel at a time, gsplat 1.5.3's forward rules applied literally (EWA projection
with the clamped Jacobian, eps2d blur, opacity-aware radius, near/far cull, front-to-back by depth,
``alpha = min(0.999, o exp(-sigma))``, skip below 1/255, stop before T would reach <= 1e-4). It has
no tiles and no off-image cull: those only skip Gaussians that cannot reach a pixel, so an error
in them shows up as a mismatch.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling.rasterization import evaluate_sh, rasterization, rasterization_torch

FIXTURE = Path(os.environ.get("FSM_GSPLAT_FIXTURE", Path(__file__).parent / "fixtures" / "gsplat_reference.safetensors"))
SH_C0 = 0.28209479177387814


# ---------------------------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------------------------


def ref_covariance(quat, scale):
    w, x, y, z = np.asarray(quat, dtype=np.float64) / np.linalg.norm(quat)
    rot = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )
    return rot @ np.diag(np.asarray(scale, dtype=np.float64) ** 2) @ rot.T


def ref_render_camera(means, covs, opacities, feats, viewmat, K, width, height, near=0.01, far=1e10,
                      eps2d=0.3, radius_clip=0.0, background=None, antialiased=False, stats=None):  # fmt: skip
    """One camera. Returns (features [H, W, D], alpha [H, W, 1]); counts into ``stats``."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lim_x = (-(cx / fx + 0.3 * 0.5 * width / fx), (width - cx) / fx + 0.3 * 0.5 * width / fx)
    lim_y = (-(cy / fy + 0.3 * 0.5 * height / fy), (height - cy) / fy + 0.3 * 0.5 * height / fy)
    splats = []  # (depth, index, mean2d, inverse 2d covariance, opacity)
    for g in range(len(means)):
        pc = viewmat[:3, :3] @ means[g] + viewmat[:3, 3]
        x, y, z = pc
        if z < near or z > far:
            continue
        cov_c = viewmat[:3, :3] @ covs[g] @ viewmat[:3, :3].T
        u = min(max(x / z, lim_x[0]), lim_x[1])
        v = min(max(y / z, lim_y[0]), lim_y[1])
        if stats is not None and (u != x / z or v != y / z):
            stats["clamped"] = stats.get("clamped", 0) + 1
        jac = np.array([[fx / z, 0.0, -fx * u / z], [0.0, fy / z, -fy * v / z]])
        cov2 = jac @ cov_c @ jac.T
        det0 = np.linalg.det(cov2)
        cov2 = cov2 + eps2d * np.eye(2)
        det = np.linalg.det(cov2)
        if det <= 0:
            continue
        o = opacities[g] * (math.sqrt(max(0.0, det0 / det)) if antialiased else 1.0)
        if o < 1 / 255:
            continue
        ext = min(3.33, math.sqrt(2 * math.log(o * 255)))
        if math.ceil(ext * math.sqrt(cov2[0, 0])) <= radius_clip and math.ceil(ext * math.sqrt(cov2[1, 1])) <= radius_clip:
            continue
        splats.append((z, g, np.array([fx * x / z + cx, fy * y / z + cy]), np.linalg.inv(cov2), o))
    splats.sort(key=lambda s: (s[0], s[1]))
    out = np.zeros((height, width, feats.shape[-1]))
    alpha_img = np.zeros((height, width, 1))
    for i in range(height):
        for j in range(width):
            pix = np.array([j + 0.5, i + 0.5])
            t, acc = 1.0, np.zeros(feats.shape[-1])
            for _, g, m2, conic, o in splats:
                d = m2 - pix
                sigma = 0.5 * d @ conic @ d
                alpha = min(0.999, o * math.exp(-sigma))
                if sigma < 0 or alpha < 1 / 255:
                    continue
                if t * (1 - alpha) <= 1e-4:
                    if stats is not None:
                        stats["terminated"] = stats.get("terminated", 0) + 1
                    break
                acc = acc + alpha * t * feats[g]
                t = t * (1 - alpha)
            out[i, j] = acc + (t * background if background is not None else 0.0)
            alpha_img[i, j] = 1 - t
    return out, alpha_img


def ref_render(scene, feats=None, stats=None, **kw):
    """All cameras of a scene (dict of float64 tensors). feats: [N, D] or [C, N, D] (default colors)."""
    means, ops = scene["means"].numpy(), scene["opacities"].numpy()
    covs = [ref_covariance(q, s) for q, s in zip(scene["quats"].numpy(), scene["scales"].numpy())]
    feats = (scene["colors"] if feats is None else feats).numpy()
    outs, alphas = [], []
    for c in range(scene["viewmats"].shape[0]):
        f = feats[c] if feats.ndim == 3 else feats
        bg = None if scene.get("backgrounds") is None else scene["backgrounds"][c].numpy()
        o, a = ref_render_camera(means, covs, ops, f, scene["viewmats"][c].numpy(), scene["Ks"][c].numpy(),
                                 scene["width"], scene["height"], background=bg, stats=stats, **kw)  # fmt: skip
        outs.append(o)
        alphas.append(a)
    return torch.from_numpy(np.stack(outs)), torch.from_numpy(np.stack(alphas))


# ---------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------


def look_at(eye, target):
    """World-to-camera matrix of an OpenCV camera at ``eye`` looking at ``target`` (y down)."""
    eye, target = torch.tensor(eye, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)
    fwd = (target - eye) / (target - eye).norm()
    right = torch.linalg.cross(fwd, torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64))
    right = right / right.norm()
    down = torch.linalg.cross(fwd, right)
    rot = torch.stack([right, down, fwd])  # rows: camera axes in world
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3], w2c[:3, 3] = rot, -rot @ eye
    return w2c


def make_scene(kind: str, seed: int = 0, width: int = 24, height: int = 20, dim: int = 3):
    """Hand-made float64 scenes seen by two cameras: "mixed" (spread out, some behind the camera,
    some beyond the image edges, big ones far off-axis) or "dense" (an opaque pile -> early stops)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)  # noqa: E731
    if kind == "mixed":
        n = 48
        means = torch.cat([
            (r(30, 3) - 0.5) * torch.tensor([4.0, 3.0, 2.0], dtype=torch.float64) + torch.tensor([0, 0, 3.0], dtype=torch.float64),
            (r(8, 3) - 0.5) * 2 + torch.tensor([0, 0, -2.0], dtype=torch.float64),  # behind camera 0
            torch.tensor([[3.0, 0.2, 1.0], [-3.2, -0.5, 1.2], [0.3, 2.8, 1.1], [2.5, 2.5, 0.8]], dtype=torch.float64),  # far off-axis
            (r(6, 3) - 0.5) * torch.tensor([12.0, 12.0, 1.0], dtype=torch.float64) + torch.tensor([0, 0, 2.5], dtype=torch.float64),
        ])  # fmt: skip
        scales = torch.cat([r(30, 3) * 0.25 + 0.02, r(8, 3) * 0.3 + 0.05, torch.full((4, 3), 0.8, dtype=torch.float64), r(6, 3) * 0.1 + 0.02])
        opacities = r(n) * 0.9 + 0.05
    elif kind == "dense":
        n = 60
        means = (r(n, 3) - 0.5) * torch.tensor([0.6, 0.5, 1.0], dtype=torch.float64) + torch.tensor([0, 0, 3.0], dtype=torch.float64)
        scales = r(n, 3) * 0.2 + 0.1
        opacities = r(n) * 0.1 + 0.88
    else:
        raise ValueError(kind)
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    colors = r(n, dim)
    viewmats = torch.stack([torch.eye(4, dtype=torch.float64), look_at([1.5, -0.4, 0.5], [0.0, 0.0, 3.0])])
    Ks = torch.tensor([[[22.0, 0, 12.0], [0, 21.0, 10.0], [0, 0, 1]], [[18.0, 0, 11.0], [0, 19.0, 9.5], [0, 0, 1]]], dtype=torch.float64)
    backgrounds = r(2, dim)
    return dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, viewmats=viewmats,
                Ks=Ks, width=width, height=height, backgrounds=backgrounds)  # fmt: skip


def render(scene, dtype=torch.float64, **kw):
    args = [scene[k].to(dtype) for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")]
    kw.setdefault("backgrounds", scene["backgrounds"].to(dtype))
    kw.setdefault("backend", "torch")
    return rasterization(*args, scene["width"], scene["height"], **kw)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny tensors: one intra-op thread is faster than a contended pool (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mixed():
    scene = make_scene("mixed")
    stats: dict = {}
    return scene, ref_render(scene, stats=stats), stats


@pytest.fixture(scope="module")
def dense():
    scene = make_scene("dense", seed=1)
    stats: dict = {}
    return scene, ref_render(scene, stats=stats), stats


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mixed", "dense"])
def test_matches_reference_float64(name, request):
    scene, (ref_rgb, ref_alpha), stats = request.getfixturevalue(name)
    rgb, alpha, meta = render(scene)
    assert rgb.shape == (2, scene["height"], scene["width"], 3) and alpha.shape == (2, scene["height"], scene["width"], 1)
    torch.testing.assert_close(rgb, ref_rgb, atol=1e-6, rtol=0)
    torch.testing.assert_close(alpha, ref_alpha, atol=1e-6, rtol=0)
    assert meta["backend"] == "torch"
    if name == "dense":  # the scene really exercises early termination
        assert stats.get("terminated", 0) > 50
    else:  # ... and the clamped Jacobian, the near cull and the off-image cull
        assert stats.get("clamped", 0) > 0
        depths = meta["depths"][meta["camera_ids"] == 0]
        assert (depths > 0).all() and len(depths) < 48
        assert 0.05 < alpha.mean() < 0.95


@pytest.mark.parametrize("name", ["mixed", "dense"])
def test_matches_reference_float32(name, request):
    scene, (ref_rgb, ref_alpha), _ = request.getfixturevalue(name)
    rgb, alpha, _ = render(scene, dtype=torch.float32)
    assert rgb.dtype == torch.float32
    torch.testing.assert_close(rgb.double(), ref_rgb, atol=1e-4, rtol=0)
    torch.testing.assert_close(alpha.double(), ref_alpha, atol=1e-4, rtol=0)


def test_block_size_does_not_change_results(dense, mixed):
    for scene, *_ in (dense, mixed):
        base, base_a, _ = render(scene)
        for block, max_el in [(1, 1 << 22), (5, 7), (16, 64), (37, 1 << 22), (7, 1)]:
            rgb, alpha, _ = render(scene, block_size=block, max_block_elements=max_el)
            torch.testing.assert_close(rgb, base, atol=1e-12, rtol=0)
            torch.testing.assert_close(alpha, base_a, atol=1e-12, rtol=0)


def test_render_modes_features_and_backgrounds(mixed):
    scene, (ref_rgb, ref_alpha), _ = mixed
    # N-D features, per camera, no background
    feats = torch.rand(2, 48, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    args = [scene[k] for k in ("means", "quats", "scales", "opacities")]
    out, alpha, _ = rasterization(*args, feats, scene["viewmats"], scene["Ks"], scene["width"], scene["height"], backend="torch")
    ref_feat, _ = ref_render({**scene, "backgrounds": None}, feats=feats)
    torch.testing.assert_close(out, ref_feat, atol=1e-6, rtol=0)
    # depth channels: D is the composited camera-space z, ED divides it by alpha, background only on rgb
    depths = torch.stack([(scene["viewmats"][c, :3, :3] @ scene["means"].T + scene["viewmats"][c, :3, 3:]).T[:, 2] for c in range(2)])
    ref_d, _ = ref_render({**scene, "backgrounds": None}, feats=depths[..., None])
    rgbd, alpha_d, _ = render(scene, render_mode="RGB+D")
    torch.testing.assert_close(rgbd[..., :3], ref_rgb, atol=1e-6, rtol=0)
    torch.testing.assert_close(rgbd[..., 3:], ref_d, atol=1e-6, rtol=0)
    d_only, _, _ = render(scene, render_mode="D")
    torch.testing.assert_close(d_only, ref_d, atol=1e-6, rtol=0)
    ed, _, _ = render(scene, render_mode="RGB+ED")
    torch.testing.assert_close(ed[..., 3:], ref_d / ref_alpha.clamp_min(1e-10), atol=1e-6, rtol=0)
    assert ed[..., 3:].max() > 1.0  # depth really differs from colour


def test_antialiased_and_radius_clip_match_reference(mixed):
    scene, _, _ = mixed
    for kw in ({"antialiased": True}, {"radius_clip": 3.0}):
        ref_rgb, ref_alpha = ref_render(scene, **kw)
        ours = {"rasterize_mode": "antialiased"} if "antialiased" in kw else kw
        rgb, alpha, _ = render(scene, **ours)
        torch.testing.assert_close(rgb, ref_rgb, atol=1e-6, rtol=0)
        torch.testing.assert_close(alpha, ref_alpha, atol=1e-6, rtol=0)
        assert not torch.allclose(alpha, render(scene)[1], atol=1e-3)  # the option has an effect


def test_near_far_planes(mixed):
    scene, _, _ = mixed
    ref_rgb, ref_alpha = ref_render(scene, near=2.5, far=3.5)
    rgb, alpha, _ = render(scene, near_plane=2.5, far_plane=3.5)
    torch.testing.assert_close(rgb, ref_rgb, atol=1e-6, rtol=0)
    torch.testing.assert_close(alpha, ref_alpha, atol=1e-6, rtol=0)


def test_sh_degree0_and_covars_path(dense):
    scene, _, _ = dense
    f = torch.randn(60, 1, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    sh_rgb, sh_alpha, _ = render({**scene, "colors": f}, sh_degree=0)
    ref_rgb, _ = ref_render(scene, feats=torch.clamp_min(0.5 + SH_C0 * f[:, 0], 0.0))
    torch.testing.assert_close(sh_rgb, ref_rgb, atol=1e-6, rtol=0)
    assert (0.5 + SH_C0 * f[:, 0] < 0).any()  # the clamp at 0 is exercised
    covs = torch.from_numpy(np.stack([ref_covariance(q, s) for q, s in zip(scene["quats"].numpy(), scene["scales"].numpy())]))
    cov_rgb, _, _ = rasterization(scene["means"], None, None, scene["opacities"], scene["colors"], scene["viewmats"], scene["Ks"],
                                  scene["width"], scene["height"], covars=covs, backgrounds=scene["backgrounds"])  # fmt: skip
    torch.testing.assert_close(cov_rgb, render(scene)[0], atol=1e-9, rtol=0)


def test_higher_sh_degrees():
    g = torch.Generator().manual_seed(5)
    dirs, coeffs = torch.randn(40, 3, generator=g, dtype=torch.float64), torch.randn(40, 16, 3, generator=g, dtype=torch.float64)
    # orthonormality of the real SH bases on the sphere (Monte Carlo on a large sample, bases = coeff one-hot)
    u = torch.nn.functional.normalize(torch.randn(100000, 3, generator=g, dtype=torch.float64), dim=-1)
    onehot = torch.eye(18, dtype=torch.float64)[:16].reshape(16, 6, 3).permute(1, 0, 2)  # channel c of call i: basis 3i + c
    bases = torch.cat([evaluate_sh(3, u, onehot[i].expand(len(u), 16, 3)) for i in range(6)], dim=1)[:, :16]  # [M, 16]
    gram = bases.T @ bases * (4 * math.pi / len(u))
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=0.03, rtol=0)
    # degree 1 follows the 3DGS sign convention: -C1 y, C1 z, -C1 x
    one = torch.zeros(1, 4, 3, dtype=torch.float64)
    one[0, 3, 0] = 1.0
    assert evaluate_sh(1, torch.tensor([[1.0, 0, 0]], dtype=torch.float64), one)[0, 0] == pytest.approx(-0.4886025119029199)
    # and agrees with gsplat's own torch implementation where available (it is pure torch)
    try:
        from gsplat.cuda._torch_impl import _spherical_harmonics
    except Exception:  # pragma: no cover - gsplat missing
        return
    for degree in range(4):
        torch.testing.assert_close(evaluate_sh(degree, dirs, coeffs), _spherical_harmonics(degree, dirs, coeffs), atol=1e-10, rtol=0)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(7)
    n = 5
    means = ((torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([1.0, 0.8, 0.5], dtype=torch.float64)
             + torch.tensor([0, 0, 2.5], dtype=torch.float64)).requires_grad_()  # fmt: skip
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64).requires_grad_()
    scales = (torch.rand(n, 3, generator=g, dtype=torch.float64) * 0.2 + 0.3).requires_grad_()
    opac = (torch.rand(n, generator=g, dtype=torch.float64) * 0.5 + 0.3).requires_grad_()
    colors = torch.rand(n, 3, generator=g, dtype=torch.float64).requires_grad_()
    vm = torch.eye(4, dtype=torch.float64)[None]
    K = torch.tensor([[[6.0, 0, 3.0], [0, 6.0, 2.5], [0, 0, 1]]], dtype=torch.float64)
    bg = torch.tensor([[0.2, 0.5, 0.9]], dtype=torch.float64)

    def fn(m, q, s, o, c, use_checkpoint):
        # checkpointed: small blocks and chunks, so transmittance is carried between chunks
        blocks = dict(block_size=3, max_block_elements=20) if use_checkpoint else {}
        rgb, alpha, _ = rasterization_torch(m, q, s, o, c, vm, K, 6, 5, backgrounds=bg, use_checkpoint=use_checkpoint, **blocks)
        return rgb, alpha

    inputs = (means, quats, scales, opac, colors)
    alpha = fn(*inputs, False)[1]
    assert (alpha > 0.05).float().mean() > 0.9 and alpha.max() < 0.99  # most pixels see Gaussians, none saturates
    assert torch.autograd.gradcheck(lambda *x: fn(*x, False), inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
    assert torch.autograd.gradcheck(lambda *x: fn(*x, True), inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)
    # checkpointing does not change gradients
    grads = []
    for ckpt in (False, True):
        rgb, alpha = fn(*inputs, ckpt)
        grads.append(torch.autograd.grad((rgb * torch.arange(3.0, dtype=torch.float64)).sum() + alpha.sum(), inputs))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_batch_dims_and_packed_meta(mixed, dense):
    s0, s1 = mixed[0], make_scene("mixed", seed=9)
    keys = ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks", "backgrounds")
    stacked = {k: torch.stack([s0[k], s1[k]]) for k in keys}
    args = [stacked[k] for k in keys[:7]]
    rgb, alpha, meta = rasterization(*args, 24, 20, backgrounds=stacked["backgrounds"], packed=False)
    assert rgb.shape == (2, 2, 20, 24, 3) and meta["radii"].shape == (2, 2, 48, 2)
    for b, s in enumerate((s0, s1)):
        one, one_a, one_meta = render(s)
        torch.testing.assert_close(rgb[b], one, atol=1e-12, rtol=0)
        torch.testing.assert_close(alpha[b], one_a, atol=1e-12, rtol=0)
    _, _, packed = rasterization(*args, 24, 20, backgrounds=stacked["backgrounds"], packed=True)
    valid = meta["radii"].gt(0).all(-1)
    assert packed["means2d"].shape == (int(valid.sum()), 2)
    torch.testing.assert_close(packed["means2d"], meta["means2d"][valid])
    assert torch.equal(packed["radii"], meta["radii"][valid])
    assert (packed["batch_ids"] == 1).any() and (packed["camera_ids"] == 1).any()


def test_errors_name_the_problem(dense):
    scene, _, _ = dense
    with pytest.raises(NotImplementedError, match="absgrad"):
        render(scene, absgrad=True)
    with pytest.raises(NotImplementedError, match="camera_model"):
        render(scene, camera_model="ortho")
    with pytest.raises(NotImplementedError, match="radial_coeffs"):
        render(scene, radial_coeffs=torch.zeros(2, 6))
    with pytest.raises(ValueError, match="opacities"):
        rasterization(scene["means"], scene["quats"], scene["scales"], scene["opacities"][:-1], scene["colors"],
                      scene["viewmats"], scene["Ks"], 24, 20)  # fmt: skip
    with pytest.raises(ValueError, match="render_mode"):
        render(scene, render_mode="RGBD")
    with pytest.raises(ValueError, match="backend"):
        render(scene, backend="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs CUDA tensors"):
            render(scene, backend="gsplat")


def test_cpu_path_never_imports_gsplat():
    code = (
        "import sys, torch\n"
        "from modeling import rasterization\n"
        "m = torch.tensor([[0.0, 0.0, 2.0]]); q = torch.tensor([[1.0, 0, 0, 0]]); s = torch.full((1, 3), 0.2)\n"
        "c, a, _ = rasterization(m, q, s, torch.tensor([0.9]), torch.ones(1, 3), torch.eye(4)[None],\n"
        "    torch.tensor([[[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]]]), 8, 8)\n"
        "assert a.max() > 0.5, a.max()\n"
        "assert not any(k.startswith('gsplat') for k in sys.modules), 'gsplat was imported'\n"
    )
    env = {"CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env},
                            cwd=Path(__file__).parents[1], timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not FIXTURE.is_file(), reason=f"{FIXTURE.name} not generated yet: run benchmarks/gpu_gsplat_check.py on a CUDA machine")
def test_matches_gsplat_cuda_fixture():
    """Outputs (and gradients) saved from gsplat's CUDA kernels, reproduced on CPU in float32."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(str(FIXTURE))
    with safe_open(str(FIXTURE), "pt") as f:
        info = json.loads(f.metadata()["scenes"])
    assert len(info) >= 3
    for k, opts in enumerate(info):
        t = {name[len(f"{k}.") :]: v for name, v in tensors.items() if name.startswith(f"{k}.")}
        inputs = [t[n].clone().requires_grad_(n in ("means", "quats", "scales", "opacities", "colors"))
                  for n in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")]  # fmt: skip
        rgb, alpha, meta = rasterization(*inputs, backgrounds=t.get("backgrounds"), backend="torch", packed=False, **opts)
        torch.testing.assert_close(rgb, t["render_colors"], atol=2e-4, rtol=0, msg=f"scene {k}")
        torch.testing.assert_close(alpha, t["render_alphas"], atol=2e-4, rtol=0, msg=f"scene {k}")
        ours, theirs = meta["radii"].gt(0).all(-1), t["radii"].gt(0).all(-1)
        assert torch.equal(ours, theirs), f"scene {k}: culling differs"
        assert (meta["radii"] - t["radii"]).abs().max() <= 1
        grads = torch.autograd.grad((rgb * t["grad_out"]).sum(), inputs[:5])
        for name, ours_g in zip(("means", "quats", "scales", "opacities", "colors"), grads):
            ref = t[f"grad.{name}"]
            scale = ref.abs().max().clamp_min(1e-6)
            assert (ours_g - ref).abs().max() / scale < 2e-3, f"scene {k}: d/d{name} differs"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_compositor_matches_gsplat_on_cuda(mixed, dense):
    from modeling.rasterization import gsplat_cuda_available

    if not gsplat_cuda_available():
        pytest.skip("gsplat's CUDA backend is unusable here")
    for scene, *_ in (mixed, dense):
        cuda = {k: (v.float().cuda() if torch.is_tensor(v) else v) for k, v in scene.items()}
        outs = {}
        for backend in ("torch", "gsplat"):
            inputs = [cuda[k].clone().requires_grad_(k in ("means", "opacities", "colors", "scales", "quats"))
                      for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")]  # fmt: skip
            rgb, alpha, _ = rasterization(*inputs, cuda["width"], cuda["height"], backgrounds=cuda["backgrounds"], backend=backend)
            grads = torch.autograd.grad((rgb * torch.linspace(0, 1, rgb.numel(), device="cuda").reshape(rgb.shape)).sum(), inputs[:5])
            outs[backend] = (rgb, alpha, grads)
        torch.testing.assert_close(outs["torch"][0], outs["gsplat"][0], atol=2e-4, rtol=0)
        torch.testing.assert_close(outs["torch"][1], outs["gsplat"][1], atol=2e-4, rtol=0)
        for a, b in zip(outs["torch"][2], outs["gsplat"][2]):
            assert (a - b).abs().max() / b.abs().max().clamp_min(1e-6) < 2e-3
