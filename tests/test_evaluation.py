"""The evaluation protocol (fsm_hf.training.evaluation): fixed splits, per-image metrics, JSON + CSV."""

from __future__ import annotations

import csv
import json
import warnings

import pytest
import torch

from conftest import DATA_DIR

CLIP = DATA_DIR / "fZcNop_Aenw_88573338.jsonl"


def _lpips_installed() -> bool:
    try:
        import lpips  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def pipe():
    from fsm_hf import FSMConfig, FSMForNovelViewSynthesis, FSMPipeline

    torch.manual_seed(0)
    model = FSMForNovelViewSynthesis(FSMConfig.from_preset("tiny", newton_schulz_dtype="float32")).eval()
    return FSMPipeline(model=model)


@pytest.fixture(scope="module")
def scenes():
    from fsm_hf.synthetic import generate_scene

    return [generate_scene(seed, num_frames=24, height=32, width=32) for seed in (1, 2)]


def test_splits_are_fixed_disjoint_and_follow_the_setting():
    from fsm_hf.training.evaluation import EvaluationSetting, split_for_setting

    inputs, targets = split_for_setting(100, EvaluationSetting(8, 4, "sparse"), window_size=64)
    assert inputs[0] == 0 and inputs[-1] == 63 and len(inputs) == 8 and inputs == sorted(inputs)
    assert not set(inputs) & set(targets) and all(inputs[0] < t < inputs[-1] for t in targets)
    inputs, targets = split_for_setting(100, EvaluationSetting(8, 4, "continuous"), window_size=64)
    assert max(inputs + targets) == 11 and sorted(inputs + targets) == list(range(12))  # one dense clip
    assert split_for_setting(100, EvaluationSetting(8, 4), 64) == split_for_setting(100, EvaluationSetting(8, 4), 64)
    with pytest.raises(ValueError, match="needs 12 frames"):
        split_for_setting(10, EvaluationSetting(8, 4, "sparse"))
    with pytest.raises(ValueError, match="setting must be one of"):
        split_for_setting(100, EvaluationSetting(8, 4, "dense"))


def test_evaluate_writes_summary_json_and_per_scene_csv(pipe, scenes, tmp_path):
    from fsm_hf.training import evaluate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate(pipe, scenes, num_input_views=[4, 8], num_target_views=4, settings=["sparse", "continuous"],
                          output_dir=tmp_path)  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [row["name"] for row in summary["summary"]] == [
        "sparse_4in_4out", "sparse_8in_4out", "continuous_4in_4out", "continuous_8in_4out"]  # fmt: skip
    assert summary["protocol"]["time_convention"] == "official_inference"
    with (tmp_path / "per_scene.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["scene"] for r in rows} == {"synthetic_1", "synthetic_2"}
    for row in summary["summary"]:
        assert row["num_images"] == 8 and row["num_scenes"] == 2 and row["skipped_scenes"] == []
        assert 0.0 < row["psnr"] < 60.0 and -1.0 <= row["ssim"] <= 1.0
        mine = [r for r in result["per_scene"] if (r["setting"], r["num_input_views"]) == (row["setting"], row["num_input_views"])]
        # every scene has the same number of targets, so the image mean is the mean of scene means
        assert row["psnr"] == pytest.approx(sum(r["psnr"] for r in mine) / len(mine))
    for row in rows:
        inputs = [int(x) for x in row["input_frames"].split()]
        targets = [int(x) for x in row["target_frames"].split()]
        assert len(inputs) == int(row["num_input_views"]) and len(targets) == 4 and not set(inputs) & set(targets)
        if row["setting"] == "sparse":
            assert inputs[0] == 0 and inputs[-1] == 23  # spread over the whole (short) clip
        else:
            assert max(inputs + targets) == len(inputs) + 3  # a dense clip at the start


def test_scores_match_a_direct_pipeline_call(pipe, scenes):
    """The numbers are the metrics of what the pipeline renders for the held-out frames."""
    from fsm_hf.metrics import psnr, ssim
    from fsm_hf.training import evaluate

    scene = scenes[0].to_scene()
    result = evaluate(pipe, [scene], num_input_views=6, num_target_views=3, lpips=False)
    row = result["per_scene"][0]
    inputs = [int(x) for x in row["input_frames"].split()]
    targets = [int(x) for x in row["target_frames"].split()]
    times = torch.arange(len(scene), dtype=torch.float64)  # official inference: frame indices
    pred = pipe(scene.load_images(inputs), scene.cameras.select(inputs), times[inputs], scene.cameras.select(targets),
                times[targets], output_type="pt").images  # fmt: skip
    gt = scene.load_images(targets)  # already at the model's resolution
    assert row["psnr"] == pytest.approx(psnr(pred, gt).mean().item(), abs=1e-4)
    assert row["ssim"] == pytest.approx(ssim(pred, gt).mean().item(), abs=1e-5)
    assert row["lpips"] is None


def test_model_input_short_scenes_and_lpips_availability(pipe, scenes):
    from fsm_hf.synthetic import generate_scene
    from fsm_hf.training import evaluate

    short = generate_scene(7, num_frames=6, height=32, width=32)
    if _lpips_installed():
        pytest.skip("lpips is installed here")
    with pytest.warns(UserWarning, match="lpips"):
        result = evaluate(pipe.model, [scenes[0], short], num_input_views=4, num_target_views=4)
    (row,) = result["summary"]
    assert row["skipped_scenes"] == ["synthetic_7"] and row["num_scenes"] == 1 and row["lpips"] is None
    with pytest.raises(ImportError, match="lpips"):
        evaluate(pipe, [scenes[0]], num_input_views=4, num_target_views=4, lpips=True)


@pytest.mark.skipif(not CLIP.is_file(), reason="../shared/data example clip is not present")
def test_evaluate_on_the_example_clip(pipe, tmp_path):
    from fsm_hf.training import evaluate

    result = evaluate(pipe, [CLIP], num_input_views=4, num_target_views=2, lpips=False, output_dir=tmp_path)
    (row,) = result["per_scene"]
    assert row["scene"] == "fZcNop_Aenw_88573338"
    inputs = [int(x) for x in row["input_frames"].split()]
    assert inputs[0] == 0 and inputs[-1] == 198 and row["num_images"] == 2  # 199 frames < window 256
    assert 0.0 < row["psnr"] < 60.0
