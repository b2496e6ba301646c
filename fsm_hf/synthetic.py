"""Procedural 4D scenes with exact ground truth for any camera and time.

A :class:`SyntheticScene` is a small dynamic world fully determined by a seed:

* a **room** (an axis-aligned box seen from inside) whose six faces carry procedural colour
  textures (checkerboards, stripes, smooth noise), with soft contact shadows on the floor;
* **moving textured objects** (spheres and boxes), at least one per motion kind: ``linear``
  (constant velocity), ``circular`` (orbiting a point), ``bouncing`` (hopping on the floor) and
  ``rotating`` (spinning in place; the texture turns with the object);
* **soft Gaussian blobs** (semi-transparent, drifting on Lissajous paths), composited over the
  surfaces in depth order and hidden behind whatever surface is nearer;
* a **handheld camera path**: an orbit arc, a forward dolly or a lateral truck, each with smooth
  speed variation and small positional and rotational jitter.

Everything is rendered by the analytic ray caster below (plain torch, CPU, batched over views
and pixels), so ``scene.render(c2w, fxfycxcy, times)`` gives the ground-truth image of **any**
camera at **any** time, and the captured video is just ``render`` at the trajectory cameras.

Conventions (DESIGN §2): images ``[N, 3, H, W]`` float in ``[0, 1]``; intrinsics ``fxfycxcy``
``[N, 4]`` in pixels of the rendered ``H x W``; ``c2w`` ``[N, 4, 4]`` OpenCV camera-to-world
(x right, y down, z forward); pixel centres at ``+0.5``. The world is y-up, metres-like units,
floor at ``y = 0``. Scene time is continuous in ``[0, 1]``: captured frame ``i`` of ``N`` sits at
``i / (N - 1)``. (The model's time ``tau`` in ``[-1, 1]`` is ``2 t - 1``; pose and time
normalisation for the model is the pipeline's job.)

Example::

    scene = generate_scene(seed=3, num_frames=32, height=64, width=64)
    frames = scene.frames                      # captured video: c2w, fxfycxcy, times, images
    inputs, targets = scene.split(num_targets=8, seed=0)
    gt = scene.render(targets.c2w, targets.fxfycxcy, targets.times)   # == targets.images
"""

from __future__ import annotations

import colorsys
import math
import random
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from modeling.rays import compute_rays

__all__ = [
    "CAMERA_PATHS",
    "HELD_OUT_GAP_FRACTIONS",
    "MOTION_KINDS",
    "SyntheticScene",
    "SyntheticViews",
    "generate_scene",
]

#: Object motion kinds; every scene with >= 4 objects contains each of them at least once.
MOTION_KINDS = ("linear", "circular", "bouncing", "rotating")
#: Camera trajectory kinds.
CAMERA_PATHS = ("orbit", "forward", "lateral")
#: Where in a gap between consecutive input times held-out views fall (fractions of the gap).
HELD_OUT_GAP_FRACTIONS = (0.25, 0.75)

_SPHERE, _BOX, _ROOM = 0, 1, 2  # surface kinds
_NUM_ROOM_FACES = 6  # texture ids 0..5: -x, +x, floor (-y), ceiling (+y), -z, +z
_NEAR = 1e-3  # rays ignore hits closer than this
_NOISE_TERMS = 3  # sinusoids summed by the smooth-noise texture term
_OBJECT_REGION_RADIUS = 1.4  # object centres stay within this xz radius of the scene centre
_CAMERA_MIN_RADIUS = 2.6  # cameras stay at least this far (xz) from the scene centre


# --------------------------------------------------------------------------------------------
# Parameter containers (all tensors float32 on CPU; built once by generate_scene)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProceduralTextures:
    """Solid (3D) procedural colour textures, one row per surface (``S`` surfaces).

    The colour at a local point ``p`` mixes ``color_a`` and ``color_b`` by a weighted sum of a
    3D checkerboard (``checker_frequency``, ``checker_offset``) and a sinusoidal stripe
    (``stripe_wavevector``, ``stripe_phase``), then modulates it by a smooth noise made of
    ``_NOISE_TERMS`` random sinusoids.
    """

    color_a: torch.Tensor  # [S, 3]
    color_b: torch.Tensor  # [S, 3]
    checker_frequency: torch.Tensor  # [S]
    checker_offset: torch.Tensor  # [S, 3]
    checker_weight: torch.Tensor  # [S] in [0, 1]; 1 - weight goes to the stripes
    stripe_wavevector: torch.Tensor  # [S, 3]
    stripe_phase: torch.Tensor  # [S]
    noise_wavevectors: torch.Tensor  # [S, M, 3]
    noise_phases: torch.Tensor  # [S, M]
    noise_amplitude: torch.Tensor  # [S]

    def colors(self, texture_ids: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Colours ``[3, ...]`` of textures ``texture_ids [...]`` (long) at local
        ``points [3, ...]`` (component-first layout)."""
        num_noise = self.noise_phases.shape[1]
        table = torch.cat([  # [C, S]: every parameter of every texture, one row per scalar
            self.color_a.T, self.color_b.T, self.checker_frequency[None], self.checker_offset.T,
            self.checker_weight[None], self.stripe_wavevector.T, self.stripe_phase[None],
            self.noise_wavevectors.flatten(1).T, self.noise_phases.T, self.noise_amplitude[None],
        ])
        params = table[:, texture_ids]  # [C, ...]
        (color_a, color_b, frequency, offset, weight, stripe_k, stripe_phase, noise_k, noise_phase, noise_amplitude) = (
            params.split([3, 3, 1, 3, 1, 3, 1, 3 * num_noise, num_noise, 1])
        )
        x, y, z = points
        frequency = frequency[0]
        cells = (
            torch.floor(x * frequency + offset[0]) + torch.floor(y * frequency + offset[1]) + torch.floor(z * frequency + offset[2])
        )
        checker = torch.remainder(cells, 2.0)  # [...] in {0, 1}
        stripe = 0.5 + 0.5 * torch.sin(x * stripe_k[0] + y * stripe_k[1] + z * stripe_k[2] + stripe_phase[0])
        mix = weight[0] * checker + (1.0 - weight[0]) * stripe
        noise = torch.zeros_like(x)
        for m in range(num_noise):
            k = noise_k[3 * m : 3 * m + 3]
            noise = noise + torch.sin(x * k[0] + y * k[1] + z * k[2] + noise_phase[m])
        modulation = 1.0 + noise_amplitude[0] * noise / num_noise
        return ((color_a + (color_b - color_a) * mix) * modulation).clamp(0.0, 1.0)


@dataclass(frozen=True)
class MovingObjects:
    """``K`` rigid textured objects (spheres or boxes) moving in time ``t`` in ``[0, 1]``.

    Position ``c(t) = base + velocity t + orbit_radius (cos a, 0, sin a) + bounce_height
    |sin(pi bounce_frequency t + bounce_phase)| e_y`` with ``a = orbit_speed t + orbit_phase``;
    orientation: rotation by ``spin_speed t + spin_phase`` about ``spin_axis``. Each object's
    ``motion`` kind decides which of these terms are non-zero.
    """

    motion: tuple  # K names from MOTION_KINDS
    kind: torch.Tensor  # [K] long: _SPHERE or _BOX
    half_extent: torch.Tensor  # [K, 3]; spheres use [:, 0] as radius
    base: torch.Tensor  # [K, 3]
    velocity: torch.Tensor  # [K, 3]
    orbit_radius: torch.Tensor  # [K]
    orbit_speed: torch.Tensor  # [K] radians per unit time
    orbit_phase: torch.Tensor  # [K]
    bounce_height: torch.Tensor  # [K]
    bounce_frequency: torch.Tensor  # [K] hops per unit time
    bounce_phase: torch.Tensor  # [K]
    spin_axis: torch.Tensor  # [K, 3] unit
    spin_speed: torch.Tensor  # [K] radians per unit time
    spin_phase: torch.Tensor  # [K]

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def centers(self, times: torch.Tensor) -> torch.Tensor:
        """Object centres ``[N, K, 3]`` at ``times [N]``."""
        t = times[:, None]  # [N, 1]
        angle = self.orbit_speed * t + self.orbit_phase  # [N, K]
        orbit = torch.stack([torch.cos(angle), torch.zeros_like(angle), torch.sin(angle)], -1)
        hop = torch.abs(torch.sin(math.pi * self.bounce_frequency * t + self.bounce_phase))  # [N, K]
        up = torch.tensor([0.0, 1.0, 0.0])
        return (
            self.base
            + self.velocity * t[..., None]
            + self.orbit_radius[:, None] * orbit
            + (self.bounce_height * hop)[..., None] * up
        )

    def rotations(self, times: torch.Tensor) -> torch.Tensor:
        """Object-to-world rotations ``[N, K, 3, 3]`` at ``times [N]``."""
        angle = self.spin_speed * times[:, None] + self.spin_phase  # [N, K]
        return _axis_angle_to_matrix(self.spin_axis.expand(angle.shape + (3,)), angle)


@dataclass(frozen=True)
class GaussianBlobs:
    """``B`` isotropic soft blobs: centre ``base + amplitude sin(2 pi frequency t + phase)`` per
    axis, standard deviation ``sigma``, peak opacity ``opacity``, flat ``color``.

    A ray whose closest approach to a centre is ``r`` gets opacity ``opacity exp(-r^2 / (2
    sigma^2)) (1 - r^2 / (3 sigma)^2)^2`` (the window makes it exactly zero beyond 3 sigma)."""

    base: torch.Tensor  # [B, 3]
    amplitude: torch.Tensor  # [B, 3]
    frequency: torch.Tensor  # [B, 3]
    phase: torch.Tensor  # [B, 3]
    sigma: torch.Tensor  # [B]
    opacity: torch.Tensor  # [B]
    color: torch.Tensor  # [B, 3]

    def __len__(self) -> int:
        return int(self.sigma.shape[0])

    def centers(self, times: torch.Tensor) -> torch.Tensor:
        """Blob centres ``[N, B, 3]`` at ``times [N]``."""
        angle = 2.0 * math.pi * self.frequency * times[:, None, None] + self.phase  # [N, B, 3]
        return self.base + self.amplitude * torch.sin(angle)


@dataclass(frozen=True)
class CameraPath:
    """A handheld camera trajectory over time ``t`` in ``[0, 1]`` (float64 parameters).

    ``kind`` ``"orbit"``: the eye moves on an arc of ``arc`` radians around ``pivot`` (radius
    and height drifting linearly); ``"forward"``/``"lateral"``: the eye moves on the segment
    ``eye_start -> eye_end``. The look-at point moves on ``target_start -> target_end``.
    Progress along the path is ``s(t) = t + speed_wobble sin(2 pi t) / (2 pi)`` (monotonic
    when ``|speed_wobble| < 1``). Handheld shake adds ``sum_j amp sin(2 pi f t + phase)`` to
    the eye position (``position_jitter_*``, ``[J, 3]``) and to small camera-frame
    rotation angles pitch/yaw/roll (``rotation_jitter_*``, radians).
    """

    kind: str
    horizontal_fov: float  # radians
    pivot: torch.Tensor  # [3]
    radius: tuple  # (start, end) orbit radius
    height: tuple  # (start, end) eye height for orbits
    start_angle: float
    arc: float
    eye_start: torch.Tensor  # [3]
    eye_end: torch.Tensor  # [3]
    target_start: torch.Tensor  # [3]
    target_end: torch.Tensor  # [3]
    speed_wobble: float
    position_jitter_amplitude: torch.Tensor  # [J, 3]
    position_jitter_frequency: torch.Tensor  # [J, 3]
    position_jitter_phase: torch.Tensor  # [J, 3]
    rotation_jitter_amplitude: torch.Tensor  # [J, 3]
    rotation_jitter_frequency: torch.Tensor  # [J, 3]
    rotation_jitter_phase: torch.Tensor  # [J, 3]

    def eye_and_target(self, times: torch.Tensor):
        """Eye positions and look-at points, each ``[N, 3]`` float64, at ``times [N]``."""
        t = times.to(torch.float64)
        s = (t + self.speed_wobble * torch.sin(2.0 * math.pi * t) / (2.0 * math.pi))[:, None]  # [N, 1]
        if self.kind == "orbit":
            angle = self.start_angle + self.arc * s
            radius = self.radius[0] + (self.radius[1] - self.radius[0]) * s
            height = self.height[0] + (self.height[1] - self.height[0]) * s
            eye = self.pivot + torch.cat([radius * torch.cos(angle), height, radius * torch.sin(angle)], -1)
        else:
            eye = self.eye_start + (self.eye_end - self.eye_start) * s
        target = self.target_start + (self.target_end - self.target_start) * s
        shake = _sum_of_sines(t, self.position_jitter_amplitude, self.position_jitter_frequency, self.position_jitter_phase)
        eye = eye + shake
        return eye, target

    def shake_angles(self, times: torch.Tensor) -> torch.Tensor:
        """Handheld rotation jitter ``[N, 3]`` (pitch, yaw, roll in radians, float64)."""
        t = times.to(torch.float64)
        return _sum_of_sines(t, self.rotation_jitter_amplitude, self.rotation_jitter_frequency, self.rotation_jitter_phase)


@dataclass(eq=False)
class SyntheticViews:
    """Posed views of a synthetic scene: cameras, times and (optionally) their images.

    Attributes:
        c2w: ``[N, 4, 4]`` OpenCV camera-to-world.
        fxfycxcy: ``[N, 4]`` pixel intrinsics of ``height x width`` images.
        times: ``[N]`` scene time in ``[0, 1]``.
        height, width: image size in pixels.
        images: ``[N, 3, H, W]`` in ``[0, 1]``, or ``None`` when not rendered.
        frame_indices: ``[N]`` long index into the captured sequence, ``-1`` for views that are
            not captured frames (held-out times or off-trajectory cameras).
    """

    c2w: torch.Tensor
    fxfycxcy: torch.Tensor
    times: torch.Tensor
    height: int
    width: int
    images: Optional[torch.Tensor] = None
    frame_indices: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.times.shape[0])

    def to_scene(self, name: str = "synthetic", **metadata):
        """These views as a :class:`fsm_hf.scene.Scene` (source format ``"synthetic"``), with
        the images attached when rendered; extra keyword arguments go to ``metadata``."""
        from .cameras import Cameras
        from .scene import Scene

        scene = Scene.from_tensors(
            Cameras(self.c2w, self.fxfycxcy, self.width, self.height),
            images=self.images,
            times=self.times,
            names=[f"{name}/view_{i:05d}" for i in range(len(self))],
            source_format="synthetic",
        )
        if self.frame_indices is not None:
            scene.frame_indices = [int(i) for i in self.frame_indices]
        scene.metadata.update(scene_name=name, **metadata)
        return scene

    def __getitem__(self, index) -> "SyntheticViews":
        """A subset of the views (``index``: int, slice, list or index tensor)."""
        if isinstance(index, int):
            index = [index]
        return replace(
            self,
            c2w=self.c2w[index],
            fxfycxcy=self.fxfycxcy[index],
            times=self.times[index],
            images=None if self.images is None else self.images[index],
            frame_indices=None if self.frame_indices is None else self.frame_indices[index],
        )


# --------------------------------------------------------------------------------------------
# The scene
# --------------------------------------------------------------------------------------------


@dataclass(eq=False, repr=False)
class SyntheticScene:
    """A procedural dynamic scene with a captured handheld video; see the module docstring.

    Build one with :func:`generate_scene`. ``height``/``width`` are the captured frames' size
    (other sizes can be rendered; the intrinsics then scale with the image), ``supersample``
    the per-axis anti-aliasing factor used by :meth:`render` by default.
    """

    seed: int
    num_frames: int
    height: int
    width: int
    supersample: int
    room_min: torch.Tensor  # [3] room box corner (x, 0, z)
    room_max: torch.Tensor  # [3]
    light_direction: torch.Tensor  # [3] unit, pointing towards the light
    ambient: float
    textures: ProceduralTextures  # rows: 6 room faces, then one per object
    objects: MovingObjects
    blobs: GaussianBlobs
    camera_path: CameraPath
    max_pixels_per_chunk: int = 1 << 17
    _frames_cache: Optional[SyntheticViews] = field(default=None, init=False)

    def __repr__(self) -> str:
        motions = ", ".join(self.objects.motion)
        return (
            f"SyntheticScene(seed={self.seed}, num_frames={self.num_frames}, size={self.height}x{self.width}, "
            f"camera_path={self.camera_path.kind!r}, objects=[{motions}], blobs={len(self.blobs)})"
        )

    # ---- cameras ---------------------------------------------------------------------------

    def intrinsics(self, num_views: int, height: Optional[int] = None, width: Optional[int] = None) -> torch.Tensor:
        """Pixel intrinsics ``[num_views, 4]`` of the scene camera for ``height x width`` images
        (square pixels, principal point at the image centre)."""
        height, width = height or self.height, width or self.width
        focal = 0.5 * width / math.tan(0.5 * self.camera_path.horizontal_fov)
        return torch.tensor([focal, focal, 0.5 * width, 0.5 * height], dtype=torch.float32).repeat(num_views, 1)

    def trajectory(self, times: torch.Tensor, height: Optional[int] = None, width: Optional[int] = None):
        """Cameras of the handheld path at continuous ``times [N]`` in ``[0, 1]``.

        Returns:
            ``(c2w [N, 4, 4], fxfycxcy [N, 4])`` (OpenCV, pixels of ``height x width``).
        """
        times = _as_times(times)
        eye, target = self.camera_path.eye_and_target(times)
        c2w = _camera_to_world(eye, target, self.camera_path.shake_angles(times))
        return c2w, self.intrinsics(len(times), height, width)

    def frame_times(self) -> torch.Tensor:
        """Times ``[num_frames]`` of the captured frames: ``i / (num_frames - 1)``."""
        return torch.linspace(0.0, 1.0, self.num_frames, dtype=torch.float32)

    @property
    def frames(self) -> SyntheticViews:
        """The captured video: trajectory cameras at :meth:`frame_times` with rendered images
        (rendered on first access, then cached)."""
        if self._frames_cache is None:
            times = self.frame_times()
            c2w, fxfycxcy = self.trajectory(times)
            images = self.render(c2w, fxfycxcy, times)
            self._frames_cache = SyntheticViews(
                c2w, fxfycxcy, times, self.height, self.width, images, torch.arange(self.num_frames)
            )
        return self._frames_cache

    # ---- held-out views --------------------------------------------------------------------

    def held_out_views(
        self,
        input_times: torch.Tensor,
        num_views: int = 8,
        *,
        seed: int = 0,
        off_trajectory_fraction: float = 0.5,
        offset_range: tuple = (0.3, 0.8),
        render: bool = True,
    ) -> SyntheticViews:
        """Target views at times strictly between consecutive ``input_times`` (a random
        fraction in ``HELD_OUT_GAP_FRACTIONS = (0.25, 0.75)`` of the gap), on the handheld path or off it.

        Off-trajectory views (the first ``round(off_trajectory_fraction * num_views)``) move the
        eye by ``offset_range`` units sideways, up/down and backwards (never towards the
        objects) and keep looking at the path's look-at point, so the viewing direction turns
        as well. Deterministic given ``seed``.

        Args:
            input_times: ``[V]`` times of the input views (at least two distinct values).
            num_views: number of target views ``T``.
            render: render their images (``images`` ``[T, 3, H, W]``); else ``images=None``.

        Returns:
            :class:`SyntheticViews` of ``T`` views sorted by time, ``frame_indices`` all ``-1``.
        """
        unique_times = torch.unique(_as_times(input_times))  # sorted
        if unique_times.numel() < 2:
            raise ValueError("held_out_views needs at least two distinct input times to choose in-between times.")
        if not 0.0 <= off_trajectory_fraction <= 1.0:
            raise ValueError(f"off_trajectory_fraction must be in [0, 1], got {off_trajectory_fraction}.")
        rng = random.Random(f"held-out/{self.seed}/{seed}")
        gaps = [rng.randrange(unique_times.numel() - 1) for _ in range(num_views)]
        fractions = [rng.uniform(*HELD_OUT_GAP_FRACTIONS) for _ in range(num_views)]
        lo, hi = unique_times[gaps], unique_times[[g + 1 for g in gaps]]
        times = lo + (hi - lo) * torch.tensor(fractions, dtype=torch.float32)

        eye, target = self.camera_path.eye_and_target(times)
        num_off = int(round(off_trajectory_fraction * num_views))
        offsets = torch.zeros(num_views, 3, dtype=torch.float64)
        for i in range(num_off):
            offsets[i] = self._off_trajectory_offset(eye[i], target[i], rng, offset_range)
        c2w = _camera_to_world(eye + offsets, target, self.camera_path.shake_angles(times))
        order = torch.argsort(times, stable=True)
        views = SyntheticViews(
            c2w[order], self.intrinsics(num_views), times[order], self.height, self.width,
            frame_indices=torch.full((num_views,), -1, dtype=torch.long),
        )
        if render:
            views.images = self.render(views.c2w, views.fxfycxcy, views.times)
        return views

    def _off_trajectory_offset(self, eye, target, rng: random.Random, offset_range) -> torch.Tensor:
        """A random eye displacement ``[3]`` (float64) of length in ``offset_range`` that goes
        sideways, vertically and backwards only, and keeps the eye inside the room."""
        forward = target - eye
        forward = forward / forward.norm()
        up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
        side = torch.linalg.cross(forward, up)
        side = side / side.norm()
        direction = (
            rng.choice((-1.0, 1.0)) * rng.uniform(0.5, 1.0) * side
            + rng.uniform(-0.5, 0.5) * up
            - rng.uniform(0.0, 0.5) * forward
        )
        offset = direction / direction.norm() * rng.uniform(*offset_range)
        # stay 0.3 units inside the walls, floor and ceiling
        lo = self.room_min.to(torch.float64) + 0.3
        hi = self.room_max.to(torch.float64) - 0.3
        return torch.minimum(torch.maximum(eye + offset, lo), hi) - eye

    def split(
        self,
        num_inputs: Optional[int] = None,
        num_targets: int = 8,
        *,
        seed: int = 0,
        off_trajectory_fraction: float = 0.5,
    ):
        """Inputs and held-out targets for novel view-time synthesis.

        Inputs are ``num_inputs`` captured frames evenly spread over the video (all frames when
        ``None``); targets are :meth:`held_out_views` between consecutive input times.

        Returns:
            ``(inputs, targets)``, two :class:`SyntheticViews` with images.
        """
        num_inputs = self.num_frames if num_inputs is None else num_inputs
        if not 2 <= num_inputs <= self.num_frames:
            raise ValueError(f"num_inputs must be in [2, num_frames={self.num_frames}], got {num_inputs}.")
        indices = torch.linspace(0, self.num_frames - 1, num_inputs).round().long()
        inputs = self.frames[indices]
        targets = self.held_out_views(
            inputs.times, num_targets, seed=seed, off_trajectory_fraction=off_trajectory_fraction
        )
        return inputs, targets

    # ---- rendering -------------------------------------------------------------------------

    def render(
        self,
        c2w: torch.Tensor,
        fxfycxcy: torch.Tensor,
        times: torch.Tensor,
        height: Optional[int] = None,
        width: Optional[int] = None,
        *,
        supersample: Optional[int] = None,
    ) -> torch.Tensor:
        """Ground-truth images of arbitrary cameras at arbitrary times.

        Args:
            c2w: ``[N, 4, 4]`` OpenCV camera-to-world.
            fxfycxcy: ``[N, 4]`` intrinsics in pixels of the ``height x width`` output.
            times: ``[N]`` scene times (``[0, 1]`` is the captured span; other values
                extrapolate the motions).
            height, width: output size; default the scene's.
            supersample: anti-aliasing factor per axis (box filter over ``s x s`` sub-pixels);
                default ``self.supersample``.

        Returns:
            ``[N, 3, height, width]`` float32 in ``[0, 1]``.
        """
        height, width = height or self.height, width or self.width
        factor = self.supersample if supersample is None else int(supersample)
        if factor < 1:
            raise ValueError(f"supersample must be >= 1, got {factor}.")
        c2w, fxfycxcy, times = _check_cameras(c2w, fxfycxcy, times)
        num_views = times.shape[0]
        views_per_chunk = max(1, self.max_pixels_per_chunk // (height * width * factor * factor))
        chunks = []
        for start in range(0, num_views, views_per_chunk):
            stop = min(start + views_per_chunk, num_views)
            image = self._render_pixels(
                c2w[start:stop], fxfycxcy[start:stop] * factor, times[start:stop], height * factor, width * factor
            )  # [n, 3, H*f, W*f]
            if factor > 1:
                image = F.avg_pool2d(image, factor)  # [n, 3, H, W]
            chunks.append(image)
        if not chunks:
            return torch.zeros(0, 3, height, width)
        return torch.cat(chunks).clamp_(0.0, 1.0)

    def _render_pixels(self, c2w, fxfycxcy, times, height, width) -> torch.Tensor:
        """Ray-cast one chunk of views: ``[n, 3, height, width]`` (no anti-aliasing).

        Vectors are kept component-first (``[3, n, P]``, ``P = height * width``) so that dot
        products are plain elementwise sums; per-view quantities broadcast as ``[3, n, 1]``.
        """
        n, num_pixels = times.shape[0], height * width
        _, ray_d = compute_rays(fxfycxcy[None], c2w[None], height, width)  # [1, n, 3, H, W]
        directions = ray_d[0].transpose(0, 1).reshape(3, n, num_pixels)  # [3, n, P]
        # guard against exact zeros in per-axis divisions
        directions = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
        origins = c2w[:, :3, 3].T[:, :, None]  # [3, n, 1]

        # 1. every surface's pose per view: index 0 is the room (identity rotation)
        room_center = 0.5 * (self.room_min + self.room_max)  # [3]
        centers = torch.cat([room_center.expand(n, 1, 3), self.objects.centers(times)], 1)  # [n, 1+K, 3]
        rotations = torch.cat([torch.eye(3).expand(n, 1, 3, 3), self.objects.rotations(times)], 1)  # [n, 1+K, 3, 3]
        half_extents = torch.cat([0.5 * (self.room_max - self.room_min)[None], self.objects.half_extent])  # [1+K, 3]
        kinds = torch.cat([torch.tensor([_ROOM]), self.objects.kind])  # [1+K]

        # 2. nearest hit: depth [n, P] and the surface it belongs to
        depth, surface = self._nearest_hit(origins, directions, centers, rotations, half_extents, kinds)

        # 3. local hit point, normal and texture id of that surface
        poses = torch.cat([centers, rotations.flatten(2)], -1).permute(2, 0, 1)  # [12, n, 1+K]
        hit_pose = torch.gather(poses, 2, surface[None].expand(12, n, num_pixels))  # [12, n, P]
        hit_center, hit_rotation = hit_pose[:3], hit_pose[3:].reshape(3, 3, n, num_pixels)
        world_points = origins + depth * directions  # [3, n, P]
        local = _rotate_inverse(hit_rotation, world_points - hit_center)  # [3, n, P]
        half = half_extents.T[:, surface]  # [3, n, P]
        kind = kinds[surface]  # [n, P]
        local, box_normal, box_axis = _snap_to_box_face(local, half)
        sphere_normal = local / torch.sqrt(_dot(local, local)).clamp_min(1e-8)
        normal_local = torch.where(kind == _SPHERE, sphere_normal, torch.where(kind == _ROOM, -box_normal, box_normal))
        normals = _rotate(hit_rotation, normal_local)  # [3, n, P]
        room_face = 2 * box_axis + (_dot(box_normal, torch.ones(3, 1, 1)) > 0).long()  # [n, P], 0..5 for room hits
        texture_id = torch.where(surface == 0, room_face, _NUM_ROOM_FACES - 1 + surface)
        albedo = self.textures.colors(texture_id, local)  # [3, n, P]

        # 4. shading: Lambert + ambient, soft contact shadows on the floor
        lambert = _dot(normals, self.light_direction[:, None, None]).clamp_min(0.0)  # [n, P]
        shade = self.ambient + (1.0 - self.ambient) * lambert
        shade = torch.where(texture_id == 2, shade * self._floor_shadow(world_points, centers[:, 1:]), shade)
        color = albedo * shade  # [3, n, P]

        # 5. soft blobs in front of the surface, composited front to back
        color = self._composite_blobs(color, origins, directions, depth, times)
        return color.reshape(3, n, height, width).transpose(0, 1)  # [n, 3, H, W]

    @staticmethod
    def _nearest_hit(origins, directions, centers, rotations, half_extents, kinds):
        """Depth ``[n, P]`` and surface index ``[n, P]`` (0 = room) of the nearest hit, for
        rays ``origins [3, n, 1]``, ``directions [3, n, P]`` and surfaces posed per view."""
        # the room: rays start inside, so the hit is where they leave the box
        room_lo = (centers[:, 0] - half_extents[0]).T[:, :, None]  # [3, n, 1]
        room_hi = (centers[:, 0] + half_extents[0]).T[:, :, None]
        exits = (torch.where(directions > 0, room_hi, room_lo) - origins) / directions  # [3, n, P]
        depth = exits.amin(0)  # [n, P]
        surface = torch.zeros_like(depth, dtype=torch.long)
        for index in range(1, kinds.shape[0]):
            center = centers[:, index].T[:, :, None]  # [3, n, 1]
            if kinds[index] == _SPHERE:
                offset = origins - center  # [3, n, 1]
                b = _dot(offset, directions)  # [n, P]
                c = _dot(offset, offset) - half_extents[index, 0] ** 2  # [n, 1]
                disc = b * b - c
                t = -b - torch.sqrt(disc.clamp_min(0.0))
                hit = (disc > 0) & (t > _NEAR)
            else:  # box: slab test in the box frame
                rotation = rotations[:, index].permute(1, 2, 0)[:, :, :, None]  # [3, 3, n, 1]
                local_o = _rotate_inverse(rotation, origins - center)  # [3, n, 1]
                local_d = _rotate_inverse(rotation, directions)  # [3, n, P]
                local_d = torch.where(local_d.abs() < 1e-9, torch.full_like(local_d, 1e-9), local_d)
                half = half_extents[index][:, None, None]  # [3, 1, 1]
                t_lo = (-half - local_o) / local_d
                t_hi = (half - local_o) / local_d
                t = torch.minimum(t_lo, t_hi).amax(0)  # [n, P] entry depth
                hit = (t <= torch.maximum(t_lo, t_hi).amin(0)) & (t > _NEAR)
            closer = hit & (t < depth)
            depth = torch.where(closer, t, depth)
            surface = torch.where(closer, index, surface)
        return depth, surface

    def _floor_shadow(self, points, object_centers) -> torch.Tensor:
        """Soft contact-shadow factor ``[n, P]`` in ``(0, 1]`` for floor points ``[3, n, P]``
        below objects centred at ``object_centers [n, K, 3]``."""
        shadow = torch.ones_like(points[0])
        for index in range(object_centers.shape[1]):
            size = float(self.objects.half_extent[index].max())
            center = object_centers[:, index, :, None]  # [n, 3, 1]
            dx, dz = points[0] - center[:, 0], points[2] - center[:, 2]  # [n, P]
            elevation = (center[:, 1] - size).clamp_min(0.0)  # [n, 1] gap under the object
            spread = (0.8 * size * (1.0 + elevation)) ** 2
            falloff = (dx * dx + dz * dz) / spread
            darkness = 0.45 * torch.exp(-elevation) * torch.exp(-falloff) * _compact_window(falloff / 4.0)
            shadow = shadow * (1.0 - darkness)
        return shadow

    def _composite_blobs(self, color, origins, directions, depth, times) -> torch.Tensor:
        """Composite the Gaussian blobs over ``color [3, n, P]`` front to back; blobs whose
        closest approach lies behind the surface hit (``depth [n, P]``) are hidden."""
        if len(self.blobs) == 0:
            return color
        centers = self.blobs.centers(times)  # [n, B, 3]
        alphas, depths = [], []
        for index in range(len(self.blobs)):
            to_center = centers[:, index].T[:, :, None] - origins  # [3, n, 1]
            along = _dot(to_center, directions)  # [n, P] depth of closest approach
            distance_sq = (_dot(to_center, to_center) - along * along).clamp_min(0.0)
            scaled_sq = distance_sq / float(self.blobs.sigma[index]) ** 2  # (distance / sigma)^2
            alpha = self.blobs.opacity[index] * torch.exp(-0.5 * scaled_sq) * _compact_window(scaled_sq / 9.0)
            alphas.append(torch.where((along > _NEAR) & (along < depth), alpha, torch.zeros_like(alpha)))
            depths.append(along)
        order = torch.argsort(torch.stack(depths), dim=0)  # [B, n, P] front to back
        alpha = torch.gather(torch.stack(alphas), 0, order)  # [B, n, P]
        blob_color = self.blobs.color.T[:, order]  # [3, B, n, P]
        transmittance = torch.cumprod(1.0 - alpha, dim=0)  # after each blob
        before = torch.cat([torch.ones_like(alpha[:1]), transmittance[:-1]], 0)
        return (alpha * before * blob_color).sum(1) + transmittance[-1] * color

    # ---- adapters --------------------------------------------------------------------------

    def to_scene(self):
        """The captured video as a :class:`fsm_hf.scene.Scene` (images held in memory, times in
        ``[0, 1]``, ``metadata["seed"]``), so it goes wherever a scene read from disk goes."""
        return self.frames.to_scene(name=f"synthetic_{self.seed}", seed=self.seed)


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def generate_scene(
    seed: int,
    num_frames: int = 32,
    height: int = 64,
    width: int = 64,
    *,
    num_objects: int = 4,
    num_blobs: int = 5,
    camera_path: Optional[str] = None,
    supersample: int = 1,
) -> SyntheticScene:
    """A procedural dynamic scene, fully determined by its arguments (bitwise).

    Args:
        seed: any int; different seeds give different rooms, objects, motions and paths.
        num_frames: length of the captured video (frames at times ``i / (num_frames - 1)``).
        height, width: captured frame size in pixels.
        num_objects: moving objects (>= 3); the first four use the four :data:`MOTION_KINDS`
            in a seed-dependent order, further ones pick a kind at random.
        num_blobs: soft Gaussian blobs (>= 0).
        camera_path: one of :data:`CAMERA_PATHS`, or ``None`` to pick by seed.
        supersample: default anti-aliasing factor of :meth:`SyntheticScene.render`.

    Returns:
        A :class:`SyntheticScene`; its frames are rendered lazily (``scene.frames``).
    """
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}.")
    if num_objects < 3:
        raise ValueError(f"num_objects must be >= 3, got {num_objects}.")
    if num_blobs < 0:
        raise ValueError(f"num_blobs must be >= 0, got {num_blobs}.")
    if camera_path is not None and camera_path not in CAMERA_PATHS:
        raise ValueError(f"camera_path must be one of {CAMERA_PATHS} or None, got {camera_path!r}.")
    if height < 1 or width < 1 or supersample < 1:
        raise ValueError("height, width and supersample must be positive.")
    rng = random.Random(f"fsm-synthetic/{int(seed)}")

    half_x, half_z = rng.uniform(4.0, 6.0), rng.uniform(4.0, 6.0)
    room_height = rng.uniform(3.0, 4.0)
    room_min = torch.tensor([-half_x, 0.0, -half_z])
    room_max = torch.tensor([half_x, room_height, half_z])

    objects = _random_objects(rng, num_objects)
    textures = _stack_textures(
        [_random_texture(rng, checker_weight=rng.choice((0.0, 1.0))) for _ in range(4)]  # walls
        + [_random_texture(rng, checker_weight=1.0, frequency=(1.0, 2.0))]  # floor tiles
        + [_random_texture(rng, checker_weight=0.0, frequency=(0.5, 1.0))]  # ceiling
        + [_random_texture(rng, checker_weight=rng.random(), frequency=(2.0, 5.0)) for _ in range(num_objects)]
    )
    # rows 0..5 must follow the room-face order -x, +x, floor, ceiling, -z, +z
    order = [0, 1, 4, 5, 2, 3] + list(range(6, 6 + num_objects))
    textures = ProceduralTextures(*(getattr(textures, f)[order] for f in ProceduralTextures.__dataclass_fields__))

    light = torch.tensor([rng.uniform(-0.6, 0.6), 1.0, rng.uniform(-0.6, 0.6)])
    return SyntheticScene(
        seed=int(seed),
        num_frames=num_frames,
        height=height,
        width=width,
        supersample=supersample,
        room_min=room_min,
        room_max=room_max,
        light_direction=light / light.norm(),
        ambient=rng.uniform(0.55, 0.7),
        textures=textures,
        objects=objects,
        blobs=_random_blobs(rng, num_blobs, room_height),
        camera_path=_random_camera_path(rng, camera_path or rng.choice(CAMERA_PATHS), half_x, half_z, room_height),
    )


def _random_color(rng: random.Random, value=(0.5, 1.0)):
    return colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.3, 0.95), rng.uniform(*value))


def _random_texture(rng: random.Random, checker_weight: float, frequency=(1.0, 3.0)) -> dict:
    """One surface's texture parameters as a dict of lists/floats (see ProceduralTextures)."""
    color_a = _random_color(rng)
    hue, sat, val = colorsys.rgb_to_hsv(*color_a)
    # a contrasting second colour: another hue, darker
    hue_b, sat_b, val_b = (hue + rng.uniform(0.25, 0.75)) % 1.0, rng.uniform(0.2, 0.9), max(0.2, val - rng.uniform(0.25, 0.5))
    color_b = colorsys.hsv_to_rgb(hue_b, sat_b, val_b)
    stripe_direction = _random_unit(rng)
    return dict(
        color_a=color_a,
        color_b=color_b,
        checker_frequency=rng.uniform(*frequency),
        checker_offset=[rng.random() for _ in range(3)],
        checker_weight=checker_weight,
        stripe_wavevector=[c * rng.uniform(2.0, 7.0) for c in stripe_direction],
        stripe_phase=rng.uniform(0.0, 2 * math.pi),
        noise_wavevectors=[[c * rng.uniform(1.0, 6.0) for c in _random_unit(rng)] for _ in range(_NOISE_TERMS)],
        noise_phases=[rng.uniform(0.0, 2 * math.pi) for _ in range(_NOISE_TERMS)],
        noise_amplitude=rng.uniform(0.1, 0.3),
    )


def _stack_textures(rows: Sequence[dict]) -> ProceduralTextures:
    names = ProceduralTextures.__dataclass_fields__
    return ProceduralTextures(**{name: torch.tensor([row[name] for row in rows], dtype=torch.float32) for name in names})


def _random_unit(rng: random.Random):
    while True:
        v = [rng.gauss(0.0, 1.0) for _ in range(3)]
        norm = math.sqrt(sum(c * c for c in v))
        if norm > 1e-3:
            return [c / norm for c in v]


def _random_objects(rng: random.Random, num_objects: int) -> MovingObjects:
    """Objects with at least one of each motion kind (when ``num_objects >= 4``)."""
    motions = list(MOTION_KINDS)
    rng.shuffle(motions)
    motions = (motions + [rng.choice(MOTION_KINDS) for _ in range(num_objects)])[:num_objects]
    rows = []
    for i, motion in enumerate(motions):
        is_sphere = rng.random() < 0.5
        if is_sphere:
            radius = rng.uniform(0.3, 0.55)
            half = [radius] * 3
        else:
            half = [rng.uniform(0.2, 0.5) for _ in range(3)]
        size = max(half)
        # spread the objects' home positions around the centre
        angle = 2 * math.pi * (i + rng.uniform(-0.3, 0.3)) / num_objects
        home_radius = rng.uniform(0.3, _OBJECT_REGION_RADIUS - 0.6)
        home = [home_radius * math.cos(angle), 0.0, home_radius * math.sin(angle)]
        row = dict(
            kind=_SPHERE if is_sphere else _BOX,
            half=half,
            base=home[:],
            velocity=[0.0, 0.0, 0.0],
            orbit_radius=0.0, orbit_speed=0.0, orbit_phase=0.0,
            bounce_height=0.0, bounce_frequency=0.0, bounce_phase=0.0,
            spin_axis=_random_unit(rng),
            spin_speed=rng.uniform(-1.5, 1.5),
            spin_phase=rng.uniform(0.0, 2 * math.pi),
        )
        resting_height = size + rng.uniform(0.0, 0.6)
        if motion == "linear":
            heading = rng.uniform(0.0, 2 * math.pi)
            length = rng.uniform(1.2, 2.0)
            direction = [math.cos(heading), 0.0, math.sin(heading)]
            # centre the segment on the home position, scaled to stay in the object region
            limit = _OBJECT_REGION_RADIUS - math.hypot(home[0], home[2])
            length = min(length, 2 * max(limit, 0.3))
            height = resting_height + rng.uniform(0.0, 0.6)
            row["base"] = [home[0] - 0.5 * length * direction[0], height, home[2] - 0.5 * length * direction[2]]
            row["velocity"] = [length * c for c in direction]
        elif motion == "circular":
            row["base"] = [0.0, resting_height + rng.uniform(0.2, 0.8), 0.0]
            row["orbit_radius"] = rng.uniform(0.7, _OBJECT_REGION_RADIUS - 0.2)
            row["orbit_speed"] = rng.choice((-1.0, 1.0)) * rng.uniform(math.pi, 2 * math.pi)
            row["orbit_phase"] = rng.uniform(0.0, 2 * math.pi)
        elif motion == "bouncing":
            row["base"] = [home[0], size, home[2]]
            drift = rng.uniform(0.0, 2 * math.pi)
            row["velocity"] = [0.4 * math.cos(drift), 0.0, 0.4 * math.sin(drift)]
            row["base"][0] -= 0.5 * row["velocity"][0]
            row["base"][2] -= 0.5 * row["velocity"][2]
            row["bounce_height"] = rng.uniform(0.6, 1.2)
            row["bounce_frequency"] = float(rng.randint(2, 4))
            row["bounce_phase"] = rng.uniform(0.0, math.pi)
        else:  # rotating in place, fast
            row["base"] = [home[0], resting_height, home[2]]
            row["spin_speed"] = rng.choice((-1.0, 1.0)) * rng.uniform(1.5 * math.pi, 3.0 * math.pi)
        rows.append(row)
    as_tensor = lambda key, dtype=torch.float32: torch.tensor([r[key] for r in rows], dtype=dtype)  # noqa: E731
    return MovingObjects(
        motion=tuple(motions),
        kind=as_tensor("kind", torch.long),
        half_extent=as_tensor("half"),
        base=as_tensor("base"),
        velocity=as_tensor("velocity"),
        orbit_radius=as_tensor("orbit_radius"),
        orbit_speed=as_tensor("orbit_speed"),
        orbit_phase=as_tensor("orbit_phase"),
        bounce_height=as_tensor("bounce_height"),
        bounce_frequency=as_tensor("bounce_frequency"),
        bounce_phase=as_tensor("bounce_phase"),
        spin_axis=as_tensor("spin_axis"),
        spin_speed=as_tensor("spin_speed"),
        spin_phase=as_tensor("spin_phase"),
    )


def _random_blobs(rng: random.Random, num_blobs: int, room_height: float) -> GaussianBlobs:
    rows = []
    for _ in range(num_blobs):
        angle, radius = rng.uniform(0.0, 2 * math.pi), rng.uniform(0.0, _OBJECT_REGION_RADIUS)
        rows.append(dict(
            base=[radius * math.cos(angle), rng.uniform(0.6, min(2.2, room_height - 0.6)), radius * math.sin(angle)],
            amplitude=[rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.4), rng.uniform(0.2, 0.8)],
            frequency=[rng.uniform(0.3, 1.5) for _ in range(3)],
            phase=[rng.uniform(0.0, 2 * math.pi) for _ in range(3)],
            sigma=rng.uniform(0.1, 0.25),
            opacity=rng.uniform(0.5, 0.9),
            color=_random_color(rng, value=(0.7, 1.0)),
        ))
    fields_ = GaussianBlobs.__dataclass_fields__
    if not rows:
        shapes = dict(sigma=(0,), opacity=(0,))
        return GaussianBlobs(**{k: torch.zeros(shapes.get(k, (0, 3))) for k in fields_})
    return GaussianBlobs(**{k: torch.tensor([r[k] for r in rows], dtype=torch.float32) for k in fields_})


def _random_camera_path(rng: random.Random, kind: str, half_x: float, half_z: float, room_height: float) -> CameraPath:
    """A handheld path that stays inside the room and outside the object region."""
    max_radius = min(half_x, half_z) - 0.6
    f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    pivot_height = rng.uniform(0.5, 0.9)
    target_start = [rng.uniform(-0.3, 0.3), pivot_height, rng.uniform(-0.3, 0.3)]
    target_end = [c + rng.uniform(-0.3, 0.3) for c in target_start]
    radius = (rng.uniform(_CAMERA_MIN_RADIUS, max_radius - 0.2), rng.uniform(_CAMERA_MIN_RADIUS, max_radius - 0.2))
    height = (rng.uniform(0.8, 1.8), rng.uniform(0.8, 1.8))
    start_angle = rng.uniform(0.0, 2 * math.pi)
    arc = rng.choice((-1.0, 1.0)) * math.radians(rng.uniform(50.0, 110.0)) if kind == "orbit" else 0.0
    eye_start = eye_end = [0.0, 0.0, 0.0]
    if kind == "forward":
        # walk towards the centre along a slightly curved heading, stop outside the object region
        far = rng.uniform(max(max_radius - 0.8, _CAMERA_MIN_RADIUS + 0.8), max_radius)
        near = rng.uniform(_CAMERA_MIN_RADIUS, min(_CAMERA_MIN_RADIUS + 0.4, far - 0.8))
        side = rng.uniform(-0.25, 0.25)
        eye_start = [far * math.cos(start_angle), height[0], far * math.sin(start_angle)]
        eye_end = [near * math.cos(start_angle + side), height[1], near * math.sin(start_angle + side)]
    elif kind == "lateral":
        # truck sideways along a chord that stays outside the object region, clamped to the room
        distance = rng.uniform(_CAMERA_MIN_RADIUS, _CAMERA_MIN_RADIUS + 0.8)
        half_length = rng.uniform(0.8, 1.8)
        center = [distance * math.cos(start_angle), 0.0, distance * math.sin(start_angle)]
        tangent = [-math.sin(start_angle), 0.0, math.cos(start_angle)]
        direction = rng.choice((-1.0, 1.0)) * half_length
        limit_x, limit_z = half_x - 0.6, half_z - 0.6
        eye_start = [
            min(max(center[0] - direction * tangent[0], -limit_x), limit_x), height[0],
            min(max(center[2] - direction * tangent[2], -limit_z), limit_z),
        ]
        eye_end = [
            min(max(center[0] + direction * tangent[0], -limit_x), limit_x), height[1],
            min(max(center[2] + direction * tangent[2], -limit_z), limit_z),
        ]
        if rng.random() < 0.5:  # keep the heading fixed instead of panning to follow the centre
            target_start = [eye_start[0] - center[0] * 0.8, pivot_height, eye_start[2] - center[2] * 0.8]
            target_end = [eye_end[0] - center[0] * 0.8, pivot_height, eye_end[2] - center[2] * 0.8]
    jitter = 2  # sinusoids per channel
    sines = lambda amp: (  # noqa: E731
        f64([[rng.uniform(0.3, 1.0) * a for a in amp] for _ in range(jitter)]),
        f64([[rng.uniform(2.0, 9.0) for _ in range(3)] for _ in range(jitter)]),
        f64([[rng.uniform(0.0, 2 * math.pi) for _ in range(3)] for _ in range(jitter)]),
    )
    position_jitter = sines([0.03, 0.02, 0.03])
    rotation_jitter = sines([math.radians(1.0), math.radians(1.0), math.radians(1.5)])
    return CameraPath(
        kind=kind,
        horizontal_fov=math.radians(rng.uniform(50.0, 70.0)),
        pivot=f64([0.0, 0.0, 0.0]),
        radius=radius,
        height=height,
        start_angle=start_angle,
        arc=arc,
        eye_start=f64(eye_start),
        eye_end=f64(eye_end),
        target_start=f64(target_start),
        target_end=f64(target_end),
        speed_wobble=rng.uniform(-0.4, 0.4),
        position_jitter_amplitude=position_jitter[0],
        position_jitter_frequency=position_jitter[1],
        position_jitter_phase=position_jitter[2],
        rotation_jitter_amplitude=rotation_jitter[0],
        rotation_jitter_frequency=rotation_jitter[1],
        rotation_jitter_phase=rotation_jitter[2],
    )


# --------------------------------------------------------------------------------------------
# Small geometry helpers, component-first: vectors [3, ...], matrices [3, 3, ...]
# (explicit elementwise sums, so results do not depend on how views are batched)
# --------------------------------------------------------------------------------------------


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_i a[i] b[i]`` for component-first vectors ``[3, ...]`` (broadcasting)."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _compact_window(x: torch.Tensor) -> torch.Tensor:
    """``(1 - x)^2`` for ``x < 1``, else 0: tapers Gaussian tails smoothly to exactly zero."""
    return (1.0 - x).clamp_min(0.0) ** 2


def _rotate(rotation: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """``rotation @ vectors`` for ``rotation [3, 3, ...]`` and ``vectors [3, ...]``."""
    return torch.stack([_dot(rotation[i], vectors) for i in range(3)])


def _rotate_inverse(rotation: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """``rotation^T @ vectors`` for ``rotation [3, 3, ...]`` and ``vectors [3, ...]``."""
    return torch.stack([_dot(rotation[:, i], vectors) for i in range(3)])


def _snap_to_box_face(local: torch.Tensor, half: torch.Tensor):
    """For points on a box surface (``local``, ``half`` ``[3, ...]``, box frame): the points
    with the coordinate of the face they lie on set exactly to ``+-half`` (so face textures
    never flicker between texels), the face's outward unit normal ``[3, ...]``, and its axis
    ``[...]`` (0, 1, 2)."""
    ratio = local.abs() / half
    on_x = (ratio[0] >= ratio[1]) & (ratio[0] >= ratio[2])
    on_y = ~on_x & (ratio[1] >= ratio[2])
    on_z = ~on_x & ~on_y
    on_face = torch.stack([on_x, on_y, on_z])  # [3, ...] one-hot
    sign = torch.where(local >= 0, 1.0, -1.0)
    normal = on_face * sign
    snapped = torch.where(on_face, sign * half, local)
    axis = on_y.long() + 2 * on_z.long()
    return snapped, normal, axis


def _axis_angle_to_matrix(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: unit ``axis [..., 3]``, ``angle [...]`` -> ``[..., 3, 3]``."""
    x, y, z = axis.unbind(-1)
    c, s = torch.cos(angle), torch.sin(angle)
    k = 1.0 - c
    rows = [
        [c + x * x * k, x * y * k - z * s, x * z * k + y * s],
        [y * x * k + z * s, c + y * y * k, y * z * k - x * s],
        [z * x * k - y * s, z * y * k + x * s, c + z * z * k],
    ]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def _sum_of_sines(t: torch.Tensor, amplitude, frequency, phase) -> torch.Tensor:
    """``sum_j amplitude[j] sin(2 pi frequency[j] t + phase[j])``: ``t [N]`` -> ``[N, 3]``."""
    return (amplitude * torch.sin(2.0 * math.pi * frequency * t[:, None, None] + phase)).sum(1)


def _camera_to_world(eye: torch.Tensor, target: torch.Tensor, shake: torch.Tensor) -> torch.Tensor:
    """OpenCV c2w ``[N, 4, 4]`` float32 looking from ``eye`` at ``target`` (``[N, 3]``, world
    y-up, no roll), then rotated in the camera frame by pitch/yaw/roll ``shake [N, 3]``."""
    forward = target - eye
    forward = forward / forward.norm(dim=-1, keepdim=True)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype).expand_as(forward)
    right = torch.linalg.cross(forward, up)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.linalg.cross(forward, right)
    look = torch.stack([right, down, forward], -1)  # [N, 3, 3] columns = camera axes in world
    ex = torch.tensor([1.0, 0.0, 0.0], dtype=eye.dtype).expand_as(forward)
    ey = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype).expand_as(forward)
    ez = torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype).expand_as(forward)
    pitch = _axis_angle_to_matrix(ex, shake[:, 0])
    yaw = _axis_angle_to_matrix(ey, shake[:, 1])
    roll = _axis_angle_to_matrix(ez, shake[:, 2])
    rotation = look @ yaw @ pitch @ roll
    c2w = torch.eye(4, dtype=torch.float64).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, :3] = rotation
    c2w[:, :3, 3] = eye
    return c2w.to(torch.float32)


def _as_times(times) -> torch.Tensor:
    times = torch.as_tensor(times, dtype=torch.float32)
    if times.dim() != 1:
        raise ValueError(f"times must be a 1-D tensor [N], got shape {tuple(times.shape)}.")
    return times


def _check_cameras(c2w, fxfycxcy, times):
    """Validate and convert the camera arguments of ``render`` to float32 CPU tensors."""
    c2w = torch.as_tensor(c2w).to(torch.float32)
    fxfycxcy = torch.as_tensor(fxfycxcy).to(torch.float32)
    times = _as_times(times)
    n = times.shape[0]
    if c2w.shape != (n, 4, 4):
        raise ValueError(f"c2w must be [N, 4, 4] with N = len(times) = {n}, got {tuple(c2w.shape)}.")
    if fxfycxcy.shape != (n, 4):
        raise ValueError(f"fxfycxcy must be [N, 4] with N = len(times) = {n}, got {tuple(fxfycxcy.shape)}.")
    return c2w, fxfycxcy, times
