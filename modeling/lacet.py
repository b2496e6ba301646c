"""LaCET: Large Chunk Elastic Test-Time Training (DESIGN §4).

A LaCET layer replaces attention for a ``[B, L, D]`` sequence. Each head owns a small SwiGLU
network, the *fast weights*::

    f(x) = (silu(x @ W0) * (x @ W2)) @ W1        W0, W2: [d, d*m]   W1: [d*m, d]

that is trained *inside the forward pass* on some tokens (``update``) and evaluated on others
(``apply``), following a schedule of :class:`TTTOperation` s. One update on a chunk of tokens:

1. descent directions of the inner loss ``-sum_i lr_i <f(k_i), v_i>`` (gradient written by hand),
   orthogonalised by Newton–Schulz: ``U0, U1, U2``;
2. ``W <- W + U``;
3. elastic prior (optional): importance ``S`` of the update (MAS ``|U|``, EWC ``U^2`` or
   SI ``|U * (W - W*)|``), ``F <- alpha F + (1 - alpha) S``, ``W <- W - lambda F (W - W*)``;
4. each column renormalised to the norm the weights had at the start of the call;
5. anchor policy: ``global`` (``W*`` fixed), ``streaming`` (``W* <- W``) or ``streaming-ema``
   (``W* <- beta W* + (1 - beta) W``).

With the elastic prior off and a single chunk this is exactly LaCT.

Every operation below follows the reference implementation's order and dtypes (bf16
Newton–Schulz returning bf16, fp32 elsewhere), so the default path reproduces the official
outputs bit for bit on CPU. Anchors and importances are constants for autograd and are passed
between layers *as values*: no tensor a caller passes in (weights, anchors, importances) is ever
mutated, which keeps activation checkpointing exact.

Batch layout: fast weights and elastic state are ``[(B * H), ...]`` with the batch index outer,
so every sample is independent.

Performance options (all off the numerics of the default path unless stated; see
``benchmarks/README.md`` for measurements), set per layer or with :func:`configure_lacet`:

* ``newton_schulz_batching``: ``"exact"`` (default) orthogonalises ``U0`` and ``U2`` (same shape and
  memory layout) in one batched call and ``U1`` alone: bit-identical to three separate calls, since a
  batched product computes each matrix exactly as a single one does. ``"all"`` also batches ``U1``
  (its input transposed to ``[d, d*m]``): one call instead of two, the same mathematics, but the
  transposed layout changes the summation order of the bf16 products, so it is *not* bit-identical
  to the reference (use it with fp32 Newton–Schulz or on GPUs). ``"none"``: three calls.
* ``newton_schulz_method`` (fp32 Newton–Schulz): ``"dense"``, ``"factored"`` or ``"auto"``. A chunk
  of ``C`` tokens gives update matrices ``G = A^T B`` (``A``: ``[C, r]``, ``B``: ``[C, c]``) of rank
  at most ``C``; with thin QR factors ``A^T = Q1 T1``, ``B^T = Q2 T2``, Newton–Schulz of ``G`` is
  ``Q1 NS(T1 T2^T) Q2^T``, an iteration on a ``C x C`` matrix, with a hand-written backward on the
  same small matrices (:func:`newton_schulz_factored`). The same mathematics with far fewer
  operations when ``C`` is well below the fast weights' width (one 128-token chunk of width-768 fast
  weights: ~40x fewer; the released models' 8192-token chunks: not applicable), as accurate against
  an fp64 reference as the dense iteration (values and gradients), not bit-identical to it.
  ``"auto"`` (default) = factored where its count of multiply-adds is lower, on CPU and CUDA. bf16
  Newton–Schulz always runs dense: it must keep the reference's roundings.
* ``compile``: run the per-chunk update step through ``torch.compile`` (off by default; not
  bit-identical: fused element-wise kernels round differently).
* Without autograd (inference) every step works in place where it owns the buffer, always
  bit-identical to the autograd path (tested): the projection's ``silu`` and q/k normalisation; the
  update's ``[N, C, d*m]`` intermediates, overwritten once consumed and freed before Newton–Schulz;
  the Newton–Schulz iteration itself; the elastic step on the new weights, on the directions and on
  the anchors/importances the scan produced itself (never on the caller's); the apply step's ``silu``
  and gating product; and one output buffer instead of a list joined at the end. Peak memory of a
  width-768 layer with the released 8192-token chunks: 0.53x the reference's.

* ``emulate_bf16`` (bf16 Newton–Schulz on CPUs without native bf16): torch's CPU kernel for a bf16
  product of two row-major matrices is a scalar loop that sums the exact fp32 products ``a_il b_lj``
  into four partial sums (``l mod 4``, in increasing ``l``), adds them as ``((p0 + p1) + p2) + p3`` and
  rounds once to bf16; it runs ~55x slower than an fp32 product. :func:`bf16_matmul_emulated`
  performs exactly these fp32 operations with vectorised tensor ops (one ``addcmul_`` per four
  ``l``, in column blocks), ~10x faster and bit-identical where torch runs that kernel: checked
  once per process on a probe of several shapes (:func:`bf16_emulation_available`). CPUs with
  native bf16 (AVX512-BF16/AMX) fail the probe (other kernels, fused multiply-adds) and keep torch's
  own fast kernels. Products with a transposed operand take another (vectorised) torch kernel and
  are left to it. Under autograd the emulated product has autograd's own backward (two products
  with a transposed operand, torch's kernel), so training gradients are bit-identical too.
  ``None`` (default) = on where the probe agrees; CUDA is never emulated.

"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

ELASTIC_ESTIMATORS = ("mas", "ewc", "si")
ANCHOR_POLICIES = ("global", "streaming", "streaming-ema")
NEWTON_SCHULZ_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
NEWTON_SCHULZ_BATCHING = ("exact", "all", "none")
NEWTON_SCHULZ_METHODS = ("auto", "dense", "factored")


def _check_newton_schulz_batching(newton_schulz_batching: str) -> None:
    if newton_schulz_batching not in NEWTON_SCHULZ_BATCHING:
        raise ValueError(f"newton_schulz_batching must be one of {NEWTON_SCHULZ_BATCHING}, got {newton_schulz_batching!r}")


def _check_newton_schulz_method(newton_schulz_method: str) -> None:
    if newton_schulz_method not in NEWTON_SCHULZ_METHODS:
        raise ValueError(f"newton_schulz_method must be one of {NEWTON_SCHULZ_METHODS}, got {newton_schulz_method!r}")


# Quintic Newton–Schulz coefficients (Muon).
_NS_A, _NS_B, _NS_C = 3.4445, -4.7750, 2.0315


class TTTOperation(NamedTuple):
    """One step of a test-time-training schedule over token range ``[start, end)``.

    ``update``: train the fast weights on these tokens (chunk by chunk).
    ``apply``: evaluate the fast weights on these tokens and emit outputs for them.
    """

    start: int
    end: int
    update: bool
    apply: bool


class FastWeights(NamedTuple):
    """The three SwiGLU matrices of every (sample, head): ``w0, w2: [N, d, d*m]``, ``w1: [N, d*m, d]``."""

    w0: torch.Tensor
    w1: torch.Tensor
    w2: torch.Tensor

    def map(self, fn) -> "FastWeights":
        return FastWeights(fn(self.w0), fn(self.w1), fn(self.w2))


class ElasticState(NamedTuple):
    """Anchors ``W*`` and importances ``F``, shaped like :class:`FastWeights`; fp32 constants."""

    anchor: FastWeights
    importance: FastWeights

    def map(self, fn) -> "ElasticState":
        return ElasticState(self.anchor.map(fn), self.importance.map(fn))


@dataclass(frozen=True)
class ElasticSettings:
    """Hyper-parameters of the elastic prior.

    Args:
        enabled: turn the prior on (off = plain LaCT).
        estimator: importance estimator, one of ``"mas"`` (``|U|``), ``"ewc"`` (``U^2``),
            ``"si"`` (``|U * (W - W*)|``).
        anchor_policy: ``"global"``, ``"streaming"`` or ``"streaming-ema"``.
        alpha: EMA factor of the importances.
        beta: EMA factor of the anchor (``streaming-ema`` only).
        strength: ``lambda``, the proximal shrink strength.
    """

    enabled: bool = False
    estimator: str = "si"
    anchor_policy: str = "streaming-ema"
    alpha: float = 0.5
    beta: float = 0.5
    strength: float = 0.5

    def __post_init__(self):
        if self.estimator not in ELASTIC_ESTIMATORS:
            raise ValueError(f"elastic estimator must be one of {ELASTIC_ESTIMATORS}, got {self.estimator!r}")
        if self.anchor_policy not in ANCHOR_POLICIES:
            raise ValueError(f"anchor policy must be one of {ANCHOR_POLICIES}, got {self.anchor_policy!r}")


def fast_weight_init_std(fan_in: int, scale: float = 1.0) -> float:
    """Std of the fast weights' initial values: ``scale * sqrt(2) / sqrt(fan_in)`` (``scale = 1``: the reference)."""
    return scale * math.sqrt(2.0) / math.sqrt(fan_in)


def inv_softplus(x: float) -> float:
    """Inverse of softplus for a positive scalar."""
    return x + math.log(-math.expm1(-x))


def silu_derivative_times(grad: torch.Tensor, x: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
    """``grad * silu'(x)`` with ``silu'(x) = sigmoid(x) * (1 + x * (1 - sigmoid(x)))``.

    ``overwrite=True`` (no autograd) writes the result into ``grad``: the same values, the same
    operations in the same order, without the three temporaries.
    """
    sigma = torch.sigmoid(x)
    if overwrite:
        return grad.mul_(sigma).mul_(sigma.neg_().add_(1).mul_(x).add_(1))
    return grad * sigma * (1 + x * (1 - sigma))


def bf16_matmul_emulated(a: torch.Tensor, b: torch.Tensor, block_columns: int = 512) -> torch.Tensor:
    """``a @ b`` for bf16 ``[N, M, K] @ [N, K, P]``, computed as torch's scalar CPU bf16 kernel does.

    That kernel accumulates the (exact) fp32 products into four partial sums by ``l mod 4`` in
    increasing ``l`` (the ``K mod 4`` tail goes to the first), adds them as ``((p0 + p1) + p2) + p3``
    and rounds once to bf16. Each step below adds one product per partial sum, in the same order.
    Every output element is computed independently, so the work is split per matrix and in blocks of
    ``block_columns`` output columns: the fp32 accumulator is at most ``[4, M, block_columns]``.
    """
    n, m, k = a.shape
    p = b.shape[2]
    main = k - k % 4
    out = torch.empty(n, m, p, dtype=torch.bfloat16, device=a.device)
    for i in range(n):
        a32 = a[i].float()  # [M, K]
        a_steps = a32[:, :main].unflatten(1, (main // 4, 4)).permute(1, 2, 0).unsqueeze(-1).contiguous()  # [K/4, 4, M, 1]
        for c in range(0, p, block_columns):
            b32 = b[i, :, c : c + block_columns].float()  # [K, Pb]
            b_steps = b32[:main].unflatten(0, (main // 4, 4)).unsqueeze(-2).contiguous()  # [K/4, 4, 1, Pb]
            partial = a32.new_zeros(4, m, b32.shape[1])
            for t in range(main // 4):  # step t adds l = 4t + j to partial sum j
                partial.addcmul_(a_steps[t], b_steps[t])
            for l in range(main, k):
                partial[0].addcmul_(a32[:, l : l + 1], b32[l : l + 1])
            total = partial[0].add_(partial[1]).add_(partial[2]).add_(partial[3])
            out[i, :, c : c + block_columns] = total
    return out


def _emulable(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Operands for which torch uses the scalar CPU kernel that :func:`bf16_matmul_emulated` mirrors."""
    return (
        a.device.type == "cpu"
        and a.dtype == b.dtype == torch.bfloat16
        and a.dim() == b.dim() == 3
        and a.is_contiguous()
        and b.is_contiguous()
        and a.shape[2] * a.shape[1] * b.shape[2] >= 400  # smaller products take a naive kernel
    )


_EMULATION_AGREES: Optional[bool] = None

#: ``(n, m, k, p)`` of the probe products: the oracle sizes, a K tail, a batch of 4, and a larger one.
_PROBE_SHAPES = ((2, 40, 133, 72), (4, 32, 32, 32), (4, 32, 32, 64), (2, 96, 256, 160), (1, 256, 512, 256))


def bf16_emulation_available() -> bool:
    """Whether this torch build/CPU multiplies contiguous bf16 matrices with the scalar kernel that
    :func:`bf16_matmul_emulated` reproduces: probed once per process, bit for bit, on random
    products of several shapes. CPUs with native bf16 (e.g. an Intel Xeon with AVX512-BF16) fail it:
    their kernels differ for some shapes and, through fused multiply-adds, for some values; there the
    emulation stays off and torch's own (fast) kernels run.
    """
    global _EMULATION_AGREES
    if _EMULATION_AGREES is None:
        g = torch.Generator().manual_seed(0)
        operands = (
            (torch.randn(n, m, k, generator=g).to(torch.bfloat16), torch.randn(n, k, p, generator=g).to(torch.bfloat16))
            for n, m, k, p in _PROBE_SHAPES
        )
        with torch.no_grad():
            _EMULATION_AGREES = all(torch.equal(a @ b, bf16_matmul_emulated(a, b)) for a, b in operands)
    return _EMULATION_AGREES


def _records_graph(*tensors: torch.Tensor) -> bool:
    """Whether autograd records operations on ``tensors``: the in-place (inference) paths below
    run only where it does not."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


class _EmulatedBF16Matmul(torch.autograd.Function):
    """``a @ b`` through :func:`bf16_matmul_emulated`, differentiable: the backward is autograd's own
    for a batched product (``grad @ b^T``, ``a^T @ grad``, the same torch calls), so values and
    gradients equal those of ``a @ b`` bit for bit while the forward avoids the scalar kernel.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return bf16_matmul_emulated(a, b)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        a, b = ctx.saved_tensors
        grad_a = grad.bmm(b.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_b = a.transpose(1, 2).bmm(grad) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


def _matmul(a: torch.Tensor, b: torch.Tensor, emulate: bool) -> torch.Tensor:
    if emulate and _emulable(a, b):
        if _records_graph(a, b):
            return _EmulatedBF16Matmul.apply(a, b)
        return bf16_matmul_emulated(a, b)
    return a @ b


def newton_schulz(
    g: torch.Tensor,
    steps: int,
    dtype: torch.dtype = torch.bfloat16,
    emulate_bf16: Optional[bool] = None,
    overwrite: bool = False,
) -> torch.Tensor:
    """Approximate orthogonalisation ``U S' V^T`` of a batch of matrices (quintic Newton–Schulz).

    Args:
        g: ``[N, r, c]``.
        steps: number of iterations (5 in the released models; 0 = Frobenius normalisation only).
        dtype: compute dtype. ``torch.bfloat16`` reproduces the reference (its result is bf16);
            ``torch.float32`` is the accurate variant.
        emulate_bf16: compute the CPU bf16 products with :func:`bf16_matmul_emulated` (bit-identical
            to torch's scalar kernel, faster); ``None`` = where :func:`bf16_emulation_available`.
            Ignored off CPU / for fp32.
        overwrite: the caller gives up ``g`` (its values are destroyed), so that without autograd
            the iteration can run in ``g``'s memory. (Without autograd it always runs in place on
            the copy a dtype conversion makes.) In place, every operation is the same one on the
            same operands in the same order, with the same memory layouts: bit-identical results,
            two ``[N, r, c]`` buffers less.

    Returns:
        ``[N, r, c]`` in ``dtype``.
    """
    no_graph = not _records_graph(g)
    # under torch.compile the graph's own kernels run (not bit-identical anyway), never the unrolled emulation
    emulate = dtype == torch.bfloat16 and g.device.type == "cpu" and not torch.compiler.is_compiling()
    if emulate:
        emulate = bf16_emulation_available() if emulate_bf16 is None else emulate_bf16
    x = g.to(dtype)
    in_place = no_graph and (overwrite or x is not g)
    transposed = g.size(1) > g.size(2)
    if transposed:
        x = x.transpose(1, 2)
    norm = x.norm(dim=(1, 2), keepdim=True) + 1e-7
    x = x.div_(norm) if in_place else x / norm
    for _ in range(steps):
        gram = x @ x.transpose(1, 2)
        # ``_NS_C * gram @ gram`` groups as ``(_NS_C * gram) @ gram``, the reference's order.
        if in_place:  # products first, then the sums into the left operand's buffer (its layout, its dtype)
            product = _matmul(_NS_C * gram, gram, emulate)
            poly = gram.mul_(_NS_B).add_(product)
            product = _matmul(poly, x, emulate)
            x = x.mul_(_NS_A).add_(product)
        else:
            poly = _NS_B * gram + _matmul(_NS_C * gram, gram, emulate)
            x = _NS_A * x + _matmul(poly, x, emulate)
    if transposed:
        x = x.transpose(1, 2)
    return x


class _FactoredNewtonSchulz(torch.autograd.Function):
    """Forward and hand-written backward of :func:`newton_schulz_factored` (see there)."""

    @staticmethod
    def forward(ctx, left: torch.Tensor, right: torch.Tensor, steps: int) -> torch.Tensor:
        q_left, t_left = torch.linalg.qr(left.transpose(1, 2))  # [N, r, k1], [N, k1, C]
        q_right, t_right = torch.linalg.qr(right.transpose(1, 2))  # [N, c, k2], [N, k2, C]
        core = t_left @ t_right.transpose(1, 2)  # [N, k1, k2]
        ctx.save_for_backward(q_left, t_left, q_right, t_right, core)
        ctx.steps = steps
        return q_left @ (newton_schulz(core, steps, core.dtype) @ q_right.transpose(1, 2))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        # dL/dleft = right (dL/dG)^T and dL/dright = left (dL/dG) need dL/dG only through Q1^T dL/dG
        # and dL/dG Q2. Split the output gradient into blocks on (range Q1 | its complement) x
        # (range Q2 | its complement): the (Q1, Q2) block is the core's own vector-Jacobian product;
        # the (Q1, not Q2) block is only multiplied from the left by each step's polynomial
        # p(x x^T) and the (not Q1, Q2) block from the right by p(x^T x), i.e. by the maps the
        # forward applied to the core, and by the normalisation's 1 / (||G|| + eps).
        q_left, t_left, q_right, t_right, core = ctx.saved_tensors
        n, k1, k2 = core.shape
        grad_rows = q_left.transpose(1, 2) @ grad  # Q1^T dL/dU: [N, k1, c]
        grad_columns = grad @ q_right  # dL/dU Q2: [N, r, k2]
        grad_core = grad_rows @ q_right  # [N, k1, k2]
        eye_left = torch.eye(k1, dtype=core.dtype, device=core.device).expand(n, k1, k1)
        eye_right = torch.eye(k2, dtype=core.dtype, device=core.device).expand(n, k2, k2)
        left_map, right_map = eye_left, eye_right
        with torch.enable_grad():  # one pass: the core's iteration (with a graph) and the two maps
            leaf = core.detach().requires_grad_(True)
            inv_norm = 1.0 / (leaf.norm(dim=(1, 2), keepdim=True) + 1e-7)
            x = leaf * inv_norm
            for _ in range(ctx.steps):
                gram_left = x @ x.transpose(1, 2)
                poly_left = _NS_A * eye_left + _NS_B * gram_left + _NS_C * (gram_left @ gram_left)
                with torch.no_grad():
                    gram_right = x.transpose(1, 2) @ x
                    poly_right = _NS_A * eye_right + _NS_B * gram_right + _NS_C * (gram_right @ gram_right)
                    left_map, right_map = poly_left @ left_map, right_map @ poly_right
                x = poly_left @ x
            (core_bar,) = torch.autograd.grad(x, leaf, grad_core)
        inv_norm = inv_norm.detach()
        q_right_t = q_right.transpose(1, 2)
        rows = core_bar @ q_right_t + (left_map * inv_norm) @ (grad_rows - grad_core @ q_right_t)  # Q1^T dL/dG
        columns = q_left @ core_bar + (grad_columns - q_left @ grad_core) @ (right_map * inv_norm)  # dL/dG Q2
        return t_right.transpose(1, 2) @ columns.transpose(1, 2), t_left.transpose(1, 2) @ rows, None


def newton_schulz_factored(left: torch.Tensor, right: torch.Tensor, steps: int) -> torch.Tensor:
    """:func:`newton_schulz` of ``left^T @ right`` without forming it: through a ``C x C`` core.

    With thin QR factorisations ``left^T = Q1 T1`` and ``right^T = Q2 T2`` (``Q1``, ``Q2`` with
    orthonormal columns), ``left^T right = Q1 Y Q2^T`` with ``Y = T1 T2^T``. For ``x = Q1 Y Q2^T``:
    ``||x||_F = ||Y||_F``, ``x x^T x = Q1 (Y Y^T Y) Q2^T`` and so on, so every Newton–Schulz iterate
    is ``Q1 Y_k Q2^T`` where ``Y_k`` is the same iteration run on ``Y``. The orthonormal factors keep
    this as well conditioned as the dense iteration (the token Gram matrices ``left left^T`` would
    square the condition number of the usually highly correlated tokens). The backward is written by
    hand on the same ``C x C`` quantities (differentiating through the QR factors would be unstable
    for rank-deficient chunks); it equals the dense iteration's gradients to rounding.

    Args:
        left: ``[N, C, r]``.
        right: ``[N, C, c]``.
        steps: number of iterations.

    Returns:
        ``[N, r, c]``, computed in the inputs' dtype with autocast off (use fp32 or fp64). Equal to
        the dense iteration up to rounding, in either orientation (the dense version transposes tall
        matrices, which does not change the result).
    """
    with torch.autocast(device_type=left.device.type, enabled=False):
        return _FactoredNewtonSchulz.apply(left, right, steps)


def factored_newton_schulz_is_cheaper(chunk: int, rows: int, columns: int, steps: int = 5) -> bool:
    """Whether :func:`newton_schulz_factored` takes fewer multiply-adds than forming ``left^T right``
    (``[rows, columns]``, rank <= ``chunk``) and running :func:`newton_schulz` on it (Householder QR
    with the explicit ``Q``: about ``2 (m n^2 - n^3 / 3)`` for ``[m, n]``)."""
    small, large = min(rows, columns), max(rows, columns)
    if chunk >= small:
        return False
    dense = chunk * rows * columns + steps * (2 * small * small * large + small**3)
    qr = 2 * ((rows + columns) * chunk * chunk - 2 * chunk**3 / 3)
    factored = qr + chunk**3 + steps * 3 * chunk**3 + chunk * chunk * columns + rows * chunk * columns
    return factored < dense


def fast_weight_apply(weights: FastWeights, q: torch.Tensor) -> torch.Tensor:
    """Evaluate the SwiGLU fast weights: ``[N, L, d] -> [N, L, d]``.

    Without autograd, ``silu`` and the gating product run in place: the same values with one
    ``[N, L, d*m]`` intermediate less.
    """
    if _records_graph(q, *weights):
        return (F.silu(q @ weights.w0) * (q @ weights.w2)) @ weights.w1
    hidden = F.silu(q @ weights.w0, inplace=True)  # [N, L, dm]
    hidden.mul_(q @ weights.w2)
    return hidden @ weights.w1


def fast_weight_directions(
    weights: FastWeights,
    k: torch.Tensor,
    v: torch.Tensor,
    lr: Tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    newton_schulz_steps: int,
    newton_schulz_dtype: torch.dtype,
    newton_schulz_batching: str = "exact",
    newton_schulz_method: str = "auto",
) -> FastWeights:
    """Orthogonalised descent directions ``U`` of the inner loss on one chunk.

    Args:
        weights: current fast weights.
        k, v: ``[N, C, d]`` keys and values of the chunk.
        lr: per-token learning rates for ``(W0, W1, W2)``, each ``[N, C, 1]``.
        newton_schulz_batching: ``"exact"``, ``"all"`` or ``"none"`` (module docstring).
        newton_schulz_method: ``"dense"``, ``"factored"`` (fp32 Newton–Schulz on ``C x C`` cores) or
            ``"auto"`` (factored where cheaper); bf16 Newton–Schulz is always dense (module docstring).
    """
    _check_newton_schulz_batching(newton_schulz_batching)
    _check_newton_schulz_method(newton_schulz_method)
    lr0, lr1, lr2 = lr
    # Without autograd, element-wise steps overwrite buffers that are no longer needed and the
    # [N, C, dm] intermediates are freed before Newton–Schulz: the same operations on the same
    # operands (bit-identical), with a peak of about half the reference's.
    in_place = not _records_graph(*weights, k, v, lr0, lr1, lr2)
    gate = k @ weights.w0  # [N, C, dm]
    up = k @ weights.w2  # [N, C, dm]
    dhidden = v @ weights.w1.transpose(-1, -2)  # [N, C, dm]
    silu_gate = F.silu(gate)
    hidden = silu_gate * up  # [N, C, dm]
    if in_place:
        dup = silu_gate.mul_(dhidden)
        dhidden.mul_(up)
        del up
        dgate = silu_derivative_times(dhidden, gate, overwrite=True)  # at most five [N, C, dm] buffers
        del gate, silu_gate, dhidden
    else:
        dup = dhidden * silu_gate
        dgate = silu_derivative_times(dhidden * up, gate)
    if newton_schulz_dtype != torch.bfloat16 and newton_schulz_method != "dense":
        # ``auto`` stays on devices with batched QR kernels (CPU, CUDA).
        if newton_schulz_method == "factored" or (
            k.device.type in ("cpu", "cuda")
            and factored_newton_schulz_is_cheaper(k.shape[1], k.shape[2], dgate.shape[2], newton_schulz_steps)
        ):

            def ns_factored(left, right):
                return newton_schulz_factored(left.to(newton_schulz_dtype), right.to(newton_schulz_dtype), newton_schulz_steps)

            u0, u2 = ns_factored(torch.cat([k * lr0, k * lr2]), torch.cat([dgate, dup])).chunk(2)
            return FastWeights(u0, ns_factored(hidden * lr1, v), u2)
    # The update matrices, [N, d, dm] (U1's [N, dm, d], or transposed to [N, d, dm] to batch it).
    # (under autocast ``hidden`` is bf16 and ``hidden * lr1`` fp32: then not in place)
    hidden_lr1 = hidden.mul_(lr1) if in_place and hidden.dtype == torch.result_type(hidden, lr1) else hidden * lr1
    products = [((k * lr0).transpose(-1, -2), dgate), ((k * lr2).transpose(-1, -2), dup)]
    if newton_schulz_batching == "all":
        products.append((v.transpose(-1, -2), hidden_lr1))
    else:
        g1 = hidden_lr1.transpose(-1, -2) @ v
    if newton_schulz_batching == "none":
        g0, g2 = (a @ b for a, b in products)
    else:
        g_batched = _stacked_products(products, in_place)
    if in_place:
        del products, dgate, dup, hidden, hidden_lr1

    def ns(g):
        return newton_schulz(g, newton_schulz_steps, newton_schulz_dtype, overwrite=in_place)

    if newton_schulz_batching == "all":
        u0, u2, u1t = ns(g_batched).chunk(3)
        return FastWeights(u0, u1t.transpose(-1, -2), u2)
    u1 = ns(g1)
    if newton_schulz_batching == "none":
        return FastWeights(ns(g0), u1, ns(g2))
    u0, u2 = ns(g_batched).chunk(2)
    return FastWeights(u0, u1, u2)


def _stacked_products(products: Sequence[Tuple[torch.Tensor, torch.Tensor]], in_place: bool) -> torch.Tensor:
    """``torch.cat([a @ b for a, b in products])``; without autograd written straight into one buffer
    (no second copy). Each product is computed exactly as alone."""
    a0, b0 = products[0]
    if not in_place or torch.is_autocast_enabled(a0.device.type):  # ``out=`` does not follow autocast
        return torch.cat([a @ b for a, b in products])
    n = a0.shape[0]
    out = a0.new_empty(n * len(products), a0.shape[1], b0.shape[2])
    for i, (a, b) in enumerate(products):
        torch.matmul(a, b, out=out[i * n : (i + 1) * n])
    return out


def _importance(update: torch.Tensor, offset: torch.Tensor, estimator: str, overwrite: bool = False) -> torch.Tensor:
    """Importance ``S`` of an update ``U``, fp32 and constant for autograd: MAS ``|U|``, EWC ``U^2``,
    SI ``|U * (W - W*)|`` with ``offset = W - W*`` (``W`` already updated). ``overwrite=True`` (no
    autograd) computes it in ``update``'s buffer: the same operations, bit-identical."""
    if overwrite:
        if estimator == "mas":
            return update.abs_().float()
        if estimator == "ewc":
            return update.mul_(update).float()
        # si; a bf16 update times the fp32 offset is an fp32 product, which stays out of place
        return (update.mul_(offset) if update.dtype == offset.dtype else update * offset).abs_().float()
    update = update.detach()
    if estimator == "mas":
        return update.abs().float()
    if estimator == "ewc":
        return (update * update).float()
    return (update * offset.detach()).abs().float()


def _renormalise(weight: torch.Tensor, column_norm: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
    """Each column scaled back to ``column_norm`` (``overwrite=True``: in ``weight``'s buffer)."""
    if overwrite:
        return weight.div_(weight.norm(dim=1, keepdim=True) + 1e-5).mul_(column_norm)
    return weight / (weight.norm(dim=1, keepdim=True) + 1e-5) * column_norm


def fast_weight_update(
    weights: FastWeights,
    directions: FastWeights,
    column_norms: FastWeights,
    elastic: ElasticSettings,
    state: Optional[ElasticState],
    overwrite_state: bool = False,
) -> Tuple[FastWeights, Optional[ElasticState]]:
    """Steps 2–5 of an update: add the directions, elastic shrink, renormalise, move the anchor.

    Without autograd the element-wise steps run in place on the new weights and on ``directions``
    (which are consumed), and with ``overwrite_state`` also on the anchors and importances of
    ``state``: the same operations on the same operands, bit-identical, with fewer weight-sized
    buffers. ``weights`` are never modified.

    Returns the new fast weights and the new elastic state (``None`` when the prior is off).
    """
    if _records_graph(*weights, *directions):
        return _fast_weight_update_graph(weights, directions, column_norms, elastic, state)
    use_elastic = elastic.enabled and state is not None
    overwrite_state = overwrite_state and use_elastic
    new, new_anchors, new_importances = [], [], []
    for i in range(3):
        update = directions[i]
        weight = weights[i] + update
        if use_elastic:
            anchor, importance = state.anchor[i], state.importance[i]
            offset = weight - anchor
            score = _importance(update, offset, elastic.estimator, overwrite=True)
            importance = importance if overwrite_state else importance.clone()
            importance.mul_(elastic.alpha).add_(score, alpha=1.0 - elastic.alpha)
            weight = weight.sub_(offset.mul_(elastic.strength * importance))
            new_importances.append(importance)
        weight = _renormalise(weight, column_norms[i], overwrite=True)
        new.append(weight)
        if use_elastic:
            if elastic.anchor_policy == "streaming":
                anchor = weight
            elif elastic.anchor_policy == "streaming-ema":
                anchor = anchor if overwrite_state else anchor.clone()
                anchor.mul_(elastic.beta).add_(weight, alpha=1.0 - elastic.beta)
            new_anchors.append(anchor)
    if not use_elastic:
        return FastWeights(*new), state
    return FastWeights(*new), ElasticState(FastWeights(*new_anchors), FastWeights(*new_importances))


def _fast_weight_update_graph(
    weights: FastWeights,
    directions: FastWeights,
    column_norms: FastWeights,
    elastic: ElasticSettings,
    state: Optional[ElasticState],
) -> Tuple[FastWeights, Optional[ElasticState]]:
    """:func:`fast_weight_update` with autograd: out of place, anchors and importances detached."""
    new = [w + u for w, u in zip(weights, directions)]
    use_elastic = elastic.enabled and state is not None
    if use_elastic:
        anchors, importances = state.anchor, state.importance
        new_importances = []
        for i in range(3):
            offset = new[i] - anchors[i]
            score = _importance(directions[i], offset, elastic.estimator)
            imp = importances[i].mul(elastic.alpha).add(score, alpha=1.0 - elastic.alpha)
            new_importances.append(imp)
            new[i] = new[i] - elastic.strength * imp * offset
    new = [_renormalise(w, n) for w, n in zip(new, column_norms)]
    if not use_elastic:
        return FastWeights(*new), state
    if elastic.anchor_policy == "streaming":
        new_anchors = [w.detach() for w in new]
    elif elastic.anchor_policy == "streaming-ema":
        new_anchors = [a.mul(elastic.beta).add(w.detach(), alpha=1.0 - elastic.beta) for a, w in zip(anchors, new)]
    else:  # global
        new_anchors = list(anchors)
    return FastWeights(*new), ElasticState(FastWeights(*new_anchors), FastWeights(*new_importances))


def fast_weight_step(
    weights: FastWeights,
    k: torch.Tensor,
    v: torch.Tensor,
    lr: Tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    column_norms: FastWeights,
    elastic_state: Optional[ElasticState],
    newton_schulz_steps: int,
    newton_schulz_dtype: torch.dtype,
    newton_schulz_batching: str,
    elastic: ElasticSettings,
    newton_schulz_method: str = "auto",
    overwrite_state: bool = False,
) -> Tuple[FastWeights, Optional[ElasticState]]:
    """One whole update on a chunk: :func:`fast_weight_directions` then :func:`fast_weight_update`
    (``overwrite_state``: see there)."""
    directions = fast_weight_directions(
        weights, k, v, lr, newton_schulz_steps, newton_schulz_dtype, newton_schulz_batching, newton_schulz_method
    )
    return fast_weight_update(weights, directions, column_norms, elastic, elastic_state, overwrite_state)


_COMPILED_STEP = None


def _compiled_fast_weight_step():
    """:func:`fast_weight_step` through ``torch.compile`` (built once, on first use)."""
    global _COMPILED_STEP
    if _COMPILED_STEP is None:
        _COMPILED_STEP = torch.compile(fast_weight_step, dynamic=False)
    return _COMPILED_STEP


def update_then_apply_schedule(num_update_tokens: int, num_total_tokens: int) -> List[TTTOperation]:
    """The novel-view-synthesis schedule: train on the first ``num_update_tokens`` (the input views),
    then apply the final fast weights to every token (inputs and targets)."""
    return [
        TTTOperation(0, num_update_tokens, update=True, apply=False),
        TTTOperation(0, num_total_tokens, update=False, apply=True),
    ]


def interleaved_schedule(num_update_tokens: int, num_total_tokens: int) -> List[TTTOperation]:
    """Streaming schedule: each input chunk is applied with the weights of its own chunk (after,
    or with ``apply_before_update`` before, its update); targets then see the final weights."""
    ops = [TTTOperation(0, num_update_tokens, update=True, apply=True)]
    if num_total_tokens > num_update_tokens:
        ops.append(TTTOperation(num_update_tokens, num_total_tokens, update=False, apply=True))
    return ops


SCHEDULES = {"update_then_apply": update_then_apply_schedule, "interleaved": interleaved_schedule}


def lacet_scan(
    weights: FastWeights,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lr: Tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    schedule: Sequence[TTTOperation],
    *,
    chunk_size: int = 0,
    newton_schulz_steps: int = 5,
    newton_schulz_dtype: torch.dtype = torch.bfloat16,
    apply_before_update: bool = False,
    elastic: ElasticSettings = ElasticSettings(),
    elastic_state: Optional[ElasticState] = None,
    column_norms: Optional[FastWeights] = None,
    newton_schulz_batching: str = "exact",
    newton_schulz_method: str = "auto",
    compile: bool = False,
) -> Tuple[torch.Tensor, FastWeights, Optional[ElasticState]]:
    """Run a test-time-training schedule over a sequence.

    Args:
        weights: initial fast weights, ``[N, d, dm] / [N, dm, d] / [N, d, dm]``.
        q, k, v: ``[N, L, d]`` (``N = B * heads``).
        lr: per-token learning rates of ``(W0, W1, W2)``, each ``[N, L, 1]``.
        schedule: the operations, run in order; outputs are concatenated in that order.
        chunk_size: tokens per update step (and per apply block); ``0`` = the whole range at once.
        apply_before_update: in operations that both update and apply, evaluate each chunk with the
            weights from *before* its update (shifted block-causal) instead of after.
        elastic, elastic_state: the elastic prior and its state (anchors, importances).
        column_norms: per-column norms to renormalise to; defaults to those of ``weights``.
        newton_schulz_batching, newton_schulz_method, compile: performance options (module docstring).

    Returns:
        ``(outputs [N, L_out, d], final fast weights, final elastic state)``.
    """
    step_fn = _compiled_fast_weight_step() if compile else fast_weight_step
    if column_norms is None:
        column_norms = weights.map(lambda w: w.detach().norm(dim=1, keepdim=True))
    if elastic_state is not None:
        elastic_state = elastic_state.map(torch.Tensor.detach)
    outputs = _ScanOutput(q, sum(op.end - op.start for op in schedule if op.apply))
    # The elastic state a step returns belongs to this scan: later steps may update it in place.
    own_state = False
    for op in schedule:
        span = op.end - op.start
        step = chunk_size if chunk_size and chunk_size > 0 else max(span, 1)
        for s in range(op.start, op.end, step):
            e = min(op.end, s + step)
            if op.update:
                if op.apply and apply_before_update:
                    outputs.append(fast_weight_apply(weights, q[:, s:e]))
                weights, elastic_state = step_fn(
                    weights,
                    k[:, s:e],
                    v[:, s:e],
                    (lr[0][:, s:e], lr[1][:, s:e], lr[2][:, s:e]),
                    column_norms,
                    elastic_state,
                    newton_schulz_steps,
                    newton_schulz_dtype,
                    newton_schulz_batching,
                    elastic,
                    newton_schulz_method,
                    own_state,
                )
                own_state = True
                if op.apply and not apply_before_update:
                    outputs.append(fast_weight_apply(weights, q[:, s:e]))
            elif op.apply:
                outputs.append(fast_weight_apply(weights, q[:, s:e]))
    return outputs.result(), weights, elastic_state


class _ScanOutput:
    """The scan's outputs, concatenated along the tokens. Chunks that need autograd are joined at the
    end; otherwise each chunk is copied into one buffer as it comes (no second full-size copy)."""

    def __init__(self, q: torch.Tensor, length: int):
        self.q, self.length = q, length
        self.chunks: List[torch.Tensor] = []
        self.buffer: Optional[torch.Tensor] = None
        self.position = 0

    def append(self, chunk: torch.Tensor) -> None:
        if chunk.requires_grad or self.chunks:
            if self.buffer is not None:  # a graph from here on: keep what was written so far as a chunk
                self.chunks.append(self.buffer[:, : self.position])
                self.buffer = None
            self.chunks.append(chunk)
            return
        if self.buffer is None:  # the first chunk's dtype: bf16 under autocast
            self.buffer = chunk.new_empty(chunk.shape[0], self.length, chunk.shape[2])
        self.buffer[:, self.position : self.position + chunk.shape[1]].copy_(chunk)
        self.position += chunk.shape[1]

    def result(self) -> torch.Tensor:
        if self.buffer is not None:
            return self.buffer
        if self.chunks:
            return torch.cat(self.chunks, dim=1)
        return self.q.new_zeros(self.q.shape[0], 0, self.q.shape[2])


class LaCETLayer(nn.Module):
    """Multi-head LaCET layer: a drop-in replacement for attention over a ``[B, L, D]`` sequence.

    Args:
        hidden_size: ``D``.
        head_dim: ``d``; ``D / d`` heads (1 head of 768 in the released models).
        inter_multi: ``m``; the fast SwiGLU hidden width is ``d * m``.
        base_lr: learning rate at zero ``lr_fc`` output.
        chunk_size: tokens per update step; 0 = one step over all update tokens.
        newton_schulz_steps, newton_schulz_dtype: orthogonalisation of the updates.
        apply_before_update: see :func:`lacet_scan`.
        elastic: :class:`ElasticSettings`.
        initial_importance: value the importance buffers are (re)built with.
        newton_schulz_batching, compile, newton_schulz_method: performance options (module
            docstring; also settable afterwards as attributes, e.g. with :func:`configure_lacet`).
        fast_weight_init_scale: multiplies the std of the fast weights' initial values
            (:func:`fast_weight_init_std`; 1 = the reference). Only fresh initialisation reads it.

    Persistent buffers ``anchor_w{0,1,2}`` and ``importance_w{0,1,2}`` (``[H, ...]``, fp32) hold the
    initial elastic state that ships with a checkpoint.
    """

    def __init__(
        self,
        hidden_size: int,
        head_dim: int,
        inter_multi: float = 2,
        base_lr: float = 0.01,
        chunk_size: int = 0,
        newton_schulz_steps: int = 5,
        newton_schulz_dtype: str = "bfloat16",
        apply_before_update: bool = False,
        elastic: ElasticSettings = ElasticSettings(),
        initial_importance: float = 1e-6,
        newton_schulz_batching: str = "exact",
        compile: bool = False,
        newton_schulz_method: str = "auto",
        fast_weight_init_scale: float = 1.0,
    ):
        super().__init__()
        _check_newton_schulz_batching(newton_schulz_batching)
        _check_newton_schulz_method(newton_schulz_method)
        self.newton_schulz_batching = newton_schulz_batching
        self.newton_schulz_method = newton_schulz_method
        self.compile = compile
        if hidden_size % head_dim != 0:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of the LaCET head_dim {head_dim}")
        if newton_schulz_dtype not in NEWTON_SCHULZ_DTYPES:
            raise ValueError(f"newton_schulz_dtype must be one of {list(NEWTON_SCHULZ_DTYPES)}, got {newton_schulz_dtype!r}")
        self.hidden_size = hidden_size
        self.head_dim = head_dim
        self.num_heads = hidden_size // head_dim
        self.inner_dim = int(head_dim * inter_multi)
        self.chunk_size = chunk_size
        self.newton_schulz_steps = newton_schulz_steps
        self.newton_schulz_dtype = newton_schulz_dtype
        self.apply_before_update = apply_before_update
        self.elastic = elastic
        self.initial_importance = initial_importance
        self.fast_weight_init_scale = fast_weight_init_scale
        self.base_lr_inv = inv_softplus(base_lr)

        h, d, dm = self.num_heads, head_dim, self.inner_dim
        self.to_qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.lr_fc = nn.Linear(hidden_size, 3 * h)
        self.w0 = nn.Parameter(torch.empty(h, d, dm))
        self.w1 = nn.Parameter(torch.empty(h, dm, d))
        self.w2 = nn.Parameter(torch.empty(h, d, dm))
        self.o_norm = nn.RMSNorm(head_dim, eps=1e-5, elementwise_affine=True)
        self.c_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.c_proj.is_residual_projection = True
        for name, shape in (("w0", (h, d, dm)), ("w1", (h, dm, d)), ("w2", (h, d, dm))):
            self.register_buffer(f"anchor_{name}", torch.zeros(shape), persistent=True)
            self.register_buffer(f"importance_{name}", torch.zeros(shape), persistent=True)

    # -- fast-weight initial values and elastic buffers ------------------------------------------
    def reset_fast_weights(self, generator: Optional[torch.Generator] = None) -> None:
        """``randn * sqrt(2) / sqrt(fan_in)`` as the reference, times ``fast_weight_init_scale``."""
        with torch.no_grad():
            for w in (self.w0, self.w1, self.w2):
                w.normal_(0.0, fast_weight_init_std(w.shape[1], self.fast_weight_init_scale), generator=generator)

    def reset_elastic_buffers(self) -> None:
        """Anchors <- the current slow fast-weight initial values; importances <- ``initial_importance``."""
        with torch.no_grad():
            for name in ("w0", "w1", "w2"):
                getattr(self, f"anchor_{name}").copy_(getattr(self, name).detach().float())
                getattr(self, f"importance_{name}").fill_(self.initial_importance)

    def initial_elastic_state(self, batch_size: int) -> ElasticState:
        """The buffers expanded to ``[(B * H), ...]`` (batch outer, like the fast weights)."""
        anchor = FastWeights(self.anchor_w0, self.anchor_w1, self.anchor_w2)
        importance = FastWeights(self.importance_w0, self.importance_w1, self.importance_w2)
        return ElasticState(anchor, importance).map(lambda t: t.detach().float().repeat(batch_size, 1, 1))

    def initial_fast_weights(self, batch_size: int) -> FastWeights:
        return FastWeights(self.w0, self.w1, self.w2).map(lambda w: w.repeat(batch_size, 1, 1))

    # -- forward ---------------------------------------------------------------------------------
    def _project(self, x: torch.Tensor):
        b, l, _ = x.shape
        h, d = self.num_heads, self.head_dim
        qkv = F.silu(self.to_qkv(x), inplace=True)  # [B, L, 3D]; in place: one [B, L, 3D] buffer less
        qkv = qkv.reshape(b, l, 3, h, d).permute(2, 0, 3, 1, 4).reshape(3, b * h, l, d)  # [3, BH, L, d]
        q, k, v = qkv[0], qkv[1], qkv[2]
        q_norm = (q.norm(dim=2, keepdim=True) + 1e-5).to(x.dtype)
        k_norm = (k.norm(dim=2, keepdim=True) + 1e-5).to(x.dtype)
        if _records_graph(qkv) or torch.result_type(q, q_norm) != q.dtype:
            q, k = q / q_norm, k / k_norm
        else:  # the same division, in the projection's buffer: two [BH, L, d] buffers less
            q, k = q.div_(q_norm), k.div_(k_norm)
        with torch.autocast(device_type=x.device.type, enabled=False):
            # fp32 whatever the weights' dtype (a no-op cast for fp32 weights)
            weight, bias = self.lr_fc.weight.float(), None if self.lr_fc.bias is None else self.lr_fc.bias.float()
            lr = F.linear(x.float(), weight, bias)  # [B, L, 3H]
        lr = F.softplus(lr.float() + self.base_lr_inv)
        lr = lr.reshape(b, l, 3, h, 1).permute(2, 0, 3, 1, 4).reshape(3, b * h, l, 1)  # [3, BH, L, 1]
        return q, k, v, (lr[0], lr[1], lr[2])

    def _merge_heads(self, out: torch.Tensor, batch_size: int) -> torch.Tensor:
        out = self.o_norm(out)  # [BH, L, d]
        n, l, d = out.shape
        out = out.reshape(batch_size, self.num_heads, l, d).permute(0, 2, 1, 3).reshape(batch_size, l, self.num_heads * d)
        return self.c_proj(out)

    def forward(
        self,
        x: torch.Tensor,
        schedule: Sequence[TTTOperation],
        elastic_state: Optional[ElasticState] = None,
        fast_weights: Optional[FastWeights] = None,
    ) -> Tuple[torch.Tensor, FastWeights, Optional[ElasticState]]:
        """Run ``schedule`` over ``x`` (``[B, L, D]``).

        Args:
            schedule: list of :class:`TTTOperation`.
            elastic_state: incoming anchors/importances ``[(B * H), ...]``; ``None`` with the prior
                enabled means "start from this layer's buffers".
            fast_weights: start from these ``[(B * H), ...]`` weights (e.g. a stored memory)
                instead of the slow initial values.

        Returns:
            ``(output [B, L_out, D], final fast weights, final elastic state)``.
        """
        b = x.shape[0]
        q, k, v, lr = self._project(x)
        if fast_weights is None:
            fast_weights = self.initial_fast_weights(b)
        if self.elastic.enabled and elastic_state is None:
            elastic_state = self.initial_elastic_state(b)
        column_norms = FastWeights(self.w0, self.w1, self.w2).map(
            lambda w: w.detach().norm(dim=1, keepdim=True).repeat(b, 1, 1)
        )
        out, fast_weights, elastic_state = lacet_scan(
            fast_weights,
            q,
            k,
            v,
            lr,
            schedule,
            chunk_size=self.chunk_size,
            newton_schulz_steps=self.newton_schulz_steps,
            newton_schulz_dtype=NEWTON_SCHULZ_DTYPES[self.newton_schulz_dtype],
            apply_before_update=self.apply_before_update,
            elastic=self.elastic,
            elastic_state=elastic_state if self.elastic.enabled else None,
            column_norms=column_norms,
            newton_schulz_batching=self.newton_schulz_batching,
            newton_schulz_method=self.newton_schulz_method,
            compile=self.compile,
        )
        return self._merge_heads(out, b), fast_weights, elastic_state

    def apply_memory(self, x: torch.Tensor, fast_weights: FastWeights) -> torch.Tensor:
        """Evaluate stored fast weights on ``x`` (no update), chunked like the joint forward."""
        schedule = [TTTOperation(0, x.shape[1], update=False, apply=True)]
        out, _, _ = self.forward(x, schedule, fast_weights=fast_weights)
        return out

    def extra_repr(self) -> str:
        return (
            f"heads={self.num_heads}, head_dim={self.head_dim}, inner_dim={self.inner_dim}, "
            f"chunk_size={self.chunk_size}, ns_steps={self.newton_schulz_steps}, ns_dtype={self.newton_schulz_dtype}, "
            f"elastic={self.elastic}"
        )


def configure_lacet(
    module: nn.Module,
    newton_schulz_batching: Optional[str] = None,
    compile: Optional[bool] = None,
    newton_schulz_method: Optional[str] = None,
) -> int:
    """Set performance options on every :class:`LaCETLayer` inside ``module`` (``None`` = unchanged).

    Returns the number of layers changed. Example: ``configure_lacet(model, newton_schulz_batching="all")``.
    """
    if newton_schulz_batching is not None:
        _check_newton_schulz_batching(newton_schulz_batching)
    if newton_schulz_method is not None:
        _check_newton_schulz_method(newton_schulz_method)
    layers = [m for m in module.modules() if isinstance(m, LaCETLayer)]
    for layer in layers:
        if newton_schulz_batching is not None:
            layer.newton_schulz_batching = newton_schulz_batching
        if compile is not None:
            layer.compile = compile
        if newton_schulz_method is not None:
            layer.newton_schulz_method = newton_schulz_method
    return len(layers)
