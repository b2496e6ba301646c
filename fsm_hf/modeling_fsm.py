"""PyTorch FSM models: the LaCET backbone and the LVSM (pixel) head, as Hugging Face models."""

from __future__ import annotations

import hashlib
import importlib
import math
import warnings
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from modeling.blocks import FSMBackbone, LVSMHead
from modeling.lacet import FastWeights, LaCETLayer, fast_weight_init_std
from modeling.tokenizer import FSMPatchEmbeddings, build_posed_pixels, unpatchify

from .configuration_fsm import FSMConfig
from .memory import FSMMemory


@dataclass
class FSMModelOutput(ModelOutput):
    """
    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_tokens, hidden_size)`):
            Tokens after the last block: input views first, then target views.
        fast_weights (`list[FastWeights]`):
            Per-layer fast weights after reading the input views (the spatial memory).
        num_input_tokens (`int`):
            How many leading tokens belong to the input views.
    """

    last_hidden_state: Optional[torch.FloatTensor] = None
    fast_weights: Optional[List[FastWeights]] = None
    num_input_tokens: Optional[int] = None


@dataclass
class FSMNovelViewSynthesisOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Mean squared error against `target_images`, when they are given.
        images (`torch.FloatTensor` of shape `(batch_size, num_target_views, 3, height, width)`):
            Rendered target views in `[0, 1]`.
        memory (`FSMMemory`, *optional*):
            The spatial memory built from the input views (when `return_memory=True`).
    """

    loss: Optional[torch.FloatTensor] = None
    images: Optional[torch.FloatTensor] = None
    memory: Optional[FSMMemory] = None


def _check_views(name: str, images, fxfycxcy, c2w, times, use_time: bool, patch_size: int):
    """Validate one group of views; returns ``(B, V, H, W)`` (H, W from images when given)."""
    if fxfycxcy is None or c2w is None:
        raise ValueError(f"{name}: both `{name}_fxfycxcy` [B, V, 4] and `{name}_c2w` [B, V, 4, 4] are required.")
    if fxfycxcy.ndim != 3 or fxfycxcy.shape[-1] != 4:
        raise ValueError(f"{name}_fxfycxcy must be [B, V, 4] pixel intrinsics, got shape {tuple(fxfycxcy.shape)}.")
    b, v = fxfycxcy.shape[:2]
    if c2w.shape != (b, v, 4, 4):
        raise ValueError(f"{name}_c2w must be [B, V, 4, 4] = {(b, v, 4, 4)}, got shape {tuple(c2w.shape)}.")
    if use_time:
        if times is None:
            raise ValueError(f"This model has a time channel: `{name}_times` [B, V] in [-1, 1] is required.")
        if times.shape != (b, v):
            raise ValueError(f"{name}_times must be [B, V] = {(b, v)}, got shape {tuple(times.shape)}.")
    h = w = None
    if images is not None:
        if images.ndim != 5 or images.shape[:3] != (b, v, 3):
            raise ValueError(f"{name}_images must be [B, V, 3, H, W] with B, V = {(b, v)}, got {tuple(images.shape)}.")
        h, w = images.shape[-2:]
        if h % patch_size or w % patch_size:
            raise ValueError(f"Image size {h}x{w} is not a multiple of the patch size {patch_size}.")
    return b, v, h, w


class FSMPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the Hugging Face plumbing shared by all FSM models."""

    config_class = FSMConfig
    base_model_prefix = "fsm"
    main_input_name = "input_images"
    supports_gradient_checkpointing = True
    _no_split_modules = ["FSMBlock"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "is_residual_projection", False):
                # GPT-2 style: residual projections scaled by 1/sqrt(number of residual branches).
                std = std / math.sqrt(3 * self.config.num_hidden_layers)
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            if module.weight is not None:
                init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, LaCETLayer):
            for name in ("w0", "w1", "w2"):
                weight = getattr(module, name)
                init.normal_(weight, mean=0.0, std=fast_weight_init_std(weight.shape[1], self.config.ttt_fast_weight_init_scale))
            # Elastic buffers are built from the (possibly just loaded) fast-weight initial values.
            for name in ("w0", "w1", "w2"):
                init.copy_(getattr(module, f"anchor_{name}"), getattr(module, name).detach().float())
                init.constant_(getattr(module, f"importance_{name}"), module.initial_importance)

    def _memory(self, fast_weights, batch_size: int, h: int, w: int, gaussians=None) -> FSMMemory:
        """Package per-layer fast weights (and, for Gaussian models, the Gaussians) as an :class:`FSMMemory`."""
        return FSMMemory(
            fast_weights=list(fast_weights),
            batch_size=batch_size,
            image_size=(h, w),
            patch_size=self.config.patch_size,
            config_signature=self.config.memory_signature,
            gaussians=None if gaussians is None else gaussians.to_dict(),
            metadata={"weights_fingerprint": self.weights_fingerprint()},
        )

    @torch.no_grad()
    def weights_fingerprint(self) -> str:
        """A short hash of every parameter (16 evenly spaced values of each, rounded to bf16 so that
        the fp32 and bf16 copies of one checkpoint agree). Memories record it: a memory rendered by
        a model with other weights but the same configuration would silently give garbage."""
        digest = hashlib.sha1()
        for name, param in self.named_parameters():
            if param.device.type == "meta":
                continue
            flat = param.detach().reshape(-1)
            positions = torch.linspace(0, flat.numel() - 1, steps=min(16, flat.numel()), device=flat.device).long()
            digest.update(name.encode())
            digest.update(flat[positions].to(torch.bfloat16).float().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: Optional[str] = None,
        private: bool = False,
        token=None,
        create_pr: bool = False,
        revision: Optional[str] = None,
        max_shard_size="5GB",
        include_code: bool = False,
        **card_kwargs,
    ) -> str:
        """Upload the model (safetensors) with an fsm-hf model card as README.md, in one commit
        (:func:`fsm_hf.hub.push_model_to_hub`; transformers' own method would upload its generic
        template card). ``include_code=True`` bundles the model code for
        ``AutoModel.from_pretrained(repo_id, trust_remote_code=True)`` without fsm-hf. ``card_kwargs``
        (``provenance``, ``eval_results``, ``base_model``, ``datasets``, ``license``,
        ``training_config``) go to :func:`fsm_hf.model_card.generate_model_card`. Returns the commit URL.
        """
        # Looked up by name, not imported: the remote-code copy of this module (hub.bundle_remote_code)
        # must not pull the Hub tooling in; where fsm-hf is not installed, transformers' upload remains.
        try:
            hub = importlib.import_module("fsm_hf.hub")
        except ImportError:
            return super().push_to_hub(repo_id, commit_message=commit_message, private=private, token=token,
                                       create_pr=create_pr, revision=revision, max_shard_size=max_shard_size)  # fmt: skip
        return hub.push_model_to_hub(
            self, repo_id, include_code=include_code, commit_message=commit_message, token=token, private=private,
            revision=revision, create_pr=create_pr, max_shard_size=max_shard_size, **card_kwargs,
        )  # fmt: skip

    def check_memory(self, memory: FSMMemory) -> None:
        """Raise when ``memory`` was built by another configuration; warn when by other weights."""
        memory.check_compatible(self.config.memory_signature)
        stored = memory.metadata.get("weights_fingerprint")
        if stored is not None and stored != self.weights_fingerprint():
            warnings.warn(
                "This memory was built by a model with other weights (same configuration); rendering it with "
                "this model gives meaningless images. Reconstruct the scene with this model.",
                stacklevel=3,
            )

    def reset_elastic_buffers(self) -> None:
        """Rebuild every layer's anchors (from the current fast-weight initial values) and importances."""
        for module in self.modules():
            if isinstance(module, LaCETLayer):
                module.reset_elastic_buffers()


class FSMModel(FSMPreTrainedModel):
    """The FSM backbone: patch tokenizer + LaCET blocks, returning hidden states and fast weights."""

    def __init__(self, config: FSMConfig):
        super().__init__(config)
        self.embeddings = FSMPatchEmbeddings(config.num_input_channels, config.patch_size, config.hidden_size, config.layer_norm_eps)
        self.backbone = FSMBackbone(config)
        self.post_init()

    def tokenize(self, images, fxfycxcy, c2w, times, height: int, width: int, views_per_batch: Optional[int] = None) -> torch.Tensor:
        """Posed pixels of a group of views -> tokens ``[B, V * L_img, D]``, ``views_per_batch`` views at a time."""
        num_views = c2w.shape[1]
        step = views_per_batch or num_views
        parts = []
        for s in range(0, num_views, step):
            views = slice(s, s + step)
            # Rays are geometry: computed in fp32 even under autocast, as the reference does.
            with torch.autocast(device_type=c2w.device.type, enabled=False):
                pixels = build_posed_pixels(
                    fxfycxcy[:, views].float(), c2w[:, views].float(), height, width, self.config.pose_features,
                    None if images is None else images[:, views].float(),
                    times[:, views].float() if (self.config.use_time and times is not None) else None,
                )  # fmt: skip
            parts.append(self.embeddings(pixels.to(self.embeddings.linear.weight.dtype)))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def forward(
        self,
        input_images: torch.Tensor,
        input_fxfycxcy: torch.Tensor,
        input_c2w: torch.Tensor,
        input_times: Optional[torch.Tensor] = None,
        target_fxfycxcy: Optional[torch.Tensor] = None,
        target_c2w: Optional[torch.Tensor] = None,
        target_times: Optional[torch.Tensor] = None,
        max_views_per_batch: Optional[int] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> FSMModelOutput:
        """Read the input views (updating the fast weights) and process the target views.

        Args:
            input_images: `[B, V, 3, H, W]` in `[0, 1]`.
            input_fxfycxcy: `[B, V, 4]` intrinsics in pixels of `H x W`.
            input_c2w: `[B, V, 4, 4]` OpenCV camera-to-world.
            input_times: `[B, V]` time in `[-1, 1]` (4D models).
            target_fxfycxcy, target_c2w, target_times: the same for `T` target views (optional).
            max_views_per_batch: memory knob (see :meth:`modeling.FSMBackbone.forward`): with gradients
                off, every layer is processed this many views (or one LaCET chunk) at a time, so peak
                memory grows only with one layer's tokens; results do not depend on it.
            progress: optional ``progress(done, total)`` callback over layers / LaCET chunks.
        """
        cfg = self.config
        b, v, h, w = _check_views("input", input_images, input_fxfycxcy, input_c2w, input_times, cfg.use_time, cfg.patch_size)
        tokens = self.tokenize(input_images, input_fxfycxcy, input_c2w, input_times, h, w, max_views_per_batch)  # [B, V*L, D]
        num_input_tokens = tokens.shape[1]
        if target_c2w is not None or target_fxfycxcy is not None:
            tb, _, _, _ = _check_views("target", None, target_fxfycxcy, target_c2w, target_times, cfg.use_time, cfg.patch_size)
            if tb != b:
                raise ValueError(f"input and target batch sizes differ: {b} vs {tb}.")
            target_tokens = self.tokenize(None, target_fxfycxcy, target_c2w, target_times, h, w, max_views_per_batch)  # [B, T*L, D]
            tokens = torch.cat([tokens, target_tokens], dim=1)
        tokens_per_view = (h // cfg.patch_size) * (w // cfg.patch_size)
        out = self.backbone(tokens, tokens_per_view, num_input_tokens, max_views_per_batch, progress)
        return FSMModelOutput(
            last_hidden_state=out.hidden_states, fast_weights=out.fast_weights, num_input_tokens=num_input_tokens
        )


class FSMForNovelViewSynthesis(FSMPreTrainedModel):
    """FSM with the LVSM head: renders target views (camera + time) directly as pixels.

    Example:

    ```python
    >>> import torch
    >>> from fsm_hf import FSMConfig, FSMForNovelViewSynthesis
    >>> model = FSMForNovelViewSynthesis(FSMConfig.from_preset("tiny")).eval()
    >>> B, V, T, H, W = 1, 4, 2, 32, 32
    >>> eye = torch.eye(4).expand(B, V + T, 4, 4).clone()
    >>> K = torch.tensor([32.0, 32.0, 16.0, 16.0]).expand(B, V + T, 4)
    >>> times = torch.linspace(-1, 1, V + T).expand(B, -1)
    >>> out = model(torch.rand(B, V, 3, H, W), K[:, :V], eye[:, :V], times[:, :V], K[:, V:], eye[:, V:], times[:, V:])
    >>> out.images.shape
    torch.Size([1, 2, 3, 32, 32])
    ```
    """

    def __init__(self, config: FSMConfig):
        super().__init__(config)
        if config.head_type != "lvsm":
            raise ValueError(f"FSMForNovelViewSynthesis needs head_type='lvsm', got {config.head_type!r}.")
        self.fsm = FSMModel(config)
        self.head = LVSMHead(config.hidden_size, config.patch_size, config.layer_norm_eps)
        self.post_init()

    def _decode(self, target_tokens: torch.Tensor, num_views: int, h: int, w: int) -> torch.Tensor:
        patches = self.head(target_tokens)  # [B, T*L, 3p^2]
        return unpatchify(patches, num_views, h, w, self.config.patch_size)  # [B, T, 3, H, W]

    def forward(
        self,
        input_images: torch.Tensor,
        input_fxfycxcy: torch.Tensor,
        input_c2w: torch.Tensor,
        input_times: Optional[torch.Tensor] = None,
        target_fxfycxcy: Optional[torch.Tensor] = None,
        target_c2w: Optional[torch.Tensor] = None,
        target_times: Optional[torch.Tensor] = None,
        target_images: Optional[torch.Tensor] = None,
        max_views_per_batch: Optional[int] = None,
        return_memory: bool = False,
        return_dict: Optional[bool] = None,
    ):
        """Render target views from input views in one pass.

        Args:
            input_images (`torch.FloatTensor` of shape `(B, V, 3, H, W)`): input frames in `[0, 1]`.
            input_fxfycxcy (`(B, V, 4)`): intrinsics in pixels.
            input_c2w (`(B, V, 4, 4)`): OpenCV camera-to-world.
            input_times (`(B, V)`, *optional*): time in `[-1, 1]`; required when `config.use_time`.
            target_fxfycxcy, target_c2w, target_times: the target views (`T` of them).
            target_images (`(B, T, 3, H, W)`, *optional*): ground truth; adds an MSE `loss`.
            return_memory (`bool`): also return the spatial memory.

        Returns:
            [`FSMNovelViewSynthesisOutput`] with `images` `(B, T, 3, H, W)`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if target_c2w is None:
            raise ValueError("target_fxfycxcy and target_c2w are required to render target views.")
        out = self.fsm(
            input_images, input_fxfycxcy, input_c2w, input_times, target_fxfycxcy, target_c2w, target_times,
            max_views_per_batch=max_views_per_batch,
        )  # fmt: skip
        b, _, _, h, w = input_images.shape
        num_targets = target_c2w.shape[1]
        images = self._decode(out.last_hidden_state[:, out.num_input_tokens :], num_targets, h, w)
        loss = None
        if target_images is not None:
            if target_images.shape != images.shape:
                raise ValueError(f"target_images must be {tuple(images.shape)}, got {tuple(target_images.shape)}.")
            loss = F.mse_loss(images.float(), target_images.float())
        memory = self._memory(out.fast_weights, b, h, w) if return_memory else None
        if not return_dict:
            return tuple(x for x in (loss, images, memory) if x is not None)
        return FSMNovelViewSynthesisOutput(loss=loss, images=images, memory=memory)

    @torch.no_grad()
    def reconstruct(
        self,
        input_images: torch.Tensor,
        input_fxfycxcy: torch.Tensor,
        input_c2w: torch.Tensor,
        input_times: Optional[torch.Tensor] = None,
        max_views_per_batch: Optional[int] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> FSMMemory:
        """Read the input views once and return the spatial memory (per-layer fast weights).

        ``max_views_per_batch`` bounds peak memory (any number of views fits); ``progress(done,
        total)`` reports layers / LaCET chunks.
        """
        out = self.fsm(
            input_images, input_fxfycxcy, input_c2w, input_times, max_views_per_batch=max_views_per_batch, progress=progress
        )
        b, _, _, h, w = input_images.shape
        return self._memory(out.fast_weights, b, h, w)

    @torch.no_grad()
    def render(
        self,
        memory: FSMMemory,
        target_fxfycxcy: torch.Tensor,
        target_c2w: torch.Tensor,
        target_times: Optional[torch.Tensor] = None,
        max_views_per_batch: Optional[int] = None,
    ) -> torch.Tensor:
        """Render target views ``[B, T, 3, H, W]`` from a stored memory (no input view is re-read)."""
        self.check_memory(memory)
        cfg = self.config
        b, t, _, _ = _check_views("target", None, target_fxfycxcy, target_c2w, target_times, cfg.use_time, cfg.patch_size)
        if b != memory.batch_size:
            raise ValueError(f"memory holds {memory.batch_size} scene(s) but {b} target batch(es) were given.")
        h, w = memory.image_size
        tokens = self.fsm.tokenize(None, target_fxfycxcy, target_c2w, target_times, h, w)
        tokens_per_view = (h // cfg.patch_size) * (w // cfg.patch_size)
        hidden = self.fsm.backbone.render(tokens, tokens_per_view, memory.fast_weights, max_views_per_batch)
        return self._decode(hidden, t, h, w)
