"""Per-view self-attention, the GELU MLP, the FSM block and the backbone (DESIGN §3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .lacet import SCHEDULES, ElasticSettings, ElasticState, FastWeights, LaCETLayer, TTTOperation


class ViewSelfAttention(nn.Module):
    """Multi-head self-attention with QK-RMSNorm over ``[N, L, D]`` (one view per row), via SDPA."""

    def __init__(self, hidden_size: int, head_dim: int = 64, use_qk_norm: bool = True):
        super().__init__()
        if hidden_size % head_dim != 0:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of the attention head_dim {head_dim}")
        self.head_dim = head_dim
        self.to_qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.c_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.c_proj.is_residual_projection = True
        self.use_qk_norm = use_qk_norm
        if use_qk_norm:
            self.q_norm = nn.RMSNorm(head_dim)
            self.k_norm = nn.RMSNorm(head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, l, d = x.shape
        qkv = self.to_qkv(x).view(n, l, 3, d // self.head_dim, self.head_dim)  # [N, L, 3, nh, dh]
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [N, nh, L, dh]
        if self.use_qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        out = F.scaled_dot_product_attention(q, k, v)  # [N, nh, L, dh]
        out = out.permute(0, 2, 1, 3).reshape(n, l, d)
        return self.c_proj(out)


class InputAttention(nn.Module):
    """Softmax attention from tokens onto the input (update) tokens, with :class:`LaCETLayer`'s interface.

    The cross-view read of an LVSM decoder, a drop-in for the LaCET layer of a block
    (``FSMConfig.cross_view_mixer = "attention"``): multi-head, QK-RMSNorm, heads of ``head_dim``.
    ``forward(x, schedule, elastic_state, memory)`` walks the schedule like :func:`lacet_scan`: an
    ``update`` operation adds its tokens' keys and values to the memory, an ``apply`` operation attends
    from its tokens onto the memory gathered so far. The memory is the triple
    ``FastWeights(keys [B, M, D], values [B, M, D], empty [B, 0, D])``, so it travels through the
    backbone, :class:`~fsm_hf.FSMMemory` and the pipeline like fast weights do; unlike fast weights,
    it grows with the number of input tokens. It has no elastic state (``elastic_state`` is passed
    through) and its ``to_qkv`` / ``c_proj`` carry the LaCET layer's names and shapes, so a LaCET
    model built from an attention model's checkpoint starts from these projections.
    """

    chunk_size = 0  # the streamed path reads all input tokens in one update

    def __init__(self, hidden_size: int, head_dim: int):
        super().__init__()
        if hidden_size % head_dim != 0:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of the attention head_dim {head_dim}")
        self.num_heads = hidden_size // head_dim
        self.head_dim = head_dim
        self.to_qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.q_norm = nn.RMSNorm(head_dim)
        self.k_norm = nn.RMSNorm(head_dim)
        self.c_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.c_proj.is_residual_projection = True

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, l, _ = t.shape
        return t.reshape(b, l, self.num_heads, self.head_dim).transpose(1, 2)  # [B, nh, L, dh]

    def initial_fast_weights(self, batch_size: int) -> FastWeights:
        """The empty memory: no key, no value."""
        empty = self.c_proj.weight.new_zeros(batch_size, 0, self.c_proj.in_features)
        return FastWeights(empty, empty, empty)

    def forward(
        self,
        x: torch.Tensor,
        schedule: Sequence[TTTOperation],
        elastic_state: Optional[ElasticState] = None,
        fast_weights: Optional[FastWeights] = None,
    ):
        """``x: [B, L, D]`` -> (outputs of the ``apply`` tokens ``[B, L_apply, D]``, memory, ``elastic_state``)."""
        b, _, d = x.shape
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)  # each [B, L, D]
        keys, values, _ = fast_weights if fast_weights is not None else self.initial_fast_weights(b)
        outputs: List[torch.Tensor] = []
        for op in schedule:
            if op.update:
                keys = torch.cat([keys, k[:, op.start : op.end]], dim=1)
                values = torch.cat([values, v[:, op.start : op.end]], dim=1)
            if op.apply:
                if keys.shape[1] == 0:
                    raise ValueError("InputAttention: an apply operation before any update (the memory is empty)")
                query = self.q_norm(self._heads(q[:, op.start : op.end]))
                out = F.scaled_dot_product_attention(query, self.k_norm(self._heads(keys)), self._heads(values))
                outputs.append(out.transpose(1, 2).reshape(b, op.end - op.start, d))
        out = torch.cat(outputs, dim=1) if outputs else x.new_zeros(b, 0, d)
        return self.c_proj(out), FastWeights(keys, values, keys.new_zeros(b, 0, d)), elastic_state

    def apply_memory(self, x: torch.Tensor, fast_weights: FastWeights) -> torch.Tensor:
        """Attend from ``x: [B, L, D]`` onto a stored memory; ``[B, L, D]``."""
        out, _, _ = self.forward(x, [TTTOperation(0, x.shape[1], update=False, apply=True)], fast_weights=fast_weights)
        return out


class FSMMLP(nn.Module):
    """``Linear -> GELU (exact) -> Linear``, no biases."""

    def __init__(self, hidden_size: int, mlp_ratio: float = 4):
        super().__init__()
        inner = int(hidden_size * mlp_ratio)
        self.c_fc = nn.Linear(hidden_size, inner, bias=False)
        self.c_proj = nn.Linear(inner, hidden_size, bias=False)
        self.c_proj.is_residual_projection = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


def elastic_settings_from_config(config) -> ElasticSettings:
    return ElasticSettings(
        enabled=config.elastic_enabled,
        estimator=config.elastic_estimator,
        anchor_policy=config.elastic_anchor_policy,
        alpha=config.elastic_alpha,
        beta=config.elastic_beta,
        strength=config.elastic_lambda,
    )


def cross_view_mixer(config) -> nn.Module:
    """The layer that reads across views, per ``config.cross_view_mixer``: LaCET or :class:`InputAttention`."""
    if config.cross_view_mixer == "attention":
        return InputAttention(config.hidden_size, config.attention_head_dim)
    return LaCETLayer(
        config.hidden_size,
        config.ttt_head_dim,
        inter_multi=config.ttt_inter_multi,
        base_lr=config.ttt_base_lr,
        chunk_size=config.ttt_chunk_size,
        newton_schulz_steps=config.newton_schulz_steps,
        newton_schulz_dtype=config.newton_schulz_dtype,
        apply_before_update=config.apply_before_update,
        elastic=elastic_settings_from_config(config),
        initial_importance=config.elastic_initial_importance,
        fast_weight_init_scale=config.ttt_fast_weight_init_scale,
    )


class FSMBlock(nn.Module):
    """Pre-LN residual block: per-view attention, then LaCET (or, as a control and warm-up,
    :class:`InputAttention`) over all tokens, then the MLP."""

    def __init__(self, config):
        super().__init__()
        d = config.hidden_size
        self.attention_norm = nn.LayerNorm(d, eps=config.layer_norm_eps, bias=False)
        self.attention = ViewSelfAttention(d, config.attention_head_dim, config.use_qk_norm)
        self.lacet_norm = nn.LayerNorm(d, eps=config.layer_norm_eps, bias=False)
        self.lacet = cross_view_mixer(config)
        self.mlp_norm = nn.LayerNorm(d, eps=config.layer_norm_eps, bias=False)
        self.mlp = FSMMLP(d, config.mlp_ratio)

    def attend(self, x: torch.Tensor, tokens_per_view: int, max_views_per_batch: Optional[int] = None) -> torch.Tensor:
        """Residual per-view attention on ``[B, V * L_img, D]``; views in batches of ``max_views_per_batch``."""
        b, vl, d = x.shape
        views = self.attention_norm(x).reshape(b * (vl // tokens_per_view), tokens_per_view, d)  # [BV, L_img, D]
        if max_views_per_batch is None or max_views_per_batch >= views.shape[0]:
            attended = self.attention(views)
        else:
            attended = torch.cat([self.attention(part) for part in views.split(max_views_per_batch)], dim=0)
        return x + attended.reshape(b, vl, d)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.mlp_norm(x))

    def forward(
        self,
        x: torch.Tensor,
        tokens_per_view: int,
        schedule: Sequence[TTTOperation],
        elastic_state: Optional[ElasticState] = None,
        fast_weights: Optional[FastWeights] = None,
        max_views_per_batch: Optional[int] = None,
    ):
        x = self.attend(x, tokens_per_view, max_views_per_batch)
        lacet_out, fast_weights, elastic_state = self.lacet(self.lacet_norm(x), schedule, elastic_state, fast_weights)
        x = x + lacet_out
        return self.feed_forward(x), fast_weights, elastic_state

    @torch.no_grad()
    def forward_streamed(
        self,
        x: torch.Tensor,
        tokens_per_view: int,
        num_input_tokens: int,
        schedule_name: str,
        elastic_state: Optional[ElasticState],
        views_per_batch: int,
        on_chunk: Optional[Callable[[], None]] = None,
    ):
        """Memory-bounded inference version of :meth:`forward`, updating ``x`` in place.

        Only ``x`` itself spans all tokens: attention runs ``views_per_batch`` views at a time, the
        fast weights are updated one LaCET chunk at a time, and the apply step and the MLP run on
        blocks of ``views_per_batch`` views. Same operations as :meth:`forward`, so the results agree
        to floating-point rounding (bitwise in fp32 only where the BLAS blocking agrees).
        """
        b, n, _ = x.shape
        block = views_per_batch * tokens_per_view
        for s in range(0, n, block):  # per-view attention
            x[:, s : s + block] = self.attend(x[:, s : s + block], tokens_per_view)
        interleaved = schedule_name == "interleaved"
        chunk = self.lacet.chunk_size or num_input_tokens
        fast_weights = None
        for s in range(0, num_input_tokens, chunk):  # streamed update over the input tokens
            e = min(num_input_tokens, s + chunk)
            op = [TTTOperation(0, e - s, update=True, apply=interleaved)]
            out, fast_weights, elastic_state = self.lacet(self.lacet_norm(x[:, s:e]), op, elastic_state, fast_weights)
            if interleaved:
                x[:, s:e] += out
            if on_chunk is not None:
                on_chunk()
        if fast_weights is None:  # no input token: the slow initial values
            fast_weights = self.lacet.initial_fast_weights(b)
        for s in range(num_input_tokens if interleaved else 0, n, block):  # apply, then the MLP
            part = x[:, s : s + block]
            part += self.lacet.apply_memory(self.lacet_norm(part), fast_weights)
        for s in range(0, n, block):
            x[:, s : s + block] = self.feed_forward(x[:, s : s + block])
        return x, fast_weights, elastic_state


@dataclass
class BackboneOutput:
    """What :meth:`FSMBackbone.forward` returns."""

    hidden_states: torch.Tensor  # [B, L, D]
    fast_weights: List[FastWeights] = field(default_factory=list)  # one per layer
    elastic_state: Optional[ElasticState] = None  # the state after the last layer (threaded mode)


class FSMBackbone(nn.Module):
    """``num_hidden_layers`` :class:`FSMBlock` s with the elastic state threaded or per layer.

    ``config.elastic_state``:

    * ``"threaded"`` (the official release): one state, initialised from the **first** block's
      buffers, flows through all layers in order: layer ``l + 1`` starts where layer ``l`` left it.
    * ``"per_layer"``: every layer starts from its own buffers.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList([FSMBlock(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def schedule(self, num_input_tokens: int, num_total_tokens: int) -> List[TTTOperation]:
        return SCHEDULES[self.config.ttt_schedule](num_input_tokens, num_total_tokens)

    def forward(
        self,
        x: torch.Tensor,
        tokens_per_view: int,
        num_input_tokens: int,
        max_views_per_batch: Optional[int] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> BackboneOutput:
        """Update on the first ``num_input_tokens`` tokens, apply to all (schedule from the config).

        ``max_views_per_batch``: ``None`` runs each layer over all tokens at once. An integer, when
        gradients are off, selects the memory-bounded path (:meth:`FSMBlock.forward_streamed`): peak
        memory is then the hidden states plus what ``max_views_per_batch`` views (or one LaCET chunk)
        need, so hundreds of views fit where the plain path does not; the results agree with the
        plain path to floating-point rounding. With gradients on it only batches the attention.

        ``progress(done, total)`` is called after every layer (plain path) or every LaCET chunk of
        every layer (streamed path).
        """
        schedule = self.schedule(num_input_tokens, x.shape[1])
        threaded = self.config.elastic_enabled and self.config.elastic_state == "threaded"
        state = self.layers[0].lacet.initial_elastic_state(x.shape[0]) if threaded else None
        streamed = max_views_per_batch is not None and not torch.is_grad_enabled()
        if streamed:
            x = x.clone()  # updated in place, layer after layer
        chunk = self.config.ttt_chunk_size or max(num_input_tokens, 1)
        steps_per_layer = -(-num_input_tokens // chunk) if streamed else 1
        total, done = steps_per_layer * len(self.layers), [0]

        def step():
            done[0] += 1
            if progress is not None:
                progress(done[0], total)

        memory = []
        for layer in self.layers:
            layer_state = state if threaded else None
            if streamed:
                x, fw, new_state = layer.forward_streamed(
                    x, tokens_per_view, num_input_tokens, self.config.ttt_schedule, layer_state, max_views_per_batch, step
                )
            elif self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, fw, new_state = checkpoint(
                    layer, x, tokens_per_view, schedule, layer_state, None, max_views_per_batch, use_reentrant=False
                )
            else:
                x, fw, new_state = layer(x, tokens_per_view, schedule, layer_state, None, max_views_per_batch)
            if not streamed:
                step()
            if threaded:
                state = new_state
            memory.append(fw)
        return BackboneOutput(hidden_states=x, fast_weights=memory, elastic_state=state)

    def render(
        self,
        x: torch.Tensor,
        tokens_per_view: int,
        memory: Sequence[FastWeights],
        max_views_per_batch: Optional[int] = None,
    ) -> torch.Tensor:
        """Push target tokens through the layers, applying each layer's stored fast weights."""
        if len(memory) != len(self.layers):
            raise ValueError(f"memory has {len(memory)} layers, the model has {len(self.layers)}")
        for layer, fw in zip(self.layers, memory):
            x = layer.attend(x, tokens_per_view, max_views_per_batch)
            x = x + layer.lacet.apply_memory(layer.lacet_norm(x), fw)
            x = layer.feed_forward(x)
        return x


class LVSMHead(nn.Module):
    """``LayerNorm -> Linear(D, 3 p^2) -> sigmoid``: tokens to rgb patches in ``(0, 1)``."""

    def __init__(self, hidden_size: int, patch_size: int, layer_norm_eps: float = 1e-5):
        super().__init__()
        self.layernorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps, bias=False)
        self.linear = nn.Linear(hidden_size, 3 * patch_size * patch_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(self.layernorm(tokens)))
