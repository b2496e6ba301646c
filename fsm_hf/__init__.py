"""fsm-hf: Fast Spatial Memory (FSM) for the Hugging Face ecosystem.

Importing this package registers the ``fsm`` model type with ``AutoConfig`` and ``AutoModel``.
Heavy optional dependencies (diffusers for the pipeline, gradio, gsplat's CUDA backend) are
imported only when the objects that need them are first used.
"""

from __future__ import annotations

import importlib

from transformers import AutoConfig, AutoModel

from .configuration_fsm import PRESETS, FSMConfig
from .memory import FSMMemory
from .modeling_fsm import (
    FSMForNovelViewSynthesis,
    FSMModel,
    FSMModelOutput,
    FSMNovelViewSynthesisOutput,
    FSMPreTrainedModel,
)

__version__ = "0.1.0"

AutoConfig.register(FSMConfig.model_type, FSMConfig, exist_ok=True)
AutoModel.register(FSMConfig, FSMForNovelViewSynthesis, exist_ok=True)

# --- FSM-LRM (4D Gaussian head) ---------------------------------------------------------------
from .modeling_fsm_gaussian import (  # noqa: E402
    FSMForGaussianReconstruction,
    FSMGaussianConfig,
    FSMGaussianReconstructionOutput,
)

AutoConfig.register(FSMGaussianConfig.model_type, FSMGaussianConfig, exist_ok=True)
AutoModel.register(FSMGaussianConfig, FSMForGaussianReconstruction, exist_ok=True)
_LRM_LAZY = {"export_ply": "ply", "export_ply_4d": "ply", "load_ply_4d": "ply"}

# name -> submodule, imported on first attribute access
_LAZY = {
    "generate_scene": "synthetic",
    "SyntheticScene": "synthetic",
    "psnr": "metrics",
    "ssim": "metrics",
    "Cameras": "cameras",
    "Scene": "scene",
    "load_scene": "scene",
    "FSMPipeline": "pipeline_fsm",
    "FSMPipelineOutput": "pipeline_fsm",
    "export_to_video": "video",
    "generate_model_card": "model_card",
    "push_folder": "hub",
    "push_model_to_hub": "hub",
    "builtin_model_path": "demo",
}
_LAZY.update(_LRM_LAZY)  # FSM-LRM .ply export


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "FSMConfig",
    "FSMForGaussianReconstruction",
    "FSMForNovelViewSynthesis",
    "FSMGaussianConfig",
    "FSMGaussianReconstructionOutput",
    "FSMMemory",
    "FSMModel",
    "FSMModelOutput",
    "FSMNovelViewSynthesisOutput",
    "FSMPreTrainedModel",
    *_LAZY,
]
