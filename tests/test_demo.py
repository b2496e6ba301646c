"""The built-in model (fsm_hf/assets/fsm-demo) and ``fsm demo``: files, held-out seeds, and quality.

The quality checks run the shipped model on the demo's three held-out procedural scenes: the nearest-input-frame
baseline stays below 20 dB (the scenes are not trivial), the model beats that baseline by at least
3 dB on average and on each scene by a clear margin, and training made the model clearly better than
its random initialisation.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from PIL import Image

import fsm_hf
from fsm_hf import demo
from fsm_hf.cli import main as cli_main
from fsm_hf.training.data import FSMTrainingDataset, parse_data_spec

MODEL_DIR = fsm_hf.builtin_model_path()
BASELINE_CEILING_DB = 20.0
#: The shipped model must beat its own random initialisation by this much on held-out scenes.
MIN_TRAINING_GAIN_DB = 2.0
#: The issue's goal: the built-in model's mean PSNR gain over the nearest-input-frame baseline.
TARGET_GAIN_DB = 3.0


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One run of the demo's default held-out scenes (shared by the checks below)."""
    output_dir = tmp_path_factory.mktemp("fsm-demo")
    lines = []
    result = demo.run_demo(device="cpu", output_dir=output_dir, video_frames=8, log=lines.append)
    return result, output_dir, "\n".join(lines)


def test_builtin_model_is_a_small_lacet_pipeline():
    assert MODEL_DIR.name == demo.BUILTIN_MODEL_NAME and MODEL_DIR.parent.name == "assets"
    weights = MODEL_DIR / "model" / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size < 20 * 1024 * 1024
    index = json.loads((MODEL_DIR / "model_index.json").read_text())
    assert index["model"] == ["fsm_hf", "FSMForNovelViewSynthesis"]
    assert index["time_convention"] == "training"  # the scenes' times are continuous, as in training
    config = json.loads((MODEL_DIR / "model" / "config.json").read_text())
    assert config["use_time"] is True
    assert config.get("cross_view_mixer", "lacet") == "lacet"  # the warm-up's attention is not shipped
    assert config["elastic_enabled"] is True
    assert (config["elastic_estimator"], config["elastic_anchor_policy"]) == ("si", "streaming-ema")
    assert config["newton_schulz_dtype"] == "float32"
    card = (MODEL_DIR / "model" / "README.md").read_text()
    assert "finetune.py --config configs/demo_model.yaml" in card
    assert "nearest-input-frame baseline" in card


def test_training_scenes_are_disjoint_from_the_demo_scenes():
    """The shipped model's recorded training config only ever generates seeds below the demo's range."""
    record = yaml.safe_load((MODEL_DIR / "training_config.yaml").read_text())
    assert record["data"].startswith("synthetic")
    dataset = FSMTrainingDataset(
        parse_data_spec(record["data"]), record["image_size"], record["num_input_views"], record["num_target_views"],
        window_size=record["window_size"], seed=record["seed"], synthetic_frames=record["synthetic_frames"],
    )  # fmt: skip
    seeds = [entry.synthetic_seed for entry in dataset.entries]
    assert len(seeds) == len(set(seeds)) > 0
    assert max(seeds) < demo.HELD_OUT_SEED_START
    with pytest.raises(ValueError, match="training scenes"):
        demo.run_demo(num_scenes=1, seed=demo.HELD_OUT_SEED_START - 1, log=None)


def test_demo_writes_video_figure_and_metrics(demo_run):
    result, output_dir, text = demo_run
    assert [s.seed for s in result.scenes] == [10_000, 10_001, 10_002]
    video = output_dir / "space_time.mp4"
    assert result.files["video"] in (str(video), str(video.with_suffix(".gif")))
    with open(result.files["video"], "rb") as f:
        assert len(f.read()) > 1000
    with Image.open(output_dir / "comparison.png") as figure:  # 3 scenes x 4 rows of 64 px (x2) cells
        assert figure.height >= 12 * 128 and figure.width > 8 * 128
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["mean"]["psnr"] == pytest.approx(result.psnr)
    assert metrics["mean"]["gain_db"] == pytest.approx(result.gain_db)
    for needle in ("FSM PSNR", "baseline PSNR", "gain", "mean", "Done in"):
        assert needle in text


def test_held_out_scenes_are_not_trivial_and_the_gain_is_reported(demo_run):
    """The nearest-input-frame baseline stays below 20 dB, and the demo prints both scores and their gap."""
    result, _, text = demo_run
    assert result.baseline_psnr < BASELINE_CEILING_DB
    assert all(scene.baseline_psnr < BASELINE_CEILING_DB for scene in result.scenes)
    assert result.gain_db == pytest.approx(result.psnr - result.baseline_psnr)
    assert f"{result.psnr:.2f}" in text and f"{result.baseline_psnr:.2f}" in text and f"{result.gain_db:+.2f}" in text


def test_builtin_model_beats_the_baseline_by_3_db(demo_run):
    """The goal of the built-in model: at least 3 dB PSNR above the nearest-input-frame baseline on
    held-out scenes, and ahead of it on each scene the demo shows (its model card scores 64 scenes)."""
    result, _, _ = demo_run
    assert result.gain_db >= TARGET_GAIN_DB, result.gain_db
    assert all(scene.psnr > scene.baseline_psnr + 0.3 for scene in result.scenes), [
        (scene.seed, scene.psnr, scene.baseline_psnr) for scene in result.scenes
    ]


def test_training_made_the_builtin_model_better_than_its_initialisation(demo_run):
    """The shipped weights score well above the same architecture freshly initialised (catches a model that
    was not trained, or weights that do not load), on the same held-out scenes."""
    result, _, _ = demo_run
    pipe = fsm_hf.FSMPipeline.from_pretrained(MODEL_DIR)
    torch.manual_seed(0)
    untrained = fsm_hf.FSMPipeline(
        model=type(pipe.model)(pipe.model.config).eval(), resolution=pipe.config.resolution,
        num_input_views=pipe.config.num_input_views, time_convention=pipe.config.time_convention,
        max_frames=pipe.config.max_frames,
    )  # fmt: skip
    untrained.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        scores = demo.evaluate_scenes(untrained, [s.seed for s in result.scenes], result.num_target_views)
    untrained_psnr = sum(s.psnr for s in scores) / len(scores)
    assert result.psnr >= untrained_psnr + MIN_TRAINING_GAIN_DB, (result.psnr, untrained_psnr)


def test_demo_scores_match_the_metrics_module():
    """The demo's numbers are psnr/ssim of the pipeline's renders against the scene's ground truth."""
    from fsm_hf.metrics import psnr
    from fsm_hf.synthetic import generate_scene

    pipe = fsm_hf.FSMPipeline.from_pretrained(MODEL_DIR)
    scores = demo.evaluate_scenes(pipe, [10_002], num_target_views=2)
    scene = generate_scene(10_002, demo.DEMO_NUM_FRAMES, 64, 64)
    inputs, targets = scene.split(pipe.config.num_input_views, 2, seed=demo.SPLIT_SEED)
    rendered = pipe(
        inputs.images, demo._cameras(inputs), inputs.times, demo._cameras(targets), targets.times,
        time_convention="training", output_type="pt",
    ).images  # fmt: skip
    assert scores[0].psnr == pytest.approx(psnr(rendered, targets.images).mean().item(), abs=1e-4)


def test_cli_demo_forwards_its_options(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: calls.append((a, k)))
    code = cli_main(["demo", "--num-scenes", "2", "--seed", "10005", "--device", "cpu", "--output-dir", str(tmp_path)])
    assert code == 0
    assert calls == [((2, 10005, "cpu", str(tmp_path)), {"model_path": None, "num_target_views": 8})]


def test_builtin_model_path_is_exported():
    assert fsm_hf.builtin_model_path() == demo.builtin_model_path()


def test_packaging_writes_a_loadable_model_with_a_measured_card(tmp_path):
    """``python -m fsm_hf.demo package``: the weights reload unchanged, and the card carries the recorded
    training facts and the scores measured while packaging (the shipped folder stands in for a run)."""
    training = {
        "command": "OMP_NUM_THREADS=2 python finetune.py --config configs/demo_model.yaml --output_dir runs/x",
        "wall_time_s": 90.0, "hardware": "a test machine", "data": "the test's scenes",
        "warmup_command": "OMP_NUM_THREADS=2 python finetune.py --config configs/demo_warmup.yaml", "warmup_wall_time_s": 30.0,
    }  # fmt: skip
    destination = tmp_path / "packaged"
    result = demo.package_builtin_model(MODEL_DIR, training, destination=destination, num_scenes=2, log=None)
    assert [s.seed for s in result.scenes] == [demo.HELD_OUT_SEED_START, demo.HELD_OUT_SEED_START + 1]
    card = (destination / "model" / "README.md").read_text()
    assert f"Training command: `{training['command']}` (1.5 min)" in card and "the test's scenes" in card
    assert f"Warm-up command: `{training['warmup_command']}` (0.5 min)" in card and "2.0 min in all on a test machine" in card
    assert f"| FSM (this model) | {result.psnr:.2f} | {result.ssim:.3f} |" in card
    assert f"| gain | {result.gain_db:+.2f} |" in card
    assert ("rendering its own input frames back from the memory" in card) == (result.gain_db < 3.0)
    original = fsm_hf.FSMPipeline.from_pretrained(MODEL_DIR).model.state_dict()
    packaged = fsm_hf.FSMPipeline.from_pretrained(destination).model.state_dict()
    assert original.keys() == packaged.keys() and all(torch.equal(original[k], packaged[k]) for k in original)


def test_input_recall_psnr_scores_the_inputs_rendered_from_their_own_memory():
    from fsm_hf.metrics import psnr
    from fsm_hf.synthetic import generate_scene

    pipe = fsm_hf.FSMPipeline.from_pretrained(MODEL_DIR)
    pipe.set_progress_bar_config(disable=True)
    size = pipe.config.resolution[0]
    _, kept = demo.evaluate_scenes(pipe, [10_003], num_target_views=2, keep_views=True)
    _, memory, inputs, _ = kept[0]
    value = demo.input_recall_psnr(pipe, [(memory, inputs)])
    fresh, _ = generate_scene(10_003, demo.DEMO_NUM_FRAMES, size, size).split(pipe.config.num_input_views, 1, seed=demo.SPLIT_SEED)
    assert torch.equal(fresh.images, inputs.images)  # the demo's input frames of that scene
    memory = pipe.reconstruct(fresh.images, demo._cameras(fresh), fresh.times, time_convention="training")
    rendered = pipe.render(memory, demo._cameras(fresh), fresh.times, output_type="pt").images
    assert value == pytest.approx(psnr(rendered, fresh.images).mean().item(), abs=1e-4)
