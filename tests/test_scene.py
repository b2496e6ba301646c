"""Scene readers (official JSONL + video, nerfstudio, Blender / D-NeRF, opencv_cameras), lazy images,
frame selection."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fsm_hf import scene as scene_module
from fsm_hf.cameras import OPENGL_TO_OPENCV, Cameras
from fsm_hf.scene import Scene, VideoFrameReader, load_scene, select_frames, split_input_target

from conftest import DATA_DIR

EXAMPLE_JSONL = DATA_DIR / "fZcNop_Aenw_88573338.jsonl"
requires_example = pytest.mark.skipif(not EXAMPLE_JSONL.is_file(), reason="../shared/data example clip is not present")

FLIP = OPENGL_TO_OPENCV.float()


def gl_pose(angle: float, height: float = 0.5) -> list:
    """An OpenGL camera-to-world matrix (nested lists) on a circle, rigid."""
    c, s = math.cos(angle), math.sin(angle)
    return [[c, 0.0, s, 3 * s], [0.0, 1.0, 0.0, height], [-s, 0.0, c, 3 * c], [0.0, 0.0, 0.0, 1.0]]


def write_png(path: Path, rgb, size=(8, 6), alpha=None) -> None:
    """A solid-colour PNG of ``size = (w, h)``; RGBA when ``alpha`` (0..255) is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if alpha is None:
        Image.new("RGB", (w, h), tuple(rgb)).save(path)
    else:
        Image.new("RGBA", (w, h), (*rgb, alpha)).save(path)


# -- official JSONL + video -----------------------------------------------------------------------


@requires_example
def test_example_clip_loads_lazily_with_the_right_cameras(monkeypatch):
    decoded = []
    original = VideoFrameReader.__call__
    monkeypatch.setattr(VideoFrameReader, "__call__", lambda self, idx: decoded.append(list(idx)) or original(self, idx))

    scene = load_scene(DATA_DIR)
    assert decoded == []  # building the scene decodes nothing
    assert scene.source.format == "fsm_jsonl" and scene.source.video_path.name.endswith("-left_rectified.mp4")
    assert len(scene) == 199 and (scene.height, scene.width) == (512, 512)

    meta = json.loads(EXAMPLE_JSONL.read_text())
    frames = meta["frames"]
    expected_intr = torch.tensor([[f["fx"], f["fy"], f["cx"], f["cy"]] for f in frames], dtype=torch.float32)
    torch.testing.assert_close(scene.cameras.fxfycxcy, expected_intr, atol=0, rtol=0)
    w2c = torch.tensor([f["w2c"] for f in frames], dtype=torch.float64)
    torch.testing.assert_close(scene.cameras.c2w, torch.linalg.inv(w2c).float(), atol=1e-6, rtol=0)
    assert scene.times.tolist() == [float(f["frame_idx"]) for f in frames]
    assert scene.frame_indices == [f["frame_idx"] for f in frames]
    assert scene.is_dynamic

    images = scene.load_images([0, 120, 198])
    assert decoded == [[0, 120, 198]]
    assert images.shape == (3, 3, 512, 512) and images.dtype == torch.float32
    assert 0.0 <= images.min().item() and images.max().item() <= 1.0 and images.std().item() > 0.05
    sub = scene.select([198, 0])
    assert sub.names == [scene.names[198], scene.names[0]]
    torch.testing.assert_close(sub.load_images(), images[[2, 0]])


@requires_example
def test_video_seeking_decodes_the_same_frames_as_a_full_pass():
    import av

    reader = VideoFrameReader(DATA_DIR / "fZcNop_Aenw_88573338-left_rectified.mp4")
    wanted = [150, 3, 90, 91]
    with av.open(str(reader.path)) as container:
        every = {i: f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i in wanted}
    got = reader(wanted)
    for row, index in enumerate(wanted):
        expected = torch.from_numpy(every[index]).permute(2, 0, 1).float() / 255
        assert torch.equal(got[row], expected), index


def write_index_video(path: Path, num_frames: int = 40, gop: int = 5) -> None:
    """A tiny video whose frame i is a flat grey of level 6 * i (so the index can be read back)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt, stream.gop_size = 32, 32, "yuv420p", gop
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 6 * i, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_jsonl_reader_on_a_synthetic_clip(tmp_path, monkeypatch):
    video = tmp_path / "clip.mp4"
    write_index_video(video)
    frames = [
        {"frame_idx": i, "w2c": np.linalg.inv(np.array(gl_pose(0.1 * i)) @ FLIP.numpy()).tolist(),
         "fx": 30.0, "fy": 31.0, "cx": 16.0, "cy": 16.0, "h": 32, "w": 32}
        for i in range(0, 40, 3)
    ]
    meta = {"scene_name": "toy", "video_path": "some/official/dir/clip.mp4", "num_video_frames": 40, "frames": frames}
    (tmp_path / "toy.jsonl").write_text(json.dumps(meta))
    scene = load_scene(tmp_path / "toy.jsonl")
    assert scene.source.video_path == video and len(scene) == 14
    torch.testing.assert_close(scene.cameras.to_opengl_c2w()[2], torch.tensor(gl_pose(0.6)), atol=1e-5, rtol=0)
    monkeypatch.setattr(VideoFrameReader, "seek_gap", 2)  # force seeks between the wanted frames
    wanted = [13, 1, 7, 4]  # positions -> video frames 39, 3, 21, 12
    levels = scene.load_images(wanted).mean(dim=(1, 2, 3)) * 255
    torch.testing.assert_close(levels, torch.tensor([6.0 * scene.frame_indices[p] for p in wanted]), atol=3.0, rtol=0)

    (tmp_path / "toy.jsonl").write_text(json.dumps({**meta, "video_path": "missing.mp4"}))
    with pytest.raises(FileNotFoundError, match="'missing.mp4' was not found next to the JSON file"):
        load_scene(tmp_path / "toy.jsonl")


# -- transforms.json ------------------------------------------------------------------------------


def test_nerfstudio_transforms(tmp_path):
    frames = []
    for i in range(4):
        write_png(tmp_path / "images" / f"frame_{i:05d}.png", (10 * i, 100, 200))
        frames.append({"file_path": f"images/frame_{i:05d}.png", "transform_matrix": gl_pose(0.3 * i), "time": 0.25 * i})
    frames[2]["fl_x"] = 9.0  # a per-frame override of the global focal length
    frames.append({"file_path": "images/frame_00099.png", "transform_matrix": gl_pose(2.0), "time": 1.0})  # missing
    meta = {"fl_x": 7.0, "fl_y": 7.5, "cx": 4.1, "cy": 2.9, "w": 8, "h": 6, "k1": 0.01, "p2": 0.0, "frames": frames}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))

    with pytest.warns(UserWarning) as record:
        scene = load_scene(tmp_path)
    messages = " ".join(str(w.message) for w in record)
    assert "skipped 1 frame(s) whose image file is missing: images/frame_00099.png" in messages
    assert "distortion (k1) is ignored" in messages

    assert scene.source.format == "nerfstudio" and len(scene) == 4 and (scene.height, scene.width) == (6, 8)
    assert scene.frame_indices == [0, 1, 2, 3]
    expected_c2w = torch.tensor([gl_pose(0.3 * i) for i in range(4)]) @ FLIP
    torch.testing.assert_close(scene.cameras.c2w, expected_c2w, atol=1e-6, rtol=0)
    assert scene.cameras.fxfycxcy[0].tolist() == pytest.approx([7.0, 7.5, 4.1, 2.9])
    assert scene.cameras.fxfycxcy[2].tolist() == pytest.approx([9.0, 7.5, 4.1, 2.9])
    assert scene.times.tolist() == [0.0, 0.25, 0.5, 0.75]
    images = scene.load_images([3])
    torch.testing.assert_close(images[0, :, 0, 0], torch.tensor([30.0, 100.0, 200.0]) / 255)


def test_camera_angle_fallback_reads_the_size_from_the_image(tmp_path):
    write_png(tmp_path / "a.png", (0, 0, 0), size=(20, 10))
    meta = {"camera_angle_x": 1.0, "frames": [{"file_path": "a.png", "transform_matrix": gl_pose(0.0)}]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    scene = load_scene(tmp_path / "transforms.json")
    fx = 0.5 * 20 / math.tan(0.5)
    assert scene.cameras.fxfycxcy[0].tolist() == pytest.approx([fx, fx, 10.0, 5.0], rel=1e-6)
    assert scene.times is None and (scene.height, scene.width) == (10, 20)


def test_blender_and_dnerf_splits_composite_rgba(tmp_path):
    for split, count in (("train", 3), ("test", 2)):
        frames = []
        for i in range(count):
            write_png(tmp_path / split / f"r_{i:03d}.png", (255, 0, 0), alpha=[0, 128, 255][i % 3])
            frames.append({"file_path": f"./{split}/r_{i:03d}", "rotation": 0.1, "time": i / 4,
                           "transform_matrix": gl_pose(1.0 + i)})
        (tmp_path / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": frames}))

    train = load_scene(tmp_path)
    assert train.source.format == "blender" and train.source.path.name == "transforms_train.json"
    assert len(train) == 3 and train.times.tolist() == [0.0, 0.25, 0.5]
    fx = 0.5 * 8 / math.tan(0.345)
    torch.testing.assert_close(train.cameras.fxfycxcy[0], torch.tensor([fx, fx, 4.0, 3.0]))
    images = train.load_images()
    a = 128 / 255
    torch.testing.assert_close(images[:, :, 2, 2], torch.tensor([[1.0, 1.0, 1.0], [1.0, 1 - a, 1 - a], [1.0, 0.0, 0.0]]))
    black = load_scene(tmp_path, split="train", background="black").load_images([1])
    torch.testing.assert_close(black[0, :, 0, 0], torch.tensor([a, 0.0, 0.0]))

    test = load_scene(tmp_path, split="test")
    assert len(test) == 2 and test.source.path.name == "transforms_test.json"
    torch.testing.assert_close(test.cameras.c2w[1], torch.tensor(gl_pose(2.0)) @ FLIP, atol=1e-6, rtol=0)


# -- opencv_cameras.json --------------------------------------------------------------------------


def test_lact_opencv_cameras(tmp_path):
    frames = []
    for i in range(3):
        c2w = np.array(gl_pose(0.5 * i)) @ FLIP.numpy()
        write_png(tmp_path / "renderings" / f"{i:08d}_rgba.png", (0, 255, 0), alpha=255)
        frames.append({"w": 8, "h": 6, "fx": 10.0, "fy": 10.0, "cx": 4.0, "cy": 3.0,
                       "w2c": np.linalg.inv(c2w).tolist(), "file_path": f"renderings/{i:08d}_rgba.png"})
    (tmp_path / "opencv_cameras.json").write_text(json.dumps(frames))
    scene = load_scene(tmp_path)
    assert scene.source.format == "opencv_cameras" and len(scene) == 3
    assert scene.times is None  # '00000000_rgba' has no trailing frame number: static
    torch.testing.assert_close(scene.cameras.c2w[2], torch.tensor(gl_pose(1.0)) @ FLIP, atol=1e-6, rtol=0)
    assert scene.load_images([0])[0, :, 1, 1].tolist() == [0.0, 1.0, 0.0]


def test_official_image_dataset_times(tmp_path):
    frames = []
    for i in (4, 9, 30):
        write_png(tmp_path / f"frame_{i:05d}.png", (1, 2, 3))
        frames.append({"fx": 10.0, "fy": 10.0, "cx": 4.0, "cy": 3.0, "w2c": np.eye(4).tolist(),
                       "file_path": f"frame_{i:05d}.png"})
    (tmp_path / "scene.json").write_text(json.dumps({"frames": frames}))
    scene = load_scene(tmp_path / "scene.json")
    assert scene.source.format == "opencv_cameras" and (scene.height, scene.width) == (6, 8)
    assert scene.times.tolist() == [4.0, 9.0, 30.0]  # the DL3DV file-name rule
    for f, t in zip(frames, (0.5, 1.5, 2.5)):
        f["frame_time"] = t
    (tmp_path / "scene.json").write_text(json.dumps({"frames": frames}))
    assert load_scene(tmp_path / "scene.json").times.tolist() == [0.5, 1.5, 2.5]


# -- errors ---------------------------------------------------------------------------------------


def test_unsupported_inputs_list_the_supported_formats(tmp_path):
    with pytest.raises(ValueError, match="No scene file found.*Supported scene formats: 'fsm_jsonl'"):
        load_scene(tmp_path)
    (tmp_path / "notes.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="Cannot recognise the scene file.*'nerfstudio'"):
        load_scene(tmp_path / "notes.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_scene(tmp_path / "nope")
    with pytest.raises(ValueError, match="Unknown scene format 'colmap'"):
        load_scene(tmp_path / "notes.json", format="colmap")
    (tmp_path / "transforms_val.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(ValueError, match=r"Found \['transforms_val.json'\]; choose one with split="):
        load_scene(tmp_path)
    with pytest.raises(ValueError, match="non-empty list of frames"):
        load_scene(tmp_path, split="val")


def test_bad_cameras_in_files_fail_early(tmp_path):
    write_png(tmp_path / "a.png", (0, 0, 0))
    pose = gl_pose(0.0)
    pose[0][0] = 2.0  # not a rotation
    meta = {"fl_x": 5.0, "w": 8, "h": 6, "frames": [{"file_path": "a.png", "transform_matrix": pose}]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="rigid"):
        load_scene(tmp_path)
    meta["frames"] = [{"file_path": "a.png"}]
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"frame 0 lacks \['transform_matrix'\]"):
        load_scene(tmp_path)


def test_scene_from_tensors_and_validation():
    cams = Cameras(torch.eye(4).repeat(3, 1, 1), [[5.0, 5.0, 4.0, 3.0]] * 3, 8, 6)
    images = torch.rand(3, 3, 6, 8)
    scene = Scene.from_tensors(cams, images, times=[0.0, 1.0, 2.0])
    assert torch.equal(scene.select([2, 0]).load_images(), images[[2, 0]])
    assert torch.equal(scene.load_images([-1]), images[[2]])
    with pytest.raises(IndexError, match="out of range for 3 views of the scene"):
        scene.load_images([3])
    mask = scene.select(np.array([True, False, True]))
    assert mask.frame_indices == [0, 2] and torch.equal(mask.load_images(), images[[0, 2]])
    with pytest.raises(IndexError, match="boolean mask over 3 views of the scene must have shape"):
        scene.select([True, False])
    with pytest.raises(IndexError, match="integer positions or a boolean mask"):
        scene.select([0.5])
    with pytest.raises(ValueError, match="3 cameras but 2 times"):
        Scene.from_tensors(cams, images, times=[0.0, 1.0])
    with pytest.raises(ValueError, match=r"images must have shape \[3, 3, 6, 8\]"):
        Scene.from_tensors(cams, images[:, :, :4])


# -- frame selection ------------------------------------------------------------------------------


def test_select_frames_policies():
    assert select_frames(10, "evenly", n=4) == [0, 3, 6, 9]
    assert select_frames(199, "evenly", n=2) == [0, 198]
    assert select_frames(10, "every", k=3) == [0, 3, 6, 9]
    assert select_frames(4, "all") == [0, 1, 2, 3]
    assert select_frames(10, "indices", indices=[7, 2]) == [7, 2]
    picks = select_frames(50, "random", n=6, seed=3)
    assert picks == sorted(set(picks)) and len(picks) == 6 and picks == select_frames(50, "random", n=6, seed=3)
    with pytest.raises(ValueError, match="Cannot select n=11 distinct frames out of 10"):
        select_frames(10, "evenly", n=11)
    with pytest.raises(ValueError, match=r"out-of-range \[10\]"):
        select_frames(10, "indices", indices=[1, 10])
    with pytest.raises(ValueError, match="Unknown frame selection policy 'middle'"):
        select_frames(10, "middle")
    with pytest.raises(ValueError, match="needs a positive integer k"):
        select_frames(10, "every")


def test_split_input_target_holds_targets_out_between_inputs():
    inputs, targets = split_input_target(21, 5, 4)
    assert inputs == [0, 5, 10, 15, 20]
    assert targets == [2, 7, 12, 17]  # one in each gap, in its middle
    inputs, targets = split_input_target(100, 4, 0, start=10, window=31)
    assert inputs == [10, 20, 30, 40] and targets == []
    with pytest.raises(ValueError, match="Cannot hold out 3 targets and 3 inputs in a window of 5 frames"):
        split_input_target(5, 3, 3)


def test_split_official_matches_the_official_inference_sampler():
    # Official: window = min(window_size, N); step = window / V; chosen = [start + int(i * step)];
    # inputs = chosen[0::2], targets = chosen[1::2].
    for n, k, start, window in ((199, 8, 0, 128), (199, 16, 30, 128), (64, 4, 0, 64)):
        step = window / (2 * k)
        chosen = [start + int(i * step) for i in range(2 * k)]
        assert split_input_target(n, k, k, policy="official", start=start, window=window) == (chosen[0::2], chosen[1::2])
    with pytest.raises(ValueError, match="num_targets <= num_inputs <= num_targets \\+ 1"):
        split_input_target(100, 8, 2, policy="official")


@settings(max_examples=80, deadline=None, database=None)
@given(data=st.data())
def test_split_input_target_properties(data):
    num_frames = data.draw(st.integers(2, 300))
    num_inputs = data.draw(st.integers(2, min(num_frames, 32)))
    # Inputs include both ends, so every other frame lies between them: any split that fits works.
    num_targets = data.draw(st.integers(0, min(num_frames - num_inputs, 32)))
    inputs, targets = split_input_target(num_frames, num_inputs, num_targets)
    assert len(inputs) == num_inputs and len(targets) == num_targets
    assert inputs == sorted(set(inputs)) and inputs[0] == 0 and inputs[-1] == num_frames - 1
    assert not set(inputs) & set(targets) and len(set(targets)) == num_targets
    assert all(inputs[0] < t < inputs[-1] for t in targets)


def test_reader_registry_covers_every_format():
    assert set(scene_module._READERS) == set(scene_module.SCENE_FORMATS)
