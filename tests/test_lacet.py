"""The LaCET layer and every option of DESIGN §4."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import random_views
from fsm_hf import FSMConfig, FSMForNovelViewSynthesis
from modeling.lacet import (
    ElasticSettings,
    FastWeights,
    LaCETLayer,
    TTTOperation,
    fast_weight_apply,
    lacet_scan,
    newton_schulz,
    update_then_apply_schedule,
)


def _lact_reference(w0, w1, w2, q, k, v, lr0, lr1, lr2, steps):
    """Plain LaCT written independently: one update on all keys, then apply; fp32 throughout."""

    def ns(g):
        x = g.transpose(1, 2) if g.shape[1] > g.shape[2] else g
        x = x / (torch.linalg.matrix_norm(x, keepdim=True) + 1e-7)
        for _ in range(steps):
            a = x @ x.mT
            x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
        return x.transpose(1, 2) if g.shape[1] > g.shape[2] else x

    norms = [w.norm(dim=1, keepdim=True) for w in (w0, w1, w2)]
    gate, up = k @ w0, k @ w2
    hidden = F.silu(gate) * up
    dh = v @ w1.mT
    sig = torch.sigmoid(gate)
    dgate = dh * up * sig * (1 + gate * (1 - sig))
    new = [
        w0 + ns((k * lr0).mT @ dgate),
        w1 + ns((hidden * lr1).mT @ v),
        w2 + ns((k * lr2).mT @ (dh * F.silu(gate))),
    ]
    new = [w / (w.norm(dim=1, keepdim=True) + 1e-5) * n for w, n in zip(new, norms)]
    return (F.silu(q @ new[0]) * (q @ new[2])) @ new[1]


def _inputs(n=3, length=40, d=8, dm=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = FastWeights(torch.randn(n, d, dm, generator=g), torch.randn(n, dm, d, generator=g), torch.randn(n, d, dm, generator=g))
    q, k, v = (torch.nn.functional.normalize(torch.randn(n, length, d, generator=g), dim=-1) for _ in range(3))
    lr = tuple(torch.rand(n, length, 1, generator=g) * 0.1 for _ in range(3))
    return w, q, k, v, lr


def test_one_chunk_without_elastic_prior_is_lact():
    w, q, k, v, lr = _inputs()
    out, _, _ = lacet_scan(w, q, k, v, lr, update_then_apply_schedule(40, 40), chunk_size=0, newton_schulz_dtype=torch.float32)
    ref = _lact_reference(*w, q, k, v, *lr, steps=5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_elastic_prior_with_zero_strength_is_lact_for_any_chunking():
    w, q, k, v, lr = _inputs()
    schedule = update_then_apply_schedule(40, 40)
    state = None
    plain, _, _ = lacet_scan(w, q, k, v, lr, schedule, chunk_size=16, newton_schulz_dtype=torch.float32)
    from modeling.lacet import ElasticState

    state = ElasticState(w.map(torch.clone), w.map(lambda t: torch.full_like(t, 1e-6)))
    zero = ElasticSettings(enabled=True, estimator="si", anchor_policy="streaming-ema", strength=0.0)
    elastic, _, _ = lacet_scan(w, q, k, v, lr, schedule, chunk_size=16, newton_schulz_dtype=torch.float32, elastic=zero, elastic_state=state)
    torch.testing.assert_close(elastic, plain, atol=1e-6, rtol=1e-6)


def test_newton_schulz_orthogonalises():
    g = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(0))
    x = newton_schulz(g, steps=5, dtype=torch.float32)
    singular = torch.linalg.svdvals(x)
    # The quintic iteration lands singular values in roughly (0.5, 1.5), not exactly 1.
    assert singular.min() > 0.3 and singular.max() < 1.6
    assert newton_schulz(g, 5).dtype == torch.bfloat16
    tall = newton_schulz(g.mT, 5, torch.float32)
    torch.testing.assert_close(tall, x.mT, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("estimator", ["mas", "ewc", "si"])
@pytest.mark.parametrize("policy", ["global", "streaming", "streaming-ema"])
def test_elastic_state_is_passed_as_values_and_evolves(estimator, policy):
    from modeling.lacet import ElasticState

    w, q, k, v, lr = _inputs()
    state = ElasticState(w.map(torch.clone), w.map(lambda t: torch.full_like(t, 1e-6)))
    before = state.map(torch.clone)
    settings = ElasticSettings(enabled=True, estimator=estimator, anchor_policy=policy)
    _, final_w, final_state = lacet_scan(
        w, q, k, v, lr, update_then_apply_schedule(40, 40), chunk_size=10,
        newton_schulz_dtype=torch.float32, elastic=settings, elastic_state=state,
    )  # fmt: skip
    for a, b in zip(state.anchor + state.importance, before.anchor + before.importance):
        assert torch.equal(a, b), "the incoming state must not be mutated"
    assert not torch.equal(final_state.importance.w0, before.importance.w0)
    moved = not torch.equal(final_state.anchor.w0, before.anchor.w0)
    assert moved == (policy != "global")
    if policy == "streaming":
        torch.testing.assert_close(final_state.anchor.w0, final_w.w0)


def test_apply_before_update_uses_the_weights_before_each_chunk():
    w, q, k, v, lr = _inputs()
    schedule = [TTTOperation(0, 40, update=True, apply=True)]
    before, _, _ = lacet_scan(w, q, k, v, lr, schedule, chunk_size=10, newton_schulz_dtype=torch.float32, apply_before_update=True)
    after, final, _ = lacet_scan(w, q, k, v, lr, schedule, chunk_size=10, newton_schulz_dtype=torch.float32)
    torch.testing.assert_close(before[:, :10], fast_weight_apply(w, q[:, :10]))
    torch.testing.assert_close(after[:, 30:], fast_weight_apply(final, q[:, 30:]))
    assert not torch.allclose(before, after)


def _tiny(**overrides):
    torch.manual_seed(0)
    cfg = FSMConfig.from_preset("tiny", newton_schulz_dtype="float32", **overrides)
    return FSMForNovelViewSynthesis(cfg).eval()


def _render(model, views=4, targets=2, seed=0):
    images, K, c2w, t = random_views(1, views + targets, seed=seed)
    with torch.no_grad():
        return model(images[:, :views], K[:, :views], c2w[:, :views], t[:, :views], K[:, views:], c2w[:, views:], t[:, views:]).images


def _make_buffers_nontrivial(model):
    # Fresh buffers equal the weights (anchor) and 1e-6 (importance); perturb them so that every
    # estimator/policy/state option has something to act on.
    g = torch.Generator().manual_seed(3)
    for layer in model.fsm.backbone.layers:
        for name in ("w0", "w1", "w2"):
            anchor = getattr(layer.lacet, f"anchor_{name}")
            anchor.add_(torch.randn(anchor.shape, generator=g))
            getattr(layer.lacet, f"importance_{name}").fill_(0.3)
    return model


@pytest.mark.parametrize(
    "change",
    [
        dict(ttt_chunk_size=16),
        dict(ttt_chunk_size=0),
        dict(elastic_estimator="mas"),
        dict(elastic_estimator="ewc"),
        dict(elastic_anchor_policy="global"),
        dict(elastic_anchor_policy="streaming"),
        dict(elastic_alpha=0.9),
        dict(elastic_beta=0.9),
        dict(elastic_lambda=0.1),
        dict(elastic_enabled=False),
        dict(elastic_state="per_layer"),
        dict(newton_schulz_dtype="bfloat16"),
        dict(newton_schulz_steps=3),
        dict(ttt_schedule="interleaved"),
        dict(ttt_schedule="interleaved", apply_before_update=True),
    ],
    ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()),
)
def test_every_option_changes_the_output(change):
    base = _make_buffers_nontrivial(_tiny())
    other = FSMForNovelViewSynthesis(FSMConfig.from_preset("tiny", **{"newton_schulz_dtype": "float32", **change})).eval()
    other.load_state_dict(base.state_dict())
    a, b = _render(base), _render(other)
    assert (a - b).abs().max() > 1e-4, f"option {change} was silently ignored"


def test_unknown_option_names_are_rejected():
    for bad in (dict(elastic_estimator="abs"), dict(elastic_anchor_policy="ema"), dict(elastic_state="shared"),
                dict(newton_schulz_dtype="float16"), dict(ttt_schedule="causal"), dict(pose_features=["rays"])):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(bad))):
            FSMConfig(**bad)
    with pytest.raises(ValueError, match="apply_before_update"):
        FSMConfig(apply_before_update=True)


def test_forward_leaves_elastic_buffers_untouched():
    model = _make_buffers_nontrivial(_tiny())
    before = {k: v.clone() for k, v in model.state_dict().items() if "anchor" in k or "importance" in k}
    _render(model)
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_threaded_state_starts_from_first_block_buffers_only():
    model = _make_buffers_nontrivial(_tiny())
    reference = _render(model)
    # Changing the second block's buffers must not matter in threaded mode ...
    model.fsm.backbone.layers[1].lacet.anchor_w0.add_(1.0)
    torch.testing.assert_close(_render(model), reference)
    # ... but it does in per-layer mode.
    model.config.elastic_state = "per_layer"
    per_layer = _render(model)
    model.fsm.backbone.layers[1].lacet.anchor_w0.sub_(1.0)
    assert (per_layer - _render(model)).abs().max() > 1e-5


def test_activation_checkpointing_gives_the_same_gradients():
    model = _make_buffers_nontrivial(_tiny())
    images, K, c2w, t = random_views(1, 6, seed=1)
    kwargs = dict(input_images=images[:, :4], input_fxfycxcy=K[:, :4], input_c2w=c2w[:, :4], input_times=t[:, :4],
                  target_fxfycxcy=K[:, 4:], target_c2w=c2w[:, 4:], target_times=t[:, 4:], target_images=images[:, 4:])  # fmt: skip

    def grads():
        model.zero_grad()
        model.train()
        model(**kwargs).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    # transformers >= 5 renamed the method; older releases only have the gradient_* name.
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    assert model.fsm.backbone.gradient_checkpointing
    checkpointed = grads()
    (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()
    assert plain.keys() == checkpointed.keys() and len(plain) > 20
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_bf16_autocast_runs_and_stays_close():
    model = _tiny()
    images, K, c2w, t = random_views(1, 6, seed=2)
    args = (images[:, :4], K[:, :4], c2w[:, :4], t[:, :4], K[:, 4:], c2w[:, 4:], t[:, 4:])
    with torch.no_grad():
        ref = model(*args).images
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(*args).images
    assert low.shape == ref.shape and torch.isfinite(low).all()
    assert (low.float() - ref).abs().mean() < 0.05


def test_lacet_layer_is_a_drop_in_sequence_layer():
    layer = LaCETLayer(hidden_size=32, head_dim=16, chunk_size=8, newton_schulz_dtype="float32")
    layer.reset_fast_weights(torch.Generator().manual_seed(0))
    layer.reset_elastic_buffers()
    x = torch.randn(2, 24, 32)
    out, fw, state = layer(x, update_then_apply_schedule(16, 24))
    assert out.shape == (2, 24, 32) and fw.w0.shape == (2 * 2, 16, 32) and state is None
    # Applying the returned fast weights reproduces the outputs of the apply step.
    torch.testing.assert_close(layer.apply_memory(x, fw), out, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("chunks", [1, 4])
@pytest.mark.parametrize("elastic", [False, True])
def test_updates_store_key_value_pairs_that_the_apply_step_retrieves(chunks, elastic):
    """The memory works as an associative memory: after the chunk-by-chunk updates on 64 random
    unit keys, applying the fast weights to each key returns a vector closest (in cosine) to its
    own value among all 64 values, for every chunk; the initial weights return none of them."""
    from modeling.lacet import ElasticState, fast_weight_init_std, fast_weight_step

    d, m, tokens = 64, 2, 64
    g = torch.Generator().manual_seed(0)
    weights = FastWeights(
        torch.randn(1, d, d * m, generator=g) * fast_weight_init_std(d),
        torch.randn(1, d * m, d, generator=g) * fast_weight_init_std(d * m),
        torch.randn(1, d, d * m, generator=g) * fast_weight_init_std(d),
    )
    column_norms = weights.map(lambda w: w.norm(dim=1, keepdim=True))
    k = F.normalize(torch.randn(1, tokens, d, generator=g), dim=-1)
    v = torch.randn(1, tokens, d, generator=g)
    lr = torch.full((1, tokens, 1), 0.01)
    settings = ElasticSettings(enabled=elastic)
    state = ElasticState(weights.map(torch.clone), weights.map(lambda w: torch.full_like(w, 1e-6))) if elastic else None

    def recall(fast_weights):
        similarity = F.normalize(fast_weight_apply(fast_weights, k), dim=-1) @ F.normalize(v, dim=-1).mT  # [1, L, L]
        hits = similarity[0].argmax(-1) == torch.arange(tokens)
        return hits.view(chunks, -1).float().mean(1), similarity[0].diagonal().mean()

    before, _ = recall(weights)
    assert before.max() <= 0.1
    current, size = weights, tokens // chunks
    for start in range(0, tokens, size):
        chunk = slice(start, start + size)
        current, state = fast_weight_step(
            current, k[:, chunk], v[:, chunk], (lr[:, chunk],) * 3, column_norms, state, 5, torch.float32, "exact", settings
        )
    after, cosine = recall(current)
    assert after.tolist() == [1.0] * chunks, after
    assert cosine > 0.6
