"""Hub round trips against a fake Hub on 127.0.0.1 (tests/fake_hub.py): push, load by id (revisions,
private repos, cache, offline), trust_remote_code in an interpreter without fsm-hf, errors, model cards."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import random_views
from fake_hub import READ_TOKEN, USER, WRITE_TOKEN, FakeHub, go_offline, hub_environment

import fsm_hf
from fsm_hf import FSMConfig, FSMForNovelViewSynthesis
from fsm_hf.hub import (
    RemoteCodeBundleError,
    bundle_remote_code,
    inspect_folder,
    push_folder,
    push_model_to_hub,
    save_model_folder,
)
from fsm_hf.model_card import CARD_TAGS, generate_model_card

REPO = "fsm-tester/fsm-tiny"

PROVENANCE = {
    "source": "official FSM release (github Mars-tin/fast-spatial-mem, Hub marstin/fast-spatial-mem)",
    "source_file": "fsm_4dlvsm_patch8_res256.pth",
    "source_sha256": "0123456789abcdef" * 4,
    "source_config": {"model": {"patch_size": 8, "block_config": ["lacet"] * 2}},
    "conversion_command": "python -m conversion.convert_fsm_official --checkpoint fsm.pth --output out",
    "license": "cc-by-nc-sa-4.0",
}


# -- fixtures and helpers ----------------------------------------------------------------------------------
@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A fake Hub on loopback, huggingface_hub online and pointed at it, every cache under tmp_path."""
    with FakeHub() as hub, hub_environment(hub, tmp_path / "hf_home", monkeypatch) as cache:
        hub.cache = Path(cache)
        yield hub
    assert not hub.unhandled, f"the fake Hub got requests it does not implement: {hub.unhandled}"


def tiny_model(seed: int = 0) -> FSMForNovelViewSynthesis:
    torch.manual_seed(seed)
    return FSMForNovelViewSynthesis(FSMConfig.from_preset("tiny", newton_schulz_dtype="float32")).eval()


def model_inputs(seed: int = 0) -> dict:
    images, fxfycxcy, c2w, times = random_views(1, 3, size=32, seed=seed)
    return dict(
        input_images=images[:, :2], input_fxfycxcy=fxfycxcy[:, :2], input_c2w=c2w[:, :2], input_times=times[:, :2],
        target_fxfycxcy=fxfycxcy[:, 2:], target_c2w=c2w[:, 2:], target_times=times[:, 2:],
    )  # fmt: skip


@torch.no_grad()
def render(model, inputs: dict) -> torch.Tensor:
    return model(**inputs).images


def assert_cache_consistent(cache: Path) -> None:
    """No partial download left behind and every snapshot entry points at a complete blob."""
    if not cache.exists():
        return
    partial = [str(p) for p in cache.rglob("*") if p.name.endswith(".incomplete")]
    assert not partial, f"partial downloads left in the cache: {partial}"
    for entry in cache.glob("*/snapshots/*/**/*"):
        assert not entry.is_symlink() or entry.exists(), f"dangling snapshot entry {entry}"


def snapshot_files(cache: Path, repo_id: str):
    return sorted(p.name for p in cache.glob(f"models--{repo_id.replace('/', '--')}/snapshots/*/**/*") if p.is_file())


def python_blocks(markdown: str):
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def card_header(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


# -- model cards -------------------------------------------------------------------------------------------
def test_model_card_metadata_provenance_and_licence():
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = generate_model_card(
        FSMConfig.from_preset("tiny"), provenance=PROVENANCE, license="cc-by-nc-sa-4.0",
        eval_results=[{"dataset": "DyCheck", "metric": "PSNR", "value": 25.5, "setting": "16 input views"}],
        base_model="marstin/fast-spatial-mem", datasets=["fsm-tester/dycheck"], repo_id=REPO,
    )  # fmt: skip
    header = card_header(card)
    assert header["license"] == "cc-by-nc-sa-4.0"
    assert header["library_name"] == "fsm-hf"
    assert header["pipeline_tag"] == "image-to-image"
    assert set(CARD_TAGS) <= set(header["tags"])
    assert header["base_model"] == "marstin/fast-spatial-mem"
    assert header["datasets"] == ["fsm-tester/dycheck"]
    parsed = ModelCard(card)  # the Hub client's own parser
    assert parsed.data.library_name == "fsm-hf"
    _, results = model_index_to_eval_results(parsed.data.to_dict()["model-index"])
    assert [(r.dataset_name, r.metric_value) for r in results] == [("DyCheck", 25.5)]
    for fact in (PROVENANCE["source_file"], PROVENANCE["source_sha256"], PROVENANCE["conversion_command"],
                 "block_config", "Check the source repository's licence", "CC BY-NC-SA", "OpenCV"):  # fmt: skip
        assert fact in card, fact


def test_model_card_for_unknown_licence_and_training_config():
    provenance = {"source": "LaCT (github a1600012888/LaCT)", "source_file": "lact.pt", "source_sha256": "ab" * 32}
    card = generate_model_card(FSMConfig.from_preset("tiny", use_time=False), provenance=provenance, license="other",
                               training_config={"lr": 1e-4, "max_steps": 10})  # fmt: skip
    header = card_header(card)
    assert header["license"] == "other" and header["license_link"] == "https://github.com/a1600012888/LaCT"
    assert "max_steps: 10" in card and "no time channel" in card
    assert "3d-reconstruction" in header["tags"] and "4d-reconstruction" not in header["tags"]
    plain = generate_model_card(FSMConfig.from_preset("tiny", elastic_enabled=False), provenance=provenance)
    assert "lact" in card_header(plain)["tags"] and "lacet" not in card_header(plain)["tags"]
    assert "elastic prior off" in plain and "importance-weighted prior" not in plain
    with pytest.raises(ValueError, match="'dataset', 'metric' and 'value'"):
        generate_model_card(FSMConfig.from_preset("tiny"), eval_results=[{"dataset": "x", "value": 1.0}])


@pytest.mark.parametrize("layout", ["model", "pipeline"])
def test_model_card_usage_snippet_runs(tmp_path, layout):
    model = tiny_model()
    if layout == "model":
        folder = save_model_folder(model, tmp_path / "repo")
        card = (folder / "README.md").read_text()
    else:
        fsm_hf.FSMPipeline(model=model).save_pretrained(tmp_path / "repo")
        card = generate_model_card(model.config, subfolder="model")
    snippet = python_blocks(card)[0]
    assert re.search(r'^model_id = ".*"', snippet, flags=re.M)
    snippet = re.sub(r'^model_id = ".*"', f"model_id = {str(tmp_path / 'repo')!r}", snippet, flags=re.M)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet, "model_card_snippet", "exec"), {"__name__": "__snippet__"})
    assert printed.getvalue().strip().endswith("torch.Size([1, 1, 3, 32, 32])")


# -- push and load -----------------------------------------------------------------------------------------
def test_push_then_load_by_id_gives_identical_outputs_and_serves_cache_offline(fake_hub, tmp_path, monkeypatch):
    from transformers import AutoModel

    model, inputs = tiny_model(), model_inputs()
    url = push_model_to_hub(model, REPO, token=WRITE_TOKEN, max_shard_size="300KB")
    assert url.startswith(f"{fake_hub.endpoint}/{REPO}/commit/")
    files = fake_hub.files(REPO)
    assert {"config.json", "README.md", "model.safetensors.index.json"} <= set(files)
    assert sum(name.endswith(".safetensors") for name in files) > 1, "expected a sharded checkpoint"
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    card = files["README.md"].decode()
    assert card_header(card)["library_name"] == "fsm-hf" and f'model_id = "{REPO}"' in card

    cache_dir = tmp_path / "model_cache"
    loaded = AutoModel.from_pretrained(REPO, cache_dir=cache_dir).eval()
    assert type(loaded) is FSMForNovelViewSynthesis
    assert torch.equal(render(loaded, inputs), render(model, inputs))

    go_offline(monkeypatch)
    served_before = len(fake_hub.requests)
    offline = AutoModel.from_pretrained(REPO, cache_dir=cache_dir).eval()
    local_only = AutoModel.from_pretrained(REPO, cache_dir=cache_dir, local_files_only=True).eval()
    assert len(fake_hub.requests) == served_before, "offline loads must not reach the Hub"
    assert torch.equal(render(offline, inputs), render(model, inputs))
    assert torch.equal(render(local_only, inputs), render(model, inputs))
    assert_cache_consistent(cache_dir)


def test_revisions_private_repos_and_pull_requests(fake_hub, monkeypatch):
    from transformers import AutoModel

    main_model, dev_model, inputs = tiny_model(0), tiny_model(1), model_inputs()
    push_model_to_hub(main_model, REPO, token=WRITE_TOKEN, private=True)
    push_model_to_hub(dev_model, REPO, token=WRITE_TOKEN, revision="dev", commit_message="dev weights")
    pr_url = push_model_to_hub(dev_model, REPO, token=WRITE_TOKEN, create_pr=True)
    assert pr_url == f"{fake_hub.endpoint}/{REPO}/discussions/1"
    assert fake_hub.files(REPO, "main") != fake_hub.files(REPO, "dev"), "the PR must not land on main"

    with pytest.raises(OSError, match=REPO):  # private: invisible without a token
        AutoModel.from_pretrained(REPO)
    from_main = AutoModel.from_pretrained(REPO, token=READ_TOKEN).eval()
    from_dev = AutoModel.from_pretrained(REPO, token=READ_TOKEN, revision="dev").eval()
    assert torch.equal(render(from_main, inputs), render(main_model, inputs))
    assert torch.equal(render(from_dev, inputs), render(dev_model, inputs))
    assert not torch.equal(render(from_dev, inputs), render(from_main, inputs))
    with pytest.raises(OSError, match="no-such-branch"):
        AutoModel.from_pretrained(REPO, token=READ_TOKEN, revision="no-such-branch")

    # model.push_to_hub goes through push_model_to_hub too: an fsm-hf card (not transformers' template),
    # whose licence follows the weights' provenance
    converted = tiny_model(2)
    converted.config.fsm_provenance = dict(PROVENANCE)
    converted.push_to_hub(REPO, token=WRITE_TOKEN, revision="plain")
    card = fake_hub.files(REPO, "plain")["README.md"].decode()
    assert card_header(card)["library_name"] == "fsm-hf" and card_header(card)["license"] == "cc-by-nc-sa-4.0"
    assert PROVENANCE["source_sha256"] in card and REPO in card
    assert fake_hub.files(REPO, "plain")["model.safetensors"] != fake_hub.files(REPO, "main")["model.safetensors"]


def test_push_folder_pipeline_round_trip(fake_hub, tmp_path):
    model, inputs = tiny_model(), model_inputs()
    folder = tmp_path / "converted"
    fsm_hf.FSMPipeline(model=model).save_pretrained(folder)
    assert inspect_folder(folder).kind == "pipeline"
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    push_folder(folder, REPO, token=WRITE_TOKEN, provenance=PROVENANCE)
    after = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    assert after == before, "push_folder must not write into the folder"
    files = fake_hub.files(REPO)
    assert {"model_index.json", "model/config.json", "README.md"} <= set(files)
    card = files["README.md"].decode()
    assert card_header(card)["license"] == "cc-by-nc-sa-4.0" and PROVENANCE["source_sha256"] in card
    assert "subfolder='model'" in card

    pipe = fsm_hf.FSMPipeline.from_pretrained(REPO, cache_dir=tmp_path / "pipe_cache")
    assert torch.equal(render(pipe.model, inputs), render(model, inputs))
    images, fxfycxcy, c2w, _ = random_views(1, 4, size=32, seed=3)
    cameras = fsm_hf.Cameras(c2w[0, :3], fxfycxcy[0, :3], width=32, height=32)
    targets = fsm_hf.Cameras(c2w[0, 3:], fxfycxcy[0, 3:], width=32, height=32)
    call = dict(images=images[0, :3], cameras=cameras, times=torch.arange(3), target_cameras=targets,
                target_times=torch.tensor([1]), resolution=32, output_type="pt")  # fmt: skip
    assert torch.equal(pipe(**call).images, fsm_hf.FSMPipeline(model=model)(**call).images)
    assert json.loads(files["model_index.json"]) == json.loads((folder / "model_index.json").read_text())

    # FSMPipeline.push_to_hub goes through the same path: our card, not a generic one.
    fsm_hf.FSMPipeline(model=model).push_to_hub(REPO, token=WRITE_TOKEN, revision="direct", provenance=PROVENANCE)
    pushed = fake_hub.files(REPO, "direct")
    assert PROVENANCE["source_sha256"] in pushed["README.md"].decode() and "model/model.safetensors" in pushed
    again = fsm_hf.FSMPipeline.from_pretrained(REPO, revision="direct", cache_dir=tmp_path / "direct_cache")
    assert torch.equal(render(again.model, inputs), render(model, inputs))


def test_push_folder_rejects_what_it_cannot_push(tmp_path):
    model_dir = save_model_folder(tiny_model(), tmp_path / "model")
    (model_dir / "optimizer.pt").write_bytes(b"pickle")
    with pytest.raises(ValueError, match=r"pickled files \['optimizer.pt'\]"):
        push_folder(model_dir, REPO)
    (model_dir / "optimizer.pt").unlink()
    (model_dir / "model.safetensors").rename(model_dir / "weights.safetensors")
    with pytest.raises(ValueError, match="no model.safetensors"):
        push_folder(model_dir, REPO)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="not an FSM config: model_type='bert'"):
        push_folder(tmp_path / "other", REPO)
    with pytest.raises(ValueError, match="expected a model folder"):
        push_folder(tmp_path, REPO)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        push_folder(tmp_path / "missing", REPO)


# -- errors --------------------------------------------------------------------------------------------
def test_errors_are_clear_and_leave_nothing_half_written(fake_hub, tmp_path):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError
    from transformers import AutoModel

    model = tiny_model()
    for token, status in (("hf_not_a_token", "401"), (READ_TOKEN, "403"), (None, "401")):
        with pytest.raises(PermissionError, match=rf"push to '{REPO}' \(HTTP {status}"):
            push_model_to_hub(model, REPO, token=token)
    assert REPO not in fake_hub.repos
    push_model_to_hub(model, REPO, token=WRITE_TOKEN)

    cache = tmp_path / "cache"
    with pytest.raises(OSError, match="fsm-tester/does-not-exist is not a local folder and is not a valid model"):
        AutoModel.from_pretrained("fsm-tester/does-not-exist", cache_dir=cache)
    assert snapshot_files(cache, "fsm-tester/does-not-exist") == []
    with pytest.raises(EntryNotFoundError, match="no-such-file.json"):
        hf_hub_download(REPO, "no-such-file.json", cache_dir=cache)
    with pytest.raises(OSError, match="(?s)401.*Invalid credentials"):
        AutoModel.from_pretrained(REPO, cache_dir=cache, token="hf_not_a_token")
    assert snapshot_files(cache, REPO) == []

    fake_hub.truncate_downloads = True  # bodies shorter than announced: a broken transfer
    with pytest.raises(OSError, match="Consistency check failed"):
        AutoModel.from_pretrained(REPO, cache_dir=cache)
    assert "model.safetensors" not in snapshot_files(cache, REPO)
    assert_cache_consistent(cache)
    fake_hub.truncate_downloads = False  # the failed attempt did not poison the cache
    loaded = AutoModel.from_pretrained(REPO, cache_dir=cache).eval()
    inputs = model_inputs()
    assert torch.equal(render(loaded, inputs), render(model, inputs))
    assert_cache_consistent(cache)


# -- remote code ---------------------------------------------------------------------------------------
REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import sys

    repo_id, inputs_path, outputs_path, *site_packages = sys.argv[1:]
    sys.path.extend(site_packages)  # dependencies only: -S skips .pth files, so no editable fsm-hf finder
    for name in ("fsm_hf", "modeling"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{name} must not be importable in this interpreter")

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel

    model = AutoModel.from_pretrained(repo_id, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    with torch.no_grad():
        images = model(**load_file(inputs_path)).images
    save_file({"images": images.contiguous()}, outputs_path)
    print("loaded", type(model).__module__)
    """
)


def test_remote_code_loads_in_an_interpreter_without_fsm_hf(fake_hub, tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel
    from transformers.dynamic_module_utils import get_imports, get_relative_imports

    model, inputs = tiny_model(), model_inputs()
    push_model_to_hub(model, REPO, token=WRITE_TOKEN, include_code=True)
    files = fake_hub.files(REPO)
    config = json.loads(files["config.json"])
    assert config["auto_map"] == {
        "AutoConfig": "configuration_fsm.FSMConfig",
        "AutoModel": "modeling_fsm.FSMForNovelViewSynthesis",
    }
    code = tmp_path / "code"
    code.mkdir()
    for name in (n for n in files if n.endswith(".py")):
        (code / name).write_bytes(files[name])
        assert not {"fsm_hf", "modeling"} & set(get_imports(code / name)), name  # what transformers checks
        for relative in get_relative_imports(code / name):
            assert f"{relative}.py" in files, f"{name} imports .{relative}, which was not uploaded"
    assert "include_code" not in config and "trust_remote_code=True" in files["README.md"].decode()

    # With fsm-hf installed the same repo still loads the installed classes.
    assert type(AutoModel.from_pretrained(REPO)) is FSMForNovelViewSynthesis

    save_file({k: v.contiguous() for k, v in inputs.items()}, tmp_path / "inputs.safetensors")
    paths = sysconfig.get_paths()
    site_packages = sorted({paths["purelib"], paths["platlib"]})
    script = tmp_path / "load_remote.py"
    script.write_text(REMOTE_CODE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HOME=str(tmp_path / "fresh_home"), HF_MODULES_CACHE=str(tmp_path / "fresh_home" / "modules"))
    env.pop("HF_HUB_CACHE")
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(script), REPO, str(tmp_path / "inputs.safetensors"),
         str(tmp_path / "outputs.safetensors"), *site_packages],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert torch.equal(load_file(tmp_path / "outputs.safetensors")["images"], render(model, inputs))


def test_bundler_rewrites_project_imports_and_rejects_what_it_cannot(tmp_path, monkeypatch):
    import fsm_hf.hub as hub

    package = tmp_path / "bundlepkg"
    package.mkdir()
    (package / "__init__.py").write_text("from .leaf import LEAF_VALUE, helper\n")
    (package / "leaf.py").write_text("LEAF_VALUE = 3\n\n\ndef helper():\n    return LEAF_VALUE\n")
    (package / "entry.py").write_text(textwrap.dedent(
        """
        from __future__ import annotations

        from bundlepkg import LEAF_VALUE  # re-exported by the package
        from .leaf import (
            helper as leaf_helper,
        )  # trailing comment survives


        def lazy():
            from bundlepkg.leaf import helper

            return helper() + leaf_helper() + LEAF_VALUE
        """
    ))  # fmt: skip
    (package / "bad.py").write_text("import bundlepkg.leaf\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(hub, "PROJECT_PACKAGES", ("bundlepkg",))

    files, flat = bundle_remote_code(["bundlepkg.entry"])
    assert flat == {"bundlepkg.entry": "entry", "bundlepkg.leaf": "leaf"}
    entry = files["entry.py"]
    assert "from .leaf import LEAF_VALUE  # re-exported" in entry
    assert "from .leaf import helper as leaf_helper  # trailing" in entry
    assert "    from .leaf import helper\n" in entry and "bundlepkg" not in entry.split("trust_remote_code loader")[1]
    flat_dir = tmp_path / "flat" / "flatpkg"
    flat_dir.mkdir(parents=True)
    (flat_dir / "__init__.py").write_text("")
    for name, text in files.items():
        (flat_dir / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path / "flat"))
    from flatpkg.entry import lazy

    assert lazy() == 9
    with pytest.raises(RemoteCodeBundleError, match=r"bad.py:1: `import bundlepkg.leaf` cannot be bundled"):
        bundle_remote_code(["bundlepkg.bad"])


def test_pushing_a_folder_addresses_its_card_to_the_repository(fake_hub, tmp_path):
    """Converter and finetuning outputs carry a card written before the repository was known."""
    from fsm_hf.model_card import PLACEHOLDER_REPO_ID

    model = tiny_model()
    folder = tmp_path / "finetuned"
    fsm_hf.FSMPipeline(model=model).save_pretrained(folder)
    card = generate_model_card(model.config, subfolder="model", eval_results=[
        {"dataset": "scenes", "metric": "PSNR", "value": 18.0},
        {"dataset": "scenes", "metric": "PSNR", "value": 15.0, "setting": "baseline", "reference": True},
    ])  # fmt: skip
    assert PLACEHOLDER_REPO_ID in card
    # a reference method's score is in the card's table but not among this model's Hub results
    results = card_header(card)["model-index"][0]["results"]
    assert [r["metrics"][0]["value"] for r in results] == [18.0] and "| 15" in card
    (folder / "model" / "README.md").write_text(card)
    with pytest.raises(ValueError, match="already has a model card"):
        push_folder(folder, REPO, token=WRITE_TOKEN, provenance=PROVENANCE)
    # a name without a namespace goes to the token's namespace, card included
    push_folder(folder, "bare-name", token=WRITE_TOKEN)
    pushed = fake_hub.files(f"{USER}/bare-name")["README.md"].decode()
    assert PLACEHOLDER_REPO_ID not in pushed and f"{USER}/bare-name" in pushed
    assert card_header(pushed)["model-index"][0]["name"] == "bare-name"


def test_card_licence_follows_the_source_weights():
    card = generate_model_card(FSMConfig.from_preset("tiny"), provenance=PROVENANCE)
    assert card_header(card)["license"] == "cc-by-nc-sa-4.0"
    assert card_header(generate_model_card(FSMConfig.from_preset("tiny")))["license"] == "apache-2.0"
    finetuned = generate_model_card(FSMConfig.from_preset("tiny"), provenance=PROVENANCE, training_config={"lr": 1e-4})
    assert card_header(finetuned)["license"] == "cc-by-nc-sa-4.0" and "finetuned (see *Training configuration*)" in finetuned
