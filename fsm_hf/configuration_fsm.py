"""FSM model configuration."""

from __future__ import annotations

import copy
from typing import Dict, Optional, Sequence

from transformers import PretrainedConfig

from modeling.lacet import ANCHOR_POLICIES, ELASTIC_ESTIMATORS, NEWTON_SCHULZ_DTYPES, SCHEDULES
from modeling.rays import POSE_FEATURES

ELASTIC_STATE_MODES = ("threaded", "per_layer")
HEAD_TYPES = ("lvsm", "gaussian")
CROSS_VIEW_MIXERS = ("lacet", "attention")


class FSMConfig(PretrainedConfig):
    r"""
    Configuration of a Fast Spatial Memory (FSM) model: a stack of LaCET blocks that reads posed
    frames (rays + rgb + time) and renders novel view-time combinations.

    The defaults reproduce the released 4D FSM-LVSM (`fsm_4dlvsm_patch8_res256.pth`).

    Args:
        hidden_size (`int`, *optional*, defaults to 768):
            Token width `D`.
        num_hidden_layers (`int`, *optional*, defaults to 24):
            Number of blocks (attention + LaCET + MLP each).
        patch_size (`int`, *optional*, defaults to 8):
            Side of the square image patches; image sides must be multiples of it.
        image_size (`int`, *optional*, defaults to 256):
            Resolution the checkpoint was trained at (informative; any multiple of `patch_size` runs).
        pose_features (`list[str]`, *optional*, defaults to `["ray_o", "ray_d", "o_cross_d"]`):
            Per-pixel pose channels, in order, each 3 channels: any of `ray_o`, `ray_d`, `o_cross_d`,
            `nearest_pts`.
        use_time (`bool`, *optional*, defaults to `True`):
            Append the time channel (4D models). 3D models (and LaCT NVS) have none.
        max_frames (`int`, *optional*, defaults to 256):
            Integer frame times `t` in `[0, max_frames - 1]` map to `tau = t / (max_frames - 1) * 2 - 1`.
        attention_head_dim (`int`, *optional*, defaults to 64):
            Head width of the per-view self-attention.
        use_qk_norm (`bool`, *optional*, defaults to `True`):
            RMSNorm on attention queries and keys.
        mlp_ratio (`float`, *optional*, defaults to 4):
            Hidden width of the GELU MLP relative to `hidden_size`.
        cross_view_mixer (`str`, *optional*, defaults to `"lacet"`):
            The layer of each block that reads across views. `"lacet"`: LaCET fast weights (the FSM
            model; every released checkpoint). `"attention"`: softmax attention from every token onto
            the input tokens (QK-RMSNorm, heads of `attention_head_dim`), LVSM's cross-view read; its
            memory is the input tokens' keys and values, so it grows with the input and has no elastic
            prior (`elastic_enabled` must be `False`). Used as the warm-up stage of the built-in model's
            recipe and as a control in `benchmarks/`: its `to_qkv` and `c_proj` weights have the LaCET
            layer's names and shapes, so a LaCET model loaded from its checkpoint
            (`from_pretrained(path, cross_view_mixer="lacet")`) starts from them.
        ttt_head_dim (`int`, *optional*, defaults to 768):
            Width `d` of one LaCET head (`hidden_size / ttt_head_dim` heads).
        ttt_inter_multi (`float`, *optional*, defaults to 2):
            Fast SwiGLU hidden width relative to `ttt_head_dim`.
        ttt_base_lr (`float`, *optional*, defaults to 0.01):
            Inner learning rate at zero `lr_fc` output.
        ttt_chunk_size (`int`, *optional*, defaults to 8192):
            Tokens per fast-weight update step; 0 updates once on all input tokens.
        newton_schulz_steps (`int`, *optional*, defaults to 5):
            Newton–Schulz iterations orthogonalising each update.
        newton_schulz_dtype (`str`, *optional*, defaults to `"bfloat16"`):
            `"bfloat16"` reproduces the official implementation exactly; `"float32"` is accurate and
            deterministic across batch layouts.
        ttt_schedule (`str`, *optional*, defaults to `"update_then_apply"`):
            `"update_then_apply"`: update on all input tokens, then apply the final fast weights to
            every token (the official FSM schedule). `"interleaved"`: each input chunk is applied with
            the weights of its own chunk; targets see the final weights.
        apply_before_update (`bool`, *optional*, defaults to `False`):
            With the interleaved schedule, apply each chunk before (instead of after) its update.
        elastic_enabled (`bool`, *optional*, defaults to `True`):
            The elastic prior of LaCET; `False` gives plain LaCT.
        elastic_estimator (`str`, *optional*, defaults to `"si"`):
            Importance estimator: `"mas"` (`|U|`), `"ewc"` (`U^2`) or `"si"` (`|U (W - W*)|`).
        elastic_anchor_policy (`str`, *optional*, defaults to `"streaming-ema"`):
            `"global"`, `"streaming"` or `"streaming-ema"`.
        elastic_alpha (`float`, *optional*, defaults to 0.5):
            EMA factor of the importances.
        elastic_beta (`float`, *optional*, defaults to 0.5):
            EMA factor of the anchor (`streaming-ema`).
        elastic_lambda (`float`, *optional*, defaults to 0.5):
            Strength of the proximal shrink towards the anchor.
        elastic_state (`str`, *optional*, defaults to `"threaded"`):
            `"threaded"`: one anchor/importance state, started from the first block's buffers and
            carried from layer to layer (the official release). `"per_layer"`: each layer starts from
            its own buffers.
        elastic_initial_importance (`float`, *optional*, defaults to 1e-6):
            Value the importance buffers are (re)built with.
        head_type (`str`, *optional*, defaults to `"lvsm"`):
            `"lvsm"` decodes target tokens to pixels; `"gaussian"` decodes input views to 4D Gaussians.
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the LayerNorms.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Std of the normal initialisation of linear layers (residual projections use
            `initializer_range / sqrt(3 * num_hidden_layers)`).
        ttt_fast_weight_init_scale (`float`, *optional*, defaults to 1.0):
            Multiplies the std `sqrt(2 / fan_in)` of the fast weights' initial values (1 = the official
            initialisation). Read only when a model is freshly initialised. Smaller values let the
            test-time updates, rather than the initial values, dominate the fast weights early in
            training from scratch (0.1 learned faster early on the demo recipe, but ended within noise
            of 1; the built-in model uses 1).

    Example:

    ```python
    >>> from fsm_hf import FSMConfig, FSMForNovelViewSynthesis

    >>> config = FSMConfig.from_preset("tiny")
    >>> model = FSMForNovelViewSynthesis(config)
    >>> config = model.config
    ```"""

    model_type = "fsm"

    def __init__(
        self,
        hidden_size: int = 768,
        num_hidden_layers: int = 24,
        patch_size: int = 8,
        image_size: int = 256,
        pose_features: Optional[Sequence[str]] = None,
        use_time: bool = True,
        max_frames: int = 256,
        attention_head_dim: int = 64,
        use_qk_norm: bool = True,
        mlp_ratio: float = 4,
        cross_view_mixer: str = "lacet",
        ttt_head_dim: int = 768,
        ttt_inter_multi: float = 2,
        ttt_base_lr: float = 0.01,
        ttt_chunk_size: int = 8192,
        newton_schulz_steps: int = 5,
        newton_schulz_dtype: str = "bfloat16",
        ttt_schedule: str = "update_then_apply",
        apply_before_update: bool = False,
        elastic_enabled: bool = True,
        elastic_estimator: str = "si",
        elastic_anchor_policy: str = "streaming-ema",
        elastic_alpha: float = 0.5,
        elastic_beta: float = 0.5,
        elastic_lambda: float = 0.5,
        elastic_state: str = "threaded",
        elastic_initial_importance: float = 1e-6,
        head_type: str = "lvsm",
        near_plane: float = 0.0,
        far_plane: float = 100.0,
        temporal_threshold: float = 0.05,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        ttt_fast_weight_init_scale: float = 1.0,
        **kwargs,
    ):
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.patch_size = patch_size
        self.image_size = image_size
        self.pose_features = list(pose_features) if pose_features is not None else ["ray_o", "ray_d", "o_cross_d"]
        self.use_time = use_time
        self.max_frames = max_frames
        self.attention_head_dim = attention_head_dim
        self.use_qk_norm = use_qk_norm
        self.mlp_ratio = mlp_ratio
        self.cross_view_mixer = cross_view_mixer
        self.ttt_head_dim = ttt_head_dim
        self.ttt_inter_multi = ttt_inter_multi
        self.ttt_base_lr = ttt_base_lr
        self.ttt_chunk_size = ttt_chunk_size
        self.newton_schulz_steps = newton_schulz_steps
        self.newton_schulz_dtype = newton_schulz_dtype
        self.ttt_schedule = ttt_schedule
        self.apply_before_update = apply_before_update
        self.elastic_enabled = elastic_enabled
        self.elastic_estimator = elastic_estimator
        self.elastic_anchor_policy = elastic_anchor_policy
        self.elastic_alpha = elastic_alpha
        self.elastic_beta = elastic_beta
        self.elastic_lambda = elastic_lambda
        self.elastic_state = elastic_state
        self.elastic_initial_importance = elastic_initial_importance
        self.head_type = head_type
        self.near_plane = near_plane
        self.far_plane = far_plane
        self.temporal_threshold = temporal_threshold
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.ttt_fast_weight_init_scale = ttt_fast_weight_init_scale
        super().__init__(**kwargs)
        self.validate()

    # ------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Reject unknown option names and inconsistent sizes with a message naming the field."""

        def check_choice(name, value, choices):
            if value not in choices:
                raise ValueError(f"FSMConfig.{name} must be one of {list(choices)}, got {value!r}")

        check_choice("elastic_estimator", self.elastic_estimator, ELASTIC_ESTIMATORS)
        check_choice("elastic_anchor_policy", self.elastic_anchor_policy, ANCHOR_POLICIES)
        check_choice("elastic_state", self.elastic_state, ELASTIC_STATE_MODES)
        check_choice("newton_schulz_dtype", self.newton_schulz_dtype, NEWTON_SCHULZ_DTYPES)
        check_choice("ttt_schedule", self.ttt_schedule, SCHEDULES)
        check_choice("head_type", self.head_type, HEAD_TYPES)
        check_choice("cross_view_mixer", self.cross_view_mixer, CROSS_VIEW_MIXERS)
        if self.cross_view_mixer == "attention" and self.elastic_enabled:
            raise ValueError(
                "FSMConfig.cross_view_mixer='attention' has no elastic prior: set elastic_enabled=False "
                "(the elastic prior belongs to LaCET fast weights)."
            )
        for name in self.pose_features:
            check_choice("pose_features[...]", name, POSE_FEATURES)
        for name, divisor in (("attention_head_dim", self.attention_head_dim), ("ttt_head_dim", self.ttt_head_dim)):
            if divisor <= 0 or self.hidden_size % divisor != 0:
                raise ValueError(f"FSMConfig.hidden_size ({self.hidden_size}) must be a multiple of {name} ({divisor})")
        if self.ttt_chunk_size < 0:
            raise ValueError(f"FSMConfig.ttt_chunk_size must be >= 0 (0 = no chunking), got {self.ttt_chunk_size}")
        if self.apply_before_update and self.ttt_schedule == "update_then_apply":
            raise ValueError(
                "FSMConfig.apply_before_update=True has no effect with ttt_schedule='update_then_apply' "
                "(no token is both updated on and applied to in one step); use ttt_schedule='interleaved'."
            )
        if self.max_frames < 2:
            raise ValueError(f"FSMConfig.max_frames must be >= 2, got {self.max_frames}")
        if not self.ttt_fast_weight_init_scale > 0:
            raise ValueError(f"FSMConfig.ttt_fast_weight_init_scale must be > 0, got {self.ttt_fast_weight_init_scale}")
        for name in ("elastic_alpha", "elastic_beta"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"FSMConfig.{name} must lie in [0, 1], got {value}")

    @property
    def num_input_channels(self) -> int:
        """Channels per pixel: pose features, rgb, and the optional time channel."""
        return 3 * len(self.pose_features) + 3 + (1 if self.use_time else 0)

    @property
    def memory_signature(self) -> Dict[str, object]:
        """The fields a stored spatial memory depends on (used to refuse a memory from another model)."""
        keys = (
            "hidden_size", "num_hidden_layers", "patch_size", "pose_features", "use_time", "max_frames",
            "attention_head_dim", "cross_view_mixer", "ttt_head_dim", "ttt_inter_multi", "head_type",
        )  # fmt: skip
        return {k: copy.deepcopy(getattr(self, k)) for k in keys}

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "FSMConfig":
        """Build a config from a named preset (see :data:`PRESETS`), with field overrides."""
        if name not in PRESETS:
            raise ValueError(f"Unknown FSM preset {name!r}; available: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


_LACT_NVS = dict(
    use_time=False, elastic_enabled=False, ttt_chunk_size=0, max_frames=256, image_size=256,
)  # fmt: skip

#: The released FSM-LRM architecture (fsm_4dlrm_patch8_res256): LRM pose features, depth in [0, 100],
#: temporal pruning at 0.05, white background (the LRM-only fields keep their FSMGaussianConfig defaults).
_LRM = dict(head_type="gaussian", pose_features=["nearest_pts", "ray_d"])

#: Named architectures: the released checkpoints and a tiny test model.
PRESETS: Dict[str, dict] = {
    # FSM release (github Mars-tin/fast-spatial-mem, Hub marstin/fast-spatial-mem)
    "fsm-4d-lvsm": dict(),
    "fsm-4d-lvsm-res128": dict(image_size=128, max_frames=128, ttt_chunk_size=2048),
    "fsm-3d-lvsm": dict(use_time=False),
    # FSM-LRM (4D Gaussian head): build with FSMGaussianConfig.from_preset (fsm_hf.modeling_fsm_gaussian).
    "fsm-4d-lrm": dict(_LRM),
    "fsm-4d-lrm-multilen": dict(_LRM),
    "fsm-4d-lrm-static": dict(_LRM),
    "fsm-4d-lrm-res128": dict(_LRM, image_size=128, max_frames=128, ttt_chunk_size=2048),
    # LaCT NVS (github a1600012888/LaCT, Hub airsplay/lact_nvs): no time channel, no elastic prior, one chunk
    "lact-nvs-l14-ttt2x": dict(_LACT_NVS, num_hidden_layers=14, ttt_inter_multi=2),
    "lact-nvs-l24-ttt2x": dict(_LACT_NVS, num_hidden_layers=24, ttt_inter_multi=2),
    "lact-nvs-l24-ttt4x": dict(_LACT_NVS, num_hidden_layers=24, ttt_inter_multi=4),
    # The oracle fixtures' architecture: a few seconds on a CPU.
    "tiny": dict(
        hidden_size=64, num_hidden_layers=2, patch_size=8, image_size=32, max_frames=64,
        attention_head_dim=16, ttt_head_dim=32, ttt_chunk_size=32,
    ),  # fmt: skip
    # The LRM oracle fixture's architecture (FSMGaussianConfig.from_preset("tiny-lrm")).
    "tiny-lrm": dict(
        _LRM, hidden_size=64, num_hidden_layers=2, patch_size=8, image_size=32, max_frames=64,
        attention_head_dim=16, ttt_head_dim=32, ttt_chunk_size=16,
    ),  # fmt: skip
}
