"""FSM as a Hugging Face model: save/load, AutoModel, memories, validation, initialisation."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel

from conftest import random_views
from fsm_hf import FSMConfig, FSMForNovelViewSynthesis, FSMMemory


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FSMForNovelViewSynthesis(FSMConfig.from_preset("tiny", newton_schulz_dtype="float32")).eval()


@pytest.fixture(scope="module")
def views():
    return random_views(2, 7, seed=3)


def _split(views, n_in=4):
    images, K, c2w, t = views
    inputs = dict(input_images=images[:, :n_in], input_fxfycxcy=K[:, :n_in], input_c2w=c2w[:, :n_in], input_times=t[:, :n_in])
    targets = dict(target_fxfycxcy=K[:, n_in:], target_c2w=c2w[:, n_in:], target_times=t[:, n_in:])
    return inputs, targets


def test_save_and_load_round_trip_with_automodel(model, views, tmp_path):
    inputs, targets = _split(views)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "fsm"
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, FSMForNovelViewSynthesis)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs, **targets).images, model(**inputs, **targets).images, atol=0, rtol=0)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_config_fields_can_be_overridden_at_load_time(model, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, newton_schulz_dtype="bfloat16")
    assert loaded.config.newton_schulz_dtype == "bfloat16"
    assert loaded.fsm.backbone.layers[0].lacet.newton_schulz_dtype == "bfloat16"


def test_missing_elastic_buffers_are_built_from_the_loaded_weights(model, tmp_path):
    model.save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    kept = {k: v for k, v in weights.items() if ".anchor_" not in k and ".importance_" not in k}
    assert len(kept) < len(weights)
    save_file(kept, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    torch.manual_seed(123)  # a different random init must not leak into the buffers
    loaded = FSMForNovelViewSynthesis.from_pretrained(tmp_path)
    for layer in loaded.fsm.backbone.layers:
        for name in ("w0", "w1", "w2"):
            assert torch.equal(getattr(layer.lacet, f"anchor_{name}"), getattr(layer.lacet, name).detach())
            assert torch.all(getattr(layer.lacet, f"importance_{name}") == loaded.config.elastic_initial_importance)


def test_rendering_from_a_memory_equals_the_joint_forward(model, views):
    inputs, targets = _split(views)
    with torch.no_grad():
        joint = model(**inputs, **targets).images
        memory = model.reconstruct(**inputs)
        one_at_a_time = torch.cat(
            [model.render(memory, **{k: v[:, i : i + 1] for k, v in targets.items()}) for i in range(3)], dim=1
        )
    torch.testing.assert_close(one_at_a_time, joint, atol=1e-5, rtol=0)


def test_memory_save_load_round_trip(model, views, tmp_path):
    inputs, targets = _split(views)
    memory = model.reconstruct(**inputs)
    memory.save(tmp_path / "scene.safetensors")
    loaded = FSMMemory.load(tmp_path / "scene.safetensors")
    assert loaded.image_size == (32, 32) and loaded.num_layers == 2 and loaded.batch_size == 2
    torch.testing.assert_close(model.render(loaded, **targets), model.render(memory, **targets), atol=0, rtol=0)


def test_memory_from_another_model_is_refused(model, views):
    inputs, targets = _split(views)
    memory = model.reconstruct(**inputs)
    other = FSMForNovelViewSynthesis(FSMConfig.from_preset("tiny", num_hidden_layers=3))
    with pytest.raises(ValueError, match="num_hidden_layers"):
        other.render(memory, **targets)


def test_three_d_models_need_no_time(views):
    model = FSMForNovelViewSynthesis(FSMConfig.from_preset("tiny", use_time=False)).eval()
    inputs, targets = _split(views)
    inputs.pop("input_times"), targets.pop("target_times")
    with torch.no_grad():
        assert model(**inputs, **targets).images.shape == (2, 3, 3, 32, 32)
    assert model.fsm.embeddings.linear.in_features == 12 * 64


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda i, t: i.update(input_times=None), "input_times"),
        (lambda i, t: i.update(input_c2w=i["input_c2w"][:, :, :3]), "input_c2w"),
        (lambda i, t: i.update(input_images=i["input_images"][:, :, :, :30, :30]), "patch size"),
        (lambda i, t: i.update(input_fxfycxcy=i["input_fxfycxcy"][:, :3]), "input_c2w"),
        (lambda i, t: t.update(target_times=t["target_times"][:, :1]), "target_times"),
        (lambda i, t: t.update(target_c2w=t["target_c2w"][:1], target_fxfycxcy=t["target_fxfycxcy"][:1], target_times=t["target_times"][:1]), "batch"),
    ],
)
def test_bad_inputs_fail_with_a_clear_message(model, views, mutate, message):
    inputs, targets = _split(views)
    mutate(inputs, targets)
    with pytest.raises(ValueError, match=message):
        model(**inputs, **targets)


def test_initialisation_follows_the_reference_scheme():
    config = FSMConfig.from_preset("tiny", hidden_size=128, ttt_head_dim=64, attention_head_dim=32, num_hidden_layers=4)
    torch.manual_seed(0)
    model = FSMForNovelViewSynthesis(config)
    block = model.fsm.backbone.layers[0]
    residual_std = 0.02 / math.sqrt(3 * config.num_hidden_layers)
    assert abs(block.mlp.c_proj.weight.std().item() - residual_std) < 0.2 * residual_std
    assert abs(block.mlp.c_fc.weight.std().item() - 0.02) < 0.002
    fan_in = block.lacet.w0.shape[1]
    assert abs(block.lacet.w0.std().item() - math.sqrt(2 / fan_in)) < 0.1 * math.sqrt(2 / fan_in)
    assert torch.equal(block.lacet.anchor_w1, block.lacet.w1.detach())
    assert torch.all(block.lacet.importance_w2 == 1e-6)
    assert torch.all(block.lacet.lr_fc.bias == 0)


def test_fast_weight_init_scale_scales_only_the_fast_weights_initial_values():
    config = FSMConfig.from_preset("tiny", hidden_size=128, ttt_head_dim=64, attention_head_dim=32, ttt_fast_weight_init_scale=0.1)
    torch.manual_seed(0)
    model = FSMForNovelViewSynthesis(config)
    block = model.fsm.backbone.layers[0]
    for name in ("w0", "w1", "w2"):
        weight = getattr(block.lacet, name)
        expected = 0.1 * math.sqrt(2 / weight.shape[1])
        assert abs(weight.std().item() - expected) < 0.1 * expected, name
        assert torch.equal(getattr(block.lacet, f"anchor_{name}"), weight.detach())  # anchors follow
    assert abs(block.mlp.c_fc.weight.std().item() - 0.02) < 0.002
    block.lacet.reset_fast_weights()  # the layer's own re-initialisation reads the same scale
    assert abs(block.lacet.w0.std().item() - 0.1 * math.sqrt(2 / block.lacet.w0.shape[1])) < 0.01 * math.sqrt(2 / block.lacet.w0.shape[1])
    reloaded = FSMConfig.from_dict(config.to_dict())
    assert reloaded.ttt_fast_weight_init_scale == 0.1
    with pytest.raises(ValueError, match="ttt_fast_weight_init_scale"):
        FSMConfig.from_preset("tiny", ttt_fast_weight_init_scale=0.0)


def test_presets_build_the_released_architectures():
    config = FSMConfig.from_preset("fsm-4d-lvsm")
    assert (config.hidden_size, config.num_hidden_layers, config.ttt_head_dim, config.num_input_channels) == (768, 24, 768, 13)
    assert config.elastic_enabled and config.elastic_estimator == "si" and config.elastic_anchor_policy == "streaming-ema"
    lact = FSMConfig.from_preset("lact-nvs-l24-ttt4x")
    assert lact.num_input_channels == 12 and not lact.elastic_enabled and lact.ttt_inter_multi == 4
    with pytest.raises(ValueError, match="Unknown FSM preset"):
        FSMConfig.from_preset("fsm-5d")


def test_view_batching_knob_does_not_change_results(model, views):
    inputs, targets = _split(views)
    with torch.no_grad():
        reference = model(**inputs, **targets).images
        for max_views in (1, 3):
            batched = model(**inputs, **targets, max_views_per_batch=max_views).images
            torch.testing.assert_close(batched, reference, atol=1e-6, rtol=0)
        memory = model.reconstruct(**inputs, max_views_per_batch=2)
        torch.testing.assert_close(model.render(memory, **targets, max_views_per_batch=1), reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("overrides", [dict(), dict(elastic_state="per_layer"), dict(ttt_schedule="interleaved"), dict(elastic_enabled=False, ttt_chunk_size=0)])
def test_streamed_memory_bounded_path_equals_the_plain_forward(views, overrides):
    torch.manual_seed(1)
    model = FSMForNovelViewSynthesis(FSMConfig.from_preset("tiny", newton_schulz_dtype="float32", **overrides)).eval()
    inputs, targets = _split(views, n_in=5)
    with torch.no_grad():
        plain = model(**inputs, **targets).images
        plain_memory = model.reconstruct(**inputs)
        for views_per_batch in (1, 2, 7):
            streamed = model(**inputs, **targets, max_views_per_batch=views_per_batch).images
            torch.testing.assert_close(streamed, plain, atol=1e-4, rtol=0)
            memory = model.reconstruct(**inputs, max_views_per_batch=views_per_batch)
            for ours, ref in zip(memory.fast_weights, plain_memory.fast_weights):
                torch.testing.assert_close(ours.w0, ref.w0, atol=1e-4, rtol=1e-4)


def test_streamed_path_keeps_one_layer_of_activations():
    """Peak live tensor bytes grow at most linearly with the number of input views, with a far
    smaller slope than the plain path (counted through a dispatch hook, not timed)."""
    import weakref

    from torch.utils._python_dispatch import TorchDispatchMode

    class LiveBytes(TorchDispatchMode):
        # Counts every tensor an operator returns until its last Python reference dies.
        def __init__(self):
            super().__init__()
            self.live = self.peak = 0
            self.owners = {}

        def _release(self, ptr, nbytes):
            self.owners[ptr] -= 1
            if self.owners[ptr] == 0:
                del self.owners[ptr]
                self.live -= nbytes

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                    storage = t.untyped_storage()
                    ptr, nbytes = storage.data_ptr(), storage.nbytes()
                    if ptr not in self.owners:
                        self.owners[ptr] = 0
                        self.live += nbytes
                        self.peak = max(self.peak, self.live)
                    self.owners[ptr] += 1
                    weakref.finalize(t, self._release, ptr, nbytes)
            return out

    torch.manual_seed(0)
    config = FSMConfig.from_preset("tiny", newton_schulz_dtype="float32", ttt_chunk_size=64, hidden_size=128, ttt_head_dim=64, attention_head_dim=32)
    model = FSMForNovelViewSynthesis(config).eval()

    def peak(num_views, views_per_batch):
        images, K, c2w, t = random_views(1, num_views, seed=5)
        mode = LiveBytes()
        with torch.no_grad(), mode:
            model.reconstruct(images, K, c2w, t, max_views_per_batch=views_per_batch)
        return mode.peak

    small, large = peak(16, 2), peak(64, 2)
    plain_small, plain_large = peak(16, None), peak(64, None)
    assert large < 4.5 * small  # 4x the views: at most linear growth, small constant
    assert (large - small) < 0.5 * (plain_large - plain_small), (small, large, plain_small, plain_large)


def test_ray_direction_norm_is_torch_norm_bit_for_bit():
    """``modeling.rays.channel_norm`` replaces a slow ``torch.norm`` over the 3 direction channels; the
    rays feed every token, so it must not change a bit (the bf16 parity with the reference is exact)."""
    from modeling.rays import channel_norm, compute_rays

    g = torch.Generator().manual_seed(21)
    for scale in (1e-3, 1.0, 7.0, 1e3):
        v = torch.randn(8, 3, 2048, generator=g) * scale
        assert torch.equal(channel_norm(v), torch.norm(v, dim=1, keepdim=True))
    # Real camera rays: unnormalised directions R @ ((x + 0.5 - cx) / fx, (y + 0.5 - cy) / fy, 1).
    c2w = torch.eye(4).repeat(2, 3, 1, 1)
    c2w[..., :3, :3] = torch.linalg.qr(torch.randn(2, 3, 3, 3, generator=g))[0]
    intrinsics = torch.tensor([70.0, 65.0, 31.5, 33.0]).repeat(2, 3, 1)
    _, ray_d = compute_rays(intrinsics, c2w, 64, 48)
    assert torch.allclose(ray_d.norm(dim=2), torch.ones(()), atol=1e-6)
    unnormalised = torch.randn(6, 3, 64 * 48, generator=g).abs() + 0.5
    assert torch.equal(channel_norm(unnormalised), torch.norm(unnormalised, dim=1, keepdim=True))
    fp64 = torch.randn(2, 3, 16, generator=g, dtype=torch.float64)  # other dtypes take torch.norm itself
    assert torch.equal(channel_norm(fp64), torch.norm(fp64, dim=1, keepdim=True))


# -- cross_view_mixer="attention": the control / warm-up mixer ---------------------------------------
@pytest.fixture(scope="module")
def attention_model():
    torch.manual_seed(2)
    config = FSMConfig.from_preset("tiny", cross_view_mixer="attention", elastic_enabled=False)
    return FSMForNovelViewSynthesis(config).eval()


def test_attention_mixer_renders_from_its_memory_like_the_joint_forward(attention_model, views):
    inputs, targets = _split(views)
    with torch.no_grad():
        joint = attention_model(**inputs, **targets).images
        memory = attention_model.reconstruct(**inputs)
        one_at_a_time = torch.cat(
            [attention_model.render(memory, **{k: v[:, i : i + 1] for k, v in targets.items()}) for i in range(3)], dim=1
        )
        streamed = attention_model(**inputs, **targets, max_views_per_batch=1).images
    torch.testing.assert_close(one_at_a_time, joint, atol=1e-5, rtol=0)
    torch.testing.assert_close(streamed, joint, atol=1e-5, rtol=0)
    # The memory is the input tokens' keys and values: [B, input tokens, D] per layer.
    tokens = inputs["input_images"].shape[1] * (32 // attention_model.config.patch_size) ** 2
    keys, values, _ = memory.fast_weights[0]
    assert keys.shape == values.shape == (2, tokens, attention_model.config.hidden_size)


def test_attention_mixer_reads_the_inputs(attention_model, views):
    """Targets depend on the input images through the mixer (the per-view attention cannot carry them)."""
    inputs, targets = _split(views)
    changed = dict(inputs, input_images=inputs["input_images"].flip(-1))
    with torch.no_grad():
        a, b = attention_model(**inputs, **targets).images, attention_model(**changed, **targets).images
    assert (a - b).abs().max() > 1e-5  # freshly initialised: small residual branches, but a real dependence


def test_attention_mixer_config_is_validated():
    with pytest.raises(ValueError, match="cross_view_mixer must be one of \\['lacet', 'attention'\\], got 'mamba'"):
        FSMConfig.from_preset("tiny", cross_view_mixer="mamba", elastic_enabled=False)
    with pytest.raises(ValueError, match="no elastic prior: set elastic_enabled=False"):
        FSMConfig.from_preset("tiny", cross_view_mixer="attention", elastic_enabled=True)


def test_lacet_model_warm_started_from_an_attention_checkpoint(attention_model, tmp_path):
    """Loading an attention model's folder as a LaCET model keeps every shared weight and the mixer's
    q/k/v and output projections, and initialises the fast weights (and their elastic buffers) freshly."""
    attention_model.save_pretrained(tmp_path)
    torch.manual_seed(5)
    lacet, info = FSMForNovelViewSynthesis.from_pretrained(
        tmp_path, cross_view_mixer="lacet", elastic_enabled=True, output_loading_info=True
    )
    assert sorted({k.split(".lacet.")[1] for k in info["unexpected_keys"]}) == ["k_norm.weight", "q_norm.weight"]
    assert all(".lacet." in k for k in info["missing_keys"])
    source = attention_model.state_dict()
    for key, value in lacet.state_dict().items():
        if key in source:
            assert torch.equal(value, source[key]), key
    assert any(k.endswith("lacet.to_qkv.weight") for k in source) and any(k.endswith("lacet.c_proj.weight") for k in source)
    for layer in lacet.fsm.backbone.layers:
        for name in ("w0", "w1", "w2"):
            weight = getattr(layer.lacet, name)
            expected = math.sqrt(2.0 / weight.shape[1])
            assert abs(weight.std().item() / expected - 1) < 0.1, (name, weight.std().item(), expected)
            assert torch.equal(getattr(layer.lacet, f"anchor_{name}"), weight.detach())


def test_memory_of_another_mixer_is_refused_and_old_memories_still_load(model, attention_model, views, tmp_path):
    inputs, targets = _split(views)
    with torch.no_grad():
        memory = attention_model.reconstruct(**inputs)
    with pytest.raises(ValueError, match="cross_view_mixer: memory='attention' model='lacet'"):
        model.render(memory, **targets)
    # A memory saved before the field existed has no cross_view_mixer in its signature: it is LaCET's.
    old = model.reconstruct(**inputs)
    old.config_signature.pop("cross_view_mixer")
    torch.testing.assert_close(model.render(old, **targets), model.render(model.reconstruct(**inputs), **targets), atol=0, rtol=0)
