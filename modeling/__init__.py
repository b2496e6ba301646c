"""Pure-PyTorch building blocks of Fast Spatial Memory (no Hugging Face imports here)."""

from .blocks import BackboneOutput, FSMBackbone, FSMBlock, FSMMLP, LVSMHead, ViewSelfAttention
from .lacet import (
    ANCHOR_POLICIES,
    ELASTIC_ESTIMATORS,
    SCHEDULES,
    ElasticSettings,
    ElasticState,
    FastWeights,
    LaCETLayer,
    TTTOperation,
    fast_weight_apply,
    lacet_scan,
    newton_schulz,
)
from .rays import POSE_FEATURES, compute_rays, frame_index_to_time, pose_features
from .tokenizer import FSMPatchEmbeddings, build_posed_pixels, patchify, unpatchify

__all__ = [
    "ANCHOR_POLICIES",
    "ELASTIC_ESTIMATORS",
    "POSE_FEATURES",
    "SCHEDULES",
    "BackboneOutput",
    "ElasticSettings",
    "ElasticState",
    "FSMBackbone",
    "FSMBlock",
    "FSMMLP",
    "FSMPatchEmbeddings",
    "FastWeights",
    "LVSMHead",
    "LaCETLayer",
    "TTTOperation",
    "ViewSelfAttention",
    "build_posed_pixels",
    "compute_rays",
    "fast_weight_apply",
    "frame_index_to_time",
    "lacet_scan",
    "newton_schulz",
    "patchify",
    "pose_features",
    "unpatchify",
]
from .rasterization import rasterization  # noqa: E402  (gsplat on CUDA, exact torch compositor elsewhere)

__all__.append("rasterization")
