"""Export FSM-LRM Gaussians as ``.ply`` files.

Two formats, both binary little-endian PLY with one ``vertex`` element of float32 properties:

**3D Gaussian splat at a chosen time** (:func:`export_ply`): the standard layout of 3D Gaussian
Splatting that common splat viewers and tools open (SuperSplat, the INRIA viewer, gsplat/nerfstudio
tools, ...). The 4D Gaussians are sliced at the time (DESIGN §5) and the conditional covariance
is factored into a rotation and three scales. Properties, per Gaussian:

==================== ==================================================================
``x, y, z``          centre at the chosen time (world, OpenCV-world axes of the model)
``nx, ny, nz``       zeros (kept for compatibility with 3DGS tools)
``f_dc_0..2``        degree-0 SH coefficients (rgb = 0.5 + 0.2820948 * f_dc)
``f_rest_*``         higher SH coefficients, channel-major (only when ``sh_degree > 0``)
``opacity``          logit of (peak opacity x temporal marginal at the chosen time)
``scale_0..2``       log standard deviations of the conditional covariance
``rot_0..3``         unit quaternion ``w, x, y, z`` of the conditional covariance's axes
==================== ==================================================================

**4D Gaussians** (:func:`export_ply_4d`, read back with :func:`load_ply_4d`): every parameter
of the model, lossless, in the same parameterisation as the model (``Gaussians4D``). A 3DGS
viewer opening it would mistake the 4D rotation for a 3D one: use :func:`export_ply` for viewing.

==================== ==================================================================
``x, y, z``          centre at the Gaussian's own time ``t`` (``Gaussians4D.means``)
``t``                temporal centre, model time (``[-1, 1]`` spans the input clip)
``nx, ny, nz``       zeros
``f_dc_0..2``        degree-0 SH coefficients; ``f_rest_*`` as above
``opacity``          peak-opacity logit (``Gaussians4D.opacity_logits``)
``scale_0..2``       spatial log standard deviations (``log_scales``)
``scale_t``          temporal log standard deviation (``log_scale_t``)
``rot_0..3``         left quaternion ``w, x, y, z`` of the 4D rotation (unnormalised, ``quats``)
``rot_r_0..3``       right quaternion ``w, x, y, z`` (unnormalised, ``quats_r``)
==================== ==================================================================

The 4D covariance is ``R diag(exp(scale_0..2, scale_t))^2 R^T`` with ``R`` the rotation
``p -> q_l p conj(q_r)`` of the quaternion ``t + z i + y j + x k`` (see :mod:`modeling.gaussians`).
"""

from __future__ import annotations

import os
from typing import List, Mapping, Optional, Union

import numpy as np
import torch

from modeling.gaussians import Gaussians4D, covariance_to_quats_scales, prune_by_marginal, slice_gaussians

PathLike = Union[str, os.PathLike]
#: ``model(...).gaussians``, or the dict of tensors of ``FSMPipeline(...).gaussians`` / ``FSMMemory.gaussians``.
GaussiansLike = Union[Gaussians4D, Mapping[str, torch.Tensor]]

_FORMAT_COMMENT_3D = "fsm-hf 3d gaussian splat (4D Gaussians sliced at time {time!r}, model time units)"
_FORMAT_COMMENT_4D = "fsm-hf 4d gaussians v1 (fields documented in fsm_hf/ply.py)"


def _sh_columns(sh: torch.Tensor) -> tuple:
    """``[N, K, 3]`` -> (names, ``[N, 3K]`` array) in the 3DGS order (dc first, rest channel-major)."""
    n, k, _ = sh.shape
    dc = sh[:, 0, :]  # [N, 3]
    rest = sh[:, 1:, :].transpose(1, 2).reshape(n, 3 * (k - 1))  # [N, 3 (K-1)], channel-major
    names = [f"f_dc_{i}" for i in range(3)] + [f"f_rest_{i}" for i in range(3 * (k - 1))]
    return names, torch.cat([dc, rest], dim=1)


def _write(path: PathLike, names: List[str], columns: torch.Tensor, comments: List[str]) -> None:
    from plyfile import PlyData, PlyElement

    data = columns.detach().to(torch.float32).cpu().numpy()
    vertices = np.empty(data.shape[0], dtype=[(name, "f4") for name in names])
    for i, name in enumerate(names):
        vertices[name] = data[:, i]
    PlyData([PlyElement.describe(vertices, "vertex")], text=False, comments=comments).write(os.fspath(path))


def _one_scene(gaussians: GaussiansLike, batch_index: int) -> Gaussians4D:
    """Scene ``batch_index`` of ``gaussians`` (a ``Gaussians4D`` or its ``to_dict()``), batch of 1."""
    if isinstance(gaussians, Mapping):
        gaussians = Gaussians4D.from_dict(dict(gaussians))
    if not isinstance(gaussians, Gaussians4D):
        raise TypeError(f"Expected Gaussians4D or a dict of its tensors, got {type(gaussians).__name__}.")
    batch_size = gaussians.batch_size
    if isinstance(batch_index, bool) or not isinstance(batch_index, (int, np.integer)) or not 0 <= batch_index < batch_size:
        raise IndexError(f"batch_index must be an integer in [0, {batch_size - 1}], got {batch_index!r}.")
    return gaussians.select(int(batch_index))


def _logit(p: torch.Tensor, eps: float = 1e-300) -> torch.Tensor:
    p = p.double().clamp(eps, 1.0 - 1e-16)
    return torch.log(p) - torch.log1p(-p)


@torch.no_grad()
def export_ply(
    path: PathLike,
    gaussians: GaussiansLike,
    time: float,
    batch_index: int = 0,
    scaling_modifier: float = 1.0,
    prune_threshold: Optional[float] = None,
) -> int:
    """Write the scene ``batch_index`` as a standard 3D Gaussian-splat ``.ply`` at model time ``time``.

    Args:
        path: output file.
        gaussians: :class:`~modeling.gaussians.Gaussians4D` (``model(...).gaussians``) or the dict of
            tensors a pipeline returns (``FSMPipeline(...).gaussians``). Pipeline Gaussians live in the
            normalised scene frame the pipeline fitted on the inputs (``out.normalization.pose``).
        time: model time in ``[-1, 1]``; for a pipeline's time units ``x``:
            ``float(out.normalization.time.apply([x])[0])`` (a frame index ``f`` under the official
            convention: ``f / (max_frames - 1) * 2 - 1``).
        scaling_modifier: multiplies every scale (the model's ``config.scaling_modifier``).
        prune_threshold: drop Gaussians whose temporal marginal is ``<=`` this
            (``config.temporal_threshold``, 0.05, matches the renderer); ``None`` keeps all.

    Returns:
        The number of Gaussians written.
    """
    one = _one_scene(gaussians, batch_index).map(lambda t: t.detach().double())  # float64: tiny opacities keep their logit
    sliced = slice_gaussians(one, float(time), scaling_modifier)
    sliced = type(sliced)(*(x[0] for x in (sliced.means, sliced.covars, sliced.opacities, sliced.marginal, sliced.sh)))
    if prune_threshold is not None:
        sliced, _ = prune_by_marginal(sliced, prune_threshold)
    quats, scales = covariance_to_quats_scales(sliced.covars)
    n = sliced.means.shape[0]
    sh_names, sh_cols = _sh_columns(sliced.sh)
    names = ["x", "y", "z", "nx", "ny", "nz", *sh_names, "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip
    columns = torch.cat(
        [
            sliced.means,
            sliced.means.new_zeros(n, 3),
            sh_cols,
            _logit(sliced.opacities)[:, None],
            torch.log(scales),
            quats,
        ],
        dim=1,
    )
    _write(path, names, columns, [_FORMAT_COMMENT_3D.format(time=float(time))])
    return n


@torch.no_grad()
def export_ply_4d(path: PathLike, gaussians: GaussiansLike, batch_index: int = 0) -> int:
    """Write every parameter of the scene ``batch_index``'s 4D Gaussians (fields in the module doc);
    ``gaussians`` as for :func:`export_ply`.

    Returns:
        The number of Gaussians written.
    """
    one = _one_scene(gaussians, batch_index).map(lambda t: t.detach().float()[0])
    n = one.means.shape[0]
    sh_names, sh_cols = _sh_columns(one.sh)
    names = ["x", "y", "z", "t", "nx", "ny", "nz", *sh_names, "opacity", "scale_0", "scale_1", "scale_2", "scale_t",
             "rot_0", "rot_1", "rot_2", "rot_3", "rot_r_0", "rot_r_1", "rot_r_2", "rot_r_3"]  # fmt: skip
    columns = torch.cat(
        [one.means, one.times[:, None], one.means.new_zeros(n, 3), sh_cols, one.opacity_logits[:, None],
         one.log_scales, one.log_scale_t[:, None], one.quats, one.quats_r],
        dim=1,
    )  # fmt: skip
    _write(path, names, columns, [_FORMAT_COMMENT_4D])
    return n


def load_ply_4d(path: PathLike) -> Gaussians4D:
    """Read a file written by :func:`export_ply_4d` back into a ``Gaussians4D`` with a batch of 1."""
    from plyfile import PlyData

    vertex = PlyData.read(os.fspath(path))["vertex"]
    present = {p.name for p in vertex.properties}
    required = {"x", "y", "z", "t", "opacity", "scale_t", "rot_r_0"}
    if not required <= present:
        raise ValueError(f"{path} is not an fsm-hf 4D Gaussian .ply (missing {sorted(required - present)}).")

    def cols(*names: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(vertex[name], dtype=np.float32) for name in names], axis=-1))

    num_rest = sum(1 for name in present if name.startswith("f_rest_"))
    k = 1 + num_rest // 3
    dc = cols("f_dc_0", "f_dc_1", "f_dc_2")[:, None, :]  # [N, 1, 3]
    if num_rest:
        rest = cols(*(f"f_rest_{i}" for i in range(num_rest))).reshape(-1, 3, k - 1).transpose(1, 2)
        sh = torch.cat([dc, rest], dim=1)
    else:
        sh = dc
    return Gaussians4D(
        means=cols("x", "y", "z")[None],
        times=cols("t")[None, :, 0],
        sh=sh[None],
        log_scales=cols("scale_0", "scale_1", "scale_2")[None],
        log_scale_t=cols("scale_t")[None, :, 0],
        quats=cols("rot_0", "rot_1", "rot_2", "rot_3")[None],
        quats_r=cols("rot_r_0", "rot_r_1", "rot_r_2", "rot_r_3")[None],
        opacity_logits=cols("opacity")[None, :, 0],
    )
