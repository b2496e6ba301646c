"""The ``fsm`` command line (run in-process through ``main([...])``) and video export."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, save_tiny_pipeline
from PIL import Image

from fsm_hf import FSMMemory
from fsm_hf.cli import main
from fsm_hf.pipeline_fsm import FSMPipeline
from fsm_hf.video import export_to_video, frames_to_uint8, make_image_grid, read_video

SCENE_FILE = DATA_DIR / "fZcNop_Aenw_88573338.jsonl"
requires_data = pytest.mark.skipif(not SCENE_FILE.is_file(), reason="../shared/data example clip is not present")


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("cli") / "tiny-pipe")


# ----------------------------------------------------------------------------------------------
# render / reconstruct on the example clip
# ----------------------------------------------------------------------------------------------
@requires_data
def test_render_writes_a_video(pipe_dir, tmp_path, capsys):
    out = tmp_path / "spiral.mp4"
    code = main([
        "render", "--model", str(pipe_dir), "--scene", str(SCENE_FILE), "--num-input-views", "3",
        "--trajectory", "spiral", "--time", "fixed", "--num-frames", "6", "--resolution", "32",
        "--device", "cpu", "--ns-dtype", "float32", "--out", str(out), "--save-memory", str(tmp_path / "m.safetensors"),
        "--no-progress",
    ])  # fmt: skip
    assert code == 0
    assert "Wrote 6 frames" in capsys.readouterr().out
    frames = read_video(out)
    assert frames.shape == (6, 32, 32, 3)
    memory = FSMMemory.load(tmp_path / "m.safetensors")
    assert memory.image_size == (32, 32) and memory.metadata["num_input_views"] == 3
    assert memory.metadata["input_frame_indices"] == [0, 99, 198]


@requires_data
@pytest.mark.parametrize("trajectory,time", [("orbit", "sweep"), ("interp", "sweep"), ("static", "sweep")])
def test_render_trajectories(pipe_dir, tmp_path, trajectory, time):
    out = tmp_path / f"{trajectory}.gif"
    args = ["render", "--model", str(pipe_dir), "--scene", str(SCENE_FILE), "--num-input-views", "2"]
    args += ["--trajectory", trajectory, "--time", time, "--num-frames", "4", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert read_video(out).shape == (4, 32, 32, 3)


@requires_data
def test_reconstruct_writes_a_memory_that_renders(pipe_dir, tmp_path):
    out = tmp_path / "memory.safetensors"
    code = main([
        "reconstruct", "--model", str(pipe_dir), "--scene", str(DATA_DIR), "--out", str(out), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    memory = FSMMemory.load(out)
    assert memory.metadata["num_input_views"] == 4  # the checkpoint's default
    assert memory.metadata["input_frame_indices"] == [0, 66, 132, 198]
    assert memory.metadata["time_convention"] == "official_inference"

    # The saved memory renders the same views as the pipeline on the same input frames.
    from fsm_hf.scene import load_scene

    pipe = FSMPipeline.from_pretrained(pipe_dir)
    pipe.set_progress_bar_config(disable=True)
    scene = load_scene(SCENE_FILE)
    targets = scene.select([10, 50])
    rendered = pipe.render(memory, targets.cameras, targets.times, output_type="pt").images
    joint = pipe(None, scene.select([0, 66, 132, 198]), None, targets.cameras, targets.times, output_type="pt").images
    assert torch.equal(rendered, joint)


@requires_data
def test_bad_input_is_one_line_error(pipe_dir, tmp_path, capsys):
    code = main([
        "reconstruct", "--model", str(pipe_dir), "--scene", str(SCENE_FILE), "--resolution", "30",
        "--out", str(tmp_path / "m.safetensors"),
    ])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "fsm reconstruct: error:" in err and "multiples of the patch size 8" in err
    assert not (tmp_path / "m.safetensors").exists()


def test_missing_scene_is_an_error(pipe_dir, tmp_path, capsys):
    code = main(["reconstruct", "--model", str(pipe_dir), "--scene", str(tmp_path / "nope"), "--out", "x.safetensors"])
    assert code == 1
    assert "does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# convert / push / eval / demo / help
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source,module", [("official", "convert_fsm_official"), ("lact", "convert_lact_nvs")])
def test_convert_forwards_its_arguments(monkeypatch, source, module):
    seen = []
    fake = types.ModuleType(f"conversion.{module}")
    fake.main = lambda argv=None: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, f"conversion.{module}", fake)
    assert main(["convert", source, "--checkpoint", "x.pth", "--output", "out", "--dtype", "float32"]) == 0
    assert seen == [["--checkpoint", "x.pth", "--output", "out", "--dtype", "float32"]]


def test_push_calls_hub_push_folder(monkeypatch, tmp_path, capsys):
    import fsm_hf.hub

    calls = []

    def fake_push(folder, repo_id, **kwargs):
        calls.append((folder, repo_id, kwargs))
        return "https://huggingface.co/me/fsm/commit/1"

    monkeypatch.setattr(fsm_hf.hub, "push_folder", fake_push)
    assert main(["push", str(tmp_path), "me/fsm", "--private", "--revision", "dev"]) == 0
    assert calls == [(str(tmp_path), "me/fsm", dict(token=None, private=True, revision="dev"))]
    assert "commit/1" in capsys.readouterr().out


def test_push_without_hub_module_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "fsm_hf.hub", None)  # makes `from .hub import ...` fail
    assert main(["push", str(tmp_path), "me/fsm"]) == 2
    assert "not available yet" in capsys.readouterr().err


def test_eval_is_implemented(capsys):
    """``fsm eval`` is a real subcommand now (its behaviour: tests/test_eval_cli.py)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "not implemented" not in text and "synthetic:N[@SEED][xFRAMES]" in text


def test_help_explains_conventions(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for needle in ("OpenCV", "official_inference", "--trajectory", "--ns-dtype", "multiple of the model's patch size"):
        assert needle in text
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "--model", "m", "--scene", "s", "--out", "o.mp4", "--trajectory", "zigzag"])
    assert exit_info.value.code == 2


# ----------------------------------------------------------------------------------------------
# Video export
# ----------------------------------------------------------------------------------------------
def _frames(n=5, h=18, w=22):
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, h, w, generator=g)
    return torch.cat([base * (0.2 + 0.15 * i) for i in range(n)])  # [n, 3, h, w], distinct brightness


def test_export_mp4_round_trip(tmp_path):
    frames = _frames()
    written = export_to_video(frames, tmp_path / "clip.mp4", fps=10)
    assert written.endswith("clip.mp4")
    decoded = read_video(written)
    assert decoded.shape == (5, 18, 22, 3)
    # Lossy, but each frame keeps its brightness.
    means = decoded.reshape(5, -1).mean(1) / 255
    expected = frames.reshape(5, -1).mean(1).numpy()
    np.testing.assert_allclose(means, expected, atol=0.03)


def test_export_odd_sizes_are_padded(tmp_path):
    decoded = read_video(export_to_video(_frames(3, 17, 21), tmp_path / "odd.mp4", fps=5))
    assert decoded.shape == (3, 18, 22, 3)


def test_export_gif_fallback_without_ffmpeg(tmp_path, monkeypatch):
    import fsm_hf.video

    monkeypatch.setattr(fsm_hf.video, "ffmpeg_available", lambda: False)
    frames = [Image.fromarray(a) for a in frames_to_uint8(_frames(4))]
    written = export_to_video(frames, tmp_path / "clip.mp4", fps=8)
    assert written.endswith("clip.gif") and not (tmp_path / "clip.mp4").exists()
    assert read_video(written).shape == (4, 18, 22, 3)


def test_frame_forms_and_errors():
    frames = _frames(2)
    as_u8 = frames_to_uint8(frames)
    assert as_u8[0].dtype == np.uint8 and as_u8[0].shape == (18, 22, 3)
    np.testing.assert_array_equal(frames_to_uint8(frames.permute(0, 2, 3, 1).numpy()), as_u8)
    np.testing.assert_array_equal(frames_to_uint8([Image.fromarray(a) for a in as_u8]), as_u8)
    with pytest.raises(ValueError, match="at least one frame"):
        frames_to_uint8([])
    with pytest.raises(ValueError, match="share one size"):
        frames_to_uint8([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)])
    with pytest.raises(ValueError, match="fps must be a positive number"):
        export_to_video(frames, "x.mp4", fps=0)


def test_make_image_grid():
    frames = frames_to_uint8(_frames(5, 4, 6))
    grid = make_image_grid(frames, cols=3, padding=1)
    assert grid.size == (3 * 6 + 2, 2 * 4 + 1)
    array = np.asarray(grid)
    np.testing.assert_array_equal(array[5:9, 7:13], frames[4])  # row 1, column 1
    assert (array[5:9, 14:] == 255).all()  # empty last cell is white
    with pytest.raises(ValueError, match="cannot hold 5"):
        make_image_grid(frames, rows=2, cols=2)
