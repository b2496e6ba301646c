"""Camera trajectories (orbit, spiral, SLERP/LERP interpolation) and time schedules."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fsm_hf.camera_paths import (
    bullet_time,
    focus_point,
    interpolate_path,
    look_at,
    make_trajectory,
    matrix_to_quaternion,
    orbit_path,
    quaternion_to_matrix,
    slerp,
    spiral_path,
    static_path,
    time_sweep,
)
from fsm_hf.cameras import Cameras

from conftest import random_views


def ring_cameras(n: int = 6, radius: float = 3.0, height: float = 0.5) -> Cameras:
    """Cameras on a horizontal ring (world y up), all looking at the origin."""
    angles = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    eye = torch.stack([radius * torch.cos(angles), torch.full_like(angles, height), radius * torch.sin(angles)], -1)
    c2w = look_at(eye, torch.zeros(3), torch.tensor([0.0, 1.0, 0.0]))
    return Cameras(c2w, torch.tensor([[40.0, 40.0, 16.0, 16.0]]).expand(n, 4), 32, 32)


def forward_cameras(n: int = 5) -> Cameras:
    """A forward-facing capture: cameras translate sideways, all looking along +z."""
    c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    c2w[:, 0, 3] = torch.linspace(-0.2, 0.2, n, dtype=torch.float64)
    return Cameras(c2w, torch.tensor([[40.0, 40.0, 16.0, 16.0]]).expand(n, 4), 32, 32)


def assert_rigid(c2w: torch.Tensor):
    rot = c2w[:, :3, :3].double()
    eye = torch.eye(3, dtype=torch.float64).expand_as(rot)
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(len(rot), dtype=torch.float64), atol=1e-5, rtol=0)


def forward_towards(c2w: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """Cosine between each camera's +z axis and the direction to ``point``."""
    to_point = point.double() - c2w[:, :3, 3].double()
    return torch.nn.functional.cosine_similarity(c2w[:, :3, 2].double(), to_point, dim=-1)


unit_quaternions = st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4).filter(
    lambda q: sum(x * x for x in q) > 1e-2
)


@settings(max_examples=50, deadline=None)
@given(unit_quaternions)
def test_quaternion_round_trip(q):
    q = torch.tensor(q, dtype=torch.float64)
    q = q / q.norm()
    q = q if q[0] >= 0 else -q
    rot = quaternion_to_matrix(q)
    torch.testing.assert_close(rot.T @ rot, torch.eye(3, dtype=torch.float64), atol=1e-9, rtol=0)
    back = matrix_to_quaternion(rot)
    # q and -q are the same rotation; w >= 0 fixes the sign except when w == 0.
    assert torch.allclose(back, q, atol=1e-7) or torch.allclose(back, -q, atol=1e-7)


@settings(max_examples=30, deadline=None)
@given(unit_quaternions, unit_quaternions, st.floats(0, 1))
def test_slerp_endpoints_and_constant_speed(a, b, t):
    q0 = torch.tensor(a, dtype=torch.float64)
    q1 = torch.tensor(b, dtype=torch.float64)
    q0, q1 = q0 / q0.norm(), q1 / q1.norm()
    r0, r1 = quaternion_to_matrix(q0), quaternion_to_matrix(q1)
    torch.testing.assert_close(quaternion_to_matrix(slerp(q0, q1, torch.tensor(0.0))), r0, atol=1e-7, rtol=0)
    torch.testing.assert_close(quaternion_to_matrix(slerp(q0, q1, torch.tensor(1.0))), r1, atol=1e-7, rtol=0)

    def angle(ra, rb):
        cos = ((ra.T @ rb).trace() - 1) / 2
        return torch.acos(cos.clamp(-1, 1))

    mid = quaternion_to_matrix(slerp(q0, q1, torch.tensor(t)))
    total = angle(r0, r1)
    # Geodesic interpolation: the rotation angle from the start grows linearly with t.
    assert abs(float(angle(r0, mid)) - t * float(total)) < 1e-5
    assert abs(float(angle(mid, r1)) - (1 - t) * float(total)) < 1e-5


def test_look_at_is_opencv():
    c2w = look_at(torch.tensor([[0.0, 0.0, -2.0]]), torch.zeros(3), torch.tensor([0.0, 1.0, 0.0]))[0]
    torch.testing.assert_close(c2w[:3, 2], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))  # z forward
    torch.testing.assert_close(c2w[:3, 1], torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64))  # y down
    torch.testing.assert_close(c2w[:3, 0], torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64))  # x = y cross z


def test_focus_point_converging_and_parallel():
    torch.testing.assert_close(focus_point(ring_cameras()), torch.zeros(3, dtype=torch.float64), atol=1e-6, rtol=0)
    point = focus_point(forward_cameras())
    # Parallel axes: a point straight ahead of the mean camera.
    torch.testing.assert_close(point[:2], torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0)
    assert point[2] > 0


def test_orbit_circles_the_look_at_point():
    cams = ring_cameras()
    path = orbit_path(cams, 16)
    assert isinstance(path, Cameras) and len(path) == 16 and (path.height, path.width) == (32, 32)
    assert_rigid(path.c2w)
    centers = path.c2w[:, :3, 3].double()
    horizontal = centers[:, [0, 2]].norm(dim=-1)
    torch.testing.assert_close(horizontal, torch.full((16,), 3.0, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(centers[:, 1], torch.full((16,), 0.5, dtype=torch.float64), atol=1e-4, rtol=0)
    assert (forward_towards(path.c2w, torch.zeros(3)) > 1 - 1e-6).all()
    # Starts at the first input camera and covers the full circle without repeating it.
    torch.testing.assert_close(path.c2w[0], cams.c2w[0], atol=1e-4, rtol=0)
    assert (centers[1:] - centers[0]).norm(dim=-1).min() > 0.5
    torch.testing.assert_close(path.fxfycxcy, cams.fxfycxcy.mean(0, keepdim=True).expand(16, 4))


def test_orbit_arguments():
    path = orbit_path(ring_cameras(), 5, center=[0.0, 0.0, 0.0], radius=1.0, height=0.0, degrees=90)
    centers = path.c2w[:, :3, 3].double()
    torch.testing.assert_close(centers.norm(dim=-1), torch.ones(5, dtype=torch.float64), atol=1e-5, rtol=0)
    # A 90 degree arc ends a quarter turn away from its start.
    assert abs(float(centers[0] @ centers[-1])) < 1e-5
    with pytest.raises(ValueError, match="3D point"):
        orbit_path(ring_cameras(), 5, center=[0.0, 1.0])
    with pytest.raises(ValueError, match="radius must be positive"):
        orbit_path(ring_cameras(), 5, radius=0.0)


def test_spiral_looks_at_focus_around_mean_pose():
    cams = forward_cameras()
    focus = torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64)
    path = spiral_path(cams, 24, focus=focus, radius=0.3)
    assert len(path) == 24
    assert_rigid(path.c2w)
    assert (forward_towards(path.c2w, focus) > 1 - 1e-6).all()
    offsets = path.c2w[:, :3, 3].double()  # mean input centre is the origin
    assert offsets[:, :2].norm(dim=-1).max() == pytest.approx(0.3, abs=1e-4)
    assert offsets[:, 2].abs().max() <= 0.15 + 1e-6  # depth amplitude defaults to radius / 2
    # The default radius comes from the inputs' spread.
    default = spiral_path(cams, 8)
    assert default.c2w[:, :3, 3].double()[:, :2].norm(dim=-1).max() == pytest.approx(0.2, abs=1e-4)


def test_interpolate_passes_through_inputs():
    _, fxfycxcy, c2w, _ = random_views(1, 4, seed=3, with_images=False)
    cams = Cameras(c2w[0], fxfycxcy[0] * torch.tensor([1.0, 1.1, 1.0, 0.9]), 32, 32)
    path = interpolate_path(cams, 40)
    assert_rigid(path.c2w)
    torch.testing.assert_close(path.c2w[0], cams.c2w[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(path.c2w[-1], cams.c2w[-1], atol=1e-5, rtol=0)
    # Consecutive frames are close: a smooth path, no jumps.
    steps = (path.c2w[1:, :3, 3] - path.c2w[:-1, :3, 3]).norm(dim=-1)
    seg = (cams.c2w[1:, :3, 3] - cams.c2w[:-1, :3, 3]).norm(dim=-1)
    assert steps.max() <= seg.sum() / 39 * 1.01  # constant speed along the polyline
    # Every camera centre lies on one of the input segments.
    centers = path.c2w[:, :3, 3]
    for point in centers:
        dists = []
        for a, b in zip(cams.c2w[:-1, :3, 3], cams.c2w[1:, :3, 3]):
            t = ((point - a) @ (b - a) / (b - a).dot(b - a)).clamp(0, 1)
            dists.append((a + t * (b - a) - point).norm())
        assert min(dists) < 1e-4


def test_interpolate_midpoint_is_slerp_lerp():
    # The second camera: 2 units along x, rolled by +45 degrees about its viewing axis (+z).
    rolled = look_at(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([2.0, 0.0, 1.0]), torch.tensor([1.0, -1.0, 0.0]))
    cams = Cameras(
        torch.stack([torch.eye(4), rolled[0].float()]),
        torch.tensor([[30.0, 30.0, 16.0, 16.0], [50.0, 50.0, 16.0, 16.0]]),
        32,
        32,
    )
    mid = interpolate_path(cams, 3)[1]
    torch.testing.assert_close(mid.c2w[0, :3, 3], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(mid.fxfycxcy[0], torch.tensor([40.0, 40.0, 16.0, 16.0]))
    # Half way between no roll and 45 degrees of roll.
    angle = math.atan2(float(mid.c2w[0, 1, 0]), float(mid.c2w[0, 0, 0]))
    assert angle == pytest.approx(math.radians(22.5), abs=1e-5)


def test_interpolate_loop_and_static():
    cams = ring_cameras(4)
    loop = interpolate_path(cams, 8, loop=True)
    torch.testing.assert_close(loop.c2w[0], cams.c2w[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(loop.c2w[4], cams.c2w[2], atol=1e-5, rtol=0)
    still = static_path(cams, 3, index=2)
    assert torch.equal(still.c2w, cams.c2w[[2, 2, 2]])
    with pytest.raises(IndexError):
        static_path(cams, 3, index=4)


def test_time_schedules():
    times = torch.tensor([10.0, 4.0, 30.0])
    assert torch.equal(bullet_time(times, 3), torch.full((3,), 17.0, dtype=torch.float64))
    assert torch.equal(bullet_time(times, 2, at=5), torch.full((2,), 5.0, dtype=torch.float64))
    torch.testing.assert_close(time_sweep(times, 3), torch.tensor([4.0, 17.0, 30.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="at least one"):
        time_sweep([], 3)


@pytest.mark.parametrize("trajectory", ["orbit", "spiral", "interp", "static"])
@pytest.mark.parametrize("schedule", ["fixed", "sweep"])
def test_make_trajectory(trajectory, schedule):
    cams, times = ring_cameras(), torch.arange(6.0)
    if trajectory == "static" and schedule == "fixed":
        with pytest.raises(ValueError, match="still frame"):
            make_trajectory(cams, times, 5, trajectory, schedule)
        return
    path, t = make_trajectory(cams, times, 5, trajectory, schedule)
    assert len(path) == 5 and t.shape == (5,)
    assert_rigid(path.c2w)
    if schedule == "fixed":
        assert (t == 2.5).all()
    else:
        assert t[0] == 0 and t[-1] == 5


def test_make_trajectory_rejects_unknown_names():
    with pytest.raises(ValueError, match="trajectory must be one of"):
        make_trajectory(ring_cameras(), torch.arange(6.0), 5, "zigzag")
    with pytest.raises(ValueError, match="time must be one of"):
        make_trajectory(ring_cameras(), torch.arange(6.0), 5, "orbit", "backwards")
    with pytest.raises(ValueError, match="num_frames"):
        orbit_path(ring_cameras(), 0)
