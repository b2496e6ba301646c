"""Camera trajectories and time schedules for rendering videos from a reconstructed scene.

Every trajectory is built from the input :class:`~fsm_hf.cameras.Cameras` (OpenCV ``c2w``, pixel
intrinsics) and returns new ``Cameras`` in the **same world frame and units** as the inputs, with
the same image size, so they can be handed straight to :meth:`FSMPipeline.render` (the pipeline
applies the input views' pose normalisation to them).

Trajectories:

* :func:`orbit_path`: a circle around a look-at point, about the scene's up axis (360 degrees by
  default; object-centric captures).
* :func:`spiral_path`: a forward-facing spiral around the mean input pose, looking at a focus point
  in front of it (LLFF style; hand-held and driving captures).
* :func:`interpolate_path`: a smooth path through the input cameras: positions linearly
  interpolated (LERP), rotations spherically interpolated (SLERP), intrinsics LERP.
* :func:`static_path`: one input camera repeated (for a "fixed camera, moving time" video).

Time schedules return ``[num_frames]`` timestamps in the **units of the input times** (the
pipeline normalises them like the inputs): :func:`bullet_time` (one instant, moving camera),
:func:`time_sweep` (from the first to the last input time). :func:`make_trajectory` combines one
of each by name, as the ``fsm render`` command does.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch

from .cameras import Cameras

__all__ = [
    "TIME_SCHEDULES",
    "TRAJECTORIES",
    "bullet_time",
    "focus_point",
    "interpolate_path",
    "look_at",
    "make_trajectory",
    "matrix_to_quaternion",
    "mean_pose",
    "orbit_path",
    "quaternion_to_matrix",
    "slerp",
    "spiral_path",
    "static_path",
    "time_sweep",
]

TRAJECTORIES = ("orbit", "spiral", "interp", "static")
TIME_SCHEDULES = ("fixed", "sweep")

Vector = Union[torch.Tensor, Sequence[float]]


# -- rotations ---------------------------------------------------------------------------------
def matrix_to_quaternion(rotation: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` -> unit quaternions ``[..., 4]`` as ``(w, x, y, z)`` with ``w >= 0``.

    Uses the numerically stable branch (largest of ``w, x, y, z``) for each matrix.
    """
    r = rotation.double()
    m00, m01, m02 = r[..., 0, 0], r[..., 0, 1], r[..., 0, 2]
    m10, m11, m12 = r[..., 1, 0], r[..., 1, 1], r[..., 1, 2]
    m20, m21, m22 = r[..., 2, 0], r[..., 2, 1], r[..., 2, 2]
    # Four candidate quaternions, each accurate when its leading component is the largest.
    candidates = torch.stack(
        [
            torch.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
            torch.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
            torch.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
        ],
        dim=-2,
    )  # [..., 4 candidates, 4]
    diag = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = diag.argmax(dim=-1)  # [...]
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., :1] < 0, -q, q)
    return q.to(rotation.dtype)


def quaternion_to_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """Quaternions ``[..., 4]`` ``(w, x, y, z)`` (normalised here) -> rotation matrices ``[..., 3, 3]``."""
    q = quaternion / quaternion.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ]
    return torch.stack(rows, dim=-2)


def slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical linear interpolation of unit quaternions along the shorter arc.

    Args:
        q0, q1: ``[..., 4]`` unit quaternions (broadcastable with ``t[..., None]``).
        t: interpolation weights ``[...]`` in ``[0, 1]`` (0 gives ``q0``, 1 gives ``q1``).
    """
    t = torch.as_tensor(t, dtype=q0.dtype, device=q0.device)[..., None]
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)  # shorter arc: q and -q are the same rotation
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    near = sin_theta < 1e-6  # (almost) the same rotation: fall back to normalised LERP
    safe = torch.where(near, torch.ones_like(sin_theta), sin_theta)
    w0 = torch.where(near, 1 - t, torch.sin((1 - t) * theta) / safe)
    w1 = torch.where(near, t, torch.sin(t * theta) / safe)
    q = w0 * q0 + w1 * q1
    return q / q.norm(dim=-1, keepdim=True)


def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """OpenCV camera-to-world matrices ``[N, 4, 4]`` for cameras at ``eye`` ``[N, 3]`` looking at
    ``target`` (``[N, 3]`` or ``[3]``), with the image "up" (the camera's ``-y``) as close as possible
    to the world direction ``up`` (``[3]``)."""
    eye = eye.double()
    target = torch.as_tensor(target, dtype=torch.float64).expand_as(eye)
    up = torch.as_tensor(up, dtype=torch.float64).expand_as(eye)
    z = _normalize(target - eye)  # forward
    x = torch.linalg.cross(z, up)  # right = forward x up (OpenCV: y down)
    degenerate = x.norm(dim=-1) < 1e-9  # looking along `up`: pick any right vector
    if degenerate.any():
        alt = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).expand_as(z)
        alt = torch.where((z[..., :1].abs() > 0.9), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), alt)
        x = torch.where(degenerate[..., None], torch.linalg.cross(z, alt), x)
    x = _normalize(x)
    y = torch.linalg.cross(z, x)  # down
    c2w = torch.eye(4, dtype=torch.float64).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = x, y, z, eye
    return c2w


# -- scene statistics ----------------------------------------------------------------------------
def _up_vector(cameras: Cameras) -> torch.Tensor:
    """Mean image-up direction of the inputs (``-y`` of OpenCV cameras), ``[3]`` float64."""
    return _normalize(-cameras.c2w[:, :3, 1].double().mean(0))


def mean_pose(cameras: Cameras) -> torch.Tensor:
    """The average input pose ``[4, 4]`` (float64): mean centre, mean forward, up from the mean image-up."""
    c2w = cameras.c2w.double()
    center = c2w[:, :3, 3].mean(0)
    forward = _normalize(c2w[:, :3, 2].mean(0))
    return look_at(center[None], center + forward, _up_vector(cameras))[0]


def focus_point(cameras: Cameras, min_conditioning: float = 1e-2) -> torch.Tensor:
    """The point ``[3]`` (float64) the input cameras look at.

    The least-squares point closest to all optical axes when the axes converge (object-centric
    captures, the point lies in front of the cameras); otherwise (near-parallel axes, e.g. a
    forward-facing or driving capture) a point on the mean optical axis, in front of the mean
    camera by ``max(4 x the spread of the camera centres, 1)`` world units (pass your own point
    to the trajectories when the scene's scale makes that a poor guess).
    """
    c2w = cameras.c2w.double()
    origins, dirs = c2w[:, :3, 3], _normalize(c2w[:, :3, 2])
    proj = torch.eye(3, dtype=torch.float64) - dirs[:, :, None] * dirs[:, None, :]  # [N, 3, 3]
    a, b = proj.sum(0), (proj @ origins[:, :, None]).sum(0)[:, 0]
    eigs = torch.linalg.eigvalsh(a / len(cameras))
    center = origins.mean(0)
    forward = _normalize(dirs.mean(0))
    if eigs[0] > min_conditioning:
        point = torch.linalg.solve(a, b)
        if ((point - origins) * dirs).sum(-1).mean() > 0:  # in front of the cameras on average
            return point
    spread = (origins - center).norm(dim=-1).max()
    return center + forward * max(4.0 * float(spread), 1.0)


def _check_num_frames(num_frames: int) -> int:
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}.")
    return num_frames


def _mean_intrinsics(cameras: Cameras, num_frames: int) -> torch.Tensor:
    return cameras.fxfycxcy.double().mean(0, keepdim=True).expand(num_frames, 4)


def _as_point(value: Optional[Vector], default: torch.Tensor, name: str) -> torch.Tensor:
    if value is None:
        return default
    point = torch.as_tensor(value, dtype=torch.float64).flatten()
    if point.shape != (3,):
        raise ValueError(f"{name} must be a 3D point/vector (3 numbers), got shape {tuple(point.shape)}.")
    return point


def _cameras(c2w: torch.Tensor, fxfycxcy: torch.Tensor, like: Cameras) -> Cameras:
    return Cameras(c2w.to(like.dtype), fxfycxcy.to(like.dtype), like.width, like.height, validate=False).to(like.device)


# -- trajectories --------------------------------------------------------------------------------
def orbit_path(
    cameras: Cameras,
    num_frames: int,
    *,
    center: Optional[Vector] = None,
    up: Optional[Vector] = None,
    radius: Optional[float] = None,
    height: Optional[float] = None,
    degrees: float = 360.0,
) -> Cameras:
    """Cameras on a circle about the ``up`` axis through ``center``, all looking at ``center``.

    Args:
        cameras: the input cameras (define the defaults, the intrinsics and the image size).
        num_frames: number of cameras.
        center: look-at point ``[3]``; defaults to :func:`focus_point`.
        up: world up ``[3]``; defaults to the inputs' mean image-up direction.
        radius: circle radius; defaults to the mean horizontal distance of the inputs from ``center``.
        height: signed offset of the circle's plane from ``center`` along ``up``; defaults to the
            inputs' mean.
        degrees: arc length; the path starts at the first input camera's azimuth. A full circle
            does not repeat its first camera at the end.

    Returns:
        ``Cameras`` with ``num_frames`` views (mean input intrinsics, input image size).
    """
    num_frames = _check_num_frames(num_frames)
    centers = cameras.c2w[:, :3, 3].double()
    center = _as_point(center, focus_point(cameras), "center")
    up = _normalize(_as_point(up, _up_vector(cameras), "up"))
    offsets = centers - center
    along = offsets @ up  # [N]
    horizontal = offsets - along[:, None] * up
    radius = float(horizontal.norm(dim=-1).mean()) if radius is None else float(radius)
    height = float(along.mean()) if height is None else float(height)
    if radius <= 0:
        raise ValueError(f"The orbit radius must be positive, got {radius} (pass radius= explicitly).")
    # Orthonormal basis of the orbit plane, starting at the first camera's azimuth.
    e1 = horizontal[0]
    for axis in ([1.0, 0.0, 0.0], [0.0, 0.0, 1.0]):  # the first camera sits on the axis: any start
        if e1.norm() > 1e-9:
            break
        e1 = torch.linalg.cross(up, torch.tensor(axis, dtype=torch.float64))
    e1 = _normalize(e1)
    e2 = torch.linalg.cross(up, e1)
    full = abs(degrees) >= 360.0
    steps = torch.arange(num_frames, dtype=torch.float64) / (num_frames if full else max(num_frames - 1, 1))
    angles = math.radians(degrees) * steps
    eye = center + height * up + radius * (torch.cos(angles)[:, None] * e1 + torch.sin(angles)[:, None] * e2)
    return _cameras(look_at(eye, center, up), _mean_intrinsics(cameras, num_frames), cameras)


def spiral_path(
    cameras: Cameras,
    num_frames: int,
    *,
    focus: Optional[Vector] = None,
    radius: Optional[float] = None,
    depth_amplitude: Optional[float] = None,
    rotations: float = 2.0,
) -> Cameras:
    """A forward-facing spiral around the mean input pose, every camera looking at ``focus``.

    The camera centre moves on an ellipse in the mean camera's image plane (``radius`` along its x
    and y axes) while oscillating along its viewing axis (``depth_amplitude``), ``rotations`` times.

    Args:
        cameras: the input cameras.
        num_frames: number of cameras.
        focus: look-at point ``[3]``; defaults to :func:`focus_point`.
        radius: in-plane radius; defaults to the largest in-plane distance of the input centres from
            their mean, or 5% of the focus distance when the inputs barely move.
        depth_amplitude: defaults to half of ``radius``.
        rotations: number of turns.
    """
    num_frames = _check_num_frames(num_frames)
    pose = mean_pose(cameras)
    center, right, down, forward = pose[:3, 3], pose[:3, 0], pose[:3, 1], pose[:3, 2]
    focus = _as_point(focus, focus_point(cameras), "focus")
    distance = float((focus - center).norm())
    if radius is None:
        offsets = cameras.c2w[:, :3, 3].double() - center
        in_plane = offsets - (offsets @ forward)[:, None] * forward
        radius = max(float(in_plane.norm(dim=-1).max()), 0.05 * distance)
    radius = float(radius)
    if radius <= 0:
        raise ValueError(f"The spiral radius must be positive, got {radius} (pass radius= explicitly).")
    depth_amplitude = 0.5 * radius if depth_amplitude is None else float(depth_amplitude)
    angles = 2 * math.pi * rotations * torch.arange(num_frames, dtype=torch.float64) / num_frames
    eye = (
        center
        + radius * torch.cos(angles)[:, None] * right
        + radius * torch.sin(angles)[:, None] * down
        + depth_amplitude * torch.sin(0.5 * angles)[:, None] * forward
    )
    return _cameras(look_at(eye, focus, -down), _mean_intrinsics(cameras, num_frames), cameras)


def interpolate_path(cameras: Cameras, num_frames: int, *, loop: bool = False) -> Cameras:
    """A path through the input cameras in their given order: SLERP rotations, LERP positions and intrinsics.

    The path is parametrised by arc length of the camera centres (constant speed), falling back to
    uniform steps per segment when the cameras do not move. The first frame is the first input
    camera; without ``loop`` the last frame is the last input camera, with ``loop`` the path returns
    towards the first one (without repeating it).
    """
    num_frames = _check_num_frames(num_frames)
    c2w = cameras.c2w.double()
    intr = cameras.fxfycxcy.double()
    if loop and len(cameras) > 1:
        c2w, intr = torch.cat([c2w, c2w[:1]]), torch.cat([intr, intr[:1]])
    n = c2w.shape[0]
    if n == 1:
        return static_path(cameras, num_frames)
    quats = matrix_to_quaternion(c2w[:, :3, :3])  # [n, 4]
    centers = c2w[:, :3, 3]
    seg = (centers[1:] - centers[:-1]).norm(dim=-1)  # [n-1]
    if float(seg.sum()) < 1e-9:
        seg = torch.ones_like(seg)
    knots = torch.cat([torch.zeros(1, dtype=torch.float64), seg.cumsum(0)])
    knots = knots / knots[-1]  # [n] in [0, 1]
    s = torch.arange(num_frames, dtype=torch.float64) / (num_frames if loop else max(num_frames - 1, 1))
    idx = (torch.searchsorted(knots, s, right=True) - 1).clamp(0, n - 2)  # segment of each sample
    width = (knots[idx + 1] - knots[idx]).clamp_min(1e-12)
    t = ((s - knots[idx]) / width).clamp(0, 1)
    rot = quaternion_to_matrix(slerp(quats[idx], quats[idx + 1], t))
    out = torch.eye(4, dtype=torch.float64).repeat(num_frames, 1, 1)
    out[:, :3, :3] = rot
    out[:, :3, 3] = torch.lerp(centers[idx], centers[idx + 1], t[:, None])
    return _cameras(out, torch.lerp(intr[idx], intr[idx + 1], t[:, None]), cameras)


def static_path(cameras: Cameras, num_frames: int, index: int = 0) -> Cameras:
    """One input camera (``index``) repeated ``num_frames`` times."""
    num_frames = _check_num_frames(num_frames)
    if not -len(cameras) <= index < len(cameras):
        raise IndexError(f"Camera index {index} is out of range for {len(cameras)} camera(s).")
    return cameras.select([index % len(cameras)] * num_frames)


# -- time schedules ------------------------------------------------------------------------------
def _times_tensor(times) -> torch.Tensor:
    times = torch.as_tensor(times, dtype=torch.float64).flatten()
    if times.numel() == 0:
        raise ValueError("Expected at least one input time, got none.")
    if not torch.isfinite(times).all():
        raise ValueError("Input times must be finite.")
    return times


def bullet_time(times, num_frames: int, at: Optional[float] = None) -> torch.Tensor:
    """Frozen time: ``[num_frames]`` copies of ``at`` (default: the middle of the input time range).

    ``times`` are the input views' times, in whatever unit the pipeline is given.
    """
    num_frames = _check_num_frames(num_frames)
    times = _times_tensor(times)
    value = 0.5 * float(times.min() + times.max()) if at is None else float(at)
    return torch.full((num_frames,), value, dtype=torch.float64)


def time_sweep(times, num_frames: int, start: Optional[float] = None, end: Optional[float] = None) -> torch.Tensor:
    """Linearly moving time: ``[num_frames]`` from ``start`` to ``end`` (defaults: first and last input time)."""
    num_frames = _check_num_frames(num_frames)
    times = _times_tensor(times)
    start = float(times.min()) if start is None else float(start)
    end = float(times.max()) if end is None else float(end)
    return torch.linspace(start, end, num_frames, dtype=torch.float64)


def make_trajectory(
    cameras: Cameras,
    times,
    num_frames: int,
    trajectory: str = "interp",
    time: str = "sweep",
) -> Tuple[Cameras, torch.Tensor]:
    """A camera path and a time schedule by name.

    Args:
        cameras: the input cameras.
        times: the input times ``[N]`` (any unit).
        num_frames: length of the video.
        trajectory: one of :data:`TRAJECTORIES`: ``"orbit"``, ``"spiral"``, ``"interp"`` (through the
            inputs) or ``"static"`` (the first input camera).
        time: ``"fixed"`` (bullet time at the middle of the inputs' time range) or ``"sweep"``.

    Returns:
        ``(Cameras with num_frames views, times [num_frames])``. ``"static"`` with ``"fixed"`` is a
        still image repeated and is rejected.
    """
    builders = {"orbit": orbit_path, "spiral": spiral_path, "interp": interpolate_path, "static": static_path}
    if trajectory not in builders:
        raise ValueError(f"trajectory must be one of {list(TRAJECTORIES)}, got {trajectory!r}.")
    if time not in TIME_SCHEDULES:
        raise ValueError(f"time must be one of {list(TIME_SCHEDULES)}, got {time!r}.")
    if trajectory == "static" and time == "fixed":
        raise ValueError("trajectory='static' with time='fixed' renders one still frame; use time='sweep'.")
    path = builders[trajectory](cameras, num_frames)
    schedule = bullet_time(times, num_frames) if time == "fixed" else time_sweep(times, num_frames)
    return path, schedule
