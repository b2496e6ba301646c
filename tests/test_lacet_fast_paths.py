"""Every optional LaCET fast path equals the default path: bit for bit where claimed, else within a
stated tolerance (speed itself is measured in benchmarks/, never here)."""

from __future__ import annotations

import pytest
import torch

import modeling.lacet as lacet
from modeling.lacet import (
    ElasticSettings,
    FastWeights,
    LaCETLayer,
    TTTOperation,
    bf16_emulation_available,
    bf16_matmul_emulated,
    configure_lacet,
    fast_weight_apply,
    factored_newton_schulz_is_cheaper,
    fast_weight_directions,
    newton_schulz,
    newton_schulz_factored,
)

from conftest import load_oracle_case, official_model_inputs, requires_oracle

needs_emulation = pytest.mark.skipif(
    not bf16_emulation_available(), reason="this torch/CPU does not use the scalar bf16 kernel that is emulated"
)


def _bf16(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(torch.bfloat16)


# -- bf16 product emulation -------------------------------------------------------------------------


def _count_emulated_products(monkeypatch) -> list:
    calls = []
    original = lacet.bf16_matmul_emulated
    monkeypatch.setattr(lacet, "bf16_matmul_emulated", lambda a, b: calls.append(1) or original(a, b))
    return calls


@pytest.mark.parametrize(
    "m,k,p",
    [(32, 32, 64), (64, 130, 96), (17, 7, 5), (40, 3, 72), (96, 256, 160)],
    ids=["oracle", "k-tail", "odd", "k<4", "wide"],
)
def test_bf16_products_equal_torch_whether_emulated_or_not(m, k, p):
    """Fresh random operands (not the probe's). Where the probe found torch's scalar kernel, the
    emulation equals it bit for bit; on every CPU the default path's product is torch's, bit for bit."""
    a, b = _bf16(2, m, k, seed=1), _bf16(2, k, p, seed=2, scale=3.0)
    if bf16_emulation_available():
        assert torch.equal(bf16_matmul_emulated(a, b), a @ b)
    assert torch.equal(lacet._matmul(a, b, emulate=bf16_emulation_available()), a @ b)


@needs_emulation
def test_bf16_matmul_emulation_matches_on_newton_schulz_like_operands():
    """Gram matrices of a Frobenius-normalised ``[768, 1536]`` matrix (the released size): the
    operands Newton–Schulz multiplies."""
    x = torch.randn(1, 768, 1536, generator=torch.Generator().manual_seed(3))
    x = (x / x.norm()).to(torch.bfloat16)
    gram = x @ x.transpose(1, 2)
    c_gram = 2.0315 * gram
    assert torch.equal(bf16_matmul_emulated(c_gram, gram), c_gram @ gram)
    poly = -4.7750 * gram + c_gram @ gram
    assert torch.equal(bf16_matmul_emulated(poly, x), poly @ x)


@pytest.mark.parametrize("shape", [(1, 256, 512), (1, 512, 256), (3, 32, 64)], ids=["wide", "tall-transposed", "oracle"])
def test_newton_schulz_default_path_is_bit_identical_to_torch(shape):
    """The default (``emulate_bf16=None``) bf16 Newton–Schulz equals torch's own kernels on this CPU."""
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        native = newton_schulz(g, 5, torch.bfloat16, emulate_bf16=False)
        default = newton_schulz(g, 5, torch.bfloat16)
    assert default.dtype == torch.bfloat16
    assert torch.equal(native, default)


def test_probe_turns_the_emulation_off_when_a_product_differs(monkeypatch):
    """One differing probe product is enough to keep torch's kernels (simulated with a perturbed
    emulation, as on CPUs with native bf16)."""
    original = lacet.bf16_matmul_emulated
    monkeypatch.setattr(lacet, "_EMULATION_AGREES", None)
    monkeypatch.setattr(lacet, "bf16_matmul_emulated", lambda a, b: original(a, b) * (1 + 2**-6) if a.shape[0] == 4 else original(a, b))
    assert lacet.bf16_emulation_available() is False
    monkeypatch.setattr(lacet, "_EMULATION_AGREES", None)
    monkeypatch.setattr(lacet, "bf16_matmul_emulated", lambda a, b: a @ b)
    assert lacet.bf16_emulation_available() is True


def test_emulation_is_never_used_for_fp32(monkeypatch):
    calls = _count_emulated_products(monkeypatch)
    g = torch.randn(1, 32, 64, requires_grad=True)
    newton_schulz(g, 2, torch.float32, emulate_bf16=True).sum().backward()
    with torch.no_grad():
        newton_schulz(g, 2, torch.float32, emulate_bf16=True)
    assert calls == []
    assert g.grad is not None


def test_emulation_is_not_traced_by_torch_compile(monkeypatch):
    """Inside a graph that torch.compile traces, the products stay plain matmuls (the emulation's
    unrolled loops would make a huge graph, and compiled kernels are not bit-identical anyway)."""
    calls = _count_emulated_products(monkeypatch)
    g = torch.randn(1, 32, 64)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    newton_schulz(g, 2, torch.bfloat16, emulate_bf16=True)
    assert calls == []
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: False)
    newton_schulz(g, 2, torch.bfloat16, emulate_bf16=True)
    assert calls


@needs_emulation
@pytest.mark.parametrize("shape", [(2, 37, 70), (1, 70, 37)])  # a K tail; rows > columns (transposed iteration)
def test_bf16_newton_schulz_gradients_identical_with_and_without_emulation(monkeypatch, shape):
    """Training through the bf16 Newton–Schulz: the emulated products (with autograd's own backward)
    give the same values and the same gradients as torch's kernels, bit for bit."""
    g0 = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    upstream = torch.randn(*shape, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    results = {}
    for emulate in (False, True):
        calls = _count_emulated_products(monkeypatch)
        g = (g0 * 1.0).requires_grad_(True)
        out = newton_schulz(g * 2.0, 5, torch.bfloat16, emulate_bf16=emulate)
        (out * upstream).float().sum().backward()
        results[emulate] = (out.detach(), g.grad)
        assert (len(calls) > 0) == emulate  # 2 products per step
    assert torch.equal(results[True][0], results[False][0])
    assert torch.equal(results[True][1], results[False][1])
    assert results[True][1].abs().sum() > 0


@requires_oracle
@needs_emulation
def test_oracle_bf16_output_identical_with_and_without_emulation(monkeypatch):
    from conversion import convert_official

    case = load_oracle_case("lvsm4d_lacet_sema_si_4chunks")
    model = convert_official(case["checkpoint"], case["config"])
    inputs = official_model_inputs(case, model.config.max_frames)
    calls = _count_emulated_products(monkeypatch)
    with torch.no_grad():
        emulated = model(**inputs).images
        monkeypatch.setattr(lacet, "_EMULATION_AGREES", False)
        native = model(**inputs).images
    assert calls, "the default bf16 path should use the emulation on this CPU"
    assert torch.equal(emulated, native)
    assert torch.equal(emulated, case["main"]["output.images"])


@requires_oracle
@needs_emulation
def test_oracle_bf16_training_gradients_identical_with_and_without_emulation(monkeypatch):
    """A training step of a converted official model with bf16 Newton–Schulz: every parameter's
    gradient is the same bit for bit whether the products are emulated or torch's."""
    from conversion import convert_official

    case = load_oracle_case("lvsm4d_lacet_sema_si_4chunks")
    model = convert_official(case["checkpoint"], case["config"])
    inputs = official_model_inputs(case, model.config.max_frames)
    calls = _count_emulated_products(monkeypatch)
    gradients = []
    for agrees in (True, False):
        monkeypatch.setattr(lacet, "_EMULATION_AGREES", agrees)
        model.zero_grad(set_to_none=True)
        model(**inputs).images.square().mean().backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
        if agrees:
            assert calls, "training with bf16 Newton–Schulz should use the emulation on this CPU"
            calls.clear()
    assert calls == []
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) > 10
    for name, grad in gradients[0].items():
        assert torch.equal(grad, gradients[1][name]), name


# -- Newton–Schulz batching ---------------------------------------------------------------------------


def _chunk(n=2, c=48, d=32, dm=64, seed=5):
    g = torch.Generator().manual_seed(seed)
    w = FastWeights(torch.randn(n, d, dm, generator=g) * 0.25, torch.randn(n, dm, d, generator=g) * 0.18, torch.randn(n, d, dm, generator=g) * 0.25)
    k = torch.nn.functional.normalize(torch.randn(n, c, d, generator=g), dim=-1)
    v = torch.randn(n, c, d, generator=g)
    lr = tuple(torch.rand(n, c, 1, generator=g) * 0.02 for _ in range(3))
    return w, k, v, lr


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("sizes", [(32, 64), (96, 192), (64, 32)], ids=["oracle", "wider", "inter<1"])
def test_exact_batching_is_bit_identical_to_separate_calls(dtype, sizes):
    d, dm = sizes
    w, k, v, lr = _chunk(d=d, dm=dm)
    with torch.no_grad():
        separate = fast_weight_directions(w, k, v, lr, 5, dtype, "none", "dense")
        batched = fast_weight_directions(w, k, v, lr, 5, dtype, "exact", "dense")
    for a, b in zip(separate, batched):
        assert torch.equal(a, b)


def test_all_batching_matches_in_fp32():
    """``"all"`` transposes U1's input: the same mathematics, another summation order (fp32: ~1e-6)."""
    w, k, v, lr = _chunk(d=96, dm=192)
    with torch.no_grad():
        separate = fast_weight_directions(w, k, v, lr, 5, torch.float32, "none", "dense")
        batched = fast_weight_directions(w, k, v, lr, 5, torch.float32, "all", "dense")
    for a, b in zip(separate, batched):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


def test_unknown_batching_is_rejected():
    w, k, v, lr = _chunk()
    with pytest.raises(ValueError, match="newton_schulz_batching"):
        fast_weight_directions(w, k, v, lr, 1, torch.float32, "sometimes")
    with pytest.raises(ValueError, match="newton_schulz_batching"):
        LaCETLayer(64, 32, newton_schulz_batching="sometimes")


# -- factored Newton–Schulz ---------------------------------------------------------------------------


@pytest.mark.parametrize("c,r,cols", [(12, 32, 64), (12, 64, 32), (48, 32, 64), (5, 40, 40)], ids=["wide", "tall", "full-rank", "square"])
def test_factored_newton_schulz_equals_dense(c, r, cols):
    """The ``C x C`` iteration is the dense iteration rewritten: equal in fp64 to rounding, and in
    fp32 as close to the fp64 result as the dense fp32 iteration is."""
    g = torch.Generator().manual_seed(11)
    left = torch.randn(3, c, r, generator=g, dtype=torch.float64)
    right = torch.randn(3, c, cols, generator=g, dtype=torch.float64) * torch.rand(3, c, 1, generator=g, dtype=torch.float64)
    dense = newton_schulz(left.transpose(1, 2) @ right, 5, torch.float64)
    factored = newton_schulz_factored(left, right, 5)
    assert factored.shape == dense.shape == (3, r, cols)
    torch.testing.assert_close(factored, dense, atol=1e-12, rtol=0)
    dense32 = newton_schulz(left.float().transpose(1, 2) @ right.float(), 5, torch.float32)
    factored32 = newton_schulz_factored(left.float(), right.float(), 5)
    assert factored32.dtype == torch.float32
    error_dense = (dense32.double() - dense).abs().max().item()
    error_factored = (factored32.double() - dense).abs().max().item()
    assert error_factored < max(4 * error_dense, 1e-6), (error_factored, error_dense)
    steps_0 = newton_schulz(left.transpose(1, 2) @ right, 0, torch.float64)  # Frobenius normalisation only
    torch.testing.assert_close(newton_schulz_factored(left, right, 0), steps_0, atol=1e-12, rtol=0)


def test_factored_directions_and_gradients_equal_dense():
    """Through :func:`fast_weight_directions` in fp64 (the comparison sees the algebra, not rounding):
    the values and the gradients training takes through them (the factored backward is hand-written)."""
    w, k, v, lr = _chunk(c=16, d=32, dm=64)
    leaves = [t.double() for t in (*w, k, v, *lr)]
    results = {}
    for method in ("dense", "factored"):
        inputs = [t.clone().requires_grad_(True) for t in leaves]
        out = fast_weight_directions(FastWeights(*inputs[:3]), inputs[3], inputs[4], tuple(inputs[5:]), 5, torch.float64, "exact", method)
        weights = [torch.linspace(-1, 1, o.numel(), dtype=o.dtype).reshape(o.shape) for o in out]
        sum((o * u).sum() for o, u in zip(out, weights)).backward()
        results[method] = ([o.detach() for o in out], [t.grad for t in inputs])
    for a, b in zip(results["dense"][0], results["factored"][0]):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=0)
    for a, b in zip(results["dense"][1], results["factored"][1]):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("c,r,cols,rank", [(12, 32, 64, 12), (12, 32, 64, 3), (20, 16, 24, 20), (20, 16, 24, 2)], ids=["narrow", "narrow-rank3", "wide-chunk", "wide-chunk-rank2"])
def test_factored_newton_schulz_backward_equals_dense(c, r, cols, rank):
    """The hand-written backward against autograd through the dense iteration, including chunks whose
    tokens span fewer dimensions than there are tokens (where a QR backward would break down)."""
    g = torch.Generator().manual_seed(12)
    basis = torch.randn(2, rank, r, generator=g, dtype=torch.float64)
    left = torch.randn(2, c, rank, generator=g, dtype=torch.float64) @ basis
    left = (left + 1e-4 * torch.randn(2, c, r, generator=g, dtype=torch.float64)).requires_grad_(True)
    right = torch.randn(2, c, cols, generator=g, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, r, cols, generator=g, dtype=torch.float64)
    dense = torch.autograd.grad(newton_schulz(left.transpose(1, 2) @ right, 5, torch.float64), (left, right), upstream)
    factored = torch.autograd.grad(newton_schulz_factored(left, right, 5), (left, right), upstream)
    for a, b in zip(dense, factored):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(b, a, atol=1e-9 * a.abs().max().item(), rtol=0)


def test_auto_method_factors_only_fp32_chunks_narrower_than_the_weights(monkeypatch):
    """``auto`` picks the factored iteration for fp32 chunks narrower than the weights (training too)."""
    calls = []
    def counted(left, right, steps):
        calls.append(left.shape)
        return newton_schulz(left.transpose(1, 2) @ right, steps, left.dtype)

    monkeypatch.setattr(lacet, "newton_schulz_factored", counted)
    narrow, wide = _chunk(c=8, d=32, dm=64), _chunk(c=48, d=32, dm=64)
    with torch.no_grad():
        fast_weight_directions(*narrow, 5, torch.bfloat16, "exact", "auto")
        fast_weight_directions(*narrow, 5, torch.bfloat16, "exact", "factored")
        assert calls == []  # bf16 keeps the reference's roundings
        fast_weight_directions(*wide, 5, torch.float32, "exact", "auto")
        assert calls == []
        fast_weight_directions(*narrow, 5, torch.float32, "exact", "auto")
        assert len(calls) == 2  # U0 and U2 batched, then U1
        fast_weight_directions(*narrow, 5, torch.float32, "exact", "dense")
        assert len(calls) == 2
    assert factored_newton_schulz_is_cheaper(64, 128, 256) and not factored_newton_schulz_is_cheaper(128, 128, 256)
    assert factored_newton_schulz_is_cheaper(512, 768, 1536) and not factored_newton_schulz_is_cheaper(1024, 768, 1536)
    with pytest.raises(ValueError, match="newton_schulz_method"):
        fast_weight_directions(*narrow, 5, torch.float32, "exact", "sparse")
    with pytest.raises(ValueError, match="newton_schulz_method"):
        LaCETLayer(64, 32, newton_schulz_method="sparse")


@requires_oracle
@pytest.mark.parametrize("name", ["lvsm4d_lacet_sema_si_4chunks", "lvsm3d_lact"])
def test_factored_newton_schulz_keeps_oracle_parity(name):
    """Forced on the fixtures (whose chunks are not narrower than the weights, so ``auto`` stays dense):
    within the fp32 parity tolerance of the official fp32 run."""
    from conversion import convert_official

    case = load_oracle_case(name)
    model = convert_official(case["checkpoint"], case["config"], newton_schulz_dtype="float32")
    assert configure_lacet(model, newton_schulz_method="factored") > 0
    assert all(m.newton_schulz_method == "factored" for m in model.modules() if isinstance(m, LaCETLayer))
    with pytest.raises(ValueError, match="newton_schulz_method"):
        configure_lacet(model, newton_schulz_method="sparse")
    with torch.no_grad():
        images = model(**official_model_inputs(case, model.config.max_frames)).images
    torch.testing.assert_close(images, case["fp32"]["output.images"], atol=1e-4, rtol=0)


# -- layer-level options ------------------------------------------------------------------------------


def _layer(**kw):
    torch.manual_seed(0)
    layer = LaCETLayer(64, 32, chunk_size=16, elastic=ElasticSettings(enabled=True), **kw)
    for lin in (layer.to_qkv, layer.c_proj, layer.lr_fc):
        torch.nn.init.normal_(lin.weight, std=0.3)
    layer.reset_fast_weights()
    layer.reset_elastic_buffers()
    return layer


SCHEDULE = [TTTOperation(0, 48, True, False), TTTOperation(0, 64, False, True)]


def test_configure_lacet_switches_every_layer_and_all_batching_stays_close():
    x = torch.randn(2, 64, 64, generator=torch.Generator().manual_seed(6))
    model = torch.nn.Sequential(_layer(newton_schulz_dtype="float32"), _layer(newton_schulz_dtype="float32"))
    with torch.no_grad():
        default = model[0](x, SCHEDULE)[0]
        assert configure_lacet(model, newton_schulz_batching="all") == 2
        assert all(m.newton_schulz_batching == "all" for m in model)
        batched = model[0](x, SCHEDULE)[0]
    torch.testing.assert_close(batched, default, atol=1e-4, rtol=0)
    with pytest.raises(ValueError):
        configure_lacet(model, newton_schulz_batching="bogus")


def test_in_place_apply_without_grad_equals_autograd_path():
    w, _, _, _ = _chunk(n=2, d=32, dm=64)
    q = torch.randn(2, 40, 32)
    with torch.no_grad():
        fast = fast_weight_apply(w, q)
    w_grad = w.map(lambda t: t.clone().requires_grad_(True))
    slow = fast_weight_apply(w_grad, q)
    assert slow.requires_grad
    assert torch.equal(fast, slow.detach())


def _scan_inputs(n=2, length=80, d=32, dm=64, seed=9):
    g = torch.Generator().manual_seed(seed)
    w, _, _, _ = _chunk(n=n, d=d, dm=dm, seed=seed)
    q, k = (torch.nn.functional.normalize(torch.randn(n, length, d, generator=g), dim=-1) for _ in range(2))
    v = torch.randn(n, length, d, generator=g)
    lr = tuple(torch.rand(n, length, 1, generator=g) * 0.05 for _ in range(3))
    anchor = w.map(lambda t: t + 0.01 * torch.randn(t.shape, generator=g))
    importance = w.map(lambda t: torch.rand(t.shape, generator=g) * 1e-3)
    return w, q, k, v, lr, lacet.ElasticState(anchor, importance)


@pytest.mark.parametrize("ns_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "estimator,policy,batching,method,before",
    [
        ("si", "streaming-ema", "exact", "dense", False),
        ("si", "streaming", "all", "dense", True),
        ("mas", "streaming-ema", "none", "dense", False),
        ("ewc", "global", "exact", "dense", True),
        ("si", "streaming-ema", "exact", "factored", False),
        ("ewc", "streaming", "exact", "factored", True),
    ],
)
def test_inference_in_place_scan_is_bit_identical_to_the_autograd_path(ns_dtype, estimator, policy, batching, method, before):
    """Without autograd the update and apply steps overwrite buffers they own (intermediates,
    directions, the scan's own elastic state, one output buffer); with autograd everything is out of
    place, as in the reference. Both must give the same bits (factored: bf16 stays dense), over
    several chunks and both schedules, and the caller's weights and state must stay untouched."""
    w, q, k, v, lr, state = _scan_inputs()
    # Not powers of two, so that a change in the order of the roundings shows.
    elastic = ElasticSettings(enabled=True, estimator=estimator, anchor_policy=policy, alpha=0.7, beta=0.6, strength=0.3)
    originals = [t.clone() for t in (*w, *state.anchor, *state.importance)]
    for schedule in (lacet.interleaved_schedule(64, 80), lacet.update_then_apply_schedule(64, 80)):
        kwargs = dict(
            chunk_size=16, newton_schulz_dtype=ns_dtype, apply_before_update=before, elastic=elastic,
            elastic_state=state, newton_schulz_batching=batching, newton_schulz_method=method,
        )  # fmt: skip
        with torch.no_grad():
            fast = lacet.lacet_scan(w, q, k, v, lr, schedule, **kwargs)
        graph_q = q.clone().requires_grad_(True)
        slow = lacet.lacet_scan(w.map(lambda t: t.clone().requires_grad_(True)), graph_q, k, v, lr, schedule, **kwargs)
        assert slow[0].requires_grad
        assert torch.equal(fast[0], slow[0].detach())
        for a, b in zip((*fast[1], *fast[2].anchor, *fast[2].importance), (*slow[1], *slow[2].anchor, *slow[2].importance)):
            assert torch.equal(a, b.detach())
    for before_call, after in zip(originals, (*w, *state.anchor, *state.importance)):
        assert torch.equal(before_call, after)


@pytest.mark.parametrize("ns_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_layer_inference_in_place_projection_leaves_the_layer_unchanged(ns_dtype, autocast):
    """The layer without autograd (in-place ``silu`` and q/k normalisation, in-place scan) gives the
    same bits as with autograd, also under bf16 autocast (where some products are bf16 and their
    sums with fp32 tensors fp32: in-place steps must not round those to bf16), and its parameters
    and elastic buffers are not modified."""
    layer = _layer(newton_schulz_dtype=ns_dtype)
    x = torch.randn(2, 64, 64, generator=torch.Generator().manual_seed(10))
    before = {name: t.clone() for name, t in layer.state_dict().items()}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        with torch.no_grad():
            fast, fast_weights, fast_state = layer(x, SCHEDULE)
        slow, slow_weights, slow_state = layer(x, SCHEDULE)
    assert slow.requires_grad
    assert torch.equal(fast, slow.detach())
    for a, b in zip((*fast_weights, *fast_state.anchor, *fast_state.importance), (*slow_weights, *slow_state.anchor, *slow_state.importance)):
        assert torch.equal(a, b.detach())
    for name, t in layer.state_dict().items():
        assert torch.equal(t, before[name]), name


def test_layer_gradients_unchanged_by_fast_paths():
    """Newton–Schulz batching must not alter gradients (the bf16 emulation is inference-only; the
    factored fp32 iteration has its own gradient tests above)."""
    x = torch.randn(1, 64, 64, generator=torch.Generator().manual_seed(7))
    grads = []
    for batching in ("none", "exact"):
        layer = _layer(newton_schulz_batching=batching)
        out = layer(x, SCHEDULE)[0]
        out.square().sum().backward()
        grads.append([p.grad.clone() for p in layer.parameters()])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_compiled_update_step_matches_eager():
    """``compile=True`` (torch.compile of the update step; ~25 s of compilation on 2 CPU cores)."""
    x = torch.randn(1, 64, 64, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        eager = _layer(newton_schulz_dtype="float32")(x, SCHEDULE)[0]
        compiled = _layer(newton_schulz_dtype="float32", compile=True)(x, SCHEDULE)[0]
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=0)
