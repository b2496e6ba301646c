"""FSM-LRM: the LaCET backbone with a pixel-aligned 4D Gaussian head, as a Hugging Face model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

from modeling.gaussians import GaussianDecoding, GaussianHead, Gaussians4D, decode_gaussians, render_gaussians
from modeling.rays import compute_rays

from .configuration_fsm import PRESETS, FSMConfig
from .memory import FSMMemory
from .modeling_fsm import FSMModel, FSMPreTrainedModel, _check_views


class FSMGaussianConfig(FSMConfig):
    r"""
    Configuration of FSM-LRM: the FSM backbone whose input-view tokens are decoded into one 4D
    Gaussian per input pixel, rendered at any camera and time by slicing (DESIGN §5).

    Every [`FSMConfig`] field applies (the defaults reproduce the released `fsm_4dlrm_patch8_res256`,
    with `head_type="gaussian"` and `pose_features=["nearest_pts", "ray_d"]`); `near_plane`,
    `far_plane` and `temporal_threshold` of [`FSMConfig`] are used here. The LRM-only fields:

    Args:
        sh_degree (`int`, *optional*, defaults to 0):
            Degree of the spherical-harmonics colours (the released models use 0).
        depth_scale (`float`, *optional*, defaults to 1.0):
            Multiplies the normalised depth: `depth = depth_scale * sigmoid(x + depth_bias) * (far - near) + near`.
        depth_bias (`float`, *optional*, defaults to 0.0):
            Added to the depth pre-activation (official `depth_preact_bias`).
        hard_pixelalign (`bool`, *optional*, defaults to `True`):
            Squash the depth with a sigmoid into `[near_plane, far_plane]`; `False` keeps it linear.
        hard_tempalign (`bool`, *optional*, defaults to `False`):
            No time channel in the head (19 channels instead of 20): every Gaussian sits at the
            time of its input view. (The official code drops the channel but then cannot render.)
        opacity_bias, scaling_bias, temporal_scaling_bias (`float`, *optional*, defaults to 0.0):
            Subtracted from the opacity / log-scale / temporal log-scale pre-activations.
        scaling_clip (`float`, *optional*, defaults to 10.0):
            Upper clamp of the spatial log-scales.
        temporal_scaling_clip (`float`, *optional*, defaults to 0.0):
            Upper clamp of the temporal log-scale (temporal std dev at most 1).
        clip_xyz (`bool`, *optional*, defaults to `False`):
            Clamp Gaussian centres to `[-1, 1]^3` (object-level models).
        scaling_modifier (`float`, *optional*, defaults to 1.0):
            Multiplies every activated scale (spatial and temporal) when slicing and rendering.
        temporal_prune (`bool`, *optional*, defaults to `True`):
            In eval mode, drop Gaussians whose temporal marginal at the target time is
            `<= temporal_threshold` before rasterising (the official inference does). Never in training.
        add_virtual_views (`bool`, *optional*, defaults to `True`):
            Decode the Gaussians from tokens that saw the *final* fast weights, as the official
            tttLRM-style model does by appending a copy of the input views that is only applied to.
            With `ttt_schedule="update_then_apply"` the input tokens themselves already see the final
            weights and attention is per view, so the copy is identical and is not built (no cost).
            With `"interleaved"` the copy is built. `False` decodes the input tokens directly.
        background_color (`list[float]`, *optional*, defaults to `[1.0, 1.0, 1.0]`):
            Colour behind the Gaussians (white in the released models).
        render_near_plane (`float`, *optional*, defaults to 0.2):
            Camera-space depth below which Gaussians are culled when rasterising (as the 3DGS
            rasteriser used by the official code).

    Example:

    ```python
    >>> from fsm_hf import FSMGaussianConfig, FSMForGaussianReconstruction
    >>> model = FSMForGaussianReconstruction(FSMGaussianConfig.from_preset("tiny-lrm"))
    ```"""

    model_type = "fsm_gaussian"

    def __init__(
        self,
        sh_degree: int = 0,
        depth_scale: float = 1.0,
        depth_bias: float = 0.0,
        hard_pixelalign: bool = True,
        hard_tempalign: bool = False,
        opacity_bias: float = 0.0,
        scaling_bias: float = 0.0,
        temporal_scaling_bias: float = 0.0,
        scaling_clip: float = 10.0,
        temporal_scaling_clip: float = 0.0,
        clip_xyz: bool = False,
        scaling_modifier: float = 1.0,
        temporal_prune: bool = True,
        add_virtual_views: bool = True,
        background_color: Optional[Sequence[float]] = None,
        render_near_plane: float = 0.2,
        head_type: str = "gaussian",
        pose_features: Optional[Sequence[str]] = None,
        **kwargs,
    ):
        # Set before FSMConfig.__init__, which calls validate().
        self.sh_degree = sh_degree
        self.depth_scale = depth_scale
        self.depth_bias = depth_bias
        self.hard_pixelalign = hard_pixelalign
        self.hard_tempalign = hard_tempalign
        self.opacity_bias = opacity_bias
        self.scaling_bias = scaling_bias
        self.temporal_scaling_bias = temporal_scaling_bias
        self.scaling_clip = scaling_clip
        self.temporal_scaling_clip = temporal_scaling_clip
        self.clip_xyz = clip_xyz
        self.scaling_modifier = scaling_modifier
        self.temporal_prune = temporal_prune
        self.add_virtual_views = add_virtual_views
        self.background_color = list(background_color) if background_color is not None else [1.0, 1.0, 1.0]
        self.render_near_plane = render_near_plane
        pose_features = list(pose_features) if pose_features is not None else ["nearest_pts", "ray_d"]
        super().__init__(head_type=head_type, pose_features=pose_features, **kwargs)

    def validate(self) -> None:
        super().validate()
        if self.head_type != "gaussian":
            raise ValueError(f"FSMGaussianConfig.head_type must be 'gaussian', got {self.head_type!r}")
        if not isinstance(self.sh_degree, int) or not 0 <= self.sh_degree <= 3:
            raise ValueError(f"FSMGaussianConfig.sh_degree must be an integer in [0, 3], got {self.sh_degree!r}")
        if not self.far_plane > self.near_plane:
            raise ValueError(f"FSMGaussianConfig.far_plane ({self.far_plane}) must exceed near_plane ({self.near_plane})")
        for name in ("depth_scale", "scaling_modifier"):
            if not getattr(self, name) > 0:
                raise ValueError(f"FSMGaussianConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.temporal_threshold < 0:
            raise ValueError(f"FSMGaussianConfig.temporal_threshold must be >= 0, got {self.temporal_threshold}")
        if len(self.background_color) != 3:
            raise ValueError(f"FSMGaussianConfig.background_color must be 3 floats, got {self.background_color!r}")
        if self.hard_tempalign and not self.use_time:
            raise ValueError("FSMGaussianConfig.hard_tempalign needs use_time=True (Gaussians take their view's time).")

    @property
    def decoding(self) -> GaussianDecoding:
        """The head's decoding settings (:class:`modeling.gaussians.GaussianDecoding`)."""
        return GaussianDecoding(
            sh_degree=self.sh_degree, near_plane=self.near_plane, far_plane=self.far_plane,
            depth_scale=self.depth_scale, depth_bias=self.depth_bias, hard_pixelalign=self.hard_pixelalign,
            hard_tempalign=self.hard_tempalign, opacity_bias=self.opacity_bias, scaling_bias=self.scaling_bias,
            temporal_scaling_bias=self.temporal_scaling_bias, scaling_clip=self.scaling_clip,
            temporal_scaling_clip=self.temporal_scaling_clip, clip_xyz=self.clip_xyz,
        )  # fmt: skip

    @property
    def memory_signature(self) -> Dict[str, object]:
        signature = super().memory_signature
        signature.update(sh_degree=self.sh_degree, hard_tempalign=self.hard_tempalign)
        return signature

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "FSMGaussianConfig":
        """Build a config from a Gaussian (LRM) preset of :data:`PRESETS`."""
        if name in PRESETS and PRESETS[name].get("head_type", "lvsm") != "gaussian":
            raise ValueError(f"Preset {name!r} is not an LRM (Gaussian) preset; use FSMConfig.from_preset.")
        return super().from_preset(name, **overrides)


@dataclass
class FSMGaussianReconstructionOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Mean squared error of the rendered targets against `target_images`, when given.
        images (`torch.FloatTensor` of shape `(batch_size, num_target_views, 3, height, width)`, *optional*):
            Target views rendered from the Gaussians (when target cameras are given).
        alphas (`torch.FloatTensor` of shape `(batch_size, num_target_views, 1, height, width)`, *optional*):
            Accumulated opacity of the rendered targets.
        gaussians (`Gaussians4D`):
            One 4D Gaussian per input pixel, `N = num_input_views * height * width` per scene.
        memory (`FSMMemory`, *optional*):
            Fast weights + Gaussians (when `return_memory=True`).
    """

    loss: Optional[torch.FloatTensor] = None
    images: Optional[torch.FloatTensor] = None
    alphas: Optional[torch.FloatTensor] = None
    gaussians: Optional[Gaussians4D] = None
    memory: Optional[FSMMemory] = None


class FSMForGaussianReconstruction(FSMPreTrainedModel):
    """FSM-LRM: reads posed frames and returns pixel-aligned 4D Gaussians, rendered by slicing at
    the target time and rasterising (gsplat on CUDA, a torch compositor on CPU).

    Example:

    ```python
    >>> import torch
    >>> from fsm_hf import FSMGaussianConfig, FSMForGaussianReconstruction
    >>> model = FSMForGaussianReconstruction(FSMGaussianConfig.from_preset("tiny-lrm")).eval()
    >>> B, V, H, W = 1, 2, 32, 32
    >>> c2w = torch.eye(4).expand(B, V, 4, 4).clone()
    >>> K = torch.tensor([32.0, 32.0, 16.0, 16.0]).expand(B, V, 4)
    >>> out = model(torch.rand(B, V, 3, H, W), K, c2w, torch.zeros(B, V))
    >>> out.gaussians.means.shape
    torch.Size([1, 2048, 3])
    ```
    """

    config_class = FSMGaussianConfig

    def __init__(self, config: FSMGaussianConfig):
        super().__init__(config)
        if config.head_type != "gaussian":
            raise ValueError(f"FSMForGaussianReconstruction needs head_type='gaussian', got {config.head_type!r}.")
        self.fsm = FSMModel(config)
        self.head = GaussianHead(config.hidden_size, config.patch_size, config.decoding.num_channels, config.layer_norm_eps)
        self.post_init()

    # -- pieces -----------------------------------------------------------------------------------
    def _encode(self, input_images, input_fxfycxcy, input_c2w, input_times, max_views_per_batch, progress=None):
        """Backbone over the input views; returns (tokens that saw the final fast weights, fast weights)."""
        cfg = self.config
        b, v, h, w = _check_views("input", input_images, input_fxfycxcy, input_c2w, input_times, cfg.use_time, cfg.patch_size)
        tokens = self.fsm.tokenize(input_images, input_fxfycxcy, input_c2w, input_times, h, w, max_views_per_batch)  # [B, V*L, D]
        n = tokens.shape[1]
        tokens_per_view = (h // cfg.patch_size) * (w // cfg.patch_size)
        if cfg.add_virtual_views and cfg.ttt_schedule != "update_then_apply":
            # Virtual copies of the inputs: updated on never, applied to with the final weights.
            out = self.fsm.backbone(torch.cat([tokens, tokens], dim=1), tokens_per_view, n, max_views_per_batch, progress)
            return out.hidden_states[:, n:], out.fast_weights
        out = self.fsm.backbone(tokens, tokens_per_view, n, max_views_per_batch, progress)
        return out.hidden_states, out.fast_weights

    def decode(self, hidden: torch.Tensor, input_fxfycxcy, input_c2w, input_times, height: int, width: int) -> Gaussians4D:
        """Input-view tokens ``[B, V*L, D]`` -> :class:`Gaussians4D` (``N = V * H * W``)."""
        num_views = input_c2w.shape[1]
        params = self.head(hidden, num_views, height, width)  # [B, V, C, H, W]
        ray_o, ray_d = compute_rays(input_fxfycxcy, input_c2w, height, width)  # [B, V, 3, H, W]
        ray_o, ray_d = ray_o.to(params.dtype), ray_d.to(params.dtype)
        return decode_gaussians(params, ray_o, ray_d, self.config.decoding, input_times if self.config.use_time else None)

    def render_gaussians(
        self,
        gaussians: Gaussians4D,
        target_fxfycxcy: torch.Tensor,
        target_c2w: torch.Tensor,
        target_times: Optional[torch.Tensor],
        height: int,
        width: int,
    ):
        """Rasterise ``gaussians`` at each target camera and time: ``(images, alphas)`` ``[B, T, {3,1}, H, W]``."""
        cfg = self.config
        b, t, _, _ = _check_views("target", None, target_fxfycxcy, target_c2w, target_times, cfg.use_time, cfg.patch_size)
        if b != gaussians.batch_size:
            raise ValueError(f"{gaussians.batch_size} scene(s) of Gaussians but {b} target batch(es) were given.")
        if target_times is None:  # 3D model: every Gaussian is seen at its own time
            target_times = target_c2w.new_zeros(b, t)
        prune = cfg.temporal_prune and not self.training and cfg.use_time
        return render_gaussians(
            gaussians, target_c2w, target_fxfycxcy, target_times, height, width,
            background=cfg.background_color, scaling_modifier=cfg.scaling_modifier,
            prune_threshold=cfg.temporal_threshold if prune else None, near_plane=cfg.render_near_plane,
        )  # fmt: skip

    # -- public API -------------------------------------------------------------------------------
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
        """Reconstruct 4D Gaussians from the input views and, when target cameras are given, render them.

        Args:
            input_images (`(B, V, 3, H, W)`): input frames in `[0, 1]`.
            input_fxfycxcy (`(B, V, 4)`), input_c2w (`(B, V, 4, 4)`), input_times (`(B, V)`): cameras
                (pixels, OpenCV camera-to-world) and model times in `[-1, 1]`.
            target_fxfycxcy, target_c2w, target_times: `T` target views to render (optional).
            target_images (`(B, T, 3, H, W)`, *optional*): ground truth; adds an MSE `loss`.
            return_memory (`bool`): also return the memory (fast weights + Gaussians).

        Returns:
            [`FSMGaussianReconstructionOutput`] with `gaussians` and, with targets, `images` `(B, T, 3, H, W)`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        b, _, _, h, w = input_images.shape
        hidden, fast_weights = self._encode(input_images, input_fxfycxcy, input_c2w, input_times, max_views_per_batch)
        gaussians = self.decode(hidden, input_fxfycxcy, input_c2w, input_times, h, w)
        images = alphas = loss = None
        if target_c2w is not None or target_fxfycxcy is not None:
            images, alphas = self.render_gaussians(gaussians, target_fxfycxcy, target_c2w, target_times, h, w)
            if target_images is not None:
                if target_images.shape != images.shape:
                    raise ValueError(f"target_images must be {tuple(images.shape)}, got {tuple(target_images.shape)}.")
                loss = F.mse_loss(images.float(), target_images.float())
        elif target_images is not None:
            raise ValueError("target_images were given without target cameras (target_fxfycxcy, target_c2w).")
        memory = self._memory(fast_weights, b, h, w, gaussians) if return_memory else None
        if not return_dict:
            return tuple(x for x in (loss, images, alphas, gaussians, memory) if x is not None)
        return FSMGaussianReconstructionOutput(loss=loss, images=images, alphas=alphas, gaussians=gaussians, memory=memory)

    @torch.no_grad()
    def reconstruct(
        self,
        input_images: torch.Tensor,
        input_fxfycxcy: torch.Tensor,
        input_c2w: torch.Tensor,
        input_times: Optional[torch.Tensor] = None,
        max_views_per_batch: Optional[int] = None,
        progress=None,
    ) -> FSMMemory:
        """Read the input views once: the memory holds the per-layer fast weights and the 4D Gaussians.

        ``max_views_per_batch`` and ``progress`` as in :meth:`FSMForNovelViewSynthesis.reconstruct`."""
        b, _, _, h, w = input_images.shape
        hidden, fast_weights = self._encode(input_images, input_fxfycxcy, input_c2w, input_times, max_views_per_batch, progress)
        gaussians = self.decode(hidden, input_fxfycxcy, input_c2w, input_times, h, w)
        return self._memory(fast_weights, b, h, w, gaussians)

    @torch.no_grad()
    def render(
        self,
        memory: FSMMemory,
        target_fxfycxcy: torch.Tensor,
        target_c2w: torch.Tensor,
        target_times: Optional[torch.Tensor] = None,
        max_views_per_batch: Optional[int] = None,
    ) -> torch.Tensor:
        """Render target views ``[B, T, 3, H, W]`` from a stored memory's Gaussians (no backbone pass).

        ``max_views_per_batch`` is accepted for signature parity with the LVSM model and unused.
        """
        self.check_memory(memory)
        if not memory.gaussians:
            raise ValueError("This memory holds no Gaussians (was it built by an LVSM model?).")
        gaussians = Gaussians4D.from_dict(memory.gaussians)
        if gaussians.batch_size != memory.batch_size:
            raise ValueError(f"memory Gaussians hold {gaussians.batch_size} scene(s), memory says {memory.batch_size}.")
        h, w = memory.image_size
        images, _ = self.render_gaussians(gaussians, target_fxfycxcy, target_c2w, target_times, h, w)
        return images
