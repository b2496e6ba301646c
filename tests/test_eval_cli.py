"""``fsm eval`` (test-time scaling evaluation) run in-process, and the scaling figure."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import DATA_DIR, save_tiny_pipeline
from PIL import Image

from fsm_hf.cli import main
from fsm_hf.training.evaluation import SyntheticScenes, format_summary, parse_synthetic_spec
from fsm_hf.training.plots import plot_scaling

SCENE_FILE = DATA_DIR / "fZcNop_Aenw_88573338.jsonl"
requires_data = pytest.mark.skipif(not SCENE_FILE.is_file(), reason="../shared/data example clip is not present")


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory):
    """A tiny random 4D model (32 px, patch 8, time convention "official_inference") as a pipeline folder."""
    return save_tiny_pipeline(tmp_path_factory.mktemp("eval-cli") / "tiny-pipe")


def _eval(pipe_dir, out, *extra):
    return main(["eval", "--model", str(pipe_dir), "--device", "cpu", "--no-progress", "--no-lpips",
                 "--output-dir", str(out), *extra])  # fmt: skip


# ----------------------------------------------------------------------------------------------
# A full run: JSON, CSV, figure, table
# ----------------------------------------------------------------------------------------------
def test_eval_writes_summary_csv_and_scaling_plot(pipe_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    code = _eval(pipe_dir, out, "--scenes", "synthetic:2x24", "--num-input-views", "8,4", "--num-target-views", "4",
                 "--settings", "sparse,continuous", "--max-views-per-batch", "3")  # fmt: skip
    assert code == 0
    stdout = capsys.readouterr().out
    assert "PSNR" in stdout and "SSIM" in stdout and "continuous" in stdout and "scaling.png" in stdout

    summary = json.loads((out / "summary.json").read_text())
    rows = summary["summary"]
    assert [(r["setting"], r["num_input_views"]) for r in rows] == [
        ("sparse", 4), ("sparse", 8), ("continuous", 4), ("continuous", 8)]  # fmt: skip
    for row in rows:
        assert row["num_scenes"] == 2 and row["num_images"] == 8 and row["skipped_scenes"] == []
        assert 0.0 < row["psnr"] < 60.0 and -1.0 <= row["ssim"] <= 1.0 and row["lpips"] is None
    # synthetic scenes have continuous times in [0, 1]: "auto" reads them in the training convention
    assert summary["protocol"]["time_convention"] == "training"
    assert summary["protocol"]["resolution"] == [32, 32]

    with (out / "per_scene.csv").open() as f:
        scene_rows = list(csv.DictReader(f))
    assert len(scene_rows) == 8  # 2 scenes x 2 settings x 2 counts
    assert {r["scene"] for r in scene_rows} == {"synthetic_10000", "synthetic_10001"}  # held-out seeds by default
    assert {r["time_convention"] for r in scene_rows} == {"training"}
    for r in scene_rows:
        assert len(r["input_frames"].split()) == int(r["num_input_views"]) and len(r["target_frames"].split()) == 4

    with Image.open(out / "scaling.png") as image:
        image.verify()
    with Image.open(out / "scaling.png") as image:
        assert image.format == "PNG" and image.width >= 600 and 250 <= image.height <= 1000


def test_streaming_does_not_change_scores(pipe_dir, tmp_path):
    """``--max-views-per-batch`` bounds memory only: the scores are those of the plain forward."""
    runs = []
    for name, extra in (("plain", []), ("streamed", ["--max-views-per-batch", "2"])):
        assert _eval(pipe_dir, tmp_path / name, "--scenes", "synthetic:1x16", "--num-input-views", "6",
                     "--num-target-views", "2", "--settings", "sparse", "--no-plot", *extra) == 0  # fmt: skip
        runs.append(json.loads((tmp_path / name / "summary.json").read_text())["summary"][0])
    assert runs[0]["psnr"] == pytest.approx(runs[1]["psnr"], abs=1e-4)
    assert not (tmp_path / "plain" / "scaling.png").exists()


def test_short_scenes_are_refused_or_skipped(pipe_dir, tmp_path, capsys):
    args = ["--scenes", "synthetic:1x12", "--num-input-views", "4,16", "--num-target-views", "2", "--settings", "sparse"]
    assert _eval(pipe_dir, tmp_path / "refused", *args) == 1
    err = capsys.readouterr().err
    assert "fsm eval: error: scenes too short" in err and "synthetic_10000 (12 frames) for sparse with 16 inputs" in err
    assert not (tmp_path / "refused").exists()  # refused before any work

    assert _eval(pipe_dir, tmp_path / "skipped", *args, "--skip-short-scenes") == 0
    assert "skipped (too short): sparse_16in_2out: synthetic_10000" in capsys.readouterr().out
    rows = json.loads((tmp_path / "skipped" / "summary.json").read_text())["summary"]
    assert rows[1]["num_scenes"] == 0 and rows[1]["psnr"] is None and rows[0]["num_scenes"] == 1
    assert (tmp_path / "skipped" / "scaling.png").is_file()  # the empty condition is left out of the plot


# ----------------------------------------------------------------------------------------------
# Bad input: clear messages, nothing run
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "option,value,needle",
    [
        ("--num-input-views", "0,8", "must be >= 2"),
        ("--num-input-views", "8,x", "comma-separated integers"),
        ("--settings", "sparse,dense", "settings must be among sparse,continuous"),
        ("--num-target-views", "-1", "positive integer"),
        ("--time-convention", "frames", "invalid choice"),
    ],
)
def test_bad_options_are_usage_errors(pipe_dir, tmp_path, capsys, option, value, needle):
    with pytest.raises(SystemExit) as exit_info:
        _eval(pipe_dir, tmp_path, "--scenes", "synthetic:1", option, value)
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--scenes", "synthetic:two"], "expected synthetic:N[@SEED][xFRAMES]"),
        (["--scenes", "synthetic:0"], "number of scenes must be >= 1"),
        (["--scenes", "no/such/scene.jsonl"], "does not exist"),
        (["--scenes", "synthetic:1x16", "--num-input-views", "4", "--resolution", "30"], "multiples of the patch size 8"),
    ],
)
def test_bad_scenes_and_resolution_are_one_line_errors(pipe_dir, tmp_path, capsys, extra, needle):
    assert _eval(pipe_dir, tmp_path / "out", *extra) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (loading the model may print a progress bar first)
    assert last.startswith("fsm eval: error:") and needle in last
    assert not (tmp_path / "out").exists()


def test_builtin_model_refuses_training_seeds(tmp_path, capsys):
    """Seeds below the held-out range may be training scenes of the built-in model."""
    code = main(["eval", "--model", "builtin", "--scenes", "synthetic:2@5x32", "--output-dir", str(tmp_path / "o")])
    assert code == 1
    assert "synthetic seeds must be >= 10000 with the built-in model" in capsys.readouterr().err


def test_required_lpips_without_the_package_is_an_error(pipe_dir, tmp_path, capsys):
    try:
        import lpips  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("lpips is installed here")
    code = main(["eval", "--model", str(pipe_dir), "--device", "cpu", "--scenes", "synthetic:1x16", "--num-input-views", "4",
                 "--lpips", "--output-dir", str(tmp_path / "o")])  # fmt: skip
    assert code == 1
    assert "lpips" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "o").exists()


def test_synthetic_spec_parsing():
    assert parse_synthetic_spec("synthetic:4") == SyntheticScenes(4, 10000, None)
    assert parse_synthetic_spec("synthetic:2@10100x256") == SyntheticScenes(2, 10100, 256)
    assert parse_synthetic_spec("synthetic:3x48").seeds == [10000, 10001, 10002]
    assert parse_synthetic_spec("scenes/synthetic:1") is None  # a path
    with pytest.raises(ValueError, match="scenes need >= 2 frames"):
        parse_synthetic_spec("synthetic:1x1")


@requires_data
def test_eval_on_a_scene_file_uses_the_checkpoints_time_convention(pipe_dir, tmp_path):
    out = tmp_path / "clip"
    assert _eval(pipe_dir, out, "--scenes", str(SCENE_FILE), "--num-input-views", "4", "--num-target-views", "2",
                 "--settings", "continuous", "--no-plot") == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"]["time_convention"] == "official_inference"
    assert summary["summary"][0]["num_scenes"] == 1 and summary["summary"][0]["num_images"] == 2


# ----------------------------------------------------------------------------------------------
# The figure and the table on their own
# ----------------------------------------------------------------------------------------------
def _rows(with_lpips: bool):
    rows = []
    for setting, offset in (("sparse", 0.0), ("continuous", 1.0)):
        for i, views in enumerate((8, 16, 32, 64)):
            rows.append({"setting": setting, "num_input_views": views, "num_target_views": 8, "name": f"{setting}_{views}",
                         "psnr": 20.0 + i + offset, "ssim": 0.6 + 0.05 * i, "lpips": (0.3 - 0.02 * i) if with_lpips else None,
                         "num_images": 16, "num_scenes": 2, "skipped_scenes": []})  # fmt: skip
    return rows


def test_plot_scaling_has_an_lpips_panel_only_when_reported(tmp_path):
    with_lpips = plot_scaling({"summary": _rows(True)}, tmp_path / "three.png")
    without = plot_scaling(_rows(False), tmp_path / "two.png")
    with Image.open(with_lpips) as three, Image.open(without) as two:
        assert three.height == two.height and three.width > two.width * 1.3  # one more panel
    with pytest.raises(ValueError, match="Nothing to plot"):
        plot_scaling([{"setting": "sparse", "num_input_views": 8, "psnr": None}], tmp_path / "none.png")
    with pytest.raises(ValueError, match="'summary' list"):
        plot_scaling({"rows": []}, tmp_path / "bad.png")


def test_format_summary_table():
    table = format_summary({"summary": _rows(True)})
    lines = table.splitlines()
    assert lines[0].split() == ["setting", "inputs", "targets", "scenes", "images", "PSNR", "SSIM", "LPIPS"]
    assert lines[1].split() == ["sparse", "8", "8", "2", "16", "20.00", "0.6000", "0.3000"]
    assert len(lines) == 9
