"""FSMPipeline: loading/saving, input handling, normalisation, memory round trips, error messages."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, random_views
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fsm_hf import FSMConfig, FSMForNovelViewSynthesis, FSMMemory
from fsm_hf.cameras import Cameras
from fsm_hf.normalization import normalize_poses, resize_and_center_crop
from fsm_hf.normalization import resize_and_center_crop_cameras as fit_cameras
from fsm_hf.pipeline_fsm import FSMNormalization, FSMPipeline, FSMPipelineOutput
from fsm_hf.scene import Scene

SCENE_FILE = DATA_DIR / "fZcNop_Aenw_88573338.jsonl"
requires_data = pytest.mark.skipif(not SCENE_FILE.is_file(), reason="../shared/data example clip is not present")
HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


def tiny_model(seed: int = 0, **overrides) -> FSMForNovelViewSynthesis:
    torch.manual_seed(seed)
    config = FSMConfig.from_preset("tiny", newton_schulz_dtype="float32", **overrides)
    return FSMForNovelViewSynthesis(config).eval()


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pipe") / "tiny-fsm"
    FSMPipeline(model=tiny_model(), num_input_views=4).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipe(pipe_dir) -> FSMPipeline:
    pipeline = FSMPipeline.from_pretrained(pipe_dir)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def views():
    """Five random 48x40 (HxW) input views and three targets, in world units and raw frame indices."""
    _, fxfycxcy, c2w, _ = random_views(1, 8, size=40, seed=1, with_images=False)
    c2w = c2w[0].clone()
    c2w[:, :3, 3] *= 7.0  # world units far from the normalised frame
    c2w[:, :3, 3] += torch.tensor([3.0, -1.0, 2.0])
    cams = Cameras(c2w, fxfycxcy[0] + torch.tensor([0.0, 0.0, 0.0, 4.0]), width=40, height=48)
    images = torch.rand(5, 3, 48, 40, generator=torch.Generator().manual_seed(2))
    times = torch.tensor([0.0, 3.0, 7.0, 12.0, 20.0])
    return images, cams.select(range(5)), times, cams.select(range(5, 8)), torch.tensor([1.0, 9.0, 16.0])


# ----------------------------------------------------------------------------------------------
# Saving and loading
# ----------------------------------------------------------------------------------------------
def test_model_index_records_fsm_hf_component(pipe_dir):
    index = json.loads((pipe_dir / "model_index.json").read_text())
    assert index["_class_name"] == "FSMPipeline"
    assert index["model"] == ["fsm_hf", "FSMForNovelViewSynthesis"]
    assert index["resolution"] == [32, 32] and index["num_input_views"] == 4
    assert index["time_convention"] == "official_inference" and index["max_frames"] == 64
    assert (pipe_dir / "model" / "config.json").is_file()
    assert (pipe_dir / "model" / "model.safetensors").is_file()


def test_save_load_round_trip_gives_identical_renders(pipe, views, tmp_path):
    images, cams, times, targets, target_times = views
    pipe.save_pretrained(tmp_path / "again")
    reloaded = FSMPipeline.from_pretrained(tmp_path / "again")
    reloaded.set_progress_bar_config(disable=True)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(reloaded.config) == public(pipe.config)
    for a, b in zip(pipe.model.state_dict().values(), reloaded.model.state_dict().values()):
        assert torch.equal(a, b)
    first = pipe(images, cams, times, targets, target_times, output_type="pt").images
    second = reloaded(images, cams, times, targets, target_times, output_type="pt").images
    assert torch.equal(first, second)


def test_from_pretrained_overrides(pipe_dir):
    loaded = FSMPipeline.from_pretrained(pipe_dir, newton_schulz_dtype="bfloat16", resolution=16, torch_dtype=torch.bfloat16)
    assert loaded.model.config.newton_schulz_dtype == "bfloat16"
    assert loaded.config.resolution == [16, 16] and loaded.config.num_input_views == 4
    assert loaded.model.dtype == torch.bfloat16


def test_from_pretrained_resolves_hub_ids_with_snapshot_download(pipe_dir, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(pipe_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = FSMPipeline.from_pretrained(
        "someone/fsm-tiny", revision="v1", cache_dir="/tmp/c", local_files_only=True, token="t"
    )
    assert isinstance(loaded, FSMPipeline)
    assert calls == [("someone/fsm-tiny", dict(revision="v1", cache_dir="/tmp/c", local_files_only=True, token="t"))]


def test_from_pretrained_errors(tmp_path, pipe_dir):
    with pytest.raises(FileNotFoundError, match="not found"):
        FSMPipeline.from_pretrained(tmp_path / "missing" / "folder")
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        FSMPipeline.from_pretrained(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    index = json.loads((pipe_dir / "model_index.json").read_text())
    (bad / "model_index.json").write_text(json.dumps({**index, "model": ["os", "system"]}))
    with pytest.raises(ValueError, match="must come from 'fsm_hf'"):
        FSMPipeline.from_pretrained(bad)


def test_to_moves_and_casts_the_model(pipe_dir):
    loaded = FSMPipeline.from_pretrained(pipe_dir).to("cpu", torch.bfloat16)
    assert loaded.model.dtype == torch.bfloat16 and loaded.device.type == "cpu"


def test_constructor_validates_settings():
    model = tiny_model()
    with pytest.raises(ValueError, match="multiples of the patch size 8"):
        FSMPipeline(model=model, resolution=30)
    with pytest.raises(ValueError, match="time_convention must be one of"):
        FSMPipeline(model=model, time_convention="seconds")
    with pytest.raises(TypeError, match="FSM model"):
        FSMPipeline(model=torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------------------------
# Behaviour with arrays
# ----------------------------------------------------------------------------------------------
def test_call_matches_the_model_on_normalised_inputs(pipe, views):
    """The pipeline = resize/crop + normalisation fitted on the inputs + the model's joint forward."""
    images, cams, times, targets, target_times = views
    out = pipe(images, cams, times, targets, target_times, output_type="pt")
    assert isinstance(out, FSMPipelineOutput) and out.images.shape == (3, 3, 32, 32)

    small, small_cams = resize_and_center_crop(images, cams, 32, 32)
    pose = normalize_poses(small_cams.c2w)
    tau_in = (times % 64) / 63 * 2 - 1  # official inference: t = frame_idx % max_frames
    tau_out = (target_times % 64) / 63 * 2 - 1
    target_small = fit_cameras(targets, 32, 32)
    expected = pipe.model(
        small[None], small_cams.fxfycxcy[None], pose.apply(small_cams.c2w)[None], tau_in[None].float(),
        target_small.fxfycxcy[None], pose.apply(target_small.c2w)[None], tau_out[None].float(),
    ).images[0]  # fmt: skip
    torch.testing.assert_close(out.images, expected, atol=1e-4, rtol=0)
    # The fitted normalisation is returned and stored in the memory.
    assert isinstance(out.normalization, FSMNormalization)
    torch.testing.assert_close(out.normalization.pose.normalized_from_world, pose.normalized_from_world)
    assert set(out.memory.normalization) >= {"normalized_from_world", "scale", "time_convention"}


def test_output_types_and_tuple(pipe, views):
    images, cams, times, targets, target_times = views
    pt = pipe(images, cams, times, targets, target_times, output_type="pt").images
    arr = pipe(images, cams, times, targets, target_times, output_type="np").images
    pil = pipe(images, cams, times, targets, target_times, output_type="pil").images
    assert pt.dtype == torch.float32 and pt.shape == (3, 3, 32, 32)
    assert 0 <= pt.min() and pt.max() <= 1
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(arr, pt.permute(0, 2, 3, 1).numpy())
    assert isinstance(pil, list) and len(pil) == 3 and all(isinstance(p, Image.Image) for p in pil)
    assert pil[0].size == (32, 32) and pil[0].mode == "RGB"
    np.testing.assert_array_equal(np.asarray(pil[1]), (arr[1] * 255).round().astype(np.uint8))
    as_tuple = pipe(images, cams, times, targets, target_times, output_type="pt", return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], pt) and isinstance(as_tuple[2], FSMMemory)


def test_image_forms_agree(pipe, views):
    images, cams, times, targets, target_times = views
    reference = pipe(images, cams, times, targets, target_times, output_type="pt").images
    u8 = (images * 255).round().to(torch.uint8)
    quantised = pipe(u8.float() / 255, cams, times, targets, target_times, output_type="pt").images
    forms = [
        u8,  # uint8 [N, 3, H, W]
        u8.permute(0, 2, 3, 1),  # channels last
        u8.permute(0, 2, 3, 1).numpy(),  # numpy [N, H, W, 3]
        [Image.fromarray(a) for a in u8.permute(0, 2, 3, 1).numpy()],  # PIL list
    ]
    for form in forms:
        out = pipe(form, cams, times, targets, target_times, output_type="pt").images
        assert torch.equal(out, quantised)
    assert (reference - quantised).abs().max() < 0.05


def test_batch_size_and_determinism(pipe, views):
    images, cams, times, targets, target_times = views
    one = pipe(images, cams, times, targets, target_times, batch_size=1, output_type="pt").images
    all_ = pipe(images, cams, times, targets, target_times, batch_size=8, output_type="pt").images
    again = pipe(images, cams, times, targets, target_times, batch_size=8, output_type="pt").images
    assert torch.equal(all_, again)
    torch.testing.assert_close(one, all_, atol=1e-5, rtol=0)


def test_render_from_saved_memory_equals_joint_call(pipe, views, tmp_path):
    images, cams, times, targets, target_times = views
    joint = pipe(images, cams, times, targets, target_times, output_type="pt")
    memory = pipe.reconstruct(images, cams, times)
    memory.save(tmp_path / "memory.safetensors")
    loaded = FSMMemory.load(tmp_path / "memory.safetensors")
    assert loaded.metadata["time_convention"] == "official_inference"
    rendered = pipe.render(loaded, targets, target_times, output_type="pt")
    assert torch.equal(rendered.images, joint.images)
    # Many views from one memory, in any order, without re-reading the inputs.
    flipped = pipe.render(loaded, targets.select([2, 1, 0]), target_times.flip(0), batch_size=2, output_type="pt")
    torch.testing.assert_close(flipped.images, joint.images.flip(0), atol=1e-5, rtol=0)


def test_default_targets_rerender_inputs(pipe, views):
    images, cams, times, _, _ = views
    out = pipe(images, cams, times, output_type="pt")
    explicit = pipe(images, cams, times, cams, times, output_type="pt")
    assert out.images.shape == (5, 3, 32, 32)
    assert torch.equal(out.images, explicit.images)


def test_training_time_convention(pipe, views):
    images, cams, _, targets, _ = views
    seconds = torch.tensor([0.0, 0.25, 0.5, 1.75, 2.0])
    out = pipe(images, cams, seconds, targets, [0.5, 1.0, 2.0], time_convention="training", output_type="pt")
    assert out.normalization.time.convention == "training"
    assert out.normalization.time.time_min == 0.0 and out.normalization.time.time_max == 2.0
    with pytest.raises(ValueError, match="integer frame indices"):
        pipe(images, cams, seconds, targets, [0.5, 1.0, 2.0], output_type="pt")


def test_fit_cameras_matches_resize_and_center_crop():
    _, fxfycxcy, c2w, _ = random_views(1, 3, size=40, seed=4, with_images=False)
    for height, width, size in ((48, 40, 32), (30, 64, 16), (32, 32, 32), (100, 37, 24)):
        cams = Cameras(c2w[0], fxfycxcy[0], width, height)
        _, expected = resize_and_center_crop(torch.zeros(3, 3, height, width), cams, size, size)
        got = fit_cameras(cams, size, size)
        assert (got.height, got.width) == (expected.height, expected.width)
        torch.testing.assert_close(got.fxfycxcy, expected.fxfycxcy)


# ----------------------------------------------------------------------------------------------
# Bad input fails early, saying what was expected and what was given
# ----------------------------------------------------------------------------------------------
@settings(max_examples=15, deadline=None, suppress_health_check=HEALTH)
@given(num_images=st.integers(1, 6), num_cameras=st.integers(1, 6))
def test_mismatched_image_and_camera_counts(pipe, num_images, num_cameras):
    _, fxfycxcy, c2w, _ = random_views(1, num_cameras, seed=5, with_images=False)
    cams = Cameras(c2w[0], fxfycxcy[0], 32, 32)
    images = torch.rand(num_images, 3, 32, 32)
    if num_images == num_cameras:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one camera: "all input cameras share one centre"
            assert pipe.reconstruct(images, cams).batch_size == 1
        return
    with pytest.raises(ValueError, match=f"got {num_images} image\\(s\\) and {num_cameras} camera\\(s\\)"):
        pipe(images, cams, output_type="pt")


@settings(max_examples=15, deadline=None, suppress_health_check=HEALTH)
@given(num_times=st.integers(0, 7))
def test_mismatched_time_counts(pipe, views, num_times):
    images, cams, _, targets, _ = views
    if num_times != 5:
        with pytest.raises(ValueError, match=f"got 5 image\\(s\\) and {num_times} time\\(s\\)"):
            pipe(images, cams, list(range(num_times)), targets, [0, 1, 2])
    if num_times != 3:
        with pytest.raises(ValueError, match=f"got 3 camera\\(s\\) and {num_times} time\\(s\\)"):
            pipe(images, cams, None, targets, list(range(num_times)))


@settings(max_examples=20, deadline=None, suppress_health_check=HEALTH)
@given(resolution=st.integers(1, 40))
def test_resolution_must_be_a_multiple_of_the_patch_size(pipe, views, resolution):
    images, cams, times, _, _ = views
    if resolution % 8 == 0:
        assert pipe.reconstruct(images, cams, times, resolution=resolution).image_size == (resolution, resolution)
        return
    with pytest.raises(ValueError, match=f"multiples of the patch size 8; got {resolution}x{resolution}"):
        pipe(images, cams, times, resolution=resolution)


def test_other_bad_inputs(pipe, views, tmp_path):
    images, cams, times, targets, target_times = views
    with pytest.raises(ValueError, match="at least one input image, got 0"):
        pipe([], cams, times)
    with pytest.raises(ValueError, match="at least one input image, got 0"):
        pipe(torch.zeros(0, 3, 48, 40), cams, times)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="Unsupported file '.*notes.txt'.*expected a video"):
        pipe(tmp_path / "notes.txt", cams, times)
    with pytest.raises(ValueError, match="Unsupported file|unsupported file"):
        pipe([tmp_path / "notes.txt"], cams, times)
    with pytest.raises(ValueError, match="Cannot recognise the scene file"):
        pipe(None, tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="cameras describe 48x40 .* images are 32x32"):
        pipe(torch.rand(5, 3, 32, 32), cams, times)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        pipe(images * 255, cams, times)
    with pytest.raises(ValueError, match="output_type must be one of"):
        pipe(images, cams, times, output_type="jpeg")
    with pytest.raises(ValueError, match="target_times.*required"):
        pipe(images, cams, times, targets)
    with pytest.raises(TypeError, match="must be a Cameras"):
        pipe(images, cams, times, target_cameras=torch.eye(4))
    with pytest.raises(TypeError, match="`cameras` must be a Cameras, a Scene or a scene file path"):
        pipe(images, torch.eye(4)[None].repeat(5, 1, 1), times)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        pipe(images, cams, times, batch_size=0)


def test_memory_from_another_model_is_rejected(pipe, views):
    images, cams, times, targets, target_times = views
    other = FSMPipeline(model=tiny_model(hidden_size=96), num_input_views=4)
    other.set_progress_bar_config(disable=True)
    memory = other.reconstruct(images, cams, times)
    with pytest.raises(ValueError, match="different model configuration.*hidden_size: memory=96 model=64"):
        pipe.render(memory, targets, target_times)
    raw = pipe.model.reconstruct(
        torch.rand(1, 2, 3, 32, 32), cams.fxfycxcy[None, :2], cams.c2w[None, :2], torch.zeros(1, 2)
    )  # a memory built by the model directly has no normalisation
    with pytest.raises(ValueError, match="no pose normalisation"):
        pipe.render(raw, targets, target_times)


# ----------------------------------------------------------------------------------------------
# The real example clip
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip():
    from fsm_hf.scene import load_scene, select_frames

    scene = load_scene(SCENE_FILE)
    inputs = scene.select(select_frames(len(scene), "evenly", n=4))
    targets = scene.select([30, 100])
    return scene, inputs, inputs.load_images(), targets


@requires_data
def test_clip_from_scene_file_and_from_arrays(pipe, clip):
    scene, inputs, images, targets = clip
    from_file = pipe(None, SCENE_FILE, target_cameras=targets.cameras, target_times=targets.times, output_type="np")
    assert from_file.images.shape == (2, 32, 32, 3)
    assert from_file.memory.metadata["num_input_views"] == 4  # the pipeline config's default
    from_arrays = pipe(
        list((images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()),
        inputs.cameras, inputs.times, targets.cameras, targets.times, output_type="np",
    )  # fmt: skip
    np.testing.assert_array_equal(from_arrays.images, from_file.images)
    from_scene = pipe(None, scene, target_cameras=targets.cameras, target_times=targets.times, output_type="np")
    np.testing.assert_array_equal(from_scene.images, from_file.images)
    # The inputs are re-centred and scaled: camera centres of the inputs lie within [-1, 1].
    centers = from_file.normalization.pose.apply(inputs.cameras.c2w)[:, :3, 3]
    assert centers.abs().max() == pytest.approx(1.0, abs=1e-5)


@requires_data
def test_clip_determinism_and_saved_memory(pipe, clip, tmp_path):
    _, inputs, images, targets = clip
    out = pipe(images, inputs, None, targets.cameras, targets.times, output_type="pt")
    assert out.images.shape == (2, 3, 32, 32)
    again = pipe(images, inputs, None, targets.cameras, targets.times, output_type="pt")
    assert torch.equal(out.images, again.images)
    out.memory.save(tmp_path / "clip.safetensors")
    rendered = pipe.render(FSMMemory.load(tmp_path / "clip.safetensors"), targets.cameras, targets.times, output_type="pt")
    assert torch.equal(rendered.images, out.images)


@requires_data
def test_clip_num_input_views(pipe):
    memory = pipe.reconstruct(None, SCENE_FILE, num_input_views=2, resolution=16)
    assert memory.metadata["num_input_views"] == 2 and memory.image_size == (16, 16)
    with pytest.raises(ValueError, match=r"num_input_views \(for this scene\) must be an integer in \[1, 199\].*got 500"):
        pipe.reconstruct(None, SCENE_FILE, num_input_views=500)


def test_gaussian_model_pipeline_returns_gaussians(views, tmp_path):
    from fsm_hf import FSMForGaussianReconstruction, FSMGaussianConfig

    torch.manual_seed(0)
    model = FSMForGaussianReconstruction(FSMGaussianConfig.from_preset("tiny-lrm", newton_schulz_dtype="float32")).eval()
    FSMPipeline(model=model, num_input_views=4).save_pretrained(tmp_path / "lrm")
    index = json.loads((tmp_path / "lrm" / "model_index.json").read_text())
    assert index["model"] == ["fsm_hf", "FSMForGaussianReconstruction"]
    pipe = FSMPipeline.from_pretrained(tmp_path / "lrm")
    pipe.set_progress_bar_config(disable=True)
    images, cams, times, targets, target_times = views
    out = pipe(images, cams, times, targets, target_times, output_type="pt")
    assert out.images.shape == (3, 3, 32, 32)
    assert out.gaussians is not None and out.gaussians["means"].shape[-1] == 3
    again = pipe.render(out.memory, targets, target_times, output_type="pt")
    assert torch.equal(again.images, out.images)
    images_tuple, gaussians_tuple, _, _ = pipe(images, cams, times, targets, target_times, return_dict=False)
    assert gaussians_tuple is not None and torch.equal(gaussians_tuple["means"], out.gaussians["means"])

    # the pipeline's Gaussians (a dict of tensors) go straight to the .ply exporters
    pytest.importorskip("plyfile")
    from fsm_hf.ply import export_ply, export_ply_4d

    tau = float(out.normalization.time.apply(target_times[:1])[0])
    assert export_ply(tmp_path / "a.ply", out.gaussians, tau) > 0
    assert export_ply_4d(tmp_path / "a4.ply", out.gaussians) == out.gaussians["means"].shape[1]
    with pytest.raises(IndexError, match=r"batch_index must be an integer in \[0, 0\], got 3"):
        export_ply(tmp_path / "b.ply", out.gaussians, tau, batch_index=3)


def test_long_sequences_any_frame_selection_and_bounded_memory_give_the_same_memory(tmp_path):
    """Frame-selection policies pick the documented frames; the memory-bounded path equals the plain one."""
    torch.manual_seed(0)
    model = FSMForNovelViewSynthesis(FSMConfig.from_preset("tiny", newton_schulz_dtype="float32")).eval()
    pipe = FSMPipeline(model=model, resolution=32)
    images, fxfycxcy, c2w, _ = random_views(1, 24, size=32, seed=9)
    scene = Scene.from_tensors(Cameras(c2w[0], fxfycxcy[0], width=32, height=32), images[0], times=torch.arange(24.0))
    assert pipe.select_input_views(scene, frame_selection="every", frame_stride=5).frame_indices == [0, 5, 10, 15, 20]
    assert len(pipe.select_input_views(scene, frame_selection="all")) == 24
    with pytest.raises(ValueError, match="frame_stride"):
        pipe.select_input_views(scene, frame_selection="every")
    plain = pipe.reconstruct(None, scene, frame_selection="all")
    bounded = pipe.reconstruct(None, scene, frame_selection="all", max_views_per_batch=3)
    assert plain.metadata["num_input_views"] == bounded.metadata["num_input_views"] == 24
    for a, b in zip(plain.fast_weights, bounded.fast_weights):
        torch.testing.assert_close(a.w0, b.w0, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# Inputs that used to pass silently
# ----------------------------------------------------------------------------------------------
def test_non_finite_images_are_rejected(pipe, views):
    images, cams, times, targets, target_times = views
    bad = images.clone()
    bad[3, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match=r"finite; got NaN or inf in image\(s\) \[3\]"):
        pipe(bad, cams, times, targets, target_times)


def test_arguments_that_cannot_apply_are_errors(pipe, views):
    images, cams, times, targets, target_times = views
    with pytest.raises(ValueError, match="with explicit `images` every image is read"):
        pipe(images, cams, times, targets, target_times, num_input_views=2)
    with pytest.raises(ValueError, match="frame_selection must be one of"):
        pipe(images, cams, times, targets, target_times, frame_selection="bogus")
    with pytest.raises(ValueError, match="target_times were given without target_cameras"):
        pipe(images, cams, times, target_times=target_times)
    for value in (0, -1, 2.5, "2"):
        with pytest.raises(ValueError, match="max_views_per_batch must be a positive integer"):
            pipe(images, cams, times, targets, target_times, max_views_per_batch=value)
        with pytest.raises(ValueError, match="max_views_per_batch must be a positive integer"):
            FSMPipeline(model=pipe.model, max_views_per_batch=value)
    # numpy integers are integers
    assert FSMPipeline(model=pipe.model, num_input_views=np.int64(3)).config.num_input_views == 3


def test_max_views_per_batch_is_a_saved_setting(pipe, tmp_path):
    FSMPipeline(model=pipe.model, max_views_per_batch=3).save_pretrained(tmp_path / "p")
    assert FSMPipeline.from_pretrained(tmp_path / "p").config.max_views_per_batch == 3
    assert FSMPipeline.from_pretrained(tmp_path / "p", max_views_per_batch=2).config.max_views_per_batch == 2


def test_times_outside_the_trained_range_warn(pipe, views):
    images, cams, times, targets, _ = views
    with pytest.warns(UserWarning, match=r"2 target times \(-3, 70\) lie outside \[0, 63\]; they wrap around modulo 64"):
        pipe(images, cams, times, targets, [-3, 9, 70])
    training = FSMPipeline(model=pipe.model, time_convention="training")
    training.set_progress_bar_config(disable=True)
    with pytest.warns(UserWarning, match=r"1 target times \(25\) lie outside the input views' time span \[0, 20\]"):
        training(images, cams, times, targets, [1.0, 9.0, 25.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        training(images, cams, times, targets, [1.0, 9.0, 20.0])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_other_weight_dtypes_render_close_to_fp32(pipe_dir, pipe, views, dtype):
    images, cams, times, targets, target_times = views
    reference = pipe(images, cams, times, targets, target_times, output_type="pt")
    other = FSMPipeline.from_pretrained(pipe_dir, torch_dtype=dtype)
    other.set_progress_bar_config(disable=True)
    assert other.model.dtype == dtype
    out = other(images, cams, times, targets, target_times, output_type="pt")
    assert out.images.dtype == torch.float32
    tolerance = 1e-5 if dtype == torch.float64 else 0.05
    assert (out.images - reference.images).abs().max() < tolerance
    # a memory cast to another dtype renders like the one reconstruct made
    for memory_dtype in (torch.float64, torch.bfloat16):
        again = other.render(out.memory.to(dtype=memory_dtype), targets, target_times, output_type="pt")
        assert (again.images - out.images).abs().max() < (1e-5 if memory_dtype == torch.float64 else 0.05)
    cast = reference.memory.to(dtype=torch.float16)
    assert cast.fast_weights[0].w0.dtype == torch.float16
    assert all(v.dtype == reference.memory.normalization[k].dtype for k, v in cast.normalization.items())


def test_memory_from_other_weights_of_the_same_configuration_warns(pipe, views):
    images, cams, times, targets, target_times = views
    memory = pipe.reconstruct(images, cams, times)
    assert memory.metadata["weights_fingerprint"] == pipe.model.weights_fingerprint()
    other = FSMPipeline(model=tiny_model(seed=1), num_input_views=4)
    other.set_progress_bar_config(disable=True)
    with pytest.warns(UserWarning, match="built by a model with other weights"):
        other.render(memory, targets, target_times)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.render(memory, targets, target_times)
        # the bf16 copy of the same weights is the same model
        FSMPipeline(model=tiny_model().to(torch.bfloat16), num_input_views=4).render(memory, targets, target_times)


def test_builtin_alias_loads_the_packaged_model():
    from fsm_hf.demo import builtin_model_path

    builtin = FSMPipeline.from_pretrained("builtin")
    assert builtin.model.weights_fingerprint() == FSMPipeline.from_pretrained(builtin_model_path()).model.weights_fingerprint()
