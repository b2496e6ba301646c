"""The LRM Gaussian head: pixel-aligned 4D Gaussians, their slicing at a time, and rendering.

Pipeline (DESIGN §5)::

    tokens [B, V*L, D] --GaussianHead--> per-pixel parameters [B, V, C, H, W]
        --decode_gaussians--> Gaussians4D (one Gaussian per input pixel, N = V * H * W)
        --slice_gaussians(time)--> Gaussians3D (conditional mean / covariance, opacity scaled by
                                    the temporal marginal) --rasterization--> images

Per-pixel channel order of the head (``C = 20`` for SH degree 0)::

    xyz (3) | t (1, absent with hard_tempalign) | SH coefficients (3 (K)) | log-scale (3)
    | log temporal scale (1) | left quaternion (4) | right quaternion (4) | opacity logit (1)

* position: only the mean of the three ``xyz`` channels is used, as a depth along the pixel's
  ray: ``depth = depth_scale * sigmoid(mean + depth_bias) * (far - near) + near`` (no sigmoid
  when ``hard_pixelalign`` is off), ``means = ray_o + depth * ray_d``;
* log-scales: ``x - scaling_bias`` clamped to ``<= scaling_clip`` (10), the temporal one
  ``x - temporal_scaling_bias`` clamped to ``<= temporal_scaling_clip`` (0); activation ``exp``;
* opacity: ``sigmoid(x - opacity_bias)``; quaternions are normalised when used;
* colour (SH degree 0): ``0.5 + SH_C0 * f`` clamped at 0 (as the 3DGS rasteriser does).

Gaussian order: ``N`` runs over ``(view, row, column)`` of the input pixels (raster order), so
``g.means.reshape(B, V, H, W, 3)`` is a per-view point map. (The official code orders them patch
by patch; the sets are identical.)

The 4D covariance of a Gaussian is ``R diag(s)^2 R^T`` with ``s = (sx, sy, sz, st)`` and ``R`` the
4D rotation ``p -> q_l p conj(q_r)`` of two unit quaternions (``wxyz``), in which a point
``(x, y, z, t)`` is the quaternion ``t + z i + y j + x k``. Conditioning on time ``tau`` gives a 3D
Gaussian with mean ``mu + S_xt / S_tt (tau - t)``, covariance ``S_xx - S_xt S_xt^T / S_tt`` and
opacity multiplied by the (unnormalised) temporal marginal ``exp(-(tau - t)^2 / (2 S_tt))``.

Pure torch; the rasteriser (:mod:`modeling.rasterization`) is imported only when rendering.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .tokenizer import unpatchify

#: Degree-0 real spherical harmonic, ``1 / (2 sqrt(pi))``.
SH_C0 = 0.28209479177387814


# ---------------------------------------------------------------------------------------------
# Settings and the channel layout
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GaussianDecoding:
    """How per-pixel head outputs become 4D Gaussians (the LRM-only config fields).

    Attributes:
        sh_degree: spherical-harmonics degree of the colours (``K = (sh_degree + 1)^2`` coefficients).
        near_plane, far_plane: depth range of the pixel-aligned Gaussians.
        depth_scale: multiplies the normalised depth before mapping it to ``[near, far]``.
        depth_bias: added to the depth pre-activation (official ``depth_preact_bias``).
        hard_pixelalign: squash the depth with a sigmoid (official default); otherwise linear.
        hard_tempalign: no ``t`` channel; each Gaussian sits at the time of its input view.
        opacity_bias, scaling_bias, temporal_scaling_bias: subtracted from the pre-activations.
        scaling_clip, temporal_scaling_clip: upper clamps of the log-scales.
        clip_xyz: clamp the Gaussian centres to ``[-1, 1]^3`` (object-level models).
    """

    sh_degree: int = 0
    near_plane: float = 0.0
    far_plane: float = 100.0
    depth_scale: float = 1.0
    depth_bias: float = 0.0
    hard_pixelalign: bool = True
    hard_tempalign: bool = False
    opacity_bias: float = 0.0
    scaling_bias: float = 0.0
    temporal_scaling_bias: float = 0.0
    scaling_clip: float = 10.0
    temporal_scaling_clip: float = 0.0
    clip_xyz: bool = False

    @property
    def num_sh_coefficients(self) -> int:
        return (self.sh_degree + 1) ** 2

    def channel_layout(self) -> List[Tuple[str, int]]:
        """``[(name, width), ...]`` of the per-pixel head output, in order."""
        layout = [("xyz", 3)]
        if not self.hard_tempalign:
            layout.append(("t", 1))
        layout += [
            ("sh", 3 * self.num_sh_coefficients),
            ("log_scales", 3),
            ("log_scale_t", 1),
            ("quats", 4),
            ("quats_r", 4),
            ("opacity_logits", 1),
        ]
        return layout

    @property
    def num_channels(self) -> int:
        """Per-pixel channels ``C`` of the head: 20 for SH degree 0 (19 with ``hard_tempalign``)."""
        return sum(width for _, width in self.channel_layout())


# ---------------------------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------------------------
@dataclass
class Gaussians4D:
    """A batch of 4D Gaussians, stored in the optimisation parameterisation of 3DGS.

    Shapes (``B`` scenes, ``N`` Gaussians each, ``K`` SH coefficients):

    * ``means`` ``[B, N, 3]``: centres in world space at their own time ``times``.
    * ``times`` ``[B, N]``: temporal centres, model time (``[-1, 1]`` for the input range).
    * ``sh`` ``[B, N, K, 3]``: spherical-harmonics colour coefficients.
    * ``log_scales`` ``[B, N, 3]``: log standard deviations along the spatial axes (clamped).
    * ``log_scale_t`` ``[B, N]``: log standard deviation along the temporal axis (clamped).
    * ``quats``, ``quats_r`` ``[B, N, 4]``: left / right quaternions (``wxyz``, unnormalised)
      of the 4D rotation.
    * ``opacity_logits`` ``[B, N]``: pre-sigmoid opacities.

    Activated values are properties: ``scales``, ``scale_t``, ``rotations``, ``rotations_r``,
    ``opacities``, ``colors``.
    """

    means: torch.Tensor
    times: torch.Tensor
    sh: torch.Tensor
    log_scales: torch.Tensor
    log_scale_t: torch.Tensor
    quats: torch.Tensor
    quats_r: torch.Tensor
    opacity_logits: torch.Tensor

    # -- activated views ------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.means.shape[0]

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[1]

    @property
    def scales(self) -> torch.Tensor:
        """``[B, N, 3]`` spatial standard deviations ``exp(log_scales)``."""
        return torch.exp(self.log_scales)

    @property
    def scale_t(self) -> torch.Tensor:
        """``[B, N]`` temporal standard deviation ``exp(log_scale_t)``."""
        return torch.exp(self.log_scale_t)

    @property
    def rotations(self) -> torch.Tensor:
        """``[B, N, 4]`` unit left quaternions."""
        return nn.functional.normalize(self.quats, dim=-1)

    @property
    def rotations_r(self) -> torch.Tensor:
        """``[B, N, 4]`` unit right quaternions."""
        return nn.functional.normalize(self.quats_r, dim=-1)

    @property
    def opacities(self) -> torch.Tensor:
        """``[B, N]`` peak opacities ``sigmoid(opacity_logits)`` (before the temporal marginal)."""
        return torch.sigmoid(self.opacity_logits)

    @property
    def colors(self) -> torch.Tensor:
        """``[B, N, 3]`` view-independent rgb from the degree-0 coefficient, ``max(0.5 + SH_C0 f, 0)``."""
        return (self.sh[..., 0, :] * SH_C0 + 0.5).clamp_min(0.0)

    # -- utilities ------------------------------------------------------------------------------
    def map(self, fn) -> "Gaussians4D":
        """Apply ``fn`` to every tensor (e.g. ``lambda t: t[:, mask]``)."""
        return Gaussians4D(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def select(self, batch_index: int) -> "Gaussians4D":
        """The Gaussians of one scene, keeping a batch dimension of 1."""
        return self.map(lambda t: t[batch_index : batch_index + 1])

    def to_dict(self) -> Dict[str, torch.Tensor]:
        """Plain ``{name: tensor}`` (how :class:`~fsm_hf.FSMMemory` stores Gaussians)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, tensors: Dict[str, torch.Tensor]) -> "Gaussians4D":
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in tensors]
        if missing:
            raise ValueError(f"Gaussian tensors {missing} are missing (have {sorted(tensors)}).")
        return cls(**{n: tensors[n] for n in names})


@dataclass
class Gaussians3D:
    """4D Gaussians sliced at one time per scene: what a 3DGS rasteriser draws.

    Shapes (leading ``...`` is ``[B]`` or ``[B, T]`` for ``T`` times per scene):

    * ``means`` ``[..., N, 3]``: conditional means at the slice time.
    * ``covars`` ``[..., N, 3, 3]``: conditional covariances (independent of the time).
    * ``opacities`` ``[..., N]``: peak opacity times the temporal marginal.
    * ``marginal`` ``[..., N]``: the temporal marginal ``exp(-(tau - t)^2 / (2 S_tt))`` in ``(0, 1]``.
    * ``sh`` ``[..., N, K, 3]``: colour coefficients (unchanged by slicing).
    """

    means: torch.Tensor
    covars: torch.Tensor
    opacities: torch.Tensor
    marginal: torch.Tensor
    sh: torch.Tensor

    @property
    def colors(self) -> torch.Tensor:
        """``[..., N, 3]`` view-independent rgb from the degree-0 coefficient."""
        return (self.sh[..., 0, :] * SH_C0 + 0.5).clamp_min(0.0)


# ---------------------------------------------------------------------------------------------
# The head and the decoding
# ---------------------------------------------------------------------------------------------
class GaussianHead(nn.Module):
    """``LayerNorm -> Linear(D, C p^2)`` then unpatchify: tokens to per-pixel parameters.

    Args:
        hidden_size: token width ``D``.
        patch_size: ``p``.
        num_channels: ``C`` parameters per pixel (:attr:`GaussianDecoding.num_channels`).
    """

    def __init__(self, hidden_size: int, patch_size: int, num_channels: int, layer_norm_eps: float = 1e-5):
        super().__init__()
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.layernorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps, bias=False)
        self.linear = nn.Linear(hidden_size, num_channels * patch_size * patch_size, bias=False)

    def forward(self, tokens: torch.Tensor, num_views: int, height: int, width: int) -> torch.Tensor:
        """``[B, V * L, D] -> [B, V, C, H, W]``."""
        patches = self.linear(self.layernorm(tokens))  # [B, V*L, p*p*C]
        return unpatchify(patches, num_views, height, width, self.patch_size)


def decode_gaussians(
    params: torch.Tensor,
    ray_o: torch.Tensor,
    ray_d: torch.Tensor,
    settings: GaussianDecoding,
    view_times: Optional[torch.Tensor] = None,
) -> Gaussians4D:
    """Turn per-pixel head outputs into pixel-aligned 4D Gaussians.

    Args:
        params: ``[B, V, C, H, W]`` head outputs (``C = settings.num_channels``).
        ray_o, ray_d: ``[B, V, 3, H, W]`` rays of the input pixels (unit ``ray_d``).
        settings: :class:`GaussianDecoding`.
        view_times: ``[B, V]`` model times of the input views; required with ``hard_tempalign``.

    Returns:
        :class:`Gaussians4D` with ``N = V * H * W`` in raster order.
    """
    b, v, c, h, w = params.shape
    if c != settings.num_channels:
        raise ValueError(f"expected {settings.num_channels} Gaussian channels per pixel, got {c}")
    names, widths = zip(*settings.channel_layout())
    parts = dict(zip(names, params.split(list(widths), dim=2)))

    # Depth along the pixel's ray from the mean of the three xyz channels.
    depth = parts["xyz"].mean(dim=2, keepdim=True)  # [B, V, 1, H, W]
    if settings.hard_pixelalign:
        depth = torch.sigmoid(depth + settings.depth_bias)
    depth = settings.depth_scale * depth * (settings.far_plane - settings.near_plane) + settings.near_plane
    means = ray_o + depth * ray_d  # [B, V, 3, H, W]
    if settings.clip_xyz:
        means = means.clamp(-1.0, 1.0)

    def flat(x: torch.Tensor) -> torch.Tensor:  # [B, V, c, H, W] -> [B, V*H*W, c]
        return x.permute(0, 1, 3, 4, 2).reshape(b, v * h * w, x.shape[2])

    if settings.hard_tempalign:
        if view_times is None:
            raise ValueError("hard_tempalign places each Gaussian at its view's time: `view_times` [B, V] is required.")
        times = view_times.to(params.dtype)[:, :, None, None].expand(b, v, h, w).reshape(b, v * h * w)
    else:
        times = flat(parts["t"])[..., 0]
    return Gaussians4D(
        means=flat(means),
        times=times,
        sh=flat(parts["sh"]).reshape(b, v * h * w, settings.num_sh_coefficients, 3),
        log_scales=(flat(parts["log_scales"]) - settings.scaling_bias).clamp(max=settings.scaling_clip),
        log_scale_t=(flat(parts["log_scale_t"])[..., 0] - settings.temporal_scaling_bias).clamp(
            max=settings.temporal_scaling_clip
        ),
        quats=flat(parts["quats"]),
        quats_r=flat(parts["quats_r"]),
        opacity_logits=flat(parts["opacity_logits"])[..., 0] - settings.opacity_bias,
    )


# ---------------------------------------------------------------------------------------------
# 4D geometry
# ---------------------------------------------------------------------------------------------
def _quat_left_matrix(q: torch.Tensor) -> torch.Tensor:
    """``[..., 4] -> [..., 4, 4]``: the matrix of ``p -> q p`` on ``(w, x, y, z)`` coordinates."""
    a, b, c, d = q.unbind(-1)
    rows = (a, -b, -c, -d, b, a, -d, c, c, d, a, -b, d, -c, b, a)
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 4, 4)


def _quat_right_matrix(q: torch.Tensor) -> torch.Tensor:
    """``[..., 4] -> [..., 4, 4]``: the matrix of ``p -> p q`` on ``(w, x, y, z)`` coordinates."""
    a, b, c, d = q.unbind(-1)
    rows = (a, -b, -c, -d, b, a, d, -c, c, -d, a, b, d, c, -b, a)
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 4, 4)


def rotation_4d(quats_l: torch.Tensor, quats_r: torch.Tensor) -> torch.Tensor:
    """4D rotations ``[..., 4, 4]`` acting on ``(x, y, z, t)`` from two quaternions ``[..., 4]``.

    The rotation is ``p -> q_l p conj(q_r)`` (unit quaternions) on the quaternion
    ``t + z i + y j + x k`` (so ``(x, y, z, t)`` are the quaternion coordinates in reverse order).
    """
    ql = nn.functional.normalize(quats_l, dim=-1, eps=0.0)
    qr = nn.functional.normalize(quats_r, dim=-1, eps=0.0)
    conj = torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=qr.dtype, device=qr.device)
    rot_wxyz = _quat_left_matrix(ql) @ _quat_right_matrix(qr * conj)
    return rot_wxyz.flip(-2, -1)  # reverse the basis: (w, x, y, z) -> (x, y, z, t)


def covariance_4d(scales: torch.Tensor, quats_l: torch.Tensor, quats_r: torch.Tensor) -> torch.Tensor:
    """``R diag(scales)^2 R^T``: ``scales`` ``[..., 4]`` (x, y, z, t std devs) -> ``[..., 4, 4]``."""
    m = rotation_4d(quats_l, quats_r) * scales[..., None, :]  # R diag(s)
    return m @ m.transpose(-1, -2)


def _times_like(time: Union[float, torch.Tensor], batch_size: int, ref: torch.Tensor) -> torch.Tensor:
    """A slice time as ``[B]`` or ``[B, T]``."""
    tau = torch.as_tensor(time, dtype=ref.dtype, device=ref.device)
    if tau.ndim == 0:
        tau = tau.expand(batch_size)
    if tau.ndim not in (1, 2) or tau.shape[0] != batch_size:
        raise ValueError(f"time must be a scalar, [B] or [B, T] with B = {batch_size}, got shape {tuple(tau.shape)}")
    return tau


def temporal_covariance(gaussians: Gaussians4D, scaling_modifier: float = 1.0) -> torch.Tensor:
    """The full 4D covariances ``[B, N, 4, 4]`` of the Gaussians."""
    scales = torch.cat([gaussians.scales, gaussians.scale_t[..., None]], dim=-1) * scaling_modifier
    return covariance_4d(scales, gaussians.quats, gaussians.quats_r)


def temporal_marginal(
    gaussians: Gaussians4D, time: Union[float, torch.Tensor], scaling_modifier: float = 1.0
) -> torch.Tensor:
    """``exp(-(tau - t)^2 / (2 S_tt))``: ``[B, N]`` for a time ``[B]`` (or scalar), ``[B, T, N]`` for ``[B, T]``."""
    return slice_gaussians(gaussians, time, scaling_modifier).marginal


def slice_gaussians(
    gaussians: Gaussians4D,
    time: Union[float, torch.Tensor],
    scaling_modifier: float = 1.0,
    covariance: Optional[torch.Tensor] = None,
) -> Gaussians3D:
    """Condition 4D Gaussians on time: the 3D Gaussians a rasteriser draws at ``time``.

    Args:
        gaussians: ``B`` scenes of ``N`` Gaussians.
        time: model time, a scalar, ``[B]`` (one time per scene) or ``[B, T]`` (``T`` per scene).
        scaling_modifier: multiplies every scale (spatial and temporal), as the official getters do.
        covariance: precomputed :func:`temporal_covariance` (reused across many slices).

    Returns:
        :class:`Gaussians3D` with leading dims ``[B]`` or ``[B, T]``.
    """
    sigma = temporal_covariance(gaussians, scaling_modifier) if covariance is None else covariance  # [B,N,4,4]
    tau = _times_like(time, gaussians.batch_size, gaussians.means)
    s_tt = sigma[..., 3, 3]  # [B, N]
    s_xt = sigma[..., :3, 3]  # [B, N, 3]
    covars = sigma[..., :3, :3] - s_xt[..., :, None] * s_xt[..., None, :] / s_tt[..., None, None]
    velocity = s_xt / s_tt[..., None]  # [B, N, 3]: d(mean)/d(time)
    if tau.ndim == 1:
        dt = tau[:, None] - gaussians.times  # [B, N]
        means = gaussians.means + velocity * dt[..., None]
        marginal = torch.exp(-0.5 * dt * dt / s_tt)
        return Gaussians3D(means, covars, gaussians.opacities * marginal, marginal, gaussians.sh)
    t = tau.shape[1]
    dt = tau[:, :, None] - gaussians.times[:, None]  # [B, T, N]
    means = gaussians.means[:, None] + velocity[:, None] * dt[..., None]
    marginal = torch.exp(-0.5 * dt * dt / s_tt[:, None])
    expand = lambda x: x[:, None].expand(-1, t, *x.shape[1:])  # noqa: E731
    return Gaussians3D(means, expand(covars), gaussians.opacities[:, None] * marginal, marginal, expand(gaussians.sh))


def prune_by_marginal(gaussians: Gaussians3D, threshold: float) -> Tuple[Gaussians3D, torch.Tensor]:
    """Keep the Gaussians of **one** slice (``means`` ``[N, 3]``) whose temporal marginal is ``> threshold``.

    The official inference drops Gaussians with ``marginal <= 0.05`` before rasterising.
    Returns ``(kept, mask)`` with ``mask`` the boolean ``[N]`` mask of kept Gaussians.
    """
    if gaussians.marginal.ndim != 1:
        raise ValueError("prune_by_marginal works on one slice (one scene, one time): index the batch first.")
    mask = gaussians.marginal > threshold
    kept = Gaussians3D(*(x[mask] for x in (gaussians.means, gaussians.covars, gaussians.opacities,
                                           gaussians.marginal, gaussians.sh)))  # fmt: skip
    return kept, mask


# ---------------------------------------------------------------------------------------------
# Covariance -> (rotation, scales) for formats that need them (.ply)
# ---------------------------------------------------------------------------------------------
def rotation_matrix_to_quaternion(rot: torch.Tensor) -> torch.Tensor:
    """Proper rotation matrices ``[..., 3, 3]`` -> unit quaternions ``[..., 4]`` (``wxyz``, ``w >= 0``).

    Each of the four components is recovered from the best-conditioned diagonal combination.
    """
    m = rot
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    diag = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    )  # 4 w^2, 4 x^2, 4 y^2, 4 z^2
    a = m[..., 2, 1] - m[..., 1, 2]  # 4 w x
    b = m[..., 0, 2] - m[..., 2, 0]  # 4 w y
    c = m[..., 1, 0] - m[..., 0, 1]  # 4 w z
    d = m[..., 1, 0] + m[..., 0, 1]  # 4 x y
    e = m[..., 0, 2] + m[..., 2, 0]  # 4 x z
    f = m[..., 2, 1] + m[..., 1, 2]  # 4 y z
    candidates = torch.stack(
        [
            torch.stack([diag[..., 0], a, b, c], dim=-1),
            torch.stack([a, diag[..., 1], d, e], dim=-1),
            torch.stack([b, d, diag[..., 2], f], dim=-1),
            torch.stack([c, e, f, diag[..., 3]], dim=-1),
        ],
        dim=-2,
    )  # [..., 4 candidates, 4]
    best = diag.argmax(dim=-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    q = nn.functional.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def covariance_to_quats_scales(covars: torch.Tensor, min_scale: float = 1e-12) -> Tuple[torch.Tensor, torch.Tensor]:
    """Factor symmetric PSD covariances ``[..., 3, 3]`` as ``R diag(s)^2 R^T``.

    Returns ``(quats [..., 4] wxyz, scales [..., 3])`` (scales ascending, at least ``min_scale``).
    """
    evals, evecs = torch.linalg.eigh(covars.double())
    flip = torch.linalg.det(evecs) < 0
    evecs = torch.where(flip[..., None, None], evecs * evecs.new_tensor([1.0, 1.0, -1.0]), evecs)
    scales = evals.clamp_min(min_scale**2).sqrt()
    return rotation_matrix_to_quaternion(evecs).to(covars.dtype), scales.to(covars.dtype)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def intrinsics_matrix(fxfycxcy: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` pixel ``fx, fy, cx, cy`` -> ``[..., 3, 3]`` camera matrices."""
    fx, fy, cx, cy = fxfycxcy.unbind(-1)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    return torch.stack([fx, zero, cx, zero, fy, cy, zero, zero, one], dim=-1).reshape(*fxfycxcy.shape[:-1], 3, 3)


def render_gaussians(
    gaussians: Gaussians4D,
    c2w: torch.Tensor,
    fxfycxcy: torch.Tensor,
    times: torch.Tensor,
    height: int,
    width: int,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    scaling_modifier: float = 1.0,
    prune_threshold: Optional[float] = None,
    near_plane: float = 0.2,
    eps2d: float = 0.3,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rasterise the 4D Gaussians for every target camera at its own time.

    Args:
        gaussians: ``B`` scenes.
        c2w: ``[B, T, 4, 4]`` OpenCV camera-to-world; ``fxfycxcy`` ``[B, T, 4]`` pixel intrinsics.
        times: ``[B, T]`` model times of the targets.
        height, width: output size.
        background: rgb behind the Gaussians (white in the released models).
        scaling_modifier: multiplies every scale.
        prune_threshold: drop Gaussians whose temporal marginal is ``<=`` this before drawing
            (the official inference uses 0.05); ``None`` keeps all (training).
        near_plane: camera-space depth below which Gaussians are culled (0.2 in the 3DGS rasteriser).
        eps2d: screen-space blur added to the projected covariances (0.3 in 3DGS).

    Returns:
        ``(images [B, T, 3, H, W], alphas [B, T, 1, H, W])``.
    """
    from .rasterization import rasterization

    b, t = c2w.shape[:2]
    if fxfycxcy.shape[:2] != (b, t) or times.shape != (b, t):
        raise ValueError(f"c2w [B, T, 4, 4], fxfycxcy [B, T, 4] and times [B, T] disagree: "
                         f"{tuple(c2w.shape)}, {tuple(fxfycxcy.shape)}, {tuple(times.shape)}")  # fmt: skip
    dtype = gaussians.means.dtype
    sigma = temporal_covariance(gaussians, scaling_modifier)
    sliced_all = slice_gaussians(gaussians, times.to(dtype), scaling_modifier, covariance=sigma)  # [B, T, N, ...]
    viewmats = torch.linalg.inv(c2w.to(dtype))  # world-to-camera
    ks = intrinsics_matrix(fxfycxcy.to(dtype))
    bg = torch.as_tensor(background, dtype=dtype, device=c2w.device).reshape(1, 3)
    images, alphas = [], []
    for i in range(b):
        for j in range(t):
            one = Gaussians3D(*(x[i, j] for x in (sliced_all.means, sliced_all.covars, sliced_all.opacities,
                                                  sliced_all.marginal, sliced_all.sh)))  # fmt: skip
            if prune_threshold is not None:
                one, _ = prune_by_marginal(one, prune_threshold)
            if one.sh.shape[-2] == 1:
                colors, sh_degree = one.colors, None
            else:
                colors, sh_degree = one.sh, int(round(one.sh.shape[-2] ** 0.5)) - 1
            rgb, alpha, _ = rasterization(
                one.means, None, None, one.opacities, colors, viewmats[i, j : j + 1], ks[i, j : j + 1],
                width, height, near_plane=near_plane, eps2d=eps2d, sh_degree=sh_degree, backgrounds=bg,
                covars=one.covars,
            )  # fmt: skip
            images.append(rgb[0].permute(2, 0, 1))  # [3, H, W]
            alphas.append(alpha[0].permute(2, 0, 1))  # [1, H, W]
    return torch.stack(images).reshape(b, t, 3, height, width), torch.stack(alphas).reshape(b, t, 1, height, width)
