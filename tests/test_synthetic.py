"""The procedural 4D scene generator: determinism, difficulty, render consistency, motion, cameras."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from fsm_hf.metrics import nearest_input_frame_baseline, psnr
from fsm_hf.synthetic import CAMERA_PATHS, MOTION_KINDS, SyntheticViews, generate_scene


@pytest.fixture(scope="module")
def small_scene():
    return generate_scene(seed=11, num_frames=8, height=32, width=40)


def _project(c2w: torch.Tensor, fxfycxcy: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates ``[N, 2]`` and camera depth ``[N]`` of a world point (OpenCV pinhole)."""
    w2c = torch.linalg.inv(c2w.double())
    cam = (w2c[:, :3, :3] @ point.double()[:, None])[..., 0] + w2c[:, :3, 3]  # [N, 3]
    u = fxfycxcy[:, 0] * cam[:, 0] / cam[:, 2] + fxfycxcy[:, 2]
    v = fxfycxcy[:, 1] * cam[:, 1] / cam[:, 2] + fxfycxcy[:, 3]
    return torch.stack([u, v], -1), cam[:, 2]


# ---- determinism ---------------------------------------------------------------------------


def test_same_seed_is_bitwise_identical():
    a = generate_scene(seed=5, num_frames=4, height=24, width=24)
    b = generate_scene(seed=5, num_frames=4, height=24, width=24)
    assert torch.equal(a.frames.images, b.frames.images)
    assert torch.equal(a.frames.c2w, b.frames.c2w)
    assert torch.equal(a.frames.fxfycxcy, b.frames.fxfycxcy)
    targets_a = a.held_out_views(a.frames.times, 3, seed=2)
    targets_b = b.held_out_views(b.frames.times, 3, seed=2)
    assert torch.equal(targets_a.images, targets_b.images) and torch.equal(targets_a.c2w, targets_b.c2w)


def test_different_seeds_differ():
    scenes = [generate_scene(seed=s, num_frames=4, height=24, width=24) for s in (0, 1, 2)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.equal(scenes[i].frames.c2w, scenes[j].frames.c2w)
            assert (scenes[i].frames.images - scenes[j].frames.images).abs().mean() > 0.05


def test_held_out_seed_changes_targets(small_scene):
    times = small_scene.frames.times
    a = small_scene.held_out_views(times, 4, seed=0, render=False)
    b = small_scene.held_out_views(times, 4, seed=1, render=False)
    assert not torch.equal(a.times, b.times)


# ---- not trivial ---------------------------------------------------------------------------


def test_nearest_input_frame_baseline_is_below_20db_at_demo_settings():
    """At the demo settings (64x64, 32 input frames) copying the nearest input frame must not
    already solve the held-out targets."""
    scores = []
    for seed in range(4):
        scene = generate_scene(seed=seed, num_frames=32, height=64, width=64)
        inputs, targets = scene.split(num_targets=8, seed=0)
        assert len(inputs) == 32 and len(targets) == 8
        baseline = nearest_input_frame_baseline(inputs.images, inputs.times, targets.times)
        scores.append(psnr(baseline, targets.images).mean())
    mean_psnr = torch.stack(scores).mean().item()
    assert mean_psnr < 20.0, f"nearest-frame baseline reaches {mean_psnr:.2f} dB"
    # ... yet the targets are views of the same scene, not noise
    assert mean_psnr > 10.0


def test_images_are_textured_and_in_range(small_scene):
    images = small_scene.frames.images
    assert images.shape == (8, 3, 32, 40) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    # textured: strong local contrast (mean absolute horizontal gradient), and colourful
    assert (images[..., 1:] - images[..., :-1]).abs().mean() > 0.03
    assert images.std(dim=(0, 2, 3)).min() > 0.05


# ---- render consistency --------------------------------------------------------------------


def test_frames_equal_render_at_the_same_cameras_and_times(small_scene):
    frames = small_scene.frames
    assert torch.equal(frames.times, torch.linspace(0, 1, 8))
    assert torch.equal(frames.frame_indices, torch.arange(8))
    c2w, fxfycxcy = small_scene.trajectory(frames.times)
    assert torch.equal(c2w, frames.c2w) and torch.equal(fxfycxcy, frames.fxfycxcy)
    assert torch.equal(small_scene.render(frames.c2w, frames.fxfycxcy, frames.times), frames.images)
    # a different batching (a subset, views in another order) gives the same pixels
    pick = [5, 2]
    subset = small_scene.render(frames.c2w[pick], frames.fxfycxcy[pick], frames.times[pick])
    torch.testing.assert_close(subset, frames.images[pick], atol=1e-5, rtol=0)


def test_held_out_images_equal_render(small_scene):
    targets = small_scene.held_out_views(small_scene.frames.times, 3, seed=4)
    assert torch.equal(small_scene.render(targets.c2w, targets.fxfycxcy, targets.times), targets.images)


def test_chunking_does_not_change_pixels():
    scene = generate_scene(seed=3, num_frames=5, height=16, width=16)
    whole = scene.frames.images
    chunked = replace(scene, max_pixels_per_chunk=2 * 16 * 16)  # 2 views per chunk
    frames = scene.frames
    torch.testing.assert_close(chunked.render(frames.c2w, frames.fxfycxcy, frames.times), whole, atol=1e-5, rtol=0)


def test_supersampling_is_a_box_filter_of_the_finer_image(small_scene):
    """Rendering at 2x resolution with 2x intrinsics and averaging 2x2 blocks equals rendering
    with supersample=2: intrinsics scale with the image and pixel centres sit at +0.5."""
    frames = small_scene.frames[[0, 4]]
    fine = small_scene.render(frames.c2w, frames.fxfycxcy * 2, frames.times, 64, 80, supersample=1)
    coarse = small_scene.render(frames.c2w, frames.fxfycxcy, frames.times, 32, 40, supersample=2)
    difference = (F.avg_pool2d(fine, 2) - coarse).abs()
    assert (difference > 1e-4).float().mean() < 0.002  # only rare texel-boundary flips
    # and supersampling really filters: it differs from the plain render
    assert (coarse - small_scene.render(frames.c2w, frames.fxfycxcy, frames.times)).abs().mean() > 1e-3


def test_render_any_resolution_and_time(small_scene):
    c2w, fxfycxcy = small_scene.trajectory(torch.tensor([0.37]), height=20, width=30)
    image = small_scene.render(c2w, fxfycxcy, torch.tensor([0.37]), 20, 30)
    assert image.shape == (1, 3, 20, 30)
    assert small_scene.render(c2w[:0], fxfycxcy[:0], torch.zeros(0), 20, 30).shape == (0, 3, 20, 30)


def test_render_rejects_bad_shapes(small_scene):
    c2w, fxfycxcy = small_scene.trajectory(torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="c2w must be"):
        small_scene.render(c2w[0], fxfycxcy, torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="fxfycxcy must be"):
        small_scene.render(c2w, fxfycxcy[:1], torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="supersample"):
        small_scene.render(c2w, fxfycxcy, torch.tensor([0.1, 0.2]), supersample=0)


def test_generate_scene_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_objects"):
        generate_scene(0, num_objects=2)
    with pytest.raises(ValueError, match="num_frames"):
        generate_scene(0, num_frames=1)
    with pytest.raises(ValueError, match="camera_path"):
        generate_scene(0, camera_path="spiral")


# ---- things move ---------------------------------------------------------------------------


def test_every_motion_kind_is_present_and_moves():
    scene = generate_scene(seed=7, num_frames=4, num_objects=5)
    objects = scene.objects
    assert set(MOTION_KINDS) <= set(objects.motion) and len(objects) == 5
    times = torch.tensor([0.1, 0.6])
    centers = objects.centers(times)  # [2, K, 3]
    rotations = objects.rotations(times)  # [2, K, 3, 3]
    for k, motion in enumerate(objects.motion):
        shift = (centers[1, k] - centers[0, k]).norm().item()
        turn = torch.arccos(((rotations[1, k] @ rotations[0, k].T).diagonal().sum().clamp(-1, 3) - 1) / 2).item()
        if motion == "rotating":
            assert shift == 0.0 and turn > math.radians(60), (motion, shift, turn)
        else:
            assert shift > 0.2, (motion, shift)


def test_same_camera_different_times_differ_only_where_things_move(small_scene):
    c2w, fxfycxcy = small_scene.trajectory(torch.tensor([0.5, 0.5]))
    times = torch.tensor([0.1, 0.9])
    images = small_scene.render(c2w, fxfycxcy, times)
    changed = (images[0] - images[1]).abs().amax(0) > 1e-6  # [H, W]
    assert changed.float().mean() > 0.05  # objects and blobs moved
    # the same world without its objects (sent far away) and blobs: the empty room is static
    objects, blobs = small_scene.objects, small_scene.blobs
    far_away = torch.tensor([1000.0, 0.0, 0.0])
    empty = replace(
        small_scene,
        objects=replace(objects, base=objects.base + far_away),
        blobs=replace(blobs, opacity=torch.zeros_like(blobs.opacity)),
    )
    room = empty.render(c2w, fxfycxcy, times)
    assert torch.equal(room[0], room[1])
    # every pixel that changed shows an object, a blob or a contact shadow at one of the times
    occupied = ((images - room).abs().amax(1) > 1e-6).any(0)  # [H, W]
    assert not (changed & ~occupied).any()
    assert occupied.float().mean() < 0.9  # and the room remains visible


def test_freezing_all_motions_makes_time_irrelevant(small_scene):
    c2w, fxfycxcy = small_scene.trajectory(torch.tensor([0.3, 0.3]))
    objects, blobs = small_scene.objects, small_scene.blobs
    frozen = replace(
        small_scene,
        objects=replace(
            objects,
            velocity=torch.zeros_like(objects.velocity),
            orbit_speed=torch.zeros_like(objects.orbit_speed),
            bounce_frequency=torch.zeros_like(objects.bounce_frequency),
            spin_speed=torch.zeros_like(objects.spin_speed),
        ),
        blobs=replace(blobs, amplitude=torch.zeros_like(blobs.amplitude)),
    )
    static = frozen.render(c2w, fxfycxcy, torch.tensor([0.0, 1.0]))
    assert torch.equal(static[0], static[1])


# ---- cameras -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CAMERA_PATHS)
def test_camera_paths_are_handheld_videos_inside_the_room(path):
    scene = generate_scene(seed=2, num_frames=32, camera_path=path)
    assert scene.camera_path.kind == path
    c2w, fxfycxcy = scene.trajectory(torch.linspace(0, 1, 32))
    rotation = c2w[:, :3, :3].double()
    identity = torch.eye(3, dtype=torch.float64).expand(32, 3, 3)
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), identity, atol=1e-5, rtol=0)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(32, dtype=torch.float64), atol=1e-5)
    eyes = c2w[:, :3, 3]
    assert (eyes > scene.room_min).all() and (eyes < scene.room_max).all()
    assert (eyes[:, [0, 2]].norm(dim=-1) > 2.0).all()  # outside the region the objects move in
    steps = (eyes[1:] - eyes[:-1]).norm(dim=-1)
    assert steps.min() > 0.001 and steps.max() < 0.5  # moving, with realistic baselines
    assert (eyes[-1] - eyes[0]).norm() > 0.8  # a real trajectory, not a wobble on the spot
    # OpenCV convention: the look-at point is in front, near the image centre; "up" is image-up
    _, target = scene.camera_path.eye_and_target(torch.linspace(0, 1, 32))
    pixels, depth = _project(c2w, fxfycxcy, target[16].float())
    assert (depth > 0).all()
    center = torch.tensor([32.0, 32.0], dtype=torch.float64)
    assert (pixels[16] - center).norm() < 6.0  # only handheld shake off-centre
    above, _ = _project(c2w[16:17], fxfycxcy[16:17], target[16].float() + torch.tensor([0.0, 0.5, 0.0]))
    assert above[0, 1] < pixels[16, 1] - 3


def test_held_out_views_are_between_inputs_and_partly_off_trajectory():
    scene = generate_scene(seed=4, num_frames=32)
    inputs, targets = scene.split(num_inputs=16, num_targets=10, seed=3, off_trajectory_fraction=0.5)
    assert isinstance(targets, SyntheticViews) and targets.images.shape == (10, 3, 64, 64)
    assert (targets.frame_indices == -1).all()
    assert torch.equal(inputs.frame_indices, torch.linspace(0, 31, 16).round().long())
    # strictly between two consecutive input times, never on one
    position = torch.searchsorted(inputs.times, targets.times)
    assert ((position > 0) & (position < len(inputs))).all()
    gap = inputs.times[position] - inputs.times[position - 1]
    fraction = (targets.times - inputs.times[position - 1]) / gap
    assert ((fraction > 0.2) & (fraction < 0.8)).all()
    assert (targets.times[1:] >= targets.times[:-1]).all()
    # half of them leave the path by 0.3-0.8 units, the rest are on it
    on_path, _ = scene.trajectory(targets.times)
    distance = (targets.c2w[:, :3, 3] - on_path[:, :3, 3]).norm(dim=-1)
    off = distance > 1e-4
    assert off.sum() == 5
    assert ((distance[off] > 0.29) & (distance[off] < 0.81)).all()
    assert torch.equal(targets.c2w[~off], on_path[~off])


def test_split_and_held_out_reject_bad_arguments(small_scene):
    with pytest.raises(ValueError, match="num_inputs"):
        small_scene.split(num_inputs=1)
    with pytest.raises(ValueError, match="two distinct input times"):
        small_scene.held_out_views(torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="off_trajectory_fraction"):
        small_scene.held_out_views(torch.tensor([0.0, 1.0]), off_trajectory_fraction=2.0)


def test_views_indexing(small_scene):
    frames = small_scene.frames
    sub = frames[torch.tensor([1, 3])]
    assert len(sub) == 2 and torch.equal(sub.images, frames.images[[1, 3]])
    assert torch.equal(frames[2].times, frames.times[2:3])


# ---- adapter -------------------------------------------------------------------------------


def test_to_scene_carries_cameras_times_and_images(small_scene):
    scene = small_scene.to_scene()
    frames = small_scene.frames
    assert len(scene) == 8 and (scene.height, scene.width) == (32, 40)
    torch.testing.assert_close(scene.cameras.c2w.double(), frames.c2w.double())
    torch.testing.assert_close(scene.cameras.fxfycxcy.double(), frames.fxfycxcy.double())
    torch.testing.assert_close(scene.times, frames.times.double())
    assert torch.equal(scene.load_images([6, 1]), frames.images[[6, 1]])
    assert scene.metadata["seed"] == 11 and scene.source.format == "synthetic"
