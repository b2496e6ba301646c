"""3D Gaussian rasterisation: gsplat's CUDA kernels on GPU, an exact torch compositor elsewhere.

:func:`rasterization` has the signature and return values of ``gsplat.rasterization`` (gsplat 1.5):
``(render_colors [..., C, H, W, X], render_alphas [..., C, H, W, 1], meta)``. It dispatches to
gsplat when the tensors live on a CUDA device and gsplat's CUDA backend loads; otherwise it runs
:func:`rasterization_torch`, a pure-PyTorch compositor that follows gsplat's forward rules.

Conventions (gsplat's):

* ``viewmats`` are **world-to-camera** ``[R | t]`` matrices of OpenCV cameras (x right, y down,
  z forward); ``Ks`` are pinhole intrinsics in pixels; pixel ``(row i, column j)`` has its centre
  at ``(j + 0.5, i + 0.5)``.
* ``quats`` are ``wxyz`` and need not be normalised; the world covariance is
  ``R(q) diag(s)^2 R(q)^T`` (or ``covars`` when given).
* ``opacities`` are post-activation values in [0, 1]; ``colors`` are post-activation features, or
  SH coefficients when ``sh_degree`` is set (colour ``= max(0, 0.5 + sum_k Y_k(dir) f_k)``).

The torch compositor's rules, each as gsplat 1.5.3 applies them (``ProjectionEWA3DGSFused.cu``,
``IntersectTile.cu``, ``RasterizeToPixels3DGSFwd.cu``):

1. Projection: ``mean_c = R mean + t``; cull when ``z < near_plane`` or ``z > far_plane``.
   EWA: ``cov2d = J (R Sigma R^T) J^T`` with ``J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]]``
   where ``tx = z clamp(x/z, -(cx/fx + 0.3 tan_fx), (W - cx)/fx + 0.3 tan_fx)``,
   ``tan_fx = W / (2 fx)`` (and likewise for y): the screen-space Jacobian is evaluated at most
   1.3 half-fields of view off-axis.
2. Blur: ``cov2d += eps2d * I``; cull when ``det <= 0``. ``"antialiased"`` multiplies the opacity
   by ``sqrt(max(0, det(cov2d) / det(cov2d + eps2d I)))``; ``"classic"`` does not.
3. Radius (opacity-aware): cull when ``opacity < 1/255``; ``extend = min(3.33,
   sqrt(2 log(255 opacity)))``, ``radius = ceil(extend * sqrt(cov2d_ii))`` per axis; cull when
   both radii ``<= radius_clip`` or the ``mean2d +- radius`` box misses the image.
4. Tiles: a Gaussian is considered only for pixels whose ``tile_size`` tile lies in
   ``[floor(m/ts - r/ts), ceil(m/ts + r/ts))`` per axis; Gaussians are sorted front to back by
   camera-space depth (ties: lower index first).
5. Per pixel, in that order: ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy`` with the conic
   ``(a, b, c) = inverse(cov2d)`` and ``d = mean2d - pixel``; ``alpha = min(0.999,
   opacity exp(-sigma))``; skip when ``sigma < 0`` or ``alpha < 1/255``; if ``T (1 - alpha)
   <= 1e-4`` stop **without** this Gaussian; else add ``alpha T color`` and ``T *= 1 - alpha``.
   ``render_alphas = 1 - T``; with ``backgrounds`` the colour gets ``T * background``.

The compositor is differentiable with autograd (including w.r.t. ``Ks`` and ``viewmats``, which
gsplat is not). Memory is bounded: pixels are processed in square blocks of ``block_size``
pixels against the depth-sorted Gaussians whose tiles overlap the block, in chunks of at most
``max_block_elements`` (pixel, Gaussian) pairs that carry the transmittance from chunk to chunk;
when gradients are needed every chunk is checkpointed, so the autograd graph keeps only
per-pixel running sums. Results do not depend on ``block_size`` / ``max_block_elements`` beyond
floating-point summation order.

Importing this module never imports gsplat; gsplat (and the JIT build of its CUDA extension) is
loaded only when CUDA tensors are rasterised with ``backend="auto"`` or ``"gsplat"``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

__all__ = [
    "ALPHA_THRESHOLD",
    "MAX_ALPHA",
    "RENDER_MODES",
    "TRANSMITTANCE_THRESHOLD",
    "evaluate_sh",
    "gsplat_cuda_available",
    "project_gaussians",
    "quat_scale_to_covar",
    "rasterization",
    "rasterization_torch",
]

ALPHA_THRESHOLD = 1.0 / 255.0  # Gaussians fainter than this at a pixel are skipped
MAX_ALPHA = 0.999  # per-Gaussian alpha is clamped to this
TRANSMITTANCE_THRESHOLD = 1e-4  # a pixel stops before the Gaussian that would take T to <= this
MAX_EXTEND = 3.33  # radius cap, in standard deviations
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
RASTERIZE_MODES = ("classic", "antialiased")
BACKENDS = ("auto", "torch", "gsplat")

# Real spherical harmonics (the 3DGS / gsplat sign convention), degree 0..3, as polynomials of a
# unit direction (x, y, z).
_SH_C0 = 0.28209479177387814
_SH_C1 = 0.4886025119029199
_SH_C2 = (1.0925484305920792, 0.31539156525252005, 0.5462742152960396)
_SH_C3 = (0.5900435899266435, 2.890611442640554, 0.4570457994644658, 0.3731763325901154, 1.445305721320277)
MAX_SH_DEGREE = 3

_GSPLAT_STATE: Dict[str, Any] = {}


# ----------------------------------------------------------------------------------------------
# Backend selection
# ----------------------------------------------------------------------------------------------


def gsplat_cuda_available() -> bool:
    """Whether gsplat's CUDA backend can be used (CUDA present and the extension loads).

    The first call with CUDA present imports gsplat, which may JIT-compile its extension
    (minutes); the answer is cached. Without CUDA this returns ``False`` without importing gsplat.
    """
    if not torch.cuda.is_available():
        return False
    if "available" not in _GSPLAT_STATE:
        try:
            from gsplat.cuda._backend import _C  # lazy: may build the CUDA extension

            _GSPLAT_STATE["available"] = _C is not None
            _GSPLAT_STATE["reason"] = "gsplat imported but its CUDA extension is missing (no CUDA toolkit?)"
        except Exception as exc:  # ImportError, build failures, ...
            _GSPLAT_STATE["available"] = False
            _GSPLAT_STATE["reason"] = f"{type(exc).__name__}: {exc}"
    return bool(_GSPLAT_STATE["available"])


def _choose_backend(backend: str, means: Tensor) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    on_cuda = means.is_cuda and torch.cuda.is_available()
    if backend == "gsplat":
        if not on_cuda:
            raise RuntimeError(f"backend='gsplat' needs CUDA tensors, got tensors on {means.device}")
        if not gsplat_cuda_available():
            raise RuntimeError(f"backend='gsplat' requested but gsplat's CUDA backend is unusable: {_GSPLAT_STATE['reason']}")
        return "gsplat"
    # auto
    if not on_cuda:
        return "torch"
    if means.dtype != torch.float32:
        return "torch"  # gsplat's rasteriser is float32-only
    if gsplat_cuda_available():
        return "gsplat"
    if not _GSPLAT_STATE.get("warned"):
        warnings.warn(f"gsplat's CUDA backend is unusable ({_GSPLAT_STATE['reason']}); using the torch compositor on CUDA.")
        _GSPLAT_STATE["warned"] = True
    return "torch"


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


def rasterization(
    means: Tensor,  # [..., N, 3]
    quats: Optional[Tensor],  # [..., N, 4] wxyz (None when covars is given)
    scales: Optional[Tensor],  # [..., N, 3] (None when covars is given)
    opacities: Tensor,  # [..., N]
    colors: Tensor,  # [..., (C,) N, D] or SH coefficients [..., (C,) N, K, 3]
    viewmats: Tensor,  # [..., C, 4, 4] world-to-camera
    Ks: Tensor,  # [..., C, 3, 3] pixel intrinsics
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    packed: bool = True,
    tile_size: int = 16,
    backgrounds: Optional[Tensor] = None,  # [..., C, D]
    render_mode: str = "RGB",
    sparse_grad: bool = False,
    absgrad: bool = False,
    rasterize_mode: str = "classic",
    channel_chunk: int = 32,
    distributed: bool = False,
    camera_model: str = "pinhole",
    segmented: bool = False,
    covars: Optional[Tensor] = None,  # [..., N, 3, 3]
    with_ut: bool = False,
    with_eval3d: bool = False,
    radial_coeffs: Optional[Tensor] = None,  # [..., C, 6] or [..., C, 4]
    tangential_coeffs: Optional[Tensor] = None,  # [..., C, 2]
    thin_prism_coeffs: Optional[Tensor] = None,  # [..., C, 4]
    ftheta_coeffs: Optional[Any] = None,
    rolling_shutter: Optional[Any] = None,
    viewmats_rs: Optional[Tensor] = None,  # [..., C, 4, 4]
    *,
    backend: str = "auto",
    block_size: int = 16,
    max_block_elements: int = 1 << 22,
) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """Rasterise N 3D Gaussians into C images (``gsplat.rasterization``'s contract).

    Arguments up to ``viewmats_rs`` are gsplat 1.5's, with its defaults and meanings (see the
    module docstring for the conventions and the exact compositing rules). The torch compositor
    supports: pinhole cameras, ``quats``/``scales`` or ``covars``, colours ``[..., (C,) N, D]`` or
    SH coefficients up to degree 3, ``backgrounds``, every ``render_mode``, both
    ``rasterize_mode`` values, ``radius_clip``, ``packed`` (layout of ``meta`` only) and leading
    batch dimensions. Arguments that change results and that it lacks (``absgrad``,
    ``sparse_grad``, ``distributed``, other camera models, ``with_ut``, ``with_eval3d``,
    distortion, rolling shutter) raise ``NotImplementedError`` on that path; ``channel_chunk`` and
    ``segmented`` only tune gsplat's kernels and do not change results.

    Args (beyond gsplat's):
        backend: ``"auto"`` (gsplat for float32 CUDA tensors when its CUDA backend loads, else the
            torch compositor), ``"torch"`` or ``"gsplat"`` (error when unusable).
        block_size: torch compositor only: side, in pixels, of the square pixel blocks.
        max_block_elements: torch compositor only: most (pixel, Gaussian) pairs evaluated at once.

    Returns:
        ``render_colors [..., C, height, width, X]`` (X = D for "RGB", 1 for "D"/"ED", D + 1 for
        "RGB+D"/"RGB+ED", the depth last), ``render_alphas [..., C, height, width, 1]`` and a
        ``meta`` dict (gsplat's projection outputs: ``radii``, ``means2d``, ``depths``,
        ``conics``, ``opacities``, ids when packed, image sizes, and ``backend``).
    """
    chosen = _choose_backend(backend, means)
    if chosen == "gsplat":
        import gsplat

        # keywords newer than gsplat 1.4 are passed only when set, so older gsplat keeps working
        newer = dict(with_ut=with_ut, with_eval3d=with_eval3d, radial_coeffs=radial_coeffs, tangential_coeffs=tangential_coeffs,
                     thin_prism_coeffs=thin_prism_coeffs, ftheta_coeffs=ftheta_coeffs, rolling_shutter=rolling_shutter,
                     viewmats_rs=viewmats_rs)  # fmt: skip
        extra = {k: v for k, v in newer.items() if v is not None and v is not False}
        render_colors, render_alphas, meta = gsplat.rasterization(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d,
            sh_degree=sh_degree, packed=packed, tile_size=tile_size, backgrounds=None,
            render_mode=render_mode, sparse_grad=sparse_grad, absgrad=absgrad,
            rasterize_mode=rasterize_mode, channel_chunk=channel_chunk, distributed=distributed,
            camera_model=camera_model, segmented=segmented, covars=covars, **extra,
        )  # fmt: skip
        if backgrounds is not None and render_mode not in ("D", "ED"):
            # gsplat 1.5.3 rejects `backgrounds` with packed=True (it checks them against the packed
            # layout); its background term is T_final * bg = (1 - alpha) * bg, added here instead.
            d = backgrounds.shape[-1]
            lit = render_colors[..., :d] + (1.0 - render_alphas) * backgrounds[..., None, None, :]
            render_colors = torch.cat([lit, render_colors[..., d:]], dim=-1)
        meta["backend"] = "gsplat"
        return render_colors, render_alphas, meta

    unsupported = {
        "sparse_grad": sparse_grad,
        "absgrad": absgrad,
        "distributed": distributed,
        "with_ut": with_ut,
        "with_eval3d": with_eval3d,
        "radial_coeffs": radial_coeffs is not None,
        "tangential_coeffs": tangential_coeffs is not None,
        "thin_prism_coeffs": thin_prism_coeffs is not None,
        "ftheta_coeffs": ftheta_coeffs is not None,
        "viewmats_rs": viewmats_rs is not None,
        "rolling_shutter": rolling_shutter is not None and getattr(rolling_shutter, "name", rolling_shutter) != "GLOBAL",
    }
    for name, used in unsupported.items():
        if used:
            raise NotImplementedError(f"the torch rasteriser does not support `{name}`; use gsplat on a CUDA device")
    if camera_model != "pinhole":
        raise NotImplementedError(f"the torch rasteriser supports camera_model='pinhole' only, got {camera_model!r}")
    return rasterization_torch(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d,
        sh_degree=sh_degree, packed=packed, tile_size=tile_size, backgrounds=backgrounds,
        render_mode=render_mode, rasterize_mode=rasterize_mode, covars=covars,
        block_size=block_size, max_block_elements=max_block_elements,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Geometry: covariances, projection, spherical harmonics
# ----------------------------------------------------------------------------------------------


def quat_scale_to_covar(
    quats: Tensor,  # [..., 4] wxyz, any norm
    scales: Tensor,  # [..., 3]
) -> Tensor:  # [..., 3, 3]
    """World covariance ``R(q) diag(s)^2 R(q)^T`` of Gaussians (``q`` normalised first)."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*quats.shape[:-1], 3, 3)  # fmt: skip
    m = rot * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def evaluate_sh(
    degree: int,
    dirs: Tensor,  # [..., 3] viewing directions (camera centre -> Gaussian), any length
    coeffs: Tensor,  # [..., K, 3], K >= (degree + 1)^2
) -> Tensor:  # [..., 3]
    """``sum_k Y_k(dir) coeffs_k`` over the first ``(degree + 1)^2`` real SH bases (no +0.5)."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise NotImplementedError(f"sh_degree must be in [0, {MAX_SH_DEGREE}] for the torch rasteriser, got {degree}")
    n = (degree + 1) ** 2
    if coeffs.shape[-2] < n:
        raise ValueError(f"sh_degree {degree} needs >= {n} SH coefficients, got colors with K = {coeffs.shape[-2]}")
    bases = [torch.full_like(dirs[..., 0], _SH_C0)]
    if degree >= 1:
        x, y, z = F.normalize(dirs, dim=-1).unbind(-1)
        bases += [-_SH_C1 * y, _SH_C1 * z, -_SH_C1 * x]
    if degree >= 2:
        a, b, c = _SH_C2
        bases += [a * x * y, -a * y * z, b * (3 * z * z - 1), -a * x * z, c * (x * x - y * y)]
    if degree >= 3:
        a, b, c, d, e = _SH_C3
        bases += [
            -a * y * (3 * x * x - y * y), b * x * y * z, -c * y * (5 * z * z - 1), d * z * (5 * z * z - 3),
            -c * x * (5 * z * z - 1), e * z * (x * x - y * y), -a * x * (x * x - 3 * y * y),
        ]  # fmt: skip
    return (torch.stack(bases, dim=-1)[..., None] * coeffs[..., :n, :]).sum(dim=-2)


def project_gaussians(
    means: Tensor,  # [N, 3] world
    covars: Tensor,  # [N, 3, 3] world
    opacities: Tensor,  # [N]
    viewmats: Tensor,  # [C, 4, 4] world-to-camera
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    antialiased: bool = False,
) -> Dict[str, Tensor]:
    """EWA projection of one scene's Gaussians into C pinhole cameras, as gsplat's fused kernel.

    Returns a dict of ``[C, N, ...]`` tensors: ``means2d [C,N,2]``, ``depths [C,N]`` (camera z),
    ``conics [C,N,3]`` (``a, b, c`` of the inverse blurred 2D covariance), ``opacities [C,N]``
    (times the compensation when ``antialiased``), ``radii [C,N,2]`` (int32, 0 = culled) and
    ``valid [C,N]`` (bool). Culled entries hold finite placeholders (their gradients are zero).
    """
    rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]  # [C,3,3], [C,3]
    mean_c = torch.einsum("cij,nj->cni", rot, means) + trans[:, None, :]  # [C,N,3]
    cov_c = rot[:, None] @ covars[None] @ rot.transpose(-1, -2)[:, None]  # [C,N,3,3]
    x, y, z = mean_c.unbind(-1)
    depth_ok = (z >= near_plane) & (z <= far_plane)
    z_safe = torch.where(depth_ok, z, torch.ones_like(z))
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C,1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z_safe
    tx = z_safe * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z_safe * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    zero = torch.zeros_like(rz)
    jac = torch.stack(
        [fx * rz, zero, -fx * tx * rz * rz, zero, fy * rz, -fy * ty * rz * rz], dim=-1
    ).reshape(*rz.shape, 2, 3)  # [C,N,2,3]
    cov2d = jac @ cov_c @ jac.transpose(-1, -2)  # [C,N,2,2]
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)  # [C,N,2]

    c00, c01, c10, c11 = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 0], cov2d[..., 1, 1]
    det_orig = c00 * c11 - c01 * c10
    c00, c11 = c00 + eps2d, c11 + eps2d
    det = c00 * c11 - c01 * c10
    det_ok = det > 0
    det_safe = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([c11 / det_safe, -c10 / det_safe, c00 / det_safe], dim=-1)  # [C,N,3]
    opac = opacities[None].expand_as(z)
    if antialiased:
        opac = opac * torch.sqrt(torch.clamp_min(det_orig / det_safe, 0.0))

    with torch.no_grad():  # radii: integer bounding box, not differentiable
        opac_ok = opac >= ALPHA_THRESHOLD
        extend = torch.sqrt(2.0 * torch.log(torch.clamp_min(opac, ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = torch.clamp_max(extend, MAX_EXTEND)
        rx = torch.ceil(extend * torch.sqrt(torch.clamp_min(c00, 0.0)))
        ry = torch.ceil(extend * torch.sqrt(torch.clamp_min(c11, 0.0)))
        clipped = (rx <= radius_clip) & (ry <= radius_clip)
        mx, my = means2d[..., 0], means2d[..., 1]
        outside = (mx + rx <= 0) | (mx - rx >= width) | (my + ry <= 0) | (my - ry >= height)
        valid = depth_ok & det_ok & opac_ok & ~clipped & ~outside
        radii = torch.where(valid[..., None], torch.stack([rx, ry], dim=-1), 0).to(torch.int32)
    return {"means2d": means2d, "depths": z, "conics": conics, "opacities": opac, "radii": radii, "valid": valid}


# ----------------------------------------------------------------------------------------------
# Compositing
# ----------------------------------------------------------------------------------------------


def _composite_chunk(
    pix_xy: Tensor,  # [P, 2] pixel centres
    pix_tile: Tensor,  # [P, 2] tile column, tile row of each pixel
    trans: Tensor,  # [P] transmittance before this chunk
    trans_stop: Tensor,  # [P] transmittance including a stopping Gaussian (non-differentiable)
    means2d: Tensor,  # [G, 2], G depth-sorted Gaussians
    conics: Tensor,  # [G, 3]
    opacities: Tensor,  # [G]
    colors: Tensor,  # [G, D]
    tiles: Tensor,  # [G, 4] tile box (x_min, y_min, x_max, y_max), max exclusive
) -> Tuple[Tensor, Tensor, Tensor]:
    """Front-to-back compositing of P pixels against G Gaussians -> (color [P,D], T [P], T_stop [P]).

    ``T_stop`` is ``T`` until a pixel stops; then it is multiplied by the stopping Gaussian's
    ``1 - alpha`` (so it is ``<= 1e-4``), which excludes every later Gaussian, also in later chunks.
    """
    dx = means2d[None, :, 0] - pix_xy[:, 0, None]  # [P, G]
    dy = means2d[None, :, 1] - pix_xy[:, 1, None]
    sigma = 0.5 * (conics[:, 0] * dx * dx + conics[:, 2] * dy * dy) + conics[:, 1] * dx * dy
    alpha = torch.clamp_max(opacities * torch.exp(-torch.clamp_min(sigma, 0.0)), MAX_ALPHA)
    tx, ty = pix_tile[:, 0, None], pix_tile[:, 1, None]
    in_tile = (tiles[:, 0] <= tx) & (tx < tiles[:, 2]) & (tiles[:, 1] <= ty) & (ty < tiles[:, 3])
    hit = in_tile & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
    alpha = torch.where(hit, alpha, torch.zeros_like(alpha))
    with torch.no_grad():  # T after each Gaussian, sequential products as gsplat forms them
        after = torch.cumprod(torch.cat([trans_stop[:, None], 1 - alpha], dim=1), dim=1)[:, 1:]
        keep = hit & (after > TRANSMITTANCE_THRESHOLD)  # a prefix of the hits: T only decreases
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    t_all = torch.cumprod(torch.cat([trans[:, None], 1 - alpha], dim=1), dim=1)  # [P, G + 1]
    weights = alpha * t_all[:, :-1]
    return weights @ colors, t_all[:, -1], after[:, -1]


def _rasterize_image(
    means2d: Tensor,  # [G, 2] valid Gaussians of one image, sorted by depth
    conics: Tensor,  # [G, 3]
    opacities: Tensor,  # [G]
    colors: Tensor,  # [G, D]
    radii: Tensor,  # [G, 2] int32
    width: int,
    height: int,
    tile_size: int,
    block_size: int,
    max_block_elements: int,
    use_checkpoint: bool,
) -> Tuple[Tensor, Tensor]:  # [H, W, D] colors (no background), [H, W] final transmittance
    """Composite one image block by block; see :func:`_composite_chunk` for the per-pixel rule."""
    device, dtype, depth = means2d.device, means2d.dtype, colors.shape[-1]
    tile_w, tile_h = math.ceil(width / tile_size), math.ceil(height / tile_size)
    with torch.no_grad():  # tile boxes as gsplat's intersect kernel computes them
        tcen = means2d.detach() / tile_size
        trad = radii.to(dtype) / tile_size
        limit = torch.tensor([tile_w, tile_h], device=device, dtype=dtype)
        lo = torch.minimum(torch.clamp_min(torch.floor(tcen - trad), 0), limit)
        hi = torch.minimum(torch.clamp_min(torch.ceil(tcen + trad), 0), limit)
        tiles = torch.cat([lo, hi], dim=-1).to(torch.int64)  # [G, 4]

    rows = []
    for y0 in range(0, height, block_size):
        y1 = min(y0 + block_size, height)
        ty0, ty1 = y0 // tile_size, (y1 - 1) // tile_size + 1
        in_rows = ((tiles[:, 1] < ty1) & (tiles[:, 3] > ty0)).nonzero().squeeze(1)
        row_tiles = tiles[in_rows]
        cols = []
        for x0 in range(0, width, block_size):
            x1 = min(x0 + block_size, width)
            tx0, tx1 = x0 // tile_size, (x1 - 1) // tile_size + 1
            ids = in_rows[(row_tiles[:, 0] < tx1) & (row_tiles[:, 2] > tx0)]  # still depth-sorted
            ys, xs = torch.meshgrid(
                torch.arange(y0, y1, device=device), torch.arange(x0, x1, device=device), indexing="ij"
            )
            ys, xs = ys.reshape(-1), xs.reshape(-1)
            pix_xy = torch.stack([xs, ys], dim=-1).to(dtype) + 0.5  # [P, 2]
            pix_tile = torch.stack([xs // tile_size, ys // tile_size], dim=-1)  # [P, 2]
            num_pix = pix_xy.shape[0]
            acc = torch.zeros(num_pix, depth, device=device, dtype=dtype)
            trans = torch.ones(num_pix, device=device, dtype=dtype)
            trans_stop = torch.ones(num_pix, device=device, dtype=dtype)
            chunk = max(1, max_block_elements // num_pix)
            for s in range(0, ids.numel(), chunk):
                sel = ids[s : s + chunk]
                args = (pix_xy, pix_tile, trans, trans_stop, means2d[sel], conics[sel], opacities[sel], colors[sel], tiles[sel])
                if use_checkpoint:
                    part, trans, trans_stop = checkpoint(_composite_chunk, *args, use_reentrant=False, preserve_rng_state=False)
                else:
                    part, trans, trans_stop = _composite_chunk(*args)
                acc = acc + part
            cols.append((acc.reshape(y1 - y0, x1 - x0, depth), trans.reshape(y1 - y0, x1 - x0)))
        rows.append((torch.cat([c[0] for c in cols], dim=1), torch.cat([c[1] for c in cols], dim=1)))
    return torch.cat([r[0] for r in rows], dim=0), torch.cat([r[1] for r in rows], dim=0)


def _check_shapes(means, quats, scales, opacities, colors, viewmats, Ks, covars, sh_degree, backgrounds):
    def fail(name, expected, got):
        raise ValueError(f"`{name}` must have shape {expected}, got {tuple(got.shape)}")

    if means.dim() < 2 or means.shape[-1] != 3:
        fail("means", "[..., N, 3]", means)
    batch, n = tuple(means.shape[:-2]), means.shape[-2]
    if viewmats.shape[:-3] != batch or viewmats.shape[-2:] != (4, 4):
        fail("viewmats", f"[*{batch}, C, 4, 4]", viewmats)
    c = viewmats.shape[-3]
    if Ks.shape != (*batch, c, 3, 3):
        fail("Ks", f"{(*batch, c, 3, 3)}", Ks)
    if opacities.shape != (*batch, n):
        fail("opacities", f"{(*batch, n)}", opacities)
    if covars is None:
        if quats is None or scales is None:
            raise ValueError("give either `covars` or both `quats` and `scales`")
        if quats.shape != (*batch, n, 4):
            fail("quats", f"{(*batch, n, 4)} (wxyz)", quats)
        if scales.shape != (*batch, n, 3):
            fail("scales", f"{(*batch, n, 3)}", scales)
    elif covars.shape != (*batch, n, 3, 3):
        fail("covars", f"{(*batch, n, 3, 3)}", covars)
    nb = len(batch)
    if sh_degree is None:
        ok = (colors.dim() == nb + 2 and colors.shape[:-1] == (*batch, n)) or (
            colors.dim() == nb + 3 and colors.shape[:-1] == (*batch, c, n)
        )
        if not ok:
            fail("colors", f"[*{batch}, (C={c},) N={n}, D] (sh_degree=None)", colors)
    else:
        ok = colors.shape[-1] == 3 and (
            (colors.dim() == nb + 3 and colors.shape[:-2] == (*batch, n))
            or (colors.dim() == nb + 4 and colors.shape[:-2] == (*batch, c, n))
        )
        if not ok:
            fail("colors", f"[*{batch}, (C={c},) N={n}, K, 3] SH coefficients (sh_degree={sh_degree})", colors)
    if backgrounds is not None and backgrounds.shape[:-1] != (*batch, c):
        fail("backgrounds", f"[*{batch}, C={c}, D]", backgrounds)
    return batch, n, c


def rasterization_torch(
    means: Tensor,  # [..., N, 3]
    quats: Optional[Tensor],  # [..., N, 4] wxyz
    scales: Optional[Tensor],  # [..., N, 3]
    opacities: Tensor,  # [..., N]
    colors: Tensor,  # [..., (C,) N, D] or [..., (C,) N, K, 3]
    viewmats: Tensor,  # [..., C, 4, 4]
    Ks: Tensor,  # [..., C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    packed: bool = True,
    tile_size: int = 16,
    backgrounds: Optional[Tensor] = None,  # [..., C, D]
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
    covars: Optional[Tensor] = None,  # [..., N, 3, 3]
    block_size: int = 16,
    max_block_elements: int = 1 << 22,
    use_checkpoint: Optional[bool] = None,
) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """The pure-PyTorch compositor behind :func:`rasterization` (any device, float32 or float64).

    Same arguments and returns as :func:`rasterization` for the features it supports.
    ``use_checkpoint`` (default: whenever autograd records) recomputes each chunk in the backward
    pass instead of storing its ``[pixels, Gaussians]`` intermediates.
    """
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if rasterize_mode not in RASTERIZE_MODES:
        raise ValueError(f"rasterize_mode must be one of {RASTERIZE_MODES}, got {rasterize_mode!r}")
    if width <= 0 or height <= 0 or tile_size <= 0 or block_size <= 0 or max_block_elements <= 0:
        raise ValueError(f"width, height, tile_size, block_size, max_block_elements must be > 0, got "
                         f"{width}, {height}, {tile_size}, {block_size}, {max_block_elements}")  # fmt: skip
    batch, n, c = _check_shapes(means, quats, scales, opacities, colors, viewmats, Ks, covars, sh_degree, backgrounds)
    nb, b = len(batch), math.prod(batch)
    if covars is None:
        covars_w = quat_scale_to_covar(quats, scales)
    else:  # gsplat reads the upper triangle
        upper = torch.triu(covars)
        covars_w = upper + upper.transpose(-1, -2) - torch.diag_embed(torch.diagonal(covars, dim1=-2, dim2=-1))
    if use_checkpoint is None:
        inputs = (means, quats, scales, opacities, colors, viewmats, Ks, covars, backgrounds)
        use_checkpoint = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)

    # per-camera colours [B, C, N, D]
    per_camera = colors.dim() == nb + (3 if sh_degree is None else 4)
    flat = colors.reshape(b, c, n, *colors.shape[-1 if sh_degree is None else -2 :]) if per_camera else (
        colors.reshape(b, 1, n, *colors.shape[-1 if sh_degree is None else -2 :])
    )  # fmt: skip
    means_f = means.reshape(b, n, 3)
    view_f, ks_f = viewmats.reshape(b, c, 4, 4), Ks.reshape(b, c, 3, 3)
    if sh_degree is not None:
        campos = torch.linalg.inv(view_f)[..., :3, 3]  # [B, C, 3]
        dirs = means_f[:, None, :, :] - campos[:, :, None, :]  # [B, C, N, 3]
        flat = torch.clamp_min(evaluate_sh(sh_degree, dirs, flat.expand(b, c, n, *flat.shape[-2:])) + 0.5, 0.0)
    flat = flat.expand(b, c, n, flat.shape[-1])

    bgs = None if backgrounds is None else backgrounds.reshape(b, c, -1)
    images, alphas, projs = [], [], []
    for i in range(b):
        proj = project_gaussians(
            means_f[i], covars_w.reshape(b, n, 3, 3)[i], opacities.reshape(b, n)[i], view_f[i], ks_f[i],
            width, height, near_plane, far_plane, radius_clip, eps2d, antialiased=rasterize_mode == "antialiased",
        )  # fmt: skip
        projs.append(proj)
        feats = flat[i]
        if render_mode in ("RGB+D", "RGB+ED"):
            feats = torch.cat([feats, proj["depths"][..., None].to(feats.dtype)], dim=-1)
        elif render_mode in ("D", "ED"):
            feats = proj["depths"][..., None]
        for j in range(c):
            ids = proj["valid"][j].nonzero().squeeze(1)
            ids = ids[torch.sort(proj["depths"][j, ids].detach(), stable=True).indices]
            img, trans = _rasterize_image(
                proj["means2d"][j, ids], proj["conics"][j, ids], proj["opacities"][j, ids], feats[j, ids],
                proj["radii"][j, ids], width, height, tile_size, block_size, max_block_elements, use_checkpoint,
            )  # fmt: skip
            if bgs is not None and render_mode in ("RGB", "RGB+D", "RGB+ED"):
                bg = bgs[i, j]
                if render_mode != "RGB":
                    bg = torch.cat([bg, bg.new_zeros(1)])
                img = img + trans[..., None] * bg
            alpha = 1 - trans[..., None]
            if render_mode in ("ED", "RGB+ED"):
                img = torch.cat([img[..., :-1], img[..., -1:] / alpha.clamp_min(1e-10)], dim=-1)
            images.append(img)
            alphas.append(alpha)
    render_colors = torch.stack(images).reshape(*batch, c, height, width, -1)
    render_alphas = torch.stack(alphas).reshape(*batch, c, height, width, 1)
    return render_colors, render_alphas, _meta(projs, batch, n, c, width, height, tile_size, packed)


def _meta(projs: List[Dict[str, Tensor]], batch, n, c, width, height, tile_size, packed) -> Dict[str, Any]:
    """gsplat-style meta: dense ``[..., C, N, ...]`` tensors, or packed ``[nnz, ...]`` with ids."""
    keys = ("radii", "means2d", "depths", "conics", "opacities")
    dense = {k: torch.stack([p[k] for p in projs]) for k in keys + ("valid",)}  # [B, C, N, ...]
    meta: Dict[str, Any] = {}
    if packed:
        batch_ids, camera_ids, gaussian_ids = dense["valid"].nonzero(as_tuple=True)
        meta.update(batch_ids=batch_ids, camera_ids=camera_ids, gaussian_ids=gaussian_ids)
        meta.update({k: dense[k][batch_ids, camera_ids, gaussian_ids] for k in keys})
    else:
        meta.update(batch_ids=None, camera_ids=None, gaussian_ids=None)
        meta.update({k: dense[k].reshape(*batch, c, n, *dense[k].shape[3:]) for k in keys})
    meta.update(
        width=width, height=height, tile_size=tile_size, tile_width=math.ceil(width / tile_size),
        tile_height=math.ceil(height / tile_size), n_batches=math.prod(batch), n_cameras=c, backend="torch",
    )  # fmt: skip
    return meta
