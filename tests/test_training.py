"""Finetuning with Accelerate: config handling, data sampling, optimiser recipe, checkpoints,
exact resume, a real 2-process run, and learning on the example clip (tiny model, 32x32, CPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import DATA_DIR, REPO_ROOT

CLIP = DATA_DIR / "fZcNop_Aenw_88573338.jsonl"

# A run that takes seconds: 2 layers, 32x32, 2 input + 2 target views, short synthetic clips.
TINY = [
    "--config", str(REPO_ROOT / "configs" / "tiny_cpu.yaml"), "--data", "synthetic:2",
    "--num_input_views", "2", "--num_target_views", "2", "--batch_size", "1",
    "--synthetic_frames", "8", "--window_size", "8", "--image_every", "0", "--log_every", "1",
]  # fmt: skip


def _log(run: Path):
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------
def test_flags_override_yaml_and_yaml_overrides_defaults(tmp_path):
    from fsm_hf.training import TrainingConfig, load_config

    cfg = load_config(["--config", str(REPO_ROOT / "configs" / "tiny_cpu.yaml"), "--max_steps", "7", "--lr", "0.01",
                       "--model_overrides", "elastic_lambda=0.25", "--resume"])  # fmt: skip
    assert cfg.max_steps == 7 and cfg.lr == 0.01  # flags
    assert cfg.num_input_views == 4 and cfg.model == "tiny"  # YAML
    assert cfg.grad_skip_threshold == TrainingConfig().grad_skip_threshold  # default
    # flags add to the YAML's model overrides; --resume alone means "latest"
    assert cfg.model_overrides == {"newton_schulz_dtype": "float32", "elastic_lambda": 0.25}
    assert cfg.resume == "latest"
    assert load_config(["--resume", "runs/x/checkpoints/checkpoint-00000010"]).resume.endswith("00000010")

    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 0.1\n")
    with pytest.raises(ValueError, match="Unknown training config key"):
        load_config(["--config", str(bad)])
    with pytest.raises(ValueError, match="do not fit in window_size"):
        load_config(["--num_input_views", "8", "--num_target_views", "8", "--window_size", "10"])


def test_a_config_can_start_from_a_base_config(tmp_path):
    from fsm_hf.training import load_config

    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("model: tiny\nmax_steps: 50\nlr: 0.002\nmodel_overrides:\n  hidden_size: 64\n  elastic_lambda: 0.5\n")
    (tmp_path / "sub" / "mid.yaml").write_text("base: ../base.yaml\nlr: 0.001\nmodel_overrides:\n  elastic_lambda: 0.25\n")
    (tmp_path / "top.yaml").write_text("base: sub/mid.yaml\nmax_steps: 70\n")  # bases are relative to the including file
    cfg = load_config(["--config", str(tmp_path / "top.yaml"), "--model_overrides", "ttt_chunk_size=8"])
    assert (cfg.model, cfg.max_steps, cfg.lr) == ("tiny", 70, 0.001)
    assert cfg.model_overrides == {"hidden_size": 64, "elastic_lambda": 0.25, "ttt_chunk_size": 8}

    (tmp_path / "loop_a.yaml").write_text("base: loop_b.yaml\n")
    (tmp_path / "loop_b.yaml").write_text("base: loop_a.yaml\n")
    with pytest.raises(ValueError, match="loops back"):
        load_config(["--config", str(tmp_path / "loop_a.yaml")])
    (tmp_path / "missing.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(FileNotFoundError, match="missing.yaml: its base .nowhere.yaml. does not exist"):
        load_config(["--config", str(tmp_path / "missing.yaml")])


def test_the_built_in_models_two_stage_recipe_configs():
    """Stage 1 trains the demo architecture from scratch with attention; stage 2 starts LaCET from its output."""
    from fsm_hf.training import load_config

    warmup = load_config(["--config", str(REPO_ROOT / "configs" / "demo_warmup.yaml")])
    model = load_config(["--config", str(REPO_ROOT / "configs" / "demo_model.yaml")])
    assert warmup.model == "tiny" and model.model == f"{warmup.output_dir}/final"
    assert (warmup.model_overrides["cross_view_mixer"], warmup.model_overrides["elastic_enabled"]) == ("attention", False)
    assert (model.model_overrides["cross_view_mixer"], model.model_overrides["elastic_enabled"]) == ("lacet", True)
    shared = {k: v for k, v in warmup.model_overrides.items() if k not in ("cross_view_mixer", "elastic_enabled")}
    assert shared.items() <= model.model_overrides.items() and shared["hidden_size"] == 128
    different = {k for k in warmup.to_dict() if warmup.to_dict()[k] != model.to_dict()[k]}
    assert different == {"model", "model_overrides", "max_steps", "seed", "output_dir", "torch_compile", "novel_view_pool_size"}
    assert warmup.torch_compile and not model.torch_compile  # compiled LaCET steps are no faster on CPU
    assert warmup.novel_view_pool_size == 0 < model.novel_view_pool_size  # a pool slowed the warm-up's learning


@pytest.mark.parametrize("name", ["fsm_4d_lvsm_finetune.yaml", "fsm_4d_lvsm_res128_finetune.yaml"])
def test_release_configs_parse_and_require_model_and_data(name):
    from fsm_hf.training import load_config

    path = str(REPO_ROOT / "configs" / name)
    with pytest.raises(ValueError, match="--model"):
        load_config(["--config", path])
    cfg = load_config(["--config", path, "--model", "some/pipeline", "--data", "scenes/:2"])
    assert cfg.lpips_loss_weight == 0.5 and cfg.lr == 5e-5 and cfg.num_input_views == 32


def test_paper_recipe_defaults():
    from fsm_hf.training import TrainingConfig

    cfg = TrainingConfig()
    assert cfg.betas == [0.9, 0.95] and cfg.weight_decay == 0.05 and cfg.lr_scheduler == "cosine"
    assert cfg.grad_clip_norm == 1.0 and cfg.grad_skip_threshold == 4.0 and cfg.grad_clip_warmup_steps > 0
    assert cfg.lpips_loss_weight == 0.5 and cfg.l2_warmup_steps > 0
    assert cfg.activation_checkpointing and cfg.reset_elastic_buffers and cfg.mixed_precision == "auto"
    assert cfg.num_input_views == 32 and cfg.num_target_views == 32 and cfg.sort_by_time


def _learning_rates(optimizer, scheduler, steps):
    """The learning rate of each of ``steps`` optimizer steps under ``scheduler``."""
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def test_optimizer_decays_only_matrices_and_schedule_warms_up_then_decays():
    from fsm_hf import FSMConfig, FSMForNovelViewSynthesis
    from fsm_hf.training import TrainingConfig
    from fsm_hf.training.trainer import build_optimizer, build_scheduler

    model = FSMForNovelViewSynthesis(FSMConfig.from_preset("tiny"))
    cfg = TrainingConfig(max_steps=100, warmup_steps=10, lr=1e-3)
    opt = build_optimizer(model, cfg)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert opt.defaults["betas"] == (0.9, 0.95)
    lrs = _learning_rates(opt, build_scheduler(opt, cfg), 100)
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(5e-4) and lrs[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 1e-5  # cosine to zero


def test_warmup_stable_decay_holds_the_peak_rate_until_its_decay_steps():
    from fsm_hf.training import TrainingConfig
    from fsm_hf.training.trainer import build_scheduler

    cfg = TrainingConfig(max_steps=100, warmup_steps=10, lr=1e-3, lr_scheduler="warmup_stable_decay", lr_decay_steps=20)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=cfg.lr)
    lrs = _learning_rates(opt, build_scheduler(opt, cfg), 100)
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(5e-4)
    assert all(lr == pytest.approx(1e-3) for lr in lrs[10:81])  # stable until the last 20 steps
    assert lrs[90] == pytest.approx(5e-4, rel=0.05)  # cosine: half way down at the decay's middle
    assert all(a >= b for a, b in zip(lrs[80:], lrs[81:])) and lrs[-1] < 1e-5

    with pytest.raises(ValueError, match="lr_decay_steps must be an integer in \\[1, max_steps - warmup_steps = 90\\]"):
        TrainingConfig(max_steps=100, warmup_steps=10, lr_scheduler="warmup_stable_decay")
    with pytest.raises(ValueError, match="lr_decay_steps must be an integer"):
        TrainingConfig(max_steps=100, warmup_steps=10, lr_scheduler="warmup_stable_decay", lr_decay_steps=91)
    with pytest.raises(ValueError, match="only lr_scheduler 'warmup_stable_decay' takes it, not 'cosine'"):
        TrainingConfig(max_steps=100, warmup_steps=10, lr_decay_steps=20)


def test_gradient_clipping_after_warmup_and_step_skipping():
    from accelerate import Accelerator

    from fsm_hf.training import TrainingConfig
    from fsm_hf.training.trainer import clip_gradients

    accelerator = Accelerator(cpu=True)
    layer = torch.nn.Linear(4, 4, bias=False)
    cfg = TrainingConfig(grad_clip_warmup_steps=10, grad_clip_norm=1.0, grad_skip_threshold=4.0)

    def check(value: float, step: int):
        layer.weight.grad = torch.full((4, 4), value)  # norm = 4 |value|
        norm, skip = clip_gradients(accelerator, layer, step, cfg)
        return norm, skip, layer.weight.grad.norm().item()

    norm, skip, after = check(0.5, step=3)  # warm-up: no clipping, no skipping
    assert norm == pytest.approx(2.0) and not skip and after == pytest.approx(2.0)
    norm, skip, after = check(5.0, step=3)
    assert norm == pytest.approx(20.0) and not skip and after == pytest.approx(20.0)
    norm, skip, after = check(0.5, step=10)  # clipped to 1, kept
    assert norm == pytest.approx(2.0) and not skip and after == pytest.approx(1.0, rel=1e-4)
    norm, skip, _ = check(5.0, step=10)  # above the threshold: skipped
    assert norm == pytest.approx(20.0) and skip
    for step in (3, 10):  # a non-finite norm is always skipped
        assert check(float("nan"), step)[1] and check(float("inf"), step)[1]


def test_lpips_requested_without_package_is_a_clear_error():
    from fsm_hf.training.losses import FSMLoss

    try:
        import lpips  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="--lpips_loss_weight 0"):
            FSMLoss(lpips_weight=0.5)
    else:
        pytest.skip("lpips is installed here")
    loss = FSMLoss(lpips_weight=0.0)
    pred, target = torch.full((1, 2, 3, 16, 16), 0.5), torch.zeros(1, 2, 3, 16, 16)
    out = loss(pred, target, step=0)
    assert out.loss.item() == pytest.approx(0.25) and out.lpips is None
    assert out.psnr.item() == pytest.approx(10 * torch.log10(torch.tensor(4.0)).item(), rel=1e-5)


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
def test_parse_data_spec():
    from fsm_hf.training.data import parse_data_spec

    a, b, c, d = parse_data_spec("scenes/a.jsonl:2,other,synthetic:16:3, synthetic")
    assert (a.path, a.ratio) == ("scenes/a.jsonl", 2) and (b.path, b.ratio) == ("other", 1)
    assert (c.is_synthetic, c.num_scenes, c.ratio) == (True, 16, 3) and d.num_scenes == 8 and d.ratio == 1
    assert parse_data_spec(["x:4", "y"])[0].ratio == 4
    with pytest.raises(ValueError, match="positive integer"):
        parse_data_spec("x:0")


def test_view_sampling_follows_the_official_sampler_and_is_deterministic():
    from fsm_hf.training.data import FSMTrainingDataset, parse_data_spec

    kwargs = dict(image_size=32, num_input_views=4, num_target_views=3, window_size=10, max_frames=64, seed=3, synthetic_frames=24)
    ds = FSMTrainingDataset(parse_data_spec("synthetic:2:1"), **kwargs)
    for index in range(20):
        _, inputs, targets = ds.sample_plan(index)
        views = inputs + targets
        assert inputs == sorted(inputs) and len(set(views)) == 7  # sorted inputs, distinct views
        assert max(views) - min(views) < 10  # one temporal window
    assert ds.sample_plan(5) == FSMTrainingDataset(parse_data_spec("synthetic:2:1"), **kwargs).sample_plan(5)
    assert len({tuple(ds.sample_plan(i)[1]) for i in range(20)}) > 10

    sample = ds[0]
    assert sample["input_images"].shape == (4, 3, 32, 32) and sample["target_images"].shape == (3, 3, 32, 32)
    assert sample["input_c2w"].shape == (4, 4, 4) and sample["target_fxfycxcy"].shape == (3, 4)
    times = torch.cat([sample["input_times"], sample["target_times"]])
    # "training" convention fitted on all sampled views: the earliest view at -1, the latest at +1
    assert times.min() == -1.0 and times.max() == 1.0
    # pose normalisation: camera centres within [-1, 1], one of them on the boundary
    centres = torch.cat([sample["input_c2w"], sample["target_c2w"]])[:, :3, 3]
    assert centres.abs().max().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(ds[0]["target_images"], sample["target_images"])


def test_targets_can_repeat_input_views():
    """``target_input_views = k``: the last k targets are inputs (LVSM's target_has_input), the rest novel."""
    from fsm_hf.training import TrainingConfig
    from fsm_hf.training.data import FSMTrainingDataset, parse_data_spec

    kwargs = dict(image_size=32, num_input_views=4, num_target_views=3, window_size=6, max_frames=64, seed=3, synthetic_frames=24)
    ds = FSMTrainingDataset(parse_data_spec("synthetic:1"), target_input_views=2, **kwargs)
    for index in range(20):
        _, inputs, targets = ds.sample_plan(index)
        assert len(set(inputs)) == 4 and len(targets) == 3
        assert targets[0] not in inputs and set(targets[1:]) <= set(inputs) and len(set(targets[1:])) == 2
        assert max(inputs + targets) - min(inputs + targets) < 6  # 5 distinct frames fit a 6-frame window
    sample = ds[0]
    _, inputs, targets = ds.sample_plan(0)
    repeated = inputs.index(targets[2])
    assert torch.equal(sample["target_images"][2], sample["input_images"][repeated])
    assert torch.equal(sample["target_c2w"][2], sample["input_c2w"][repeated])
    with pytest.raises(ValueError, match="target_input_views"):
        FSMTrainingDataset(parse_data_spec("synthetic:1"), target_input_views=4, **kwargs)
    with pytest.raises(ValueError, match="target_input_views"):
        TrainingConfig(model="tiny", num_input_views=4, num_target_views=3, target_input_views=4)


#: Dataset settings of the two ``novel_target_views`` tests (procedural and captured scenes).
NOVEL_TARGET_DATASET_KWARGS = dict(image_size=32, num_input_views=4, num_target_views=4, window_size=12, max_frames=64,
                                   seed=3, synthetic_frames=24, normalize_from="inputs", target_input_views=1)  # fmt: skip


def test_procedural_targets_can_be_new_views_at_new_times():
    """``novel_target_views = n``: for procedural scenes the last n targets are rendered at new
    cameras and times (the demo's held-out views), exact ground truth; real scenes keep frames."""
    from fsm_hf.training import TrainingConfig
    from fsm_hf.training.data import FSMTrainingDataset, parse_data_spec

    kwargs = NOVEL_TARGET_DATASET_KWARGS
    ds = FSMTrainingDataset(parse_data_spec("synthetic:2"), novel_target_views=2, **kwargs)
    for index in range(6):
        entry_id, inputs, targets = ds.sample_plan(index)
        assert len(targets) == 2 and targets[1] in inputs and targets[0] not in inputs  # 1 frame + 1 repeat
        sample = ds[index]
        assert sample["target_images"].shape == (4, 3, 32, 32)
        scene = ds.entries[entry_id].synthetic()
        raw = scene.frames.times[inputs]
        expected = scene.held_out_views(raw, 2, seed=index)
        assert torch.equal(sample["target_images"][2:], expected.images)  # rendered ground truth
        # new times lie strictly inside the inputs' span, off the captured frame times
        novel_times, input_times = sample["target_times"][2:], sample["input_times"]
        assert (novel_times > -1).all() and (novel_times < 1).all()
        assert not torch.isin(expected.times, scene.frames.times).any()
        assert input_times.min() == -1 and input_times.max() == 1
    # half of the new views leave the camera path: one of the two sits on it, the other >= 0.3 units off
    sample, (entry_id, inputs, _) = ds[0], ds.sample_plan(0)
    assert torch.equal(ds[0]["target_images"], sample["target_images"])  # deterministic
    scene = ds.entries[entry_id].synthetic()
    views = scene.held_out_views(scene.frames.times[inputs], 2, seed=0)
    path_eyes, _ = scene.camera_path.eye_and_target(views.times)
    offsets = sorted((views.c2w[:, :3, 3].double() - path_eyes.double()).norm(dim=1).tolist())
    assert offsets[0] < 1e-5 and offsets[1] >= 0.3 - 1e-5, offsets

    with pytest.raises(ValueError, match="novel_target_views"):
        FSMTrainingDataset(parse_data_spec("synthetic:1"), novel_target_views=4, **kwargs)
    with pytest.raises(ValueError, match="novel_target_views"):
        TrainingConfig(model="tiny", num_input_views=4, num_target_views=3, target_input_views=1, novel_target_views=3)


@pytest.mark.skipif(not CLIP.is_file(), reason="../shared/data example clip is not present")
def test_real_scenes_keep_captured_targets_with_novel_target_views():
    """``novel_target_views`` only applies to procedural scenes: a captured clip's targets stay its frames."""
    from fsm_hf.training.data import FSMTrainingDataset, parse_data_spec

    kwargs = {**NOVEL_TARGET_DATASET_KWARGS, "window_size": 32}
    real = FSMTrainingDataset(parse_data_spec(str(CLIP)), novel_target_views=2, **kwargs)
    _, _, targets = real.sample_plan(0)
    assert len(targets) == 4 and real[0]["target_images"].shape[0] == 4  # captured frames only


def test_new_target_views_can_come_from_a_pool_rendered_once_per_scene(monkeypatch):
    """``novel_view_pool_size = P``: each procedural scene renders P new views once; every sample's
    new targets are pool views placed as ``held_out_views`` places them (inside a gap between the
    inputs' times, at a fraction in [0.25, 0.75] of it), exact ground truth, deterministic per index."""
    from fsm_hf.synthetic import SyntheticScene
    from fsm_hf.training import TrainingConfig
    from fsm_hf.training.data import FSMTrainingDataset, parse_data_spec

    kwargs = NOVEL_TARGET_DATASET_KWARGS
    ds = FSMTrainingDataset(parse_data_spec("synthetic:2"), novel_target_views=2, novel_view_pool_size=48, **kwargs)
    samples = {index: ds[index] for index in range(10)}
    assert sorted(ds._novel_view_pools) == [0, 1]
    renders = []
    monkeypatch.setattr(SyntheticScene, "render", lambda *args, **kw: renders.append(1))
    for index, sample in samples.items():
        entry_id, inputs, _ = ds.sample_plan(index)
        scene, pool = ds.entries[entry_id].synthetic(), ds._novel_view_pools[entry_id]
        assert torch.equal(ds[index]["target_images"], sample["target_images"])  # from the pool: no render
        positions = [next(j for j in range(len(pool)) if torch.equal(pool.images[j], image))
                     for image in sample["target_images"][2:]]  # fmt: skip
        times = pool.times[positions]
        assert times[0] <= times[1] and positions[0] != positions[1]  # distinct, sorted by time like held_out_views
        input_times = scene.frames.times[inputs]
        gap = torch.searchsorted(input_times, times) - 1
        fraction = (times - input_times[gap]) / (input_times[gap + 1] - input_times[gap])
        assert ((fraction >= 0.25) & (fraction <= 0.75)).all(), fraction
    assert not renders
    monkeypatch.undo()
    expected = scene.render(pool.c2w[positions], pool.fxfycxcy[positions], pool.times[positions])
    assert torch.equal(sample["target_images"][2:], expected)  # the scene's exact rendering
    # the pool and the draws depend on (seed, index) only, not on the order samples are read in
    fresh = FSMTrainingDataset(parse_data_spec("synthetic:2"), novel_target_views=2, novel_view_pool_size=48, **kwargs)
    for index in (9, 3, 0):
        assert torch.equal(fresh[index]["target_images"], samples[index]["target_images"])
        assert torch.equal(fresh[index]["target_times"], samples[index]["target_times"])
    # a pool too small for a sample's inputs: that sample renders its own views, as without a pool
    tiny_pool = FSMTrainingDataset(parse_data_spec("synthetic:2"), novel_target_views=2, novel_view_pool_size=1, **kwargs)
    no_pool = FSMTrainingDataset(parse_data_spec("synthetic:2"), novel_target_views=2, **kwargs)
    assert torch.equal(tiny_pool[4]["target_images"], no_pool[4]["target_images"])

    with pytest.raises(ValueError, match="novel_view_pool_size"):
        FSMTrainingDataset(parse_data_spec("synthetic:1"), novel_target_views=2, novel_view_pool_size=-1, **kwargs)
    with pytest.raises(ValueError, match="novel_view_pool_size"):
        TrainingConfig(model="tiny", novel_view_pool_size=-1)


def test_drawing_from_a_novel_view_pool():
    import random

    from fsm_hf.training.data import draw_from_novel_view_pool

    inputs = torch.tensor([0.0, 0.5, 0.5, 1.0])  # gaps [0, 0.5] and [0.5, 1]; 0.125..0.375 and 0.625..0.875
    pool = torch.tensor([0.8, 0.1, 0.3, 0.5, 0.2, 0.9, 0.65])
    for seed in range(20):
        chosen = draw_from_novel_view_pool(pool, inputs, 4, random.Random(seed))
        assert sorted(chosen) == [0, 2, 4, 6] and pool[chosen].tolist() == sorted(pool[chosen].tolist())
    # a draw takes each gap with equal probability (here both hold two pool views)
    single = [draw_from_novel_view_pool(pool, inputs, 1, random.Random(seed))[0] for seed in range(400)]
    assert 0.4 < sum(i in (2, 4) for i in single) / 400 < 0.6
    assert draw_from_novel_view_pool(pool, inputs, 5, random.Random(0)) is None


def test_mixing_ratios_repeat_scenes():
    from fsm_hf.training.data import FSMTrainingDataset, parse_data_spec

    ds = FSMTrainingDataset(parse_data_spec("synthetic:1:3,synthetic:1:1"), image_size=32, num_input_views=2,
                            num_target_views=1, window_size=8, synthetic_frames=8, seed=0)  # fmt: skip
    assert len(ds) == 4
    picks = [ds.sample_plan(i)[0] for i in range(400)]
    assert 0.65 < picks.count(0) / 400 < 0.85  # 3 : 1


def test_data_is_the_same_with_worker_processes():
    from torch.utils.data import DataLoader

    from fsm_hf.training.data import FSMTrainingDataset, ShardedSequentialSampler, parse_data_spec

    ds = FSMTrainingDataset(parse_data_spec("synthetic:2"), image_size=32, num_input_views=2, num_target_views=1,
                            window_size=8, synthetic_frames=8, seed=1)  # fmt: skip
    sampler = ShardedSequentialSampler(start=6, rank=1, world_size=2, length=4)
    assert list(sampler) == [7, 9, 11, 13]
    serial = list(DataLoader(ds, batch_size=2, sampler=sampler, num_workers=0))
    parallel = list(DataLoader(ds, batch_size=2, sampler=sampler, num_workers=2))
    for a, b in zip(serial, parallel):
        for key in a:
            assert torch.equal(a[key], b[key]), key


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
def test_crash_during_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    from accelerate import Accelerator

    from fsm_hf import FSMConfig, FSMForNovelViewSynthesis
    from fsm_hf.training.trainer import latest_checkpoint, save_checkpoint

    accelerator = Accelerator(cpu=True)
    model = FSMForNovelViewSynthesis(FSMConfig.from_preset("tiny"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, opt = accelerator.prepare(model, opt)
    first = save_checkpoint(accelerator, tmp_path, 1, {"note": "first"})
    saved = {k: v.clone() for k, v in model.state_dict().items()}

    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    real_save = accelerator.save_state

    def crash(output_dir=None, **kwargs):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"half written")
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(accelerator, "save_state", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(accelerator, tmp_path, 2, {})
    assert latest_checkpoint(tmp_path) == first  # the partial folder is not a checkpoint
    accelerator.load_state(str(latest_checkpoint(tmp_path)))
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k

    monkeypatch.setattr(accelerator, "save_state", real_save)
    second = save_checkpoint(accelerator, tmp_path, 2, {}, keep=1)
    assert latest_checkpoint(tmp_path) == second and not first.exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [second.name]  # temp folder cleaned
    assert json.loads((second / "trainer_state.json").read_text())["step"] == 2


def test_resume_continues_exactly_and_final_model_loads_in_pipeline(tmp_path):
    from fsm_hf import FSMPipeline
    from fsm_hf.training import load_config, train

    full, resumed = tmp_path / "full", tmp_path / "resumed"
    final = train(load_config(TINY + ["--max_steps", "4", "--save_every", "2", "--output_dir", str(full)]))
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == ["checkpoint-00000002", "checkpoint-00000004"]
    # a "crash" after step 2: a new run continues from that checkpoint
    train(load_config(TINY + ["--max_steps", "4", "--output_dir", str(resumed),
                              "--resume", str(full / "checkpoints" / "checkpoint-00000002")]))  # fmt: skip
    a, b = _log(full), _log(resumed)
    assert [r["step"] for r in b] == [3, 4]
    assert b[0]["loss"] == a[2]["loss"] and b[1]["loss"] == a[3]["loss"]  # step k+1 identical
    assert b[0]["lr"] == a[2]["lr"]
    checksum = [json.loads((run / "ranks" / "rank-0.json").read_text())["checksum"] for run in (full, resumed)]
    assert checksum[0] == checksum[1]

    # --resume alone picks the latest complete checkpoint of output_dir: nothing left to do at step 4
    train(load_config(TINY + ["--max_steps", "4", "--output_dir", str(full), "--resume"]))
    assert len(_log(full)) == 4

    pipe = FSMPipeline.from_pretrained(final)
    assert pipe.model.config.newton_schulz_dtype == "float32" and list(pipe.config.resolution) == [32, 32]
    assert (final / "training_config.yaml").is_file() and "max_steps" in (final / "model" / "README.md").read_text()
    from safetensors.torch import load_file

    ckpt = load_file(str(full / "checkpoints" / "checkpoint-00000004" / "model.safetensors"))
    for name, value in pipe.model.state_dict().items():
        assert torch.equal(value, ckpt[name]), name


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    from fsm_hf.training import load_config, train

    common = TINY + ["--max_steps", "2", "--warmup_steps", "0", "--save_every", "0"]
    train(load_config(common + ["--batch_size", "2", "--output_dir", str(tmp_path / "big")]))
    train(load_config(common + ["--batch_size", "1", "--grad_accum_steps", "2", "--output_dir", str(tmp_path / "acc")]))
    big, acc = _log(tmp_path / "big"), _log(tmp_path / "acc")
    assert acc[0]["loss"] == pytest.approx(big[0]["loss"], rel=1e-5)  # same samples
    assert acc[0]["grad_norm"] == pytest.approx(big[0]["grad_norm"], rel=1e-4)
    assert acc[1]["loss"] == pytest.approx(big[1]["loss"], rel=1e-4)  # same update


def test_torch_compile_trains_the_same_model_and_saves_uncompiled_weights(tmp_path):
    """``--torch_compile`` runs the forward through inductor: same losses and gradients as eager
    (up to float reassociation), and the checkpoints and final pipeline hold plain parameter names."""
    from safetensors.torch import load_file

    from fsm_hf import FSMPipeline
    from fsm_hf.training import load_config, train

    common = TINY + ["--max_steps", "2", "--warmup_steps", "0", "--save_every", "0", "--image_size", "16",
                     "--model_overrides", "cross_view_mixer=attention,elastic_enabled=false"]  # fmt: skip
    train(load_config(common + ["--output_dir", str(tmp_path / "eager")]))
    final = train(load_config(common + ["--torch_compile", "--output_dir", str(tmp_path / "compiled")]))
    eager, compiled = _log(tmp_path / "eager"), _log(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 2
    for a, b in zip(eager, compiled):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
    weights = load_file(str(tmp_path / "compiled" / "checkpoints" / "checkpoint-00000002" / "model.safetensors"))
    assert weights and not any("_orig_mod" in name for name in weights)
    pipe = FSMPipeline.from_pretrained(final)
    for name, value in pipe.model.state_dict().items():
        assert torch.equal(value, weights[name]), name

    with pytest.raises(ValueError, match="torch_compile"):
        load_config(TINY + ["--torch_compile", "--activation_checkpointing", "false",
                            "--mixer_distillation_teacher", "tiny"])  # fmt: skip


def test_elastic_buffers_are_rebuilt_from_the_weights_when_finetuning_starts(tmp_path):
    from fsm_hf import FSMConfig, FSMForNovelViewSynthesis, FSMPipeline
    from fsm_hf.training import load_config, train

    model = FSMForNovelViewSynthesis(FSMConfig.from_preset("tiny", newton_schulz_dtype="float32"))
    with torch.no_grad():
        for layer in model.fsm.backbone.layers:
            layer.lacet.anchor_w0.add_(5.0)  # stale buffers, as in a checkpoint from another run
    FSMPipeline(model=model).save_pretrained(tmp_path / "base")
    base_w0 = [layer.lacet.w0.detach().float().clone() for layer in model.fsm.backbone.layers]

    for reset in (True, False):
        out = tmp_path / f"reset_{reset}"
        final = train(load_config(TINY + ["--model", str(tmp_path / "base"), "--max_steps", "1", "--warmup_steps", "0", "--save_every", "0",
                                          "--reset_elastic_buffers", str(reset).lower(),
                                          "--model_overrides", "elastic_lambda=0.25", "--output_dir", str(out)]))  # fmt: skip
        tuned = FSMPipeline.from_pretrained(final).model
        assert tuned.config.elastic_lambda == 0.25  # elastic settings are FSMConfig overrides
        for layer, w0 in zip(tuned.fsm.backbone.layers, base_w0):
            assert not torch.equal(layer.lacet.w0.float(), w0)  # the weights were trained...
            # ...and the anchors are the weights finetuning started from (or the stale ones when not reset)
            assert torch.equal(layer.lacet.anchor_w0, w0 if reset else w0 + 5.0)


def test_train_only_parameters_hold_the_rest_fixed_for_train_only_steps(tmp_path):
    from fsm_hf import FSMConfig, FSMForNovelViewSynthesis, FSMPipeline
    from fsm_hf.training import load_config, train

    FSMPipeline(model=FSMForNovelViewSynthesis(FSMConfig.from_preset("tiny", newton_schulz_dtype="float32"))).save_pretrained(
        tmp_path / "base"
    )
    start = FSMPipeline.from_pretrained(tmp_path / "base").model.state_dict()

    def run(steps):
        out = tmp_path / f"steps_{steps}"
        final = train(load_config(TINY + ["--model", str(tmp_path / "base"), "--max_steps", str(steps), "--warmup_steps", "0",
                                          "--save_every", "0", "--train_only_parameters", r"\.lacet\.", "--train_only_steps", "2",
                                          "--output_dir", str(out)]))  # fmt: skip
        return FSMPipeline.from_pretrained(final).model.named_parameters()

    trained = [name for name, value in run(2) if not torch.equal(value, start[name])]
    assert trained and all(".lacet." in name for name in trained)  # only the mixers moved...
    assert {name.split(".lacet.")[1] for name in trained} >= {"w0", "to_qkv.weight", "c_proj.weight"}
    moved = {name for name, value in run(3) if not torch.equal(value, start[name])}
    assert {"fsm.embeddings.linear.weight", "head.linear.weight"} <= moved  # ...then everything trains

    with pytest.raises(ValueError, match="match no trainable parameter"):
        train(load_config(TINY + ["--train_only_parameters", "lacte", "--train_only_steps", "1", "--output_dir", str(tmp_path / "typo")]))
    with pytest.raises(ValueError, match="train_only_steps must be 0 unless"):
        load_config(TINY + ["--train_only_steps", "5"])
    with pytest.raises(ValueError, match="not a regular expression"):
        load_config(TINY + ["--train_only_parameters", "lacet[", "--train_only_steps", "5"])


def _attention_model(seed=0):
    from fsm_hf import FSMConfig, FSMForNovelViewSynthesis

    torch.manual_seed(seed)
    return FSMForNovelViewSynthesis(FSMConfig.from_preset("tiny", cross_view_mixer="attention", elastic_enabled=False))


def test_mixer_distillation_scores_each_layer_against_the_teachers_attention():
    from fsm_hf import FSMConfig, FSMForNovelViewSynthesis
    from fsm_hf.training.distillation import MixerDistillation

    teacher = _attention_model()
    twin, other = _attention_model(), _attention_model(seed=1)
    g = torch.Generator().manual_seed(0)
    views = dict(
        input_images=torch.rand(1, 2, 3, 32, 32, generator=g), input_fxfycxcy=torch.tensor([[[30.0, 30, 16, 16]] * 2]),
        input_c2w=torch.eye(4).repeat(1, 2, 1, 1), input_times=torch.tensor([[-0.5, 0.5]]),
        target_fxfycxcy=torch.tensor([[[30.0, 30, 16, 16]]]), target_c2w=torch.eye(4)[None, None], target_times=torch.zeros(1, 1),
    )  # fmt: skip
    views["input_c2w"][0, 1, 0, 3] = 0.3

    twin_score = MixerDistillation(twin, teacher)
    twin(**views)
    assert twin_score.pop_loss().item() == 0.0  # the teacher's own mixers: nothing to learn

    score = MixerDistillation(other, teacher)
    other(**views)
    loss = score.pop_loss()
    assert loss.item() > 0.01
    loss.backward()
    mixer = other.fsm.backbone.layers[0].lacet
    assert mixer.to_qkv.weight.grad is not None and mixer.to_qkv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is frozen
    with torch.no_grad():
        other(**views)  # inference: nothing recorded
    with pytest.raises(RuntimeError, match="no mixer ran with gradients"):
        score.pop_loss()

    with pytest.raises(ValueError, match="needs LaCET layers"):
        score.match_output_scales(lambda: other(**views))

    # A fresh LaCET model's outputs are made as loud as the teacher's, layer by layer.
    lacet = FSMForNovelViewSynthesis(FSMConfig.from_preset("tiny", newton_schulz_dtype="float32"))
    calibration = MixerDistillation(lacet, teacher)
    factors = calibration.match_output_scales(lambda: lacet(**views))
    assert len(factors) == 2 and all(abs(f - 1) > 0.05 for f in factors)
    ratios = []

    def compare(teacher_mixer):
        def hook(module, args, output):
            ratios.append(float(output[0].pow(2).mean() / teacher_mixer(args[0], args[1])[0].pow(2).mean()) ** 0.5)

        return hook

    hooks = [b.lacet.register_forward_hook(compare(t.lacet)) for b, t in zip(lacet.fsm.backbone.layers, teacher.fsm.backbone.layers)]
    with torch.no_grad():
        lacet(**views)
    for hook in hooks:
        hook.remove()
    assert ratios == pytest.approx([1.0, 1.0], rel=1e-4)  # on its own inputs, each layer is as loud as the teacher's
    with pytest.raises(ValueError, match="must be an attention model"):
        MixerDistillation(other, lacet)
    with pytest.raises(ValueError, match="must match layer for layer"):
        MixerDistillation(other, FSMForNovelViewSynthesis(FSMConfig.from_preset("tiny", cross_view_mixer="attention", elastic_enabled=False, num_hidden_layers=1)))


def test_mixer_distillation_teaches_a_warm_started_lacet_model_to_read_like_attention(tmp_path):
    from fsm_hf import FSMPipeline
    from fsm_hf.training import load_config, train

    FSMPipeline(model=_attention_model()).save_pretrained(tmp_path / "attention")
    teacher = str(tmp_path / "attention")
    flags = TINY + ["--model", teacher, "--model_overrides", "cross_view_mixer=lacet,elastic_enabled=true",
                    "--mixer_distillation_teacher", teacher, "--train_only_parameters", r"\.lacet\.", "--train_only_steps", "12",
                    "--l2_loss_weight", "0", "--lr", "3e-3", "--warmup_steps", "0", "--save_every", "0"]  # fmt: skip
    train(load_config(flags + ["--max_steps", "12", "--output_dir", str(tmp_path / "distill")]))
    log = _log(tmp_path / "distill")
    first, last = (sum(r["distill"] for r in records) / 3 for records in (log[:3], log[-3:]))
    assert last < 0.7 * first  # the LaCET layers learn to give the attention's outputs
    assert all(r["loss"] == pytest.approx(r["distill"]) for r in log)  # l2 weight 0: the loss is the distillation

    # After mixer_distillation_steps the distillation is still measured but no longer trained on.
    train(load_config(flags + ["--max_steps", "2", "--mixer_distillation_steps", "1", "--output_dir", str(tmp_path / "steps")]))
    log = _log(tmp_path / "steps")
    assert log[0]["loss"] == pytest.approx(log[0]["distill"]) and log[1]["loss"] == 0.0 < log[1]["distill"]

    with pytest.raises(ValueError, match="activation_checkpointing must be false"):
        load_config(flags + ["--activation_checkpointing", "true"])
    with pytest.raises(ValueError, match="mixer_distillation_steps must be 0 unless"):
        load_config(TINY + ["--mixer_distillation_steps", "10"])
    with pytest.raises(ValueError, match="mixer_distillation_weight must be > 0"):
        load_config(flags + ["--mixer_distillation_weight", "0"])


# ----------------------------------------------------------------------------------------------
# Real runs
# ----------------------------------------------------------------------------------------------
def test_two_processes_really_distributed(tmp_path):
    accelerate = shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("accelerate launcher not on PATH")
    out = tmp_path / "ddp"
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO_ROOT / "finetune.py"),
               *TINY, "--max_steps", "3", "--save_every", "0", "--output_dir", str(out)]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert all(r["distributed_type"].endswith("MULTI_CPU") for r in ranks)
    assert ranks[0]["checksum"] == ranks[1]["checksum"] and all(r["step"] == 3 for r in ranks)
    assert sorted(p.name for p in (out / "checkpoints" / "checkpoint-00000003").glob("random_states_*.pkl")) == [
        "random_states_0.pkl", "random_states_1.pkl"]  # fmt: skip
    assert (out / "final" / "model_index.json").is_file()


@pytest.mark.skipif(not CLIP.is_file(), reason="../shared/data example clip is not present")
def test_training_loss_falls_on_the_example_clip(tmp_path):
    from fsm_hf.training import load_config, train

    out = tmp_path / "clip"
    train(load_config([
        "--config", str(REPO_ROOT / "configs" / "tiny_cpu.yaml"), "--data", str(CLIP), "--num_input_views", "2",
        "--num_target_views", "2", "--window_size", "8", "--batch_size", "2", "--max_steps", "12", "--warmup_steps", "3", "--lr", "3e-3",
        "--grad_clip_warmup_steps", "3", "--log_every", "1", "--image_every", "6", "--save_every", "0",
        "--output_dir", str(out),
    ]))  # fmt: skip
    losses = [r["loss"] for r in _log(out)]
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, losses
    assert (out / "samples" / "step-00000006.png").is_file()


# ----------------------------------------------------------------------------------------------
# Mistakes a user makes: caught before any training, with a message that names them
# ----------------------------------------------------------------------------------------------
def test_yaml_values_are_checked_against_their_types(tmp_path):
    from fsm_hf.training import load_config

    base = REPO_ROOT / "configs" / "tiny_cpu.yaml"
    config = tmp_path / "c.yaml"
    # YAML reads 1e-4 as a string and 'no' (quoted) as a string: both mean what they say
    config.write_text(f"base: {base}\nlr: 1e-4\nimage_size: 32.0\nsort_by_time: 'no'\n")
    cfg = load_config(["--config", str(config)])
    assert cfg.lr == 1e-4 and cfg.image_size == 32 and isinstance(cfg.image_size, int) and cfg.sort_by_time is False
    for line, field in (("image_size: 32.5", "image_size"), ("lr: fast", "lr"), ("betas: 0.9", "betas"),
                        ("sort_by_time: maybe", "sort_by_time")):  # fmt: skip
        config.write_text(f"base: {base}\n{line}\n")
        with pytest.raises(ValueError, match=f"TrainingConfig.{field} must be"):
            load_config(["--config", str(config)])


def test_bad_settings_fail_before_training(tmp_path):
    from fsm_hf.training import load_config, train

    with pytest.raises(ValueError, match="num_target_views must be a positive integer"):
        load_config(TINY + ["--num_target_views", "0"])
    with pytest.raises(ValueError, match="push_to_hub must be a Hub repo id"):
        load_config(TINY + ["--push_to_hub", "bad repo id!!"])
    with pytest.raises(ValueError, match="lpips_net must be one of"):
        load_config(TINY + ["--lpips_net", "vgg16"])
    with pytest.raises(ValueError, match=r"unknown FSMConfig field\(s\) \['elastic_lamda'\]"):
        train(load_config(TINY + ["--model_overrides", "elastic_lamda=0.3", "--output_dir", str(tmp_path / "o")]))
    with pytest.raises(FileNotFoundError, match="Data path not found"):
        train(load_config(TINY + ["--data", f"synthetic:2,{tmp_path / 'missing'}:2", "--output_dir", str(tmp_path / "o")]))
    assert not (tmp_path / "o").exists()


def test_command_line_mistakes_are_one_line_errors(capsys):
    from fsm_hf.training.trainer import main

    with pytest.raises(SystemExit) as exit_info:
        main(TINY + ["--lr_scheduler", "cosin"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "lr_scheduler must be one of" in err and "Traceback" not in err


def test_runs_do_not_overwrite_each_other_and_resumed_logs_hold_each_step_once(tmp_path):
    from fsm_hf import FSMPipeline
    from fsm_hf.training import load_config, train

    run = tmp_path / "run"
    common = TINY + ["--save_every", "2", "--output_dir", str(run)]
    final = train(load_config(common + ["--max_steps", "2"]))
    # a preset has no pipeline settings: the final folder records how the model was trained
    pipe = FSMPipeline.from_pretrained(final)
    assert pipe.config.time_convention == "training" and pipe.config.num_input_views == 2
    with pytest.raises(FileExistsError, match="already holds another run"):
        train(load_config(common + ["--max_steps", "4"]))
    with pytest.raises(ValueError, match="beyond max_steps = 1"):
        train(load_config(common + ["--max_steps", "1", "--resume"]))
    # a run killed after logging step 3 but before its step-4 checkpoint, then resumed from step 2
    with (run / "train_log.jsonl").open("a") as log:
        log.write(json.dumps({"step": 3, "loss": -1.0}) + "\n")
    with pytest.warns(UserWarning, match=r"other data settings.*batch_size: 1 -> 2"):
        train(load_config(common + ["--max_steps", "4", "--resume", "--batch_size", "2"]))
    steps = [r["step"] for r in _log(run)]
    assert steps == [1, 2, 3, 4] and all(r["loss"] > 0 for r in _log(run))
