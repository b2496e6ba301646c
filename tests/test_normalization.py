"""Pose/time normalisation (official semantics, fitted on inputs) and resize + centre crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fsm_hf.cameras import Cameras
from fsm_hf.normalization import (
    PoseNormalization,
    TimeNormalization,
    normalize_poses,
    resize_and_center_crop,
    resize_and_center_crop_cameras,
)


def orbit_c2w(n: int, seed: int = 0, radius: float = 3.0, offset=(5.0, -2.0, 1.0)) -> torch.Tensor:
    """OpenCV cameras on a noisy orbit around ``offset``, looking at it (float32)."""
    g = torch.Generator().manual_seed(seed)
    c2w = torch.eye(4).repeat(n, 1, 1)
    target = torch.tensor(offset)
    for i in range(n):
        angle = 0.9 * i / max(n - 1, 1) + 0.05 * torch.randn((), generator=g)
        eye = target + radius * torch.stack([torch.cos(angle), 0.2 + 0.1 * torch.randn((), generator=g), torch.sin(angle)])
        forward = (target - eye) / (target - eye).norm()
        right = torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0]))
        right = right / right.norm()
        down = torch.linalg.cross(forward, right)
        c2w[i, :3, 0], c2w[i, :3, 1], c2w[i, :3, 2], c2w[i, :3, 3] = right, down, forward, eye
    return c2w


def official_mean_pose_normalize(c2ws: torch.Tensor) -> torch.Tensor:
    """The official ``scene_pose_normalize`` written out from its description, in float32."""
    c2ws = c2ws.clone()
    center = c2ws[:, :3, 3].mean(0)
    z = c2ws[:, :3, 2].mean(0)
    z = z / z.norm()
    y_mean = c2ws[:, :3, 1].mean(0)
    x = torch.linalg.cross(y_mean, z)
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    y = y / y.norm()
    frame = torch.eye(4)
    frame[:3, 0], frame[:3, 1], frame[:3, 2], frame[:3, 3] = x, y, z, center
    c2ws = torch.linalg.inv(frame) @ c2ws
    c2ws[:, :3, 3] /= c2ws[:, :3, 3].abs().max()
    return c2ws


# -- poses ----------------------------------------------------------------------------------------


def test_pose_normalization_matches_the_official_formula():
    inputs = orbit_c2w(6)
    norm = normalize_poses(inputs)
    result = norm.apply(inputs)
    torch.testing.assert_close(result, official_mean_pose_normalize(inputs), atol=2e-6, rtol=0)
    assert result[:, :3, 3].abs().max().item() == pytest.approx(1.0, abs=1e-6)
    assert result.dtype == torch.float32


def test_fitted_on_inputs_applied_to_targets_and_inverted():
    views = orbit_c2w(10, seed=1)
    inputs, targets = views[::2], views[1::2]
    norm = normalize_poses(inputs)
    # Fitted on the inputs only: the inputs' normalisation does not depend on the targets.
    torch.testing.assert_close(norm.apply(inputs), official_mean_pose_normalize(inputs), atol=2e-6, rtol=0)
    mapped = norm.apply(targets)
    # Poses stay rigid; relative geometry is preserved up to the scene scale.
    rot = mapped[:, :3, :3]
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, torch.eye(3).expand(5, 3, 3), atol=1e-5, rtol=0)
    world_dist = (targets[0, :3, 3] - inputs[0, :3, 3]).norm()
    norm_dist = (mapped[0, :3, 3] - norm.apply(inputs)[0, :3, 3]).norm()
    assert norm_dist.item() == pytest.approx(world_dist.item() / norm.scale.item(), rel=1e-5)
    torch.testing.assert_close(norm.invert(mapped), targets, atol=1e-5, rtol=0)
    torch.testing.assert_close(norm.invert(norm.apply(views)), views, atol=1e-5, rtol=0)
    # Camera centres transform like points.
    torch.testing.assert_close(norm.apply_points(targets[:, :3, 3]), mapped[:, :3, 3], atol=1e-5, rtol=0)


def test_pose_normalization_batched_equals_per_scene_and_serialises():
    scenes = torch.stack([orbit_c2w(4, seed=s, offset=(s, 2.0 * s, -1.0)) for s in range(3)])
    batched = normalize_poses(scenes)
    assert batched.normalized_from_world.shape == (3, 4, 4) and batched.scale.shape == (3,)
    for b in range(3):
        torch.testing.assert_close(batched.apply(scenes)[b], normalize_poses(scenes[b]).apply(scenes[b]), atol=1e-6, rtol=0)
    restored = PoseNormalization.from_dict(batched.to_dict())
    torch.testing.assert_close(restored.apply(scenes), batched.apply(scenes))
    via_inverse = PoseNormalization.from_dict(
        {"world_from_normalized": batched.world_from_normalized, "scale": batched.scale}
    )
    torch.testing.assert_close(via_inverse.apply(scenes), batched.apply(scenes), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"batch of 3 scenes; expected poses \[3, N, 4, 4\]"):
        batched.apply(scenes[0])


def test_single_input_view_gets_unit_scale():
    one = orbit_c2w(1)
    with pytest.warns(UserWarning, match="share one centre"):
        norm = normalize_poses(one)
    assert norm.scale.item() == 1.0
    torch.testing.assert_close(norm.apply(one), torch.eye(4)[None], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"\[N, 4, 4\] or \[B, N, 4, 4\]"):
        normalize_poses(torch.zeros(0, 4, 4))
    identity = PoseNormalization.identity()
    torch.testing.assert_close(identity.apply(one), one)


# -- time -----------------------------------------------------------------------------------------


def official_training_times(frame_times, max_frames):
    """The official training loader's rule, written out: min-max over the given views, truncation."""
    t = torch.tensor(frame_times)
    lo, hi = t.min(), t.max()
    if hi > lo:
        return ((t - lo) / (hi - lo) * (max_frames - 1)).long()
    return torch.zeros_like(t).long()


def test_training_time_convention_matches_official_examples():
    frames = [3, 10, 50, 17, 49, 4]
    norm = TimeNormalization.fit(frames, convention="training", max_frames=128)
    t = norm.frame_times(frames)
    assert t.tolist() == official_training_times(frames, 128).tolist()
    # By hand: (x - 3) / 47 * 127, truncated.
    assert t.tolist() == [0, 18, 127, 37, 124, 2]
    tau = norm.apply(frames)
    torch.testing.assert_close(tau, t.float() / 127 * 2 - 1)
    assert tau.min().item() == -1.0 and tau.max().item() == 1.0

    # Many spans and grids, including values where float32 rounding decides the truncation.
    rng = np.random.default_rng(0)
    for _ in range(50):
        frames = rng.integers(0, 5000, size=int(rng.integers(2, 12))).tolist()
        max_frames = int(rng.choice([64, 128, 256]))
        fitted = TimeNormalization.fit(frames, convention="training", max_frames=max_frames)
        assert fitted.frame_times(frames).tolist() == official_training_times(frames, max_frames).tolist()


def test_training_convention_maps_targets_with_the_input_fit():
    inputs = [0.0, 1.0, 2.0, 4.0]  # seconds
    norm = TimeNormalization.fit(inputs, convention="training", max_frames=128)
    assert norm.frame_times([3.0, 0.5]).tolist() == [95, 15]  # 3/4*127 = 95.25, 0.5/4*127 = 15.875
    # Outside the inputs' span the grid extrapolates (rounded down), so tau leaves [-1, 1].
    assert norm.frame_times([-1.0, 5.0]).tolist() == [-32, 158]
    still = TimeNormalization.fit([7, 7], convention="training")
    assert still.frame_times([7, 9]).tolist() == [0, 0]


def test_official_inference_time_convention():
    norm = TimeNormalization.fit([0, 40, 80], convention="official_inference")
    assert norm.max_frames == 256
    frames = [0, 17, 255, 256, 300, 198]
    assert norm.frame_times(frames).tolist() == [f % 256 for f in frames]
    torch.testing.assert_close(
        norm.apply(frames), torch.tensor([(f % 256) / 255 * 2 - 1 for f in frames], dtype=torch.float32)
    )
    with pytest.raises(ValueError, match="integer frame indices.*0.5"):
        norm.apply([0.5])
    with pytest.raises(ValueError, match="must be one of"):
        TimeNormalization.fit([0, 1], convention="seconds")


def test_time_normalization_round_trips_through_tensors():
    for norm in (
        TimeNormalization.fit([2.5, 9.0], convention="training", max_frames=128),
        TimeNormalization.fit([1, 2], convention="official_inference"),
    ):
        data = norm.to_dict()
        assert all(isinstance(v, torch.Tensor) for v in data.values())
        assert TimeNormalization.from_dict(data) == norm


# -- resize + crop --------------------------------------------------------------------------------


def _cameras(n: int, h: int, w: int) -> Cameras:
    return Cameras(torch.eye(4).repeat(n, 1, 1), torch.tensor([[w * 0.9, w * 0.9, w / 2 + 1.0, h / 2 - 2.0]] * n), w, h)


def test_resize_and_center_crop_geometry_and_intrinsics():
    images = torch.rand(2, 3, 40, 60)
    cams = _cameras(2, 40, 60)
    out, new = resize_and_center_crop(images, cams, 32, 32)
    assert out.shape == (2, 3, 32, 32) and (new.height, new.width) == (32, 32)
    # s = max(32/40, 32/60) = 0.8 -> 32 x 48, left = 8, top = 0.
    fx, fy, cx, cy = cams.fxfycxcy[0].tolist()
    torch.testing.assert_close(new.fxfycxcy[0], torch.tensor([fx * 0.8, fy * 0.8, cx * 0.8 - 8, cy * 0.8]))
    assert out.min() >= 0 and out.max() <= 1
    # The image-free variant (for target views) gives the same cameras, for any sizes.
    for (h, w), (th, tw) in (((40, 60), (32, 32)), ((37, 51), (16, 24)), ((30, 20), (64, 48))):
        c = _cameras(1, h, w)
        _, with_images = resize_and_center_crop(torch.rand(1, 3, h, w), c, th, tw)
        alone = resize_and_center_crop_cameras(c, th, tw)
        assert (alone.height, alone.width) == (th, tw)
        torch.testing.assert_close(alone.fxfycxcy, with_images.fxfycxcy, atol=0, rtol=0)


def test_pure_crop_keeps_pixels_and_same_size_is_a_no_op():
    images = torch.rand(1, 3, 40, 60)
    cams = _cameras(1, 40, 60)
    out, new = resize_and_center_crop(images, cams, 40, 40)
    assert torch.equal(out, images[..., 10:50])
    torch.testing.assert_close(new.fxfycxcy, cams.fxfycxcy - torch.tensor([0.0, 0.0, 10.0, 0.0]))
    same, same_cams = resize_and_center_crop(images, cams, 40, 60)
    assert same is images and same_cams is cams


def test_lanczos_matches_the_official_pil_pipeline():
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, size=(2, 30, 50, 3), dtype=np.uint8)
    images = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255
    out, _ = resize_and_center_crop(images, _cameras(2, 30, 50), 16, 16, interpolation="lanczos")
    for i in range(2):
        # Official: scale to cover (16/30), PIL Lanczos to round(50 * s) x round(30 * s) = 27 x 16, centre crop.
        pil = Image.fromarray(arrays[i]).resize((27, 16), Image.LANCZOS).crop((5, 0, 21, 16))
        expected = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(out[i], expected, atol=0, rtol=0)


def test_resize_rejects_mismatched_input():
    with pytest.raises(ValueError, match=r"images are 20x20 \(HxW\) but the cameras describe 40x60"):
        resize_and_center_crop(torch.rand(1, 3, 20, 20), _cameras(1, 40, 60), 16, 16)
    with pytest.raises(ValueError, match="Got 2 images for 1 cameras"):
        resize_and_center_crop(torch.rand(2, 3, 40, 60), _cameras(1, 40, 60), 16, 16)
    with pytest.raises(ValueError, match="interpolation must be one of"):
        resize_and_center_crop(torch.rand(1, 3, 40, 60), _cameras(1, 40, 60), 16, 16, interpolation="nearest")
