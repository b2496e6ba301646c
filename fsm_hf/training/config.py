"""The finetuning configuration: one flat dataclass, read from YAML and overridden by flags.

Every field of :class:`TrainingConfig` is both a YAML key and a command-line flag
(``--field value``); flags win over the YAML file, which wins over the defaults. The defaults
are the paper's finetuning recipe (official ``fsm_lvsm_finetune.yaml``): AdamW (0.9, 0.95),
weight decay 0.05 on matrices, cosine schedule with warm-up, clipping at 1.0 after a warm-up
with steps skipped above a gradient-norm threshold, MSE + 0.5 LPIPS after an L2-only warm-up,
bf16 autocast on GPUs, activation checkpointing, 32 input + 32 target views in a window.

A YAML file may start from another one (``base: other.yaml``, see :func:`read_config_file`).

Example::

    cfg = load_config(["--config", "configs/tiny_cpu.yaml", "--max_steps", "20"])
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

__all__ = ["TrainingConfig", "build_parser", "load_config", "parse_overrides", "read_config_file"]

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
SCHEDULERS = ("cosine", "linear", "constant", "warmup_stable_decay")
NORMALIZE_FROM = ("all", "inputs")
LPIPS_NETS = ("vgg", "alex", "squeeze")


@dataclass
class TrainingConfig:
    """Settings of :func:`fsm_hf.training.train` (each one a YAML key and a ``--flag``).

    Model:
        model: a preset name (``"tiny"``, ``"fsm-4d-lvsm"``, ...: a fresh random model), an
            ``FSMPipeline`` folder, a model folder (``config.json``) or a Hub id of either.
        model_overrides: ``FSMConfig`` fields to override (e.g. the elastic settings
            ``elastic_lambda``, ``elastic_estimator``, or ``newton_schulz_dtype``). On the command
            line: ``--model_overrides elastic_lambda=0.3,newton_schulz_dtype=float32``.
        reset_elastic_buffers: re-create the elastic anchors/importances from the current weights
            when a run starts (not when it resumes), as the official finetuning does.
        activation_checkpointing: recompute each block in the backward pass (saves memory).
        torch_compile: run the training forward through ``torch.compile`` (inductor; needs a C++
            compiler on CPU). The first step compiles (about a minute for a small model); then small
            attention models train ~1.35x faster on 2 CPU cores. LaCET models run slightly slower on CPU
            (their time is in batched matrix products), so leave it off there. Checkpoints and the
            final pipeline are those of the uncompiled model.
        train_only_parameters, train_only_steps: for the first ``train_only_steps`` optimiser steps,
            train only the parameters whose names match one of the regular expressions
            ``train_only_parameters`` (``re.search``); the others keep their weights (no update, no
            weight decay) until then. For warm starts: ``["\\.lacet\\."]`` lets freshly built
            cross-view mixers learn to serve the pretrained layers around them before those move.
            On the command line: ``--train_only_parameters REGEX [REGEX ...]``.
        mixer_distillation_teacher, mixer_distillation_weight, mixer_distillation_steps: for warm
            starts of a LaCET model from an attention model, add ``mixer_distillation_weight`` x the
            attention-transfer loss of :class:`~fsm_hf.training.distillation.MixerDistillation`
            (each LaCET layer's output against the teacher's attention on the same input) for the
            first ``mixer_distillation_steps`` steps (0 = all). The teacher is an attention model
            (preset, folder or Hub id, usually the ``model`` the run starts from). When the run
            starts (not when it resumes), each LaCET layer's output is first scaled to the
            teacher's loudness on the first batch. Needs ``activation_checkpointing: false``.

    Data:
        data: comma-separated sources with optional repeat ratios, ``"path:2,other:1"``; a path is
            a scene file, a scene folder or a folder of scenes; ``synthetic`` / ``synthetic:N``
            (``N`` procedural scenes) / ``synthetic:N:R`` (ratio ``R``). A YAML list also works.
            As in the official mixer a ratio repeats each scene of its source that many times.
        image_size: training resolution (square); ``None`` = the model's ``image_size``.
        num_input_views, num_target_views: views per sample; inputs sorted by time
            (``sort_by_time``), targets drawn elsewhere in the same temporal window.
        target_input_views: how many of the targets repeat input views (LVSM's
            ``target_has_input``; 0 = none, as the official FSM loader). Reconstructing inputs gives a
            from-scratch model an easy signal to learn view retrieval from.
        novel_target_views: for procedural (``synthetic``) sources, how many targets are rendered
            at new cameras and times (times between the inputs', half of the cameras off the
            captured path, as ``fsm demo`` evaluates) instead of being captured frames.
        novel_view_pool_size: 0 renders those views per sample; ``P > 0`` renders ``P`` per
            scene once and draws each sample's from them (the same placement; ~5x less data time
            on procedural scenes for ``P * 3 * S * S * 4`` bytes of memory per scene; see
            :class:`fsm_hf.training.data.FSMTrainingDataset`).
        window_size: consecutive frames a sample's views are drawn from.
        max_frames: integer time grid of the "training" time convention; ``None`` = the model's.
        normalize_from: fit pose and time normalisation on ``"all"`` sampled views (the official
            loader) or on the ``"inputs"`` only (as the pipeline does at inference).
        synthetic_frames: frames of each procedural scene.
        cache_images: keep decoded, resized frames in memory (per worker): fast for small data.
        num_workers: DataLoader worker processes.

    Optimisation:
        max_steps, batch_size (per process), grad_accum_steps, lr, betas, weight_decay (on
        parameters with >= 2 dims; 0 on the others), warmup_steps, lr_scheduler (``"cosine"``,
        ``"linear"``, ``"constant"``, or ``"warmup_stable_decay"``: the peak learning rate held
        until the last ``lr_decay_steps`` steps, then a cosine decay to 0), lr_decay_steps,
        grad_clip_norm, grad_clip_warmup_steps (no clipping / skipping before this step),
        grad_skip_threshold (skip the step when the norm exceeds it; non-finite norms are always
        skipped), l2_loss_weight, lpips_loss_weight, l2_warmup_steps (LPIPS off before this step),
        lpips_net, mixed_precision (``"auto"``: bf16 on CUDA, none on CPU), seed.

    Output:
        output_dir, save_every (checkpoint period in optimiser steps; 0 = only at the end),
        keep_checkpoints, log_every, image_every (prediction/target grids; 0 = off), tensorboard,
        resume (``"latest"`` or a checkpoint path), push_to_hub (a repo id), hub_private.
    """

    # model
    model: str = "tiny"
    model_overrides: Dict[str, Any] = field(default_factory=dict)
    reset_elastic_buffers: bool = True
    activation_checkpointing: bool = True
    torch_compile: bool = False
    train_only_parameters: List[str] = field(default_factory=list)
    train_only_steps: int = 0
    mixer_distillation_teacher: Optional[str] = None
    mixer_distillation_weight: float = 1.0
    mixer_distillation_steps: int = 0
    # data
    data: Union[str, List[str]] = "synthetic"
    image_size: Optional[int] = None
    num_input_views: int = 32
    num_target_views: int = 32
    target_input_views: int = 0
    novel_target_views: int = 0
    novel_view_pool_size: int = 0
    window_size: int = 256
    sort_by_time: bool = True
    max_frames: Optional[int] = None
    normalize_from: str = "all"
    synthetic_frames: int = 64
    cache_images: bool = False
    num_workers: int = 2
    # optimisation
    max_steps: int = 20000
    batch_size: int = 4
    grad_accum_steps: int = 1
    lr: float = 5e-5
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.05
    warmup_steps: int = 1000
    lr_scheduler: str = "cosine"
    lr_decay_steps: Optional[int] = None
    grad_clip_norm: float = 1.0
    grad_clip_warmup_steps: int = 1000
    grad_skip_threshold: float = 4.0
    l2_loss_weight: float = 1.0
    lpips_loss_weight: float = 0.5
    l2_warmup_steps: int = 500
    lpips_net: str = "vgg"
    mixed_precision: str = "auto"
    seed: int = 42
    # output
    output_dir: str = "fsm-finetune"
    save_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    image_every: int = 1000
    tensorboard: bool = False
    resume: Optional[str] = None
    push_to_hub: Optional[str] = None
    hub_private: bool = False

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Reject inconsistent values with a message naming the field (expected vs given)."""

        def check(ok: bool, name: str, expected: str):
            if not ok:
                raise ValueError(f"TrainingConfig.{name} must be {expected}, got {getattr(self, name)!r}.")

        self._coerce_types()
        for name in ("num_input_views", "num_target_views", "max_steps", "batch_size", "grad_accum_steps", "window_size", "synthetic_frames"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, "a positive integer")
        for name in ("train_only_steps", "mixer_distillation_steps", "target_input_views", "novel_target_views", "novel_view_pool_size", "warmup_steps", "grad_clip_warmup_steps", "l2_warmup_steps", "num_workers",
                     "save_every", "log_every", "image_every"):  # fmt: skip
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 0, name, "an integer >= 0")
        check(self.keep_checkpoints >= 1, "keep_checkpoints", ">= 1")
        check(self.lr > 0, "lr", "> 0")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "two numbers in [0, 1)")
        check(self.weight_decay >= 0, "weight_decay", ">= 0")
        check(self.grad_clip_norm > 0, "grad_clip_norm", "> 0")
        check(self.grad_skip_threshold > 0, "grad_skip_threshold", "> 0")
        check(self.l2_loss_weight >= 0 and self.lpips_loss_weight >= 0, "lpips_loss_weight", "loss weights >= 0")
        check(self.mixed_precision in MIXED_PRECISION, "mixed_precision", f"one of {list(MIXED_PRECISION)}")
        check(self.lr_scheduler in SCHEDULERS, "lr_scheduler", f"one of {list(SCHEDULERS)}")
        if self.lr_scheduler == "warmup_stable_decay":
            check(self.warmup_steps < self.max_steps, "warmup_steps", f"below max_steps = {self.max_steps} with lr_scheduler 'warmup_stable_decay'")
            check(
                isinstance(self.lr_decay_steps, int) and 0 < self.lr_decay_steps <= self.max_steps - self.warmup_steps,
                "lr_decay_steps", f"an integer in [1, max_steps - warmup_steps = {self.max_steps - self.warmup_steps}] with lr_scheduler 'warmup_stable_decay'",
            )  # fmt: skip
        else:
            check(self.lr_decay_steps is None, "lr_decay_steps", f"None: only lr_scheduler 'warmup_stable_decay' takes it, not {self.lr_scheduler!r}")
        check(self.normalize_from in NORMALIZE_FROM, "normalize_from", f"one of {list(NORMALIZE_FROM)}")
        check(self.lpips_net in LPIPS_NETS, "lpips_net", f"one of {list(LPIPS_NETS)}")
        if self.push_to_hub is not None:
            from huggingface_hub.utils import HFValidationError, validate_repo_id

            try:
                validate_repo_id(self.push_to_hub)
            except HFValidationError as error:
                raise ValueError(f"TrainingConfig.push_to_hub must be a Hub repo id 'owner/name': {error}") from None
        check(self.image_size is None or self.image_size >= 1, "image_size", "None or a positive integer")
        check(self.max_frames is None or self.max_frames >= 2, "max_frames", "None or an integer >= 2")
        check(isinstance(self.model_overrides, dict), "model_overrides", "a mapping of FSMConfig fields")
        check(isinstance(self.model, str) and bool(self.model), "model", "a preset name, folder or Hub id (--model)")
        check(bool(self.data), "data", "at least one data source (--data)")
        check(
            isinstance(self.train_only_parameters, (list, tuple)) and all(isinstance(p, str) for p in self.train_only_parameters),
            "train_only_parameters", "a list of regular expressions",
        )  # fmt: skip
        for pattern in self.train_only_parameters:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"TrainingConfig.train_only_parameters: {pattern!r} is not a regular expression ({error}).") from None
        check(
            self.train_only_steps == 0 or bool(self.train_only_parameters), "train_only_steps",
            "0 unless train_only_parameters names the parameters to train first",
        )  # fmt: skip
        check(self.mixer_distillation_weight > 0, "mixer_distillation_weight", "> 0")
        if self.mixer_distillation_teacher is None:
            check(self.mixer_distillation_steps == 0, "mixer_distillation_steps", "0 unless mixer_distillation_teacher is set")
        else:
            check(
                not self.activation_checkpointing, "activation_checkpointing",
                "false with mixer_distillation_teacher (the per-layer loss is taken inside the blocks)",
            )  # fmt: skip
            check(
                not self.torch_compile, "torch_compile",
                "false with mixer_distillation_teacher (its per-layer hooks are not traced)",
            )  # fmt: skip
        check(
            self.target_input_views <= min(self.num_input_views, self.num_target_views), "target_input_views",
            "at most min(num_input_views, num_target_views)",
        )  # fmt: skip
        check(
            self.novel_target_views <= self.num_target_views - self.target_input_views, "novel_target_views",
            "at most num_target_views - target_input_views",
        )  # fmt: skip
        num_views = self.num_input_views + self.num_target_views - self.target_input_views
        if num_views > self.window_size:
            raise ValueError(
                f"TrainingConfig: num_input_views + num_target_views - target_input_views = {num_views} views do not fit in "
                f"window_size = {self.window_size} frames."
            )

    def _coerce_types(self) -> None:
        """Check every field against its annotation (YAML gives ``1e-4`` as a string, ``32.0`` as a
        float, ``no`` as a bool or a string): numbers written as strings and whole floats become
        numbers, ``"yes"``/``"no"`` booleans; anything else raises naming the field."""
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), f.type
            if value is None and (kind.startswith("Optional[") or kind in ("str", "Union[str, List[str]]")):
                continue  # required strings (model, data) have their own message in validate
            base = kind[len("Optional[") : -1] if kind.startswith("Optional[") else kind
            converted = _coerce(value, base)
            if converted is _INVALID:
                raise ValueError(f"TrainingConfig.{f.name} must be {_TYPE_WORDS.get(kind, kind)}, got {value!r}.")
            setattr(self, f.name, converted)

    def to_dict(self) -> Dict[str, Any]:
        """A plain (YAML/JSON-serialisable) dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "TrainingConfig":
        """Build from a dict, rejecting unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown training config key(s) {unknown}; known keys: {sorted(known)}.")
        return cls(**values)


_INVALID = object()
_TYPE_WORDS = {
    "int": "an integer", "Optional[int]": "an integer or null", "float": "a number", "bool": "true or false",
    "str": "a string", "Optional[str]": "a string or null", "List[float]": "a list of numbers",
    "List[str]": "a list of strings", "Dict[str, Any]": "a mapping", "Union[str, List[str]]": "a string or a list of strings",
}  # fmt: skip


def _coerce(value: Any, kind: str) -> Any:
    """``value`` as the annotated ``kind`` (see :meth:`TrainingConfig._coerce_types`), or ``_INVALID``."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        try:
            return _bool(value) if isinstance(value, str) else _INVALID
        except argparse.ArgumentTypeError:
            return _INVALID
    if kind in ("int", "float"):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return _INVALID
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _INVALID
        if kind == "float":
            return float(value)
        return int(value) if float(value).is_integer() else _INVALID
    if kind == "List[float]":
        if not isinstance(value, (list, tuple)):
            return _INVALID
        items = [_coerce(v, "float") for v in value]
        return _INVALID if any(v is _INVALID for v in items) else items
    if kind == "List[str]":
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        return list(value) if ok else _INVALID
    if kind == "str":
        return value if isinstance(value, str) else _INVALID
    if kind == "Union[str, List[str]]":
        return value if isinstance(value, (str, list, tuple)) else _INVALID
    return value  # Dict[str, Any]: checked by validate


def parse_overrides(text: Union[str, Dict[str, Any], None]) -> Dict[str, Any]:
    """``"a=1,b=float32"`` (values parsed as YAML scalars) or a dict -> dict."""
    if text is None:
        return {}
    if isinstance(text, dict):
        return dict(text)
    import yaml

    out: Dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in str(text).split(","))):
        if "=" not in item:
            raise ValueError(f"model_overrides entries must be key=value, got {item!r} (in {text!r}).")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def _optional(kind):
    def parse(text: str):
        return None if str(text).lower() in ("none", "null", "") else kind(text)

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The ``finetune.py`` argument parser: ``--config`` plus one flag per :class:`TrainingConfig` field."""
    parser = argparse.ArgumentParser(
        prog="finetune.py",
        description="Finetune an FSM model with Accelerate (accelerate launch finetune.py --config ...). "
        "Flags override the YAML config, which overrides the defaults (the paper's recipe).",
    )
    parser.add_argument(
        "--config", default=None, help="YAML file whose keys are the flags below (base: other.yaml starts from another file)"
    )
    choices = {"lr_scheduler": SCHEDULERS, "mixed_precision": MIXED_PRECISION, "normalize_from": NORMALIZE_FROM,
               "lpips_net": LPIPS_NETS}  # fmt: skip
    notes = {
        "data": "sources PATH[:RATIO] or synthetic[:NUM_SCENES[:RATIO]], comma-separated (scene files, scene folders, "
        "folders of scenes, procedural scenes)",
        "model": "a preset name (a fresh random model), an FSMPipeline or model folder, or a Hub id",
        "lpips_loss_weight": "LPIPS needs `pip install lpips` (and torchvision); 0 turns it off",
        "push_to_hub": "a Hub repo id owner/name to push the final pipeline to",
    }
    for f in dataclasses.fields(TrainingConfig):
        flag = f"--{f.name}"
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"default: {default}"
        if f.name in choices:
            help_text = f"one of {', '.join(choices[f.name])}; {help_text}"
        if f.name in notes:
            help_text = f"{notes[f.name]}; {help_text}"
        if f.name == "resume":
            parser.add_argument(flag, nargs="?", const="latest", default=argparse.SUPPRESS,
                                help="resume from the latest checkpoint in output_dir, or from the given path")  # fmt: skip
        elif f.name == "train_only_parameters":
            parser.add_argument(flag, nargs="+", default=argparse.SUPPRESS, metavar="REGEX",
                                help="parameter-name patterns trained alone for the first train_only_steps steps")  # fmt: skip
        elif f.name == "betas":
            parser.add_argument(flag, type=float, nargs=2, default=argparse.SUPPRESS, help=help_text)
        elif f.name == "model_overrides":
            parser.add_argument(flag, type=parse_overrides, default=argparse.SUPPRESS,
                                help="FSMConfig fields, e.g. elastic_lambda=0.3,newton_schulz_dtype=float32")  # fmt: skip
        elif f.type in ("bool",):
            parser.add_argument(flag, type=_bool, nargs="?", const=True, default=argparse.SUPPRESS, help=help_text)
        elif f.type in ("int",):
            parser.add_argument(flag, type=int, default=argparse.SUPPRESS, help=help_text)
        elif f.type in ("float",):
            parser.add_argument(flag, type=float, default=argparse.SUPPRESS, help=help_text)
        elif f.type == "Optional[int]":
            parser.add_argument(flag, type=_optional(int), default=argparse.SUPPRESS, help=help_text)
        elif f.type == "Optional[str]":
            parser.add_argument(flag, type=_optional(str), default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, default=argparse.SUPPRESS, help=help_text)
    return parser


def read_config_file(path: Union[str, Path], _seen: Sequence[Path] = ()) -> Dict[str, Any]:
    """The settings of a YAML training config, with its ``base`` resolved.

    A config may name another one as ``base: other.yaml`` (relative to its own folder): it starts
    from that file's settings and replaces the keys it sets itself, except ``model_overrides``,
    whose entries are added to (or replace) the base's. Bases may chain.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        if _seen:  # named as the base of the last file read
            raise FileNotFoundError(f"{_seen[-1]}: its base {path.name!r} does not exist ({path}).")
        raise FileNotFoundError(f"Training config not found: {path}")
    if path.resolve() in _seen:
        raise ValueError(f"{path}: its base chain loops back to itself ({' -> '.join(str(p) for p in _seen)}).")
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of training settings, got {type(loaded).__name__}.")
    if "model_overrides" in loaded:
        loaded["model_overrides"] = parse_overrides(loaded["model_overrides"])
    base = loaded.pop("base", None)
    if base is None:
        return loaded
    if not isinstance(base, str):
        raise ValueError(f"{path}: base must be the path of another config file, got {base!r}.")
    values = read_config_file(path.parent / base, (*_seen, path.resolve()))
    if "model_overrides" in values and "model_overrides" in loaded:
        loaded["model_overrides"] = {**values["model_overrides"], **loaded["model_overrides"]}
    values.update(loaded)
    return values


def load_config(argv: Optional[Sequence[str]] = None) -> TrainingConfig:
    """Parse ``argv``: defaults <- ``--config`` YAML <- flags; returns a validated :class:`TrainingConfig`."""
    args = vars(build_parser().parse_args(argv))
    values: Dict[str, Any] = {}
    config_path = args.pop("config", None)
    if config_path is not None:
        values = read_config_file(config_path)
    if "model_overrides" in args and "model_overrides" in values:  # flags add to / replace YAML entries
        args["model_overrides"] = {**values["model_overrides"], **args["model_overrides"]}
    values.update(args)
    return TrainingConfig.from_dict(values)


def config_summary(config: TrainingConfig) -> str:
    """The config as indented JSON (for logs)."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)
