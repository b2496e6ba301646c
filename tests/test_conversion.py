"""Official FSM / LaCT checkpoints -> fsm-hf folders -> back, on checkpoints in the official save format."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import yaml

from conftest import LVSM_CASES, assert_matches_official_bf16_run, load_oracle_case, official_model_inputs, requires_oracle

pytestmark = requires_oracle


def _wrapped(key: str) -> str:
    # DDP + torch.compile + activation checkpointing wrappers, as real training runs save them.
    parts = key.split(".")
    if len(parts) > 3 and parts[0] == "blocks":
        parts.insert(2, "_checkpoint_wrapped_module")
    return ".".join(["module", "_orig_mod", *parts])


def write_official_pth(case: dict, path, *, wrap: bool = True, extra_model=None) -> None:
    """The fixture's weights written exactly like the official ``save_checkpoint``."""
    ck = case["checkpoint"]
    model = {(_wrapped(k) if wrap else k): v.clone() for k, v in ck["model"].items()}
    model.update(extra_model or {})
    state = {
        "model": model,
        "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
        "lr_scheduler": {"last_epoch": 3},
        "now_iters": 1000,
        "epoch": 2,
        "format_version": 2,
    }
    if "ewc_buffers" in ck:
        state["ewc_buffers"] = {("module." + k if wrap else k): {n: t.clone() for n, t in v.items()} for k, v in ck["ewc_buffers"].items()}
    torch.save(state, path)


def _yaml(case, path):
    path.write_text(yaml.safe_dump(case["config"]))
    return path


@pytest.mark.parametrize("name", LVSM_CASES)
def test_official_checkpoint_converts_and_reproduces_the_fixture(name, tmp_path, capsys):
    from conversion.convert_fsm_official import main
    from fsm_hf import FSMForNovelViewSynthesis

    case = load_oracle_case(name)
    pth = tmp_path / f"{name}.pth"
    write_official_pth(case, pth, extra_model={"module.loss_mgr.lpips.net.weight": torch.zeros(2)})
    out = tmp_path / "hf"
    assert main(["--checkpoint", str(pth), "--config", str(_yaml(case, tmp_path / "c.yaml")), "--output", str(out), "--no-pipeline"]) == 0
    assert "Dropped training state" in capsys.readouterr().out
    model = FSMForNovelViewSynthesis.from_pretrained(out).eval()
    with torch.no_grad():
        images = model(**official_model_inputs(case, model.config.max_frames)).images
    assert_matches_official_bf16_run(images, case["main"]["output.images"])
    card = (out / "README.md").read_text()
    assert pth.name in card and "sha256" in card.lower()
    config = json.loads((out / "config.json").read_text())
    assert config["fsm_provenance"]["source_file"] == pth.name


def test_pipeline_folder_is_written_by_default(tmp_path):
    pytest.importorskip("diffusers")
    from conversion.convert_fsm_official import main
    from fsm_hf import FSMPipeline

    case = load_oracle_case("lvsm4d_lact_1chunk")
    pth = tmp_path / "x.pth"
    write_official_pth(case, pth)
    out = tmp_path / "pipe"
    assert main(["--checkpoint", str(pth), "--config", str(_yaml(case, tmp_path / "c.yaml")), "--output", str(out)]) == 0
    assert (out / "model_index.json").is_file() and (out / "model" / "config.json").is_file() and (out / "README.md").is_file()
    pipe = FSMPipeline.from_pretrained(out)
    with torch.no_grad():
        images = pipe.model(**official_model_inputs(case, pipe.model.config.max_frames)).images
    assert_matches_official_bf16_run(images, case["main"]["output.images"])


def test_round_trip_official_to_hf_to_official_is_bit_identical(tmp_path):
    from conversion.convert_fsm_official import main as convert
    from conversion.export_official import main as export

    case = load_oracle_case("lvsm4d_lacet_sema_si_4chunks")
    pth = tmp_path / "official.pth"
    write_official_pth(case, pth, wrap=False)
    assert convert(["--checkpoint", str(pth), "--config", str(_yaml(case, tmp_path / "c.yaml")), "--output", str(tmp_path / "hf"), "--no-pipeline"]) == 0
    back = tmp_path / "back.pth"
    assert export([str(tmp_path / "hf"), "--output", str(back), "--config-output", str(tmp_path / "back.yaml")]) == 0
    original, exported = torch.load(pth, weights_only=True), torch.load(back, weights_only=True)
    assert original["model"].keys() == exported["model"].keys()
    for key, value in original["model"].items():
        assert exported["model"][key].dtype == value.dtype and torch.equal(exported["model"][key], value), key
    # Every block's buffers are carried (the official code saves them for every fast block).
    assert set(exported["ewc_buffers"]) >= set(original["ewc_buffers"])
    for block, buffers in original["ewc_buffers"].items():
        for name, value in buffers.items():
            assert torch.equal(exported["ewc_buffers"][block][name], value), (block, name)
    exported_yaml = yaml.safe_load((tmp_path / "back.yaml").read_text())
    assert exported_yaml["training"]["ewc_mode"] == "si" and exported_yaml["model"]["block_config"][1]["params"]["chunk_size"] == 32


def test_lact_checkpoint_converts_and_reproduces_the_3d_fixture(tmp_path):
    from conversion.convert_lact_nvs import main
    from fsm_hf import FSMForNovelViewSynthesis

    case = load_oracle_case("lvsm3d_lact")
    pt = tmp_path / "scene_res32.pt"
    torch.save({"model": case["checkpoint"]["model"]}, pt)
    model_cfg = case["config"]["model"]
    blocks = [dict(b, type=b["type"].replace("fsm.model.model_blocks", "model").replace("fsm.model.model_lacet", "lact_ttt"))
              for b in model_cfg["block_config"]]  # fmt: skip
    lact_yaml = {"patch_size": model_cfg["patch_size"], "dim": model_cfg["dim"], "layers": model_cfg["num_layers"], "block_config": blocks}
    (tmp_path / "lact.yaml").write_text(yaml.safe_dump(lact_yaml))
    out = tmp_path / "hf"
    assert main(["--checkpoint", str(pt), "--config", str(tmp_path / "lact.yaml"), "--output", str(out), "--no-pipeline"]) == 0
    model = FSMForNovelViewSynthesis.from_pretrained(out).eval()
    assert not model.config.use_time and not model.config.elastic_enabled
    inputs = official_model_inputs(case, 64)
    inputs.pop("input_times"), inputs.pop("target_times")
    with torch.no_grad():
        images = model(**inputs).images
    assert_matches_official_bf16_run(images, case["main"]["output.images"])


def test_architecture_is_inferred_without_a_yaml(tmp_path, capsys):
    from conversion.convert_lact_nvs import main as convert_lact
    from fsm_hf import FSMConfig

    case = load_oracle_case("lvsm3d_lact")
    pt = tmp_path / "obj.pt"
    torch.save({"model": case["checkpoint"]["model"]}, pt)
    assert convert_lact(["--checkpoint", str(pt), "--output", str(tmp_path / "hf"), "--no-pipeline"]) == 0
    printed = capsys.readouterr().out
    assert "Inferred from tensor shapes" in printed and '"num_hidden_layers": 2' in printed
    config = FSMConfig.from_pretrained(tmp_path / "hf")
    assert (config.hidden_size, config.ttt_head_dim, config.attention_head_dim, config.patch_size, config.use_time) == (64, 32, 16, 8, False)


def test_official_anchor_policy_names_follow_the_official_substring_rule():
    from conversion import config_from_official_yaml

    case = load_oracle_case("lvsm4d_lacet_sema_si_4chunks")
    for official, ours in (("ema", "global"), ("streaming-online", "streaming"), ("streaming-ema-online", "streaming-ema"), ("global", "global")):
        cfg = json.loads(json.dumps(case["config"]))
        cfg["training"]["ewc_anchor_policy"] = official
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert config_from_official_yaml(cfg).elastic_anchor_policy == ours
        assert bool(caught) == (official != ours)


def _failing(tmp_path, mutate):
    from conversion.convert_fsm_official import main

    case = load_oracle_case("lvsm4d_lact_1chunk")
    pth = tmp_path / "bad.pth"
    write_official_pth(case, pth, wrap=False)
    mutate(pth)
    out = tmp_path / "never"
    code = main(["--checkpoint", str(pth), "--config", str(_yaml(case, tmp_path / "c.yaml")), "--output", str(out), "--no-pipeline"])
    assert code == 1
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]


def test_truncated_file_fails_clearly(tmp_path, capsys):
    _failing(tmp_path, lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]))
    assert "truncated" in capsys.readouterr().err


def test_file_of_another_model_fails_clearly(tmp_path, capsys):
    _failing(tmp_path, lambda p: torch.save({"model": {"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(4)}}, p))
    err = capsys.readouterr().err
    assert "conv1.weight" in err and "fc.bias" in err


def test_renamed_key_fails_naming_it(tmp_path, capsys):
    def rename(p):
        ck = torch.load(p, weights_only=True)
        ck["model"]["blocks.1.module_list.1.f.w9"] = ck["model"].pop("blocks.1.module_list.1.f.w2")
        torch.save(ck, p)

    _failing(tmp_path, rename)
    err = capsys.readouterr().err
    assert "blocks.1.module_list.1.f.w9" in err


def test_wrong_shape_fails_naming_it(tmp_path, capsys):
    def reshape(p):
        ck = torch.load(p, weights_only=True)
        ck["model"]["blocks.0.module_list.2.f.c_fc.weight"] = torch.zeros(128, 64)
        torch.save(ck, p)

    _failing(tmp_path, reshape)
    err = capsys.readouterr().err
    assert "mlp.c_fc.weight" in err and "(128, 64)" in err


def test_checkpoints_that_would_run_code_are_refused(tmp_path, capsys):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    _failing(tmp_path, lambda p: torch.save({"model": {}, "payload": Evil()}, p))
    assert "weights_only" in capsys.readouterr().err


def test_official_lrm_checkpoint_converts_through_the_command_line(tmp_path):
    from transformers import AutoModel

    from conversion import convert_official
    from conversion.convert_fsm_official import main
    from fsm_hf import FSMForGaussianReconstruction

    case = load_oracle_case("lrm4d_lacet_sema_si")
    pth = tmp_path / "fsm_4dlrm.pth"
    write_official_pth(case, pth)
    assert main(["--checkpoint", str(pth), "--config", str(_yaml(case, tmp_path / "c.yaml")), "--output", str(tmp_path / "hf"), "--no-pipeline"]) == 0
    model = AutoModel.from_pretrained(tmp_path / "hf").eval()
    assert isinstance(model, FSMForGaussianReconstruction)
    reference = convert_official(case["checkpoint"], case["config"])
    inputs = {k: v for k, v in official_model_inputs(case, model.config.max_frames).items() if k.startswith("input_")}
    with torch.no_grad():
        ours, ref = model(**inputs).gaussians, reference(**inputs).gaussians
    assert torch.equal(ours.means, ref.means) and torch.equal(ours.opacities, ref.opacities)
