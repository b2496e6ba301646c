"""The Accelerate finetuning loop behind ``accelerate launch finetune.py``.

One optimiser step (``step`` counts them, from 0):

1. ``grad_accum_steps`` micro-batches of ``batch_size`` samples per process (gradients synchronised
   on the last one only); forward under bf16 autocast on GPUs; loss = MSE + LPIPS (LPIPS after
   ``l2_warmup_steps``), plus ``mixer_distillation_weight`` x the attention-transfer loss before
   ``mixer_distillation_steps`` when a ``mixer_distillation_teacher`` is given;
2. before ``train_only_steps``, the gradients of parameters not named by ``train_only_parameters``
   are dropped (they stay fixed); then the global gradient norm; from ``grad_clip_warmup_steps`` on, gradients are clipped to
   ``grad_clip_norm`` and the step is skipped when the norm exceeded ``grad_skip_threshold``;
   a non-finite norm always skips the step (the official code only checks after the warm-up);
3. AdamW step (unless skipped), then the scheduler step (also on skipped steps, as officially).

Checkpoints (every ``save_every`` steps and at the end) hold the Accelerate state (model with its
elastic buffers, optimiser, scheduler, per-process RNG) and ``trainer_state.json``; each is
written to a temporary folder and renamed into place when complete, so a crash during a save
leaves the previous checkpoint intact. The data position is a function of the step (see
:class:`~fsm_hf.training.data.ShardedSequentialSampler`), so ``--resume`` continues exactly.
The final model is saved as an ``FSMPipeline`` folder (``output_dir/final``) with the training
config, and optionally pushed to the Hub.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import math
import os
import re
import shutil
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .config import TrainingConfig, build_parser, config_summary, load_config

__all__ = [
    "CHECKPOINT_PREFIX",
    "build_optimizer",
    "build_scheduler",
    "clip_gradients",
    "latest_checkpoint",
    "load_model",
    "main",
    "names_a_local_folder",
    "save_checkpoint",
    "save_final_pipeline",
    "train",
]

CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE = "trainer_state.json"
PIPELINE_SETTINGS = ("resolution", "num_input_views", "time_convention", "max_frames", "max_views_per_batch")


# ----------------------------------------------------------------------------------------------
# Model, optimiser, scheduler
# ----------------------------------------------------------------------------------------------
def names_a_local_folder(name: str) -> bool:
    """Whether ``--model NAME`` that is not a preset means a local folder rather than a Hub id ``owner/name``."""
    return Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") != 1


def check_model_overrides(overrides: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """``overrides`` as a dict, after checking that every key is an ``FSMConfig`` field (a typo such as
    ``elastic_lamda`` would otherwise be stored in the config and change nothing)."""
    from ..configuration_fsm import FSMConfig

    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(FSMConfig().to_dict()))
    if unknown:
        fields = sorted(inspect.signature(FSMConfig.__init__).parameters.keys() - {"self", "kwargs"})
        raise ValueError(f"model_overrides: unknown FSMConfig field(s) {unknown}; FSMConfig's fields: {fields}.")
    return overrides


def load_model(name: str, overrides: Optional[Dict[str, Any]] = None) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """The model to finetune and the pipeline settings it came with.

    Args:
        name: a preset name (a freshly initialised model), an ``FSMPipeline`` folder
            (``model_index.json`` + ``model/``), a model folder (``config.json``), or a Hub id of either.
        overrides: ``FSMConfig`` fields (e.g. elastic settings) applied on top.

    Returns:
        ``(FSMForNovelViewSynthesis, pipeline settings)``; settings are those of ``model_index.json``
        (empty for presets and model folders).
    """
    from ..configuration_fsm import PRESETS, FSMConfig
    from ..modeling_fsm import FSMForNovelViewSynthesis

    overrides = check_model_overrides(overrides)
    if name in PRESETS:
        config = FSMConfig.from_preset(name, **overrides)
        if config.head_type != "lvsm":
            raise NotImplementedError(
                f"Finetuning supports pixel-head (LVSM) models; preset {name!r} has head_type={config.head_type!r}."
            )
        return FSMForNovelViewSynthesis(config), {}
    path = Path(name)
    if not path.exists():
        if names_a_local_folder(name):
            raise FileNotFoundError(
                f"--model {name!r}: not a preset ({sorted(PRESETS)}), not an existing folder, not a Hub id 'owner/name'."
            )
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(name))
    settings: Dict[str, Any] = {}
    model_dir = path
    if (path / "model_index.json").is_file():
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
        settings = {k: index[k] for k in PIPELINE_SETTINGS if k in index}
        model_dir = path / "model"
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"--model {name!r}: expected a pipeline folder (model_index.json) or config.json in {path}.")
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("head_type", "lvsm") != "lvsm":
        raise NotImplementedError(f"Finetuning supports pixel-head (LVSM) models; {name!r} is a {config.get('head_type')!r} model.")
    return FSMForNovelViewSynthesis.from_pretrained(model_dir, **overrides), settings


def build_dataset(config: TrainingConfig, model_config, image_size: int):
    """The training samples of ``config`` for a model with ``model_config`` (its ``max_frames`` and
    ``use_time``) at ``image_size`` pixels: an :class:`~fsm_hf.training.data.FSMTrainingDataset`."""
    from .data import FSMTrainingDataset, parse_data_spec

    return FSMTrainingDataset(
        parse_data_spec(config.data), image_size, config.num_input_views, config.num_target_views,
        window_size=config.window_size, max_frames=config.max_frames or model_config.max_frames,
        sort_by_time=config.sort_by_time, use_time=model_config.use_time, normalize_from=config.normalize_from,
        seed=config.seed, synthetic_frames=config.synthetic_frames, cache_images=config.cache_images,
        target_input_views=config.target_input_views, novel_target_views=config.novel_target_views,
        novel_view_pool_size=config.novel_view_pool_size,
    )  # fmt: skip


def build_optimizer(model: torch.nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW with ``weight_decay`` on parameters with >= 2 dims and none on the others."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas))


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainingConfig):
    """Linear warm-up over ``warmup_steps``, then cosine (or linear / constant) decay to ``max_steps``;
    ``"warmup_stable_decay"`` holds the peak rate after the warm-up and decays it (cosine, to 0) over
    the last ``lr_decay_steps`` steps only."""
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}.get(config.lr_scheduler, config.lr_scheduler)
    specific = {"num_decay_steps": config.lr_decay_steps} if config.lr_decay_steps is not None else None
    return get_scheduler(
        name, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=config.max_steps,
        scheduler_specific_kwargs=specific,
    )  # fmt: skip


def parameters_held_back(model: torch.nn.Module, patterns: Sequence[str]) -> List[torch.nn.Parameter]:
    """The trainable parameters of ``model`` whose names match none of ``patterns`` (``re.search``):
    those that ``train_only_parameters`` keeps fixed during the first ``train_only_steps`` steps.

    Raises ``ValueError`` when the patterns match no trainable parameter, or every one (both are
    typos, not recipes).
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    held_back = [p for name, p in named if not any(re.search(pattern, name) for pattern in patterns)]
    if len(held_back) in (0, len(named)):
        examples = ", ".join(name for name, _ in named[:4])
        raise ValueError(
            f"train_only_parameters {list(patterns)} match {'every' if not held_back else 'no'} trainable parameter of the "
            f"model; they should name a part of it (parameter names look like: {examples}, ...)."
        )
    return held_back


def clip_gradients(accelerator, model: torch.nn.Module, step: int, config: TrainingConfig) -> Tuple[float, bool]:
    """The global gradient norm, clipping, and whether to skip the optimiser step.

    Before ``grad_clip_warmup_steps`` gradients are left as they are (only non-finite norms skip);
    from then on they are clipped to ``grad_clip_norm`` and the step is skipped when the norm
    (before clipping) is non-finite or above ``grad_skip_threshold``. Returns ``(norm, skip)``.
    """
    clipping = step >= config.grad_clip_warmup_steps
    norm = float(accelerator.clip_grad_norm_(model.parameters(), config.grad_clip_norm if clipping else math.inf))
    skip = not math.isfinite(norm) or (clipping and norm > config.grad_skip_threshold)
    return norm, skip


def _mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
def _checkpoint_step(path: Path) -> Optional[int]:
    suffix = path.name[len(CHECKPOINT_PREFIX):]
    return int(suffix) if path.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() else None


def list_checkpoints(output_dir: os.PathLike) -> List[Path]:
    """Complete checkpoints in ``output_dir/checkpoints``, oldest first (temporary folders excluded)."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _checkpoint_step(p) is not None and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=_checkpoint_step)


def latest_checkpoint(output_dir: os.PathLike) -> Optional[Path]:
    """The most recent complete checkpoint of a run, or ``None``."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_resume(resume: Optional[str], output_dir: os.PathLike) -> Optional[Path]:
    """``None`` -> no resume; ``"latest"`` -> the latest checkpoint in ``output_dir`` (``None`` when the
    run has none yet: a fresh start); a path -> that checkpoint (checked complete)."""
    if resume is None or resume is False:
        return None
    if str(resume) == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume)
    if path.is_dir() and not (path / TRAINER_STATE).is_file():
        latest = latest_checkpoint(path) if (path / "checkpoints").is_dir() else None
        if latest is not None:  # a run folder was given
            return latest
        raise FileNotFoundError(f"--resume {resume}: {path} is not a complete checkpoint (no {TRAINER_STATE}).")
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint folder.")
    return path


#: Settings whose change on resume changes which samples the remaining steps see.
_DATA_STREAM_SETTINGS = (
    "data", "seed", "batch_size", "grad_accum_steps", "num_input_views", "num_target_views", "target_input_views",
    "novel_target_views", "novel_view_pool_size", "window_size", "sort_by_time", "synthetic_frames", "image_size",
)  # fmt: skip


def check_run_start(config: TrainingConfig, output_dir: Path) -> Optional[Path]:
    """The checkpoint to resume from (``None``: a fresh run), after the checks that need no model.

    A fresh run refuses an ``output_dir`` that already holds another run's checkpoints or final
    model (its checkpoints would be pruned in favour of the old ones, its log appended to theirs).
    A resumed run's checkpoint must not lie beyond ``max_steps`` (at it, there is nothing left to do),
    and the run is warned when a setting that decides the data stream
    differs from the checkpoint's (the run then no longer continues exactly).
    """
    resume_dir = resolve_resume(config.resume, output_dir)
    if resume_dir is None:
        existing = list_checkpoints(output_dir) if (output_dir / "checkpoints").is_dir() else []
        if existing or (output_dir / "final").exists():
            what = f"checkpoints up to {existing[-1].name}" if existing else "a final model"
            hint = "" if config.resume else " pass --resume to continue it, or"
            raise FileExistsError(
                f"output_dir {str(output_dir)!r} already holds another run ({what});{hint} choose a new --output_dir."
            )
        return None
    state = json.loads((resume_dir / TRAINER_STATE).read_text(encoding="utf-8"))
    step = int(state["step"])
    if step > config.max_steps:  # at max_steps exactly, resuming a finished run is a no-op (e.g. a requeued job)
        raise ValueError(
            f"--resume {resume_dir}: the checkpoint is at step {step}, beyond max_steps = {config.max_steps}; "
            "raise --max_steps to continue it."
        )
    previous = state.get("config", {})
    changed = {k: (previous[k], v) for k, v in config.to_dict().items() if k in _DATA_STREAM_SETTINGS and k in previous and previous[k] != v}
    if changed:
        detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        warnings.warn(
            f"Resuming {resume_dir} with other data settings than it was trained with ({detail}): the run continues, "
            "but not as the uninterrupted run would have.",
            stacklevel=2,
        )
    return resume_dir


def save_checkpoint(accelerator, output_dir: os.PathLike, step: int, state: Dict[str, Any], keep: int = 2) -> Path:
    """Save the Accelerate state and ``trainer_state.json`` as ``output_dir/checkpoints/checkpoint-<step>``.

    Called on every process. Files go to a temporary folder first; the main process writes
    ``trainer_state.json`` last and renames the folder into place, then removes checkpoints beyond
    the ``keep`` most recent ones. Until the rename, the previous checkpoint is the latest one.
    """
    folder = Path(output_dir) / "checkpoints"
    final = folder / f"{CHECKPOINT_PREFIX}{step:08d}"
    tmp = folder / f".tmp-{CHECKPOINT_PREFIX}{step:08d}"
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f".tmp-{CHECKPOINT_PREFIX}*"):  # left by an interrupted save
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / TRAINER_STATE).write_text(json.dumps({**state, "step": step}, indent=2, default=str), encoding="utf-8")
        if final.exists():  # re-saving a step (e.g. after resuming from it): swap atomically enough
            old = folder / f".old-{final.name}"
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        for stale in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------
def save_final_pipeline(model, config: TrainingConfig, settings: Dict[str, Any], folder: os.PathLike, image_size: int) -> Path:
    """Write the finetuned model as an ``FSMPipeline`` folder with the training config recorded
    (``training_config.yaml`` and the model card)."""
    import yaml

    from ..model_card import generate_model_card
    from ..pipeline_fsm import FSMPipeline

    folder = Path(folder)
    model.config.image_size = image_size
    kwargs = {k: v for k, v in settings.items() if k in PIPELINE_SETTINGS}
    if "time_convention" not in kwargs:  # a preset or a bare model folder: record how it was trained
        kwargs.update(time_convention="training", num_input_views=config.num_input_views)
    if config.max_frames is not None:
        kwargs["max_frames"] = config.max_frames
    kwargs["resolution"] = [image_size, image_size]
    pipe = FSMPipeline(model=model, **kwargs)
    pipe.save_pretrained(folder)
    record = config.to_dict()
    (folder / "training_config.yaml").write_text(yaml.safe_dump(record, sort_keys=True), encoding="utf-8")
    base = None if config.model in _presets() or Path(config.model).exists() else config.model
    card = generate_model_card(model.config, training_config=record, base_model=base, subfolder="model")
    (folder / "model" / "README.md").write_text(card, encoding="utf-8")
    return folder


def _presets():
    from ..configuration_fsm import PRESETS

    return PRESETS


def save_image_grid(pred: torch.Tensor, target: torch.Tensor, path: os.PathLike, max_rows: int = 4) -> Path:
    """A PNG with one row per target view: prediction | ground truth. ``pred``, ``target``: ``[T, 3, H, W]``."""
    from PIL import Image

    rows = [torch.cat([p, t], dim=-1) for p, t in zip(pred[:max_rows], target[:max_rows])]  # each [3, H, 2W]
    grid = torch.cat(rows, dim=-2).clamp(0, 1)  # [3, rows*H, 2W]
    array = (grid.permute(1, 2, 0).float().cpu().numpy() * 255 + 0.5).astype("uint8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def parameter_checksum(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer (name order), to compare replicas across processes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class _JsonlLogger:
    """Appends metric dicts to ``output_dir/train_log.jsonl`` (main process). Records after
    ``start_step`` (logged by a run that was interrupted after its last checkpoint and resumed
    from it) are dropped first, so the log holds every step once."""

    def __init__(self, path: Path, enabled: bool, start_step: int = 0):
        self.path, self.enabled = path, enabled
        if enabled and path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            kept = [line for line in lines if json.loads(line).get("step", 0) <= start_step]
            if len(kept) != len(lines):
                path.write_text("".join(kept), encoding="utf-8")

    def __call__(self, record: Dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            return False
    return True


def _model_inputs(batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    names = ("input_images", "input_fxfycxcy", "input_c2w", "input_times", "target_fxfycxcy", "target_c2w", "target_times")
    return {name: batch[name] for name in names}


def train(config: TrainingConfig) -> Path:
    """Finetune as configured (on every process of an ``accelerate launch``); returns the final
    ``FSMPipeline`` folder ``output_dir/final``."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from .data import SYNTHETIC, ShardedSequentialSampler, parse_data_spec, resolve_scenes
    from .losses import FSMLoss

    output_dir = Path(config.output_dir)
    resume_dir = check_run_start(config, output_dir)
    check_model_overrides(config.model_overrides)
    for source in parse_data_spec(config.data):  # a malformed spec or a missing path fails before the model is built
        if source.path != SYNTHETIC:
            resolve_scenes(source.path)
    loss_fn = FSMLoss(config.l2_loss_weight, config.lpips_loss_weight, config.l2_warmup_steps, config.lpips_net)
    use_tensorboard = config.tensorboard and _tensorboard_available()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=_mixed_precision(config.mixed_precision),
        log_with="tensorboard" if use_tensorboard else None,
        project_dir=str(output_dir),
    )
    is_main = accelerator.is_main_process
    if resume_dir is None and config.resume:
        accelerator.print(f"--resume: {output_dir} holds no checkpoint yet; starting a fresh run.")
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        if config.tensorboard and not use_tensorboard:
            print("tensorboard is not installed: logging to train_log.jsonl only.")
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # 1. Model (identical initialisation on every process), loss, optimiser, scheduler.
    set_seed(config.seed)
    model, settings = load_model(config.model, config.model_overrides)
    image_size = config.image_size or model.config.image_size
    if image_size % model.config.patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of the patch size {model.config.patch_size}.")
    if config.reset_elastic_buffers and resume_dir is None:
        model.reset_elastic_buffers()  # anchors from the weights being finetuned (official behaviour)
    if config.activation_checkpointing:
        model.gradient_checkpointing_enable()
    loss_fn.to(accelerator.device)
    distillation = None
    if config.mixer_distillation_teacher is not None:
        from .distillation import MixerDistillation

        teacher, _ = load_model(config.mixer_distillation_teacher)
        distillation = MixerDistillation(model, teacher.to(accelerator.device))
    held_back = parameters_held_back(model, config.train_only_parameters) if config.train_only_steps else []
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    # The scheduler is stepped by hand once per optimiser step (Accelerate would step it once per process).
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    # The compiled module shares the parameters; checkpoints and the final pipeline use `model`.
    forward_model = torch.compile(model) if config.torch_compile else model

    step = 0
    if resume_dir is not None:
        accelerator.load_state(str(resume_dir))
        step = int(json.loads((resume_dir / TRAINER_STATE).read_text())["step"])
        accelerator.print(f"Resumed from {resume_dir} at step {step}.")
    if use_tensorboard:
        accelerator.init_trackers("tensorboard")

    # 2. Data: sample i of the run is a function of (seed, i) only.
    dataset = build_dataset(config, accelerator.unwrap_model(model).config, image_size)
    samples_per_step = config.batch_size * config.grad_accum_steps  # per process
    remaining = max(config.max_steps - step, 0)
    sampler = ShardedSequentialSampler(
        start=step * samples_per_step * accelerator.num_processes, rank=accelerator.process_index,
        world_size=accelerator.num_processes, length=remaining * samples_per_step,
    )  # fmt: skip
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers)
    batches = iter(loader)
    if distillation is not None and resume_dir is None and step < config.max_steps:
        first = {k: v.to(accelerator.device) for k, v in next(batches).items()}
        batches = itertools.chain([first], batches)  # calibrated on, then trained on as usual
        with accelerator.autocast():
            factors = distillation.match_output_scales(lambda: model(**_model_inputs(first)),
                                                       lambda t: accelerator.reduce(t, reduction="mean"))  # fmt: skip
        accelerator.print("LaCET output scales matched to the teacher's: " + ", ".join(f"x{f:.3f}" for f in factors))

    # 3. Loop.
    log = _JsonlLogger(output_dir / "train_log.jsonl", is_main, start_step=step)
    run_state = {"world_size": accelerator.num_processes, "samples_per_step_per_process": samples_per_step,
                 "config": config.to_dict()}  # fmt: skip
    if is_main:
        (output_dir / "training_config.json").write_text(config_summary(config), encoding="utf-8")
    bar = tqdm(total=config.max_steps, initial=step, desc="finetune", disable=not is_main, dynamic_ncols=True)
    model.train()
    last_time, last_step = time.perf_counter(), step
    while step < config.max_steps:
        totals = {"loss": 0.0, "l2": 0.0, "lpips": 0.0, "distill": 0.0}
        distilling = distillation is not None and (config.mixer_distillation_steps == 0 or step < config.mixer_distillation_steps)
        for micro in range(config.grad_accum_steps):
            batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in next(batches).items()}
            sync = micro == config.grad_accum_steps - 1
            with nullcontext() if sync else accelerator.no_sync(model):
                with accelerator.autocast():
                    out = forward_model(**_model_inputs(batch))
                losses = loss_fn(out.images, batch["target_images"], step)
                loss = losses.loss
                if distillation is not None:
                    distill = distillation.pop_loss()
                    totals["distill"] += float(distill.detach()) / config.grad_accum_steps
                    if distilling:
                        loss = loss + config.mixer_distillation_weight * distill
                accelerator.backward(loss / config.grad_accum_steps)
            totals["loss"] += float(loss.detach()) / config.grad_accum_steps
            totals["l2"] += float(losses.l2) / config.grad_accum_steps
            if losses.lpips is not None:
                totals["lpips"] += float(losses.lpips) / config.grad_accum_steps

        if step < config.train_only_steps:
            for parameter in held_back:  # no gradient: AdamW neither moves nor decays it
                parameter.grad = None
        grad_norm, skipped = clip_gradients(accelerator, model, step, config)
        if not skipped:
            optimizer.step()
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)

        if config.log_every and (step % config.log_every == 0 or step == config.max_steps):
            values = torch.tensor([totals["loss"], totals["l2"], totals["lpips"], totals["distill"]], device=accelerator.device)
            values = accelerator.reduce(values, reduction="mean")  # mean over processes
            now = time.perf_counter()
            record = {
                "step": step, "loss": values[0].item(), "l2": values[1].item(),
                "psnr": -10.0 * math.log10(max(values[1].item(), 1e-10)), "lpips": values[2].item(),
                "lr": lr, "grad_norm": grad_norm, "skipped": skipped,
                **({"distill": values[3].item()} if distillation is not None else {}),
                "steps_per_s": (step - last_step) / max(now - last_time, 1e-9),
            }  # fmt: skip
            last_time, last_step = now, step
            log(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", psnr=f"{record['psnr']:.2f}", lr=f"{lr:.2e}",
                            gnorm=f"{grad_norm:.2f}")  # fmt: skip
            if use_tensorboard:
                accelerator.log({f"train/{k}": float(v) for k, v in record.items() if k != "step"}, step=step)
        if is_main and config.image_every and step % config.image_every == 0:
            save_image_grid(out.images[0].detach(), batch["target_images"][0], output_dir / "samples" / f"step-{step:08d}.png")
        if (config.save_every and step % config.save_every == 0) or step == config.max_steps:
            save_checkpoint(accelerator, output_dir, step, run_state, keep=config.keep_checkpoints)
    bar.close()

    # 4. Final model: every process reports its replica's checksum; the main one writes the pipeline.
    accelerator.wait_for_everyone()
    raw_model = accelerator.unwrap_model(model)
    ranks = output_dir / "ranks"
    ranks.mkdir(parents=True, exist_ok=True)
    (ranks / f"rank-{accelerator.process_index}.json").write_text(json.dumps({
        "rank": accelerator.process_index, "world_size": accelerator.num_processes, "step": step,
        "distributed_type": str(accelerator.distributed_type), "checksum": parameter_checksum(raw_model),
    }), encoding="utf-8")  # fmt: skip
    final = output_dir / "final"
    if is_main:
        if config.activation_checkpointing:
            raw_model.gradient_checkpointing_disable()
        raw_model.eval()
        tmp = output_dir / ".tmp-final"
        shutil.rmtree(tmp, ignore_errors=True)
        save_final_pipeline(raw_model, config, settings, tmp, image_size)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if config.push_to_hub:
            from ..hub import push_folder

            url = push_folder(final, config.push_to_hub, private=config.hub_private,
                              commit_message=f"Finetuned FSM ({step} steps)")  # fmt: skip
            print(f"Pushed {final} to {url}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``finetune.py``: parse flags (over ``--config`` YAML), train, print the output folder."""
    try:
        config = load_config(argv)
    except (ValueError, FileNotFoundError) as error:  # a mistake in the flags or the YAML: one line, no traceback
        build_parser().error(str(error))
    final = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"Finetuned pipeline written to {final}")
    return 0
