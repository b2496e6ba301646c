"""Pose and time normalisation, and image preprocessing, fitted on the input views.

FSM expects scenes in a normalised frame and times on a fixed integer grid (DESIGN §2). The
official data loaders compute both from *all* sampled views (inputs and targets together).
A spatial memory, however, is reconstructed before its targets are known, so here every
transform is **fitted on the input views only**, stored (``to_dict``) with the memory, and
applied unchanged to any later target. When the targets lie inside the inputs' extent the two
agree up to the choice of views; where they differ is documented on each class.

* :func:`normalize_poses` / :class:`PoseNormalization`: the official ``scene_pose_normalize``
  (re-centre on the mean camera frame, scale camera translations to ``max |t| = 1``).
* :class:`TimeNormalization`: timestamps -> integer frame times ``t`` -> ``tau`` in ``[-1, 1]``,
  in the official *training* or *official inference* convention.
* :func:`resize_and_center_crop`: resize to cover, centre crop, intrinsics adjusted exactly.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from .cameras import Cameras

__all__ = [
    "PoseNormalization",
    "normalize_poses",
    "TimeNormalization",
    "TIME_CONVENTIONS",
    "resize_and_center_crop",
    "resize_and_center_crop_cameras",
]

TIME_CONVENTIONS = ("training", "official_inference")


def _unit(x: torch.Tensor, what: str) -> torch.Tensor:
    norm = x.norm(dim=-1, keepdim=True)
    if (norm < 1e-8).any():
        raise ValueError(
            f"Pose normalisation is undefined: the {what} of the input cameras has zero length "
            "(the cameras' mean viewing and up directions are degenerate)."
        )
    return x / norm


# ----------------------------------------------------------------------------------------------
# Poses
# ----------------------------------------------------------------------------------------------


@dataclass
class PoseNormalization:
    """A similarity transform from world coordinates to the normalised scene frame.

    Attributes:
        normalized_from_world: ``[4, 4]`` (or ``[B, 4, 4]``) matrix mapping homogeneous world points
            to normalised points: ``x_n = normalized_from_world @ x_w``. It is ``diag(1/s, 1/s, 1/s, 1)
            @ inv(mean_pose)``, a rotation + translation followed by a uniform scale ``1/s``.
        scale: ``[]`` (or ``[B]``): ``s``, world units per normalised unit.

    Camera poses stay rigid: :meth:`apply` rotates and translates the camera and divides its
    centre by ``s`` (the camera axes are not scaled), exactly as the official normalisation does.
    """

    normalized_from_world: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def identity(cls, dtype: torch.dtype = torch.float32, device=None) -> "PoseNormalization":
        """The transform that leaves poses unchanged."""
        return cls(torch.eye(4, dtype=dtype, device=device), torch.ones((), dtype=dtype, device=device))

    @property
    def world_from_normalized(self) -> torch.Tensor:
        """Inverse of :attr:`normalized_from_world`."""
        return torch.linalg.inv(self.normalized_from_world.double()).to(self.normalized_from_world.dtype)

    def _scale_matrix(self, power: float, like: torch.Tensor) -> torch.Tensor:
        s = self.scale.to(dtype=torch.float64, device=like.device) ** power
        diag = torch.stack([s, s, s, torch.ones_like(s)], dim=-1)
        return torch.diag_embed(diag)

    def _check(self, c2w: torch.Tensor) -> None:
        if c2w.shape[-2:] != (4, 4):
            raise ValueError(f"Expected camera poses of shape [..., N, 4, 4], got {list(c2w.shape)}.")
        batch = self.normalized_from_world.shape[:-2]
        if batch and (c2w.ndim != 4 or c2w.shape[0] != batch[0]):
            raise ValueError(
                f"This normalisation holds a batch of {batch[0]} scenes; expected poses [{batch[0]}, N, 4, 4], "
                f"got {list(c2w.shape)}."
            )

    def _sandwich(self, left: torch.Tensor, c2w: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        if left.ndim == 3:  # batched: one transform per scene, poses [B, N, 4, 4]
            left, right = left[:, None], right[:, None]
        return (left @ c2w.double() @ right).to(c2w.dtype)

    def apply(self, c2w: torch.Tensor) -> torch.Tensor:
        """World ``c2w`` ``[N, 4, 4]`` (or ``[B, N, 4, 4]``) -> normalised ``c2w``, same shape."""
        self._check(c2w)
        left = self.normalized_from_world.to(device=c2w.device, dtype=torch.float64)
        return self._sandwich(left, c2w, self._scale_matrix(1.0, c2w))

    def invert(self, c2w: torch.Tensor) -> torch.Tensor:
        """Normalised ``c2w`` -> world ``c2w`` (``invert(apply(x)) == x``)."""
        self._check(c2w)
        left = torch.linalg.inv(self.normalized_from_world.to(device=c2w.device, dtype=torch.float64))
        return self._sandwich(left, c2w, self._scale_matrix(-1.0, c2w))

    def apply_points(self, points: torch.Tensor) -> torch.Tensor:
        """World points ``[..., 3]`` -> normalised points (unbatched transforms only)."""
        if self.normalized_from_world.ndim != 2:
            raise ValueError("apply_points needs an unbatched normalisation ([4, 4]); select one scene first.")
        m = self.normalized_from_world.to(device=points.device, dtype=torch.float64)
        return (points.double() @ m[:3, :3].T + m[:3, 3]).to(points.dtype)

    def to(self, device=None, dtype=None) -> "PoseNormalization":
        return PoseNormalization(self.normalized_from_world.to(device, dtype), self.scale.to(device, dtype))

    def to_dict(self) -> Dict[str, torch.Tensor]:
        """``{"normalized_from_world": [.., 4, 4], "scale": [..]}`` (for :class:`~fsm_hf.FSMMemory`)."""
        return {"normalized_from_world": self.normalized_from_world, "scale": self.scale}

    @classmethod
    def from_dict(cls, data: Dict[str, torch.Tensor]) -> "PoseNormalization":
        """Inverse of :meth:`to_dict` (also accepts ``world_from_normalized`` instead)."""
        if "normalized_from_world" in data:
            matrix = torch.as_tensor(data["normalized_from_world"])
        elif "world_from_normalized" in data:
            w = torch.as_tensor(data["world_from_normalized"])
            matrix = torch.linalg.inv(w.double()).to(w.dtype)
        else:
            raise KeyError(
                f"Expected a 'normalized_from_world' (or 'world_from_normalized') entry, got keys {sorted(data)}."
            )
        if "scale" not in data:
            raise KeyError(f"Expected a 'scale' entry, got keys {sorted(data)}.")
        return cls(matrix, torch.as_tensor(data["scale"]))


def normalize_poses(input_c2w: torch.Tensor, min_scale: float = 1e-6) -> PoseNormalization:
    """Fit the official scene normalisation on the input cameras.

    Semantics of the official ``normalize_with_mean_pose`` (``scene_pose_normalize=True``):

    1. the mean camera frame: centre = mean camera centre; ``z`` = normalised mean of the cameras'
       z (forward) axes; ``x = normalize(mean_y x z)``; ``y = normalize(z x x)``;
    2. every pose is expressed in that frame: ``c2w <- inv(mean_pose) @ c2w``;
    3. camera centres are divided by ``s = max |t|`` over all coordinates of all fitted views,
       so they lie in ``[-1, 1]``.

    Differences from the official loader: the transform is fitted on the inputs only (the
    official one uses inputs and targets); it is computed in float64; and when all input cameras
    share one centre (``s < min_scale``, e.g. one input view) ``s = 1`` instead of a NaN.

    Args:
        input_c2w: ``[N, 4, 4]`` OpenCV camera-to-world of the input views, or ``[B, N, 4, 4]``
            (one transform per scene).

    Returns:
        :class:`PoseNormalization`; ``normalization.apply(input_c2w)`` is the official result.
    """
    if not isinstance(input_c2w, torch.Tensor):
        input_c2w = torch.as_tensor(input_c2w)
    if input_c2w.ndim not in (3, 4) or input_c2w.shape[-2:] != (4, 4) or input_c2w.shape[-3] == 0:
        raise ValueError(
            f"input_c2w must have shape [N, 4, 4] or [B, N, 4, 4] with N >= 1, got {list(input_c2w.shape)}."
        )
    if not torch.isfinite(input_c2w).all():
        raise ValueError("input_c2w must be finite; got NaN or inf.")
    c2w = input_c2w.double()
    center = c2w[..., :3, 3].mean(-2)
    forward = _unit(c2w[..., :3, 2].mean(-2), "mean forward axis")
    up = c2w[..., :3, 1].mean(-2)
    right = _unit(torch.linalg.cross(up, forward, dim=-1), "mean right axis")
    down = _unit(torch.linalg.cross(forward, right, dim=-1), "mean down axis")

    mean_pose = torch.zeros(*c2w.shape[:-3], 4, 4, dtype=torch.float64, device=c2w.device)
    mean_pose[..., :3, 0], mean_pose[..., :3, 1], mean_pose[..., :3, 2] = right, down, forward
    mean_pose[..., :3, 3] = center
    mean_pose[..., 3, 3] = 1.0
    aligned_from_world = torch.linalg.inv(mean_pose)

    aligned_centers = (aligned_from_world[..., None, :, :] @ c2w)[..., :3, 3]
    scale = aligned_centers.abs().flatten(-2).amax(-1)
    tiny = scale < min_scale
    if tiny.any():
        warnings.warn(
            f"All input cameras share one centre (max |t| = {scale.min().item():.3g} < {min_scale}); "
            "the scene scale is set to 1.",
            stacklevel=2,
        )
        scale = torch.where(tiny, torch.ones_like(scale), scale)
    inv_s = 1.0 / scale
    shrink = torch.diag_embed(torch.stack([inv_s, inv_s, inv_s, torch.ones_like(inv_s)], dim=-1))
    normalized_from_world = shrink @ aligned_from_world
    dtype = input_c2w.dtype if input_c2w.is_floating_point() else torch.float32
    return PoseNormalization(normalized_from_world.to(dtype), scale.to(dtype))


# ----------------------------------------------------------------------------------------------
# Time
# ----------------------------------------------------------------------------------------------


@dataclass
class TimeNormalization:
    """Raw timestamps -> integer frame times ``t`` in ``[0, max_frames - 1]`` -> ``tau`` in ``[-1, 1]``.

    ``tau = t / (max_frames - 1) * 2 - 1``. Two conventions of the official code (DESIGN §2):

    * ``"training"`` (official training loaders): ``t = trunc((x - x_min) / (x_max - x_min) *
      (max_frames - 1))`` with ``x_min, x_max`` over the fitted timestamps (any unit), computed in
      float32 as the official code does; all zeros when ``x_max == x_min``. The official loader
      fits on inputs *and* targets; here it is fitted on the inputs, so a target outside the
      inputs' time span extrapolates (``t`` below 0 or above ``max_frames - 1``, rounded down,
      ``tau`` outside ``[-1, 1]``).
    * ``"official_inference"`` (official inference/evaluation loaders): ``t = frame_idx %
      max_frames``; the timestamps must be integer frame indices and nothing is fitted.

    Attributes:
        convention: ``"training"`` or ``"official_inference"``.
        max_frames: size of the integer time grid (the model's ``max_frames``; 256 for the official
            inference convention, 128 in official pretraining).
        time_min, time_max: the fitted range (training convention; ``None`` otherwise).
    """

    convention: str = "official_inference"
    max_frames: int = 256
    time_min: Optional[float] = None
    time_max: Optional[float] = None

    def __post_init__(self):
        if self.convention not in TIME_CONVENTIONS:
            raise ValueError(f"Time convention must be one of {TIME_CONVENTIONS}, got {self.convention!r}.")
        if int(self.max_frames) != self.max_frames or self.max_frames < 2:
            raise ValueError(f"max_frames must be an integer >= 2, got {self.max_frames!r}.")
        self.max_frames = int(self.max_frames)
        if self.convention == "training" and (self.time_min is None or self.time_max is None):
            raise ValueError("The 'training' convention needs time_min and time_max; use TimeNormalization.fit(times).")

    @classmethod
    def fit(cls, input_times, convention: str = "official_inference", max_frames: int = 256) -> "TimeNormalization":
        """Fit on the input views' timestamps ``[N]`` (raw units, or frame indices)."""
        times = _times_tensor(input_times)
        if times.ndim != 1:
            raise ValueError(
                f"Fit on one scene's timestamps [N]; got shape {list(times.shape)} (fit each scene separately)."
            )
        if times.numel() == 0:
            raise ValueError("Cannot fit a time normalisation on zero timestamps.")
        if convention == "training":
            return cls(convention, max_frames, float(times.min()), float(times.max()))
        norm = cls(convention, max_frames)
        norm.frame_times(times)  # validates integrality now, not at the first target
        return norm

    def frame_times(self, times) -> torch.Tensor:
        """Integer frame times ``t`` (``int64``, same shape as ``times``)."""
        times = _times_tensor(times)
        if self.convention == "official_inference":
            rounded = torch.round(times)
            non_integer = (rounded - times).abs() > 1e-6
            if non_integer.any():
                raise ValueError(
                    "The 'official_inference' time convention takes integer frame indices; got non-integer "
                    f"values such as {times[non_integer][0].item()!r}. Use the 'training' "
                    "convention for timestamps in other units."
                )
            return torch.remainder(rounded.long(), self.max_frames)
        span = self.time_max - self.time_min
        if span <= 0:
            return torch.zeros(times.shape, dtype=torch.long)
        # Same arithmetic as the official loader: exact offsets, float32 division and product, truncation.
        offset = (times - self.time_min).float()
        scaled = offset / torch.tensor(span, dtype=torch.float32) * (self.max_frames - 1)
        return torch.floor(scaled).long()

    def range_warning(self, times, what: str = "times") -> Optional[str]:
        """A message when ``times`` leave the grid the model was trained on, else ``None``: under
        ``"training"``, times outside the fitted span (``tau`` outside ``[-1, 1]``: the model
        extrapolates); under ``"official_inference"``, frame indices outside ``[0, max_frames)``,
        which wrap around modulo ``max_frames`` as in the official code."""
        times = _times_tensor(times)
        if self.convention == "training":
            outside = (times < self.time_min) | (times > self.time_max)
            rule = (
                f"outside the input views' time span [{self.time_min:g}, {self.time_max:g}]; the model "
                "extrapolates in time (model times outside [-1, 1])"
            )
        else:
            outside = (times < 0) | (times >= self.max_frames)
            rule = f"outside [0, {self.max_frames - 1}]; they wrap around modulo {self.max_frames} (official convention)"
        if not outside.any():
            return None
        shown = ", ".join(f"{v:g}" for v in times[outside].flatten()[:5].tolist())
        return f"{int(outside.sum())} {what} ({shown}{', ...' if int(outside.sum()) > 5 else ''}) lie {rule}."

    def apply(self, times) -> torch.Tensor:
        """``tau = t / (max_frames - 1) * 2 - 1`` (float32, same shape as ``times``)."""
        t = self.frame_times(times)
        return t.float() / (self.max_frames - 1) * 2.0 - 1.0

    def to_dict(self) -> Dict[str, torch.Tensor]:
        """Tensors only (``convention`` as an index into :data:`TIME_CONVENTIONS`)."""
        nan = float("nan")
        return {
            "time_convention": torch.tensor(TIME_CONVENTIONS.index(self.convention), dtype=torch.long),
            "time_max_frames": torch.tensor(self.max_frames, dtype=torch.long),
            "time_min": torch.tensor(nan if self.time_min is None else self.time_min, dtype=torch.float64),
            "time_max": torch.tensor(nan if self.time_max is None else self.time_max, dtype=torch.float64),
        }

    @classmethod
    def from_dict(cls, data: Dict[str, torch.Tensor]) -> "TimeNormalization":
        """Inverse of :meth:`to_dict`."""
        missing = {"time_convention", "time_max_frames", "time_min", "time_max"} - set(data)
        if missing:
            raise KeyError(f"Time normalisation dict lacks {sorted(missing)}; got keys {sorted(data)}.")

        def opt(value) -> Optional[float]:
            value = float(torch.as_tensor(value))
            return None if value != value else value

        return cls(
            TIME_CONVENTIONS[int(torch.as_tensor(data["time_convention"]))],
            int(torch.as_tensor(data["time_max_frames"])),
            opt(data["time_min"]),
            opt(data["time_max"]),
        )


def _times_tensor(times) -> torch.Tensor:
    """Timestamps (list / numpy / tensor of reals) -> float64 CPU tensor, checked finite."""
    times = torch.as_tensor(times).detach().cpu()
    if times.is_complex() or times.dtype == torch.bool:
        raise TypeError(f"Timestamps must be real numbers, got dtype {times.dtype}.")
    times = times.double()
    if not torch.isfinite(times).all():
        raise ValueError("Timestamps must be finite; got NaN or inf.")
    return times


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------

_INTERPOLATIONS = ("bilinear", "bicubic", "area", "lanczos")


def resize_and_center_crop(
    images: torch.Tensor,
    cameras: Cameras,
    height: int,
    width: int,
    interpolation: str = "bilinear",
) -> Tuple[torch.Tensor, Cameras]:
    """Resize to cover ``height x width`` (aspect kept), then crop the centre; adjust intrinsics.

    The geometry is the official loader's: ``s = max(height / H, width / W)``, the image is
    resized to ``round(H * s) x round(W * s)`` and the window at ``top = (H' - height) // 2``,
    ``left = (W' - width) // 2`` is kept. Intrinsics follow exactly: ``fx, cx`` scale by the
    actual ``W' / W`` and ``fy, cy`` by ``H' / H`` (the official code uses ``s`` for both, which
    differs by under half a pixel over the whole image when ``H * s`` is not an integer), then
    ``cx -= left``, ``cy -= top``.

    Args:
        images: float ``[N, 3, H, W]`` in ``[0, 1]`` (``H, W`` matching ``cameras``).
        cameras: the :class:`Cameras` of ``images``.
        height, width: output size.
        interpolation: ``"bilinear"`` (default) or ``"bicubic"``: torch ``interpolate`` with
            antialiasing, differentiable; ``"area"``: box averaging (for downscaling);
            ``"lanczos"``: PIL Lanczos on 8-bit images, the official loaders' filter (bit-exact with
            them for images that came from 8-bit files; quantises to 1/255).

    Returns:
        ``(images [N, 3, height, width], cameras)``; a no-op (same tensors) when sizes already match.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape [N, 3, H, W], got {list(images.shape)}.")
    if images.shape[0] != len(cameras):
        raise ValueError(f"Got {images.shape[0]} images for {len(cameras)} cameras.")
    src_h, src_w = images.shape[-2:]
    if (src_h, src_w) != (cameras.height, cameras.width):
        raise ValueError(
            f"images are {src_h}x{src_w} (HxW) but the cameras describe {cameras.height}x{cameras.width} images."
        )
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}.")
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"Output size must be positive, got {height}x{width}.")
    height, width = int(height), int(width)
    if (src_h, src_w) == (height, width):
        return images, cameras

    new_h, new_w, top, left = _cover_and_crop_geometry(src_h, src_w, height, width)
    if (new_h, new_w) == (src_h, src_w):
        resized = images
    elif interpolation == "lanczos":
        resized = _pil_resize(images, new_h, new_w)
    elif interpolation == "area":
        resized = F.interpolate(images, size=(new_h, new_w), mode="area")
    else:
        resized = F.interpolate(images, size=(new_h, new_w), mode=interpolation, align_corners=False, antialias=True)
        if interpolation == "bicubic":
            resized = resized.clamp(0.0, 1.0)
    out = resized[:, :, top : top + height, left : left + width]
    return out.contiguous(), resize_and_center_crop_cameras(cameras, height, width)


def _cover_and_crop_geometry(src_h: int, src_w: int, height: int, width: int) -> Tuple[int, int, int, int]:
    """``(resized_h, resized_w, top, left)`` of the official resize-to-cover + centre crop."""
    s = max(height / src_h, width / src_w)
    # max(): guards against round() undershooting the target by one pixel.
    new_h, new_w = max(int(round(src_h * s)), height), max(int(round(src_w * s)), width)
    return new_h, new_w, (new_h - height) // 2, (new_w - width) // 2


def resize_and_center_crop_cameras(cameras: Cameras, height: int, width: int) -> Cameras:
    """The cameras that :func:`resize_and_center_crop` returns, without any images (e.g. for
    target views): same resize-to-cover and centre-crop geometry, intrinsics adjusted exactly."""
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"Output size must be positive, got {height}x{width}.")
    height, width = int(height), int(width)
    if (cameras.height, cameras.width) == (height, width):
        return cameras
    new_h, new_w, top, left = _cover_and_crop_geometry(cameras.height, cameras.width, height, width)
    return cameras.scaled(new_h, new_w).cropped(top, left, height, width)


def _pil_resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    arrays = (images.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    out = [np.asarray(Image.fromarray(a).resize((width, height), Image.LANCZOS)) for a in arrays]
    tensor = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(dtype=images.dtype, device=images.device)
    return tensor / 255.0
