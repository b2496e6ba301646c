"""Finetuning (``accelerate launch finetune.py``) and the evaluation protocol.

Light to import: Accelerate, the datasets and the metrics load inside the functions that use them.

* :func:`main` / :func:`train` with :class:`TrainingConfig` (``fsm_hf.training.trainer``).
* :func:`evaluate`: per-image PSNR / SSIM / LPIPS on fixed input/target splits, JSON + CSV
  (``fsm_hf.training.evaluation``); :func:`plot_scaling`: metrics vs number of input views as PNG
  (``fsm_hf.training.plots``).
"""

from __future__ import annotations

import importlib
from typing import Optional, Sequence

from .config import TrainingConfig, load_config

_LAZY = {
    "train": "trainer",
    "load_model": "trainer",
    "latest_checkpoint": "trainer",
    "save_checkpoint": "trainer",
    "evaluate": "evaluation",
    "EvaluationSetting": "evaluation",
    "plot_scaling": "plots",
    "FSMTrainingDataset": "data",
    "parse_data_spec": "data",
    "FSMLoss": "losses",
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``finetune.py``'s entry point (see :func:`fsm_hf.training.trainer.main`)."""
    from .trainer import main as _main

    return _main(argv)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TrainingConfig", "load_config", "main", *_LAZY]
