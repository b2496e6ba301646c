"""Run the official FSM implementation next to ours, for benchmarks only (never imported by the package).

The official code (github Mars-tin/fast-spatial-mem) is *imported from a checkout the user points
to* (``--reference PATH``); nothing of it is copied here. Importing it needs three stubs, the ones
the oracle fixtures were made with (``../shared/oracle/*.json``, field ``shims``):

* ``scipy`` / ``scipy.io`` and ``pytorch_msssim`` (imported at top level by its training losses,
  never constructed at inference) — stubbed only while the official modules are imported, and only
  when absent;
* ``fsm.model.diff_gaussian_rasterization`` (JIT-compiles a CUDA extension at import; only the LRM
  path needs it) — replaced by a module whose rasterizer raises;
* its ``@torch.compile`` functions run eagerly (the oracle ran with ``TORCHDYNAMO_DISABLE=1``): we
  rebind the module globals to the undecorated functions, so our own optional ``torch.compile``
  keeps working in the same process.

``transformers`` is only imported by the official ``utils_train.py``, which we do not import: the
per-forward ``info`` dict (elastic buffers of the first fast block, expanded per sample) is built
here from the documented calling convention.

Like with like: :func:`official_newton_schulz_dtype` switches the official Newton–Schulz between its
own bf16 code and an fp32 variant (our :func:`modeling.lacet.newton_schulz` in fp32, which performs
the same operations as the official function with ``X = G.float()``, the change the oracle's fp32
companion files were made with).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import math
import os
import sys
import types
from pathlib import Path
from typing import Dict, Optional

import torch

from modeling.lacet import newton_schulz
from modeling.rays import frame_index_to_time

#: The released FSM-LVSM architecture as the official inference YAML states it (fields we use).
RELEASED_LVSM_YAML = {
    "inference": True,
    "model": {
        "class_name": "fsm.model.model_4dlvsm.FSM4DLVSM",
        "patch_size": 8,
        "dim": 768,
        "num_layers": 24,
        "max_frames": 256,
        "plucker_repr": ["ray_o", "ray_d", "o_cross_d"],
        "image_tokenizer": {"image_size": 256},
        "block_config": [
            {"type": "fsm.model.model_blocks.SelfAttention", "length_dim": "l", "params": {"head_dim": 64, "use_qk_norm": True}},
            {
                "type": "fsm.model.model_lacet.FastWeightGluMLPMultihead",
                "length_dim": "vl",
                "params": {"head_dim": 768, "inter_multi": 2, "base_lr": 0.01, "muon_update_steps": 5, "chunk_size": 8192},
            },
            {"type": "fsm.model.model_blocks.MLP", "length_dim": "vl", "params": {"inter_multi": 4}},
        ],
    },
    "training": {
        "use_hop": True, "use_amp": False, "use_tf32": False, "torch_compile": False, "actckpt": False,
        "bs_per_gpu": 1, "num_input_views": 32, "num_target_views": 8, "num_all_views": 40,
        "l2_loss_weight": 1.0, "lpips_loss_weight": 0.0, "perceptual_loss_weight": 0.0, "ssim_loss_weight": 0.0,
        "pixelalign_loss_weight": 0.0, "pointsdist_loss_weight": 0.0,
        "ewc_enable": True, "ewc_lambda_prox": 0.5, "ewc_alpha": 0.5, "ewc_mode": "si",
        "ewc_anchor_policy": "streaming-ema", "ewc_anchor_beta": 0.5, "ewc_loss_weight": 0.0,
    },
}  # fmt: skip

_OFFICIAL_MODES = {"abs": 0, "sq": 1, "si": 2}


def released_yaml(
    num_layers: int = 24, dim: int = 768, ttt_head_dim: Optional[int] = None, chunk_size: int = 8192, image_size: int = 256
) -> dict:
    """The released LVSM YAML with a few fields changed (smaller models for CPU runs)."""
    cfg = copy.deepcopy(RELEASED_LVSM_YAML)
    model = cfg["model"]
    model.update(num_layers=num_layers, dim=dim, image_tokenizer={"image_size": image_size})
    ttt = model["block_config"][1]["params"]
    ttt.update(head_dim=ttt_head_dim or dim, chunk_size=chunk_size)
    return cfg


def _unavailable(name: str):
    class Unavailable:
        def __init__(self, *args, **kwargs):
            raise RuntimeError(f"{name} is stubbed out in benchmarks/reference.py (training losses only)")

    return Unavailable


class OfficialFSM:
    """The official package loaded from a checkout: ``import_module`` access plus the stubs above."""

    def __init__(self, path: str):
        root = Path(path).resolve()
        if not (root / "fsm" / "model" / "model_lacet.py").is_file():
            raise FileNotFoundError(f"{root} is not a checkout of Mars-tin/fast-spatial-mem (no fsm/model/model_lacet.py)")
        self.root = root
        os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
        sys.dont_write_bytecode = True  # keep the official checkout pristine
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        with self._import_stubs():
            self.lacet = importlib.import_module("fsm.model.model_lacet")
            self.lvsm4d = importlib.import_module("fsm.model.model_4dlvsm")
            importlib.import_module("fsm.model.model_blocks")
        self._unwrap_compiled(self.lacet)
        self._bf16_newton_schulz = self.lacet.zeropower_via_newtonschulz5

    @staticmethod
    @contextlib.contextmanager
    def _import_stubs():
        added = []
        for names, attrs in ((("scipy", "scipy.io"), ()), (("pytorch_msssim",), ("SSIM", "MS_SSIM"))):
            try:
                importlib.import_module(names[-1])
            except ImportError:
                for name in names:
                    stub = types.ModuleType(name)
                    for attr in attrs:
                        setattr(stub, attr, _unavailable(f"{name}.{attr}"))
                    sys.modules[name] = stub
                    added.append(name)
        raster = types.ModuleType("fsm.model.diff_gaussian_rasterization")

        class _NoRasterizer:
            def __init__(self, *args, **kwargs):
                raise RuntimeError("the CUDA Gaussian rasterizer is stubbed out in benchmarks/reference.py")

        raster.GaussianRasterizer = raster.GaussianRasterizationSettings = _NoRasterizer
        sys.modules.setdefault("fsm.model.diff_gaussian_rasterization", raster)
        try:
            yield
        finally:
            for name in added:
                sys.modules.pop(name, None)

    @staticmethod
    def _unwrap_compiled(module) -> None:
        """Rebind ``@torch.compile``-decorated module functions to the undecorated originals (eager)."""
        for name, value in list(vars(module).items()):
            original = getattr(value, "_torchdynamo_orig_callable", None)
            if original is not None:
                setattr(module, name, original)

    # ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def newton_schulz_dtype(self, dtype: str):
        """``"bfloat16"``: the official function as released; ``"float32"``: the same iteration in fp32."""
        if dtype == "bfloat16":
            replacement = self._bf16_newton_schulz
        elif dtype == "float32":
            replacement = lambda g, steps: newton_schulz(g, steps, torch.float32)  # noqa: E731
        else:
            raise ValueError(dtype)
        previous = self.lacet.zeropower_via_newtonschulz5
        self.lacet.zeropower_via_newtonschulz5 = replacement
        try:
            yield
        finally:
            self.lacet.zeropower_via_newtonschulz5 = previous

    def build_model(self, yaml_dict: dict, seed: int = 0) -> torch.nn.Module:
        """The official ``FSM4DLVSM`` with its own random init (seeded), in eval mode."""
        from easydict import EasyDict

        torch.manual_seed(seed)
        model = self.lvsm4d.FSM4DLVSM(EasyDict(copy.deepcopy(yaml_dict)))
        return model.eval()

    def fast_blocks(self, model) -> list:
        cls = self.lacet.FastWeightGluMLPMultihead
        return [(name, m) for name, m in model.named_modules() if isinstance(m, cls)]

    def checkpoint(self, model) -> dict:
        """``{"model": state_dict, "ewc_buffers": ...}``, the buffers made as the official code makes them
        at training start (anchors = fast-weight initial values, importances = 1e-6)."""
        ewc = {}
        for name, blk in self.fast_blocks(model):
            ewc[name] = {f"w{i}_star": getattr(blk, f"w{i}").detach().float().clone() for i in range(3)}
            ewc[name].update({f"F{i}": torch.full_like(ewc[name][f"w{i}_star"], 1e-6) for i in range(3)})
        return {"model": {k: v.detach().clone() for k, v in model.state_dict().items()}, "ewc_buffers": ewc}

    def info(self, model, yaml_dict: dict, checkpoint: dict, batch_size: int) -> dict:
        """The per-forward ``info`` dict of the official inference script: fresh copies of the first fast
        block's elastic buffers (the official forward mutates them in place), expanded per sample."""
        training = yaml_dict.get("training", {})
        info = {
            "ewc_enabled": bool(training.get("ewc_enable", False)),
            "lambda_ewc": float(training.get("ewc_lambda_prox", 0.0)),
            "fisher_alpha": float(training.get("ewc_alpha", 0.95)),
            "fisher_mode": _OFFICIAL_MODES.get(str(training.get("ewc_mode", "sq")), -1),
        }
        if not info["ewc_enabled"]:
            return info
        policy = str(training.get("ewc_anchor_policy", "global"))
        mode = (1 if "streaming" in policy else 0) * (2 if "ema" in policy else 1)
        for _, blk in self.fast_blocks(model):
            blk.anchor_mode = mode
            if "ema" in policy:
                blk.anchor_beta = float(training.get("ewc_anchor_beta", 0.0))
        name0, blk0 = self.fast_blocks(model)[0]
        buf = checkpoint["ewc_buffers"][name0]
        device = blk0.w0.device
        for key, value in buf.items():
            info[key] = torch.repeat_interleave(value, batch_size, dim=0).to(device=device, dtype=torch.float32)
        return info

    def forward(self, model, yaml_dict: dict, checkpoint: dict, inputs: dict) -> torch.Tensor:
        """Official forward on our keyword inputs (``inputs`` holds integer ``*_frame_index`` too)."""
        b = inputs["input_images"].shape[0]
        input_dict = {
            "image": inputs["input_images"],
            "c2w": inputs["input_c2w"],
            "fxfycxcy": inputs["input_fxfycxcy"],
            "frame_time": inputs["input_frame_index"],
        }
        target_dict = {"c2w": inputs["target_c2w"], "fxfycxcy": inputs["target_fxfycxcy"], "frame_time": inputs["target_frame_index"]}
        info = self.info(model, yaml_dict, checkpoint, b)
        images, _ = model(input_dict, target_dict, info=info, skip_loss=True)
        return images


def model_inputs(batch: int, views: int, targets: int, size: int, max_frames: int, device="cpu", seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random posed views: our keyword arguments plus the official integer frame indices."""
    g = torch.Generator().manual_seed(seed)
    n = views + targets
    angles = torch.rand(batch, n, generator=g) * 2 * math.pi
    eye = torch.stack([2 * angles.cos(), torch.full_like(angles, 0.3), 2 * angles.sin()], -1)  # [B, N, 3]
    forward = -eye / eye.norm(dim=-1, keepdim=True)
    right = torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0]).expand_as(forward), dim=-1)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.linalg.cross(forward, right, dim=-1)
    c2w = torch.eye(4).repeat(batch, n, 1, 1)
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = right, down, forward, eye
    fxfycxcy = torch.tensor([size * 1.2, size * 1.2, size / 2, size / 2]).repeat(batch, n, 1)
    frames = torch.randint(0, max_frames, (batch, n), generator=g)
    images = torch.rand(batch, views, 3, size, size, generator=g)
    times = frame_index_to_time(frames, max_frames)
    out = dict(
        input_images=images,
        input_fxfycxcy=fxfycxcy[:, :views],
        input_c2w=c2w[:, :views],
        input_times=times[:, :views],
        target_fxfycxcy=fxfycxcy[:, views:],
        target_c2w=c2w[:, views:],
        target_times=times[:, views:],
        input_frame_index=frames[:, :views],
        target_frame_index=frames[:, views:],
    )
    return {k: v.to(device) for k, v in out.items()}


OURS_KEYS = ("input_images", "input_fxfycxcy", "input_c2w", "input_times", "target_fxfycxcy", "target_c2w", "target_times")


def ours_kwargs(inputs: dict) -> dict:
    return {k: inputs[k] for k in OURS_KEYS}
