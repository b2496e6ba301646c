"""Map official FSM (and LaCT NVS) checkpoints and YAML configs onto fsm-hf models.

Every source key is mapped by an explicit rule (one rule per key family); unknown keys, missing
keys and shape mismatches fail with a message that names each key.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from fsm_hf.configuration_fsm import FSMConfig

#: Wrapper segments added by DDP, torch.compile and activation checkpointing.
WRAPPER_SEGMENTS = ("module", "_orig_mod", "_checkpoint_wrapped_module")

#: Source keys that belong to training only (loss networks), dropped and listed.
DROPPED_PREFIXES = ("loss_mgr.", "lpips_loss_module.", "perceptual_loss_module.")

#: Official ``ewc_mode`` names -> our ``elastic_estimator``.
OFFICIAL_ESTIMATORS = {"abs": "mas", "sq": "ewc", "si": "si"}
EWC_BUFFER_NAMES = {"w0_star": "anchor_w0", "w1_star": "anchor_w1", "w2_star": "anchor_w2",
                    "F0": "importance_w0", "F1": "importance_w1", "F2": "importance_w2"}  # fmt: skip

_ATTN, _TTT, _MLP = 0, 1, 2
_BLOCK_RULES = {
    # (sub-module index, official suffix) -> our suffix under fsm.backbone.layers.{i}.
    (_ATTN, "ln.weight"): "attention_norm.weight",
    (_ATTN, "f.to_qkv.weight"): "attention.to_qkv.weight",
    (_ATTN, "f.c_proj.weight"): "attention.c_proj.weight",
    (_ATTN, "f.q_norm.weight"): "attention.q_norm.weight",
    (_ATTN, "f.k_norm.weight"): "attention.k_norm.weight",
    (_TTT, "ln.weight"): "lacet_norm.weight",
    (_TTT, "f.to_qkv.weight"): "lacet.to_qkv.weight",
    (_TTT, "f.c_proj.weight"): "lacet.c_proj.weight",
    (_TTT, "f.lr_fc.weight"): "lacet.lr_fc.weight",
    (_TTT, "f.lr_fc.bias"): "lacet.lr_fc.bias",
    (_TTT, "f.o_norm.weight"): "lacet.o_norm.weight",
    (_TTT, "f.w0"): "lacet.w0",
    (_TTT, "f.w1"): "lacet.w1",
    (_TTT, "f.w2"): "lacet.w2",
    (_MLP, "ln.weight"): "mlp_norm.weight",
    (_MLP, "f.c_fc.weight"): "mlp.c_fc.weight",
    (_MLP, "f.c_proj.weight"): "mlp.c_proj.weight",
}
_TOP_RULES = {
    "input_linear.weight": "fsm.embeddings.linear.weight",
    "input_layernorm.weight": "fsm.embeddings.layernorm.weight",
    "image_token_decoder.0.weight": "head.layernorm.weight",
    "image_token_decoder.1.weight": "head.linear.weight",
}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.module_list\.(\d+)\.(.+)$")
_FAST_BLOCK_NAME = re.compile(r"^blocks\.(\d+)\.module_list\.1\.f$")


class ConversionError(ValueError):
    """A checkpoint or config that cannot be converted faithfully."""


def strip_wrappers(key: str) -> str:
    """Remove DDP / compile / checkpoint-wrapper segments wherever they appear in a dotted key."""
    return ".".join(seg for seg in key.split(".") if seg not in WRAPPER_SEGMENTS)


def official_anchor_policy(name: str) -> str:
    """Map an official ``ewc_anchor_policy`` string by the official substring rule.

    The official code computes ``mode = 1 if "streaming" in name else 0`` and doubles it when
    ``"ema" in name``: so ``"ema"`` alone behaves as ``global`` and ``-online`` is ignored.
    """
    mode = 1 if "streaming" in name else 0
    if "ema" in name:
        mode *= 2
    ours = ("global", "streaming", "streaming-ema")[mode]
    if name != ours:
        warnings.warn(
            f"official ewc_anchor_policy {name!r} behaves as {ours!r} in the official code; converted to {ours!r}.",
            stacklevel=2,
        )
    return ours


def config_from_official_yaml(official: Mapping[str, Any], **overrides) -> FSMConfig:
    """Build an :class:`FSMConfig` from the official training/inference YAML (as a dict)."""
    model = official.get("model", official)
    training = official.get("training", {}) or {}
    blocks = model.get("block_config")
    kinds = [str(b.get("type", "")).rsplit(".", 1)[-1] for b in blocks] if blocks else []
    if kinds != ["SelfAttention", "FastWeightGluMLPMultihead", "MLP"]:
        raise ConversionError(
            "Only block_config = [SelfAttention, FastWeightGluMLPMultihead, MLP] (the released layout) is "
            f"supported, got {kinds or blocks!r}."
        )
    attn, ttt, mlp = (b.get("params", {}) for b in blocks)
    class_name = str(model.get("class_name", ""))
    is_3d = "3dlvsm" in class_name.lower() or "LaCTLVSM" in class_name
    is_lrm = "lrm" in class_name.lower()
    image_size = (model.get("image_tokenizer") or {}).get("image_size", 256)
    fields: Dict[str, Any] = dict(
        hidden_size=int(model["dim"]),
        num_hidden_layers=int(model.get("num_layers", model.get("layers", 0))),
        patch_size=int(model["patch_size"]),
        image_size=int(image_size if isinstance(image_size, int) else image_size[0]),
        pose_features=list(model.get("plucker_repr", ["ray_o", "ray_d", "o_cross_d"])),
        use_time=not is_3d,
        max_frames=int(model.get("max_frames", 256)),
        attention_head_dim=int(attn.get("head_dim", 64)),
        use_qk_norm=bool(attn.get("use_qk_norm", True)),
        mlp_ratio=mlp.get("inter_multi", 4),
        ttt_head_dim=int(ttt["head_dim"]),
        ttt_inter_multi=ttt.get("inter_multi", 1),
        ttt_base_lr=float(ttt.get("base_lr", 0.01)),
        ttt_chunk_size=int(ttt.get("chunk_size", 0) or 0),
        newton_schulz_steps=int(ttt.get("muon_update_steps", 0)),
        head_type="gaussian" if is_lrm else "lvsm",
    )
    if ttt.get("apply_before_update"):
        raise ConversionError("apply_before_update=True is not used by any released FSM model and is not supported here.")
    enabled = bool(training.get("ewc_enable", False))
    fields["elastic_enabled"] = enabled
    mode = str(training.get("ewc_mode", "sq"))
    if mode in OFFICIAL_ESTIMATORS:
        fields["elastic_estimator"] = OFFICIAL_ESTIMATORS[mode]
    elif enabled:
        raise ConversionError(f"Unknown official ewc_mode {mode!r}; expected one of {list(OFFICIAL_ESTIMATORS)}.")
    fields["elastic_anchor_policy"] = official_anchor_policy(str(training.get("ewc_anchor_policy", "global"))) if enabled else "streaming-ema"
    fields["elastic_alpha"] = float(training.get("ewc_alpha", 0.95))
    fields["elastic_beta"] = float(training.get("ewc_anchor_beta", 0.0)) if "ema" in str(training.get("ewc_anchor_policy", "")) else 0.5
    fields["elastic_lambda"] = float(training.get("ewc_lambda_prox", 0.0))
    fields["elastic_state"] = "threaded"
    if is_lrm:
        fields.update(lrm_fields_from_official_yaml(model))
        fields.update(overrides)
        from fsm_hf.modeling_fsm_gaussian import FSMGaussianConfig

        return FSMGaussianConfig(**fields)
    fields.update(overrides)
    return FSMConfig(**fields)


#: ``model.*`` keys of the official LRM YAML that its code never reads (it reads ``model.gaussians.*``
#: for these instead, with the defaults below).
_LRM_IGNORED_MODEL_KEYS = ("near_plane", "far_plane", "depth_scale", "temporal_bias")
#: (official ``model.gaussians.<key>``, our field, official default): exactly what ``FSM4DLRM`` reads.
_LRM_GAUSSIAN_KEYS = (
    ("near_plane", "near_plane", 0.0),
    ("far_plane", "far_plane", 100.0),
    ("depth_scale", "depth_scale", 1.0),
    ("opacity_bias", "opacity_bias", 0.0),
    ("scaling_bias", "scaling_bias", 0.0),
    ("temporal_scaling_bias", "temporal_scaling_bias", 0.0),
    ("scaling_clip", "scaling_clip", 10.0),
    ("temporal_scaling_clip", "temporal_scaling_clip", 0.0),
    ("scaling_modifier", "scaling_modifier", 1.0),
)


def lrm_fields_from_official_yaml(model: Mapping[str, Any]) -> Dict[str, Any]:
    """The :class:`~fsm_hf.FSMGaussianConfig` fields of an official FSM-LRM ``model`` section.

    What the official code *uses* wins over what the YAML seems to say: the depth range, depth
    scale, biases, clips and scaling modifier come from ``model.gaussians.*`` (defaults 0, 100, 1,
    0, 0, 0, 10, 0, 1); ``model.near_plane`` / ``far_plane`` / ``depth_scale`` are never read, and
    we warn when they differ from what is used. ``depth_preact_bias``, ``hard_pixelalign``,
    ``hard_tempalign``, ``clip_xyz`` and ``t_threshold`` are read from ``model.*``.
    """
    gaussians = model.get("gaussians", {}) or {}
    if model.get("add_target_views", False):
        raise ConversionError("model.add_target_views=True (LVSM-style targets in an LRM) is not supported.")
    if model.get("init_from_gslrm", False):
        raise ConversionError("model.init_from_gslrm=True (GS-LRM channel order) is not supported.")
    if int(gaussians.get("n_gaussians", 0) or 0) != 0:
        raise ConversionError("model.gaussians.n_gaussians > 0 (free Gaussians) is not supported (nor by the official code).")
    fields: Dict[str, Any] = {ours: float(gaussians.get(key, default)) for key, ours, default in _LRM_GAUSSIAN_KEYS}
    for key in _LRM_IGNORED_MODEL_KEYS:
        if key in model and key in fields and float(model[key]) != fields[key]:
            warnings.warn(
                f"official model.{key}={model[key]} is not read by the official FSM-LRM code (it uses "
                f"model.gaussians.{key}={fields[key]}); converted with {fields[key]}.",
                stacklevel=3,
            )
    fields.update(
        sh_degree=int(gaussians.get("sh_degree", 0)),
        depth_bias=float(model.get("depth_preact_bias", 0.0)),
        hard_pixelalign=bool(model.get("hard_pixelalign", False)),
        hard_tempalign=bool(model.get("hard_tempalign", False)),
        clip_xyz=bool(model.get("clip_xyz", False)),
        temporal_threshold=float(model.get("t_threshold", 0.05)),
        add_virtual_views=bool(model.get("add_virtual_views", True)),
    )
    return fields


def split_checkpoint(checkpoint: Mapping[str, Any]) -> Tuple[Dict[str, torch.Tensor], Optional[Dict[str, Dict[str, torch.Tensor]]], List[str]]:
    """Return ``(model state dict, ewc_buffers or None, names of dropped top-level entries)``."""
    if "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        state = dict(checkpoint["model"])
        ewc = checkpoint.get("ewc_buffers")
        dropped = [k for k in checkpoint if k not in ("model", "ewc_buffers", "format_version")]
    else:
        state, ewc, dropped = dict(checkpoint), None, []
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"Not a state dict: entries {bad[:5]} are not tensors.")
    return state, ewc, dropped


def map_official_state_dict(
    state: Mapping[str, torch.Tensor], ewc_buffers: Optional[Mapping[str, Mapping[str, torch.Tensor]]] = None
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename official keys to ours. Returns ``(mapped, dropped source keys)``; raises on unknown keys."""
    mapped: Dict[str, torch.Tensor] = {}
    dropped, unknown = [], []
    for raw_key, tensor in state.items():
        key = strip_wrappers(raw_key)
        if key.startswith(DROPPED_PREFIXES):
            dropped.append(raw_key)
            continue
        target = _TOP_RULES.get(key)
        match = _BLOCK_KEY.match(key)
        if target is None and match:
            layer, sub, suffix = int(match.group(1)), int(match.group(2)), match.group(3)
            rule = _BLOCK_RULES.get((sub, suffix))
            target = f"fsm.backbone.layers.{layer}.{rule}" if rule else None
        if target is None:
            unknown.append(raw_key)
            continue
        if target in mapped:
            raise ConversionError(f"Two source keys map to {target!r} (one of them is {raw_key!r}).")
        mapped[target] = tensor
    if unknown:
        raise ConversionError(f"Unknown key(s) in the official state dict: {unknown}")
    for raw_name, buffers in (ewc_buffers or {}).items():
        name = strip_wrappers(raw_name)
        match = _FAST_BLOCK_NAME.match(name)
        if not match:
            raise ConversionError(f"ewc_buffers entry {raw_name!r} does not name a fast-weight block (blocks.N.module_list.1.f).")
        for buf_name, tensor in buffers.items():
            if buf_name not in EWC_BUFFER_NAMES:
                raise ConversionError(f"ewc_buffers[{raw_name!r}] has unknown entry {buf_name!r}; expected {list(EWC_BUFFER_NAMES)}.")
            mapped[f"fsm.backbone.layers.{match.group(1)}.lacet.{EWC_BUFFER_NAMES[buf_name]}"] = tensor.float()
    return mapped, dropped


def infer_config_from_state_dict(state: Mapping[str, torch.Tensor], preset: Optional[str] = None, **overrides) -> Tuple[FSMConfig, Dict[str, Any]]:
    """Infer the architecture from tensor shapes (layers, width, heads, inter_multi, patch, channels).

    Defaults that shapes cannot reveal (max_frames, elastic settings, chunk size, Newton–Schulz
    steps) come from ``preset`` (default: the matching released model). Returns ``(config, inferred fields)``.
    """
    keys = {strip_wrappers(k): v for k, v in state.items()}
    try:
        embed = keys["input_linear.weight"]
        w0 = keys["blocks.0.module_list.1.f.w0"]
        decoder = keys.get("image_token_decoder.1.weight")
        q_norm = keys["blocks.0.module_list.0.f.q_norm.weight"]
        c_fc = keys["blocks.0.module_list.2.f.c_fc.weight"]
    except KeyError as err:
        raise ConversionError(f"Cannot infer the architecture: key {err} is missing (is this an FSM/LaCT checkpoint?).") from None
    hidden = embed.shape[0]
    layers = 1 + max(int(m.group(1)) for m in map(_BLOCK_KEY.match, keys) if m)
    heads, ttt_head_dim, inner = w0.shape
    inferred: Dict[str, Any] = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        ttt_head_dim=ttt_head_dim,
        ttt_inter_multi=inner // ttt_head_dim if inner % ttt_head_dim == 0 else inner / ttt_head_dim,
        attention_head_dim=q_norm.shape[0],
        mlp_ratio=c_fc.shape[0] // hidden,
    )
    if decoder is None:
        raise ConversionError("No `image_token_decoder.1.weight`: not an LVSM/LRM checkpoint; pass the official --config.")
    head, patch, lrm_fields = _infer_head(decoder.shape[0], embed.shape[1])
    inferred["patch_size"] = patch
    inferred.update(lrm_fields)
    in_channels = embed.shape[1] // (patch * patch)
    if in_channels * patch * patch != embed.shape[1]:
        raise ConversionError(f"input_linear width {embed.shape[1]} is not channels x patch^2 for patch {patch}.")
    # LVSM: ray_o, ray_d, o_cross_d + rgb (12); LRM: nearest_pts, ray_d + rgb (9); + 1 time channel.
    no_time = 9 if head == "gaussian" else 12
    if in_channels == no_time + 1:
        inferred["use_time"] = True
    elif in_channels == no_time:
        inferred["use_time"] = False
    else:
        raise ConversionError(
            f"Unsupported number of input channels per pixel: {in_channels} (expected {no_time} or {no_time + 1})."
        )
    config_class = FSMConfig
    if head == "gaussian":
        from fsm_hf.modeling_fsm_gaussian import FSMGaussianConfig

        config_class = FSMGaussianConfig
        preset = preset or "fsm-4d-lrm"
    if preset is None:
        preset = "fsm-4d-lvsm" if inferred["use_time"] else "fsm-3d-lvsm"
    base = config_class.from_preset(preset)
    fields = {**base.to_dict(), **inferred, "head_type": head, **overrides}
    for drop in ("model_type", "transformers_version", "architectures"):
        fields.pop(drop, None)
    return config_class(**fields), inferred


def _infer_head(decoder_rows: int, embed_cols: int) -> Tuple[str, int, Dict[str, Any]]:
    """``(head_type, patch_size, LRM fields)`` from the decoder's output width.

    LVSM decodes ``3 p^2`` values per token; LRM ``C p^2`` with ``C = 17 + 3K`` (``16 + 3K`` with
    ``hard_tempalign``) for ``K = (sh_degree + 1)^2``: the candidates never collide for one ``p``.
    """
    candidates = [("lvsm", 3, {})]
    for degree in range(4):
        k = (degree + 1) ** 2
        candidates.append(("gaussian", 17 + 3 * k, dict(sh_degree=degree, hard_tempalign=False)))
        candidates.append(("gaussian", 16 + 3 * k, dict(sh_degree=degree, hard_tempalign=True)))
    for head, channels, extra in candidates:
        if decoder_rows % channels:
            continue
        patch = int(round((decoder_rows // channels) ** 0.5))
        if patch * patch * channels == decoder_rows and embed_cols % (patch * patch) == 0:
            return head, patch, extra
    raise ConversionError(f"Cannot infer the head from image_token_decoder.1.weight with {decoder_rows} rows.")


def convert_official(checkpoint: Mapping[str, Any], config: Optional[Mapping[str, Any]] = None, **config_overrides):
    """Build an fsm-hf model from an official FSM checkpoint.

    Args:
        checkpoint: the official dict (``{"model": state_dict, "ewc_buffers": {...}, ...}``) or a
            bare state dict. Optimiser/scheduler state and loss-network weights are ignored.
        config: the official YAML as a dict; ``None`` infers the architecture from tensor shapes.
        **config_overrides: :class:`FSMConfig` fields to override (e.g. ``newton_schulz_dtype``).

    Returns:
        An ``FSMForNovelViewSynthesis`` (LVSM) or ``FSMForGaussianReconstruction`` (LRM, 4D
        Gaussian head) in eval mode whose outputs equal the official model's.
    """
    state, ewc, _ = split_checkpoint(checkpoint)
    if config is None:
        cfg, _ = infer_config_from_state_dict(state, **config_overrides)
    else:
        cfg = config_from_official_yaml(config, **config_overrides)
    mapped, _ = map_official_state_dict(state, ewc)
    return build_model(model_class_for(cfg), cfg, mapped)


def model_class_for(config: FSMConfig):
    """The fsm-hf model class of a config: LVSM (pixels) or LRM (4D Gaussians)."""
    if config.head_type == "gaussian":
        from fsm_hf.modeling_fsm_gaussian import FSMForGaussianReconstruction

        return FSMForGaussianReconstruction
    from fsm_hf.modeling_fsm import FSMForNovelViewSynthesis

    return FSMForNovelViewSynthesis


def build_model(model_class, config: FSMConfig, mapped: Dict[str, torch.Tensor]):
    """Instantiate ``model_class`` without a random init and load ``mapped`` strictly.

    Missing elastic buffers are built from the loaded fast-weight initial values. Every other
    missing or unexpected key, and every shape mismatch, raises :class:`ConversionError`.
    """
    with torch.device("meta"):
        model = model_class(config)
    expected = model.state_dict()
    for key, value in list(expected.items()):
        if key in mapped:
            continue
        match = re.match(r"^(.*\.lacet)\.(anchor|importance)_(w[012])$", key)
        if match and f"{match.group(1)}.{match.group(3)}" in mapped:
            weight = mapped[f"{match.group(1)}.{match.group(3)}"]
            mapped[key] = weight.detach().float().clone() if match.group(2) == "anchor" else torch.full(
                weight.shape, config.elastic_initial_importance, dtype=torch.float32
            )
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    mismatched = [f"{k}: checkpoint {tuple(mapped[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in expected if k in mapped and mapped[k].shape != expected[k].shape]  # fmt: skip
    problems = []
    if missing:
        problems.append(f"missing keys: {missing}")
    if unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    if mismatched:
        problems.append(f"shape mismatches: {mismatched}")
    if problems:
        raise ConversionError("The checkpoint does not match the configuration; " + "; ".join(problems))
    model.load_state_dict({k: v.to(expected[k].dtype).contiguous() for k, v in mapped.items()}, strict=True, assign=True)
    return model.eval()


# --------------------------------------------------------------------------------------------
# The way back: our model -> the official checkpoint format.

_OUR_TOP = {ours: official for official, ours in _TOP_RULES.items()}
_OUR_BLOCK = {ours: (sub, suffix) for (sub, suffix), ours in _BLOCK_RULES.items()}
_OUR_LAYER_KEY = re.compile(r"^fsm\.backbone\.layers\.(\d+)\.(.+)$")
_OUR_EWC = {ours: official for official, ours in EWC_BUFFER_NAMES.items()}
_OFFICIAL_ESTIMATOR_NAMES = {ours: official for official, ours in OFFICIAL_ESTIMATORS.items()}


def to_official_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """Our state dict -> ``{"model": official state dict, "ewc_buffers": {...}, "format_version": 2}``.

    The inverse of :func:`map_official_state_dict` (same rule tables), so official -> ours ->
    official is bit-identical over the model tensors and every ``ewc_buffers`` tensor.
    """
    model: Dict[str, torch.Tensor] = {}
    ewc: Dict[str, Dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        if key in _OUR_TOP:
            model[_OUR_TOP[key]] = tensor
            continue
        match = _OUR_LAYER_KEY.match(key)
        if not match:
            raise ConversionError(f"No official equivalent for key {key!r}.")
        layer, suffix = match.group(1), match.group(2)
        buffer = suffix[len("lacet."):] if suffix.startswith("lacet.") else None
        if buffer in _OUR_EWC:
            ewc.setdefault(f"blocks.{layer}.module_list.1.f", {})[_OUR_EWC[buffer]] = tensor
        elif suffix in _OUR_BLOCK:
            sub, official_suffix = _OUR_BLOCK[suffix]
            model[f"blocks.{layer}.module_list.{sub}.{official_suffix}"] = tensor
        else:
            raise ConversionError(f"No official equivalent for key {key!r}.")
    return {"model": model, "ewc_buffers": ewc, "format_version": 2}


def official_yaml_from_config(config: FSMConfig) -> Dict[str, Any]:
    """Our config -> the official YAML layout (the fields the official model and EWC code read)."""
    if config.head_type != "lvsm":
        raise ConversionError("Exporting Gaussian (LRM) models to the official format is not supported.")
    params_ttt = dict(head_dim=config.ttt_head_dim, inter_multi=config.ttt_inter_multi, base_lr=config.ttt_base_lr,
                      muon_update_steps=config.newton_schulz_steps, chunk_size=config.ttt_chunk_size)  # fmt: skip
    class_name = "fsm.model.model_4dlvsm.FSM4DLVSM" if config.use_time else "fsm.model.model_3dlvsm.FSM3DLVSM"
    return {
        "model": {
            "class_name": class_name,
            "patch_size": config.patch_size,
            "dim": config.hidden_size,
            "num_layers": config.num_hidden_layers,
            "max_frames": config.max_frames,
            "plucker_repr": list(config.pose_features),
            "image_tokenizer": {"image_size": config.image_size},
            "block_config": [
                {"type": "fsm.model.model_blocks.SelfAttention", "length_dim": "l",
                 "params": {"head_dim": config.attention_head_dim, "use_qk_norm": config.use_qk_norm}},
                {"type": "fsm.model.model_lacet.FastWeightGluMLPMultihead", "length_dim": "vl", "params": params_ttt},
                {"type": "fsm.model.model_blocks.MLP", "length_dim": "vl", "params": {"inter_multi": config.mlp_ratio}},
            ],  # fmt: skip
        },
        "training": {
            "ewc_enable": config.elastic_enabled,
            "ewc_mode": _OFFICIAL_ESTIMATOR_NAMES[config.elastic_estimator],
            "ewc_anchor_policy": config.elastic_anchor_policy,
            "ewc_alpha": config.elastic_alpha,
            "ewc_anchor_beta": config.elastic_beta,
            "ewc_lambda_prox": config.elastic_lambda,
        },
    }
