"""The evaluation protocol: fixed input/target splits, per-image PSNR / SSIM / LPIPS, JSON + CSV.

For every scene and every requested number of input views ``V`` and setting:

* ``"sparse"``: ``V`` inputs spread evenly over the first ``window_size`` frames (first and last
  frame of the window included) and ``num_target_views`` held-out targets spread evenly over the
  remaining frames between them (:func:`fsm_hf.scene.split_input_target`, ``policy="evenly"``);
* ``"continuous"``: the same split over the first ``V + num_target_views`` consecutive frames, so
  the inputs are a dense clip with targets held out in between.

The splits are deterministic (no random window start, unlike the official inference loader,
whose window start is random). Inputs and targets go through :class:`~fsm_hf.FSMPipeline`:
resize-to-cover + centre crop, pose normalisation fitted on the inputs, and time in the
pipeline's convention by default (``"official_inference"`` for released checkpoints:
``t = frame_idx % max_frames``, the scene's frame indices being the timestamps), so numbers are
comparable with the official evaluation. ``time_convention="auto"`` picks per scene: ``"training"``
(the scene's own times, min-max rescaled over the inputs) for procedural scenes
(:mod:`fsm_hf.synthetic`, continuous times in ``[0, 1]``), the pipeline's convention otherwise. Ground
truth goes through the same resize and crop. Metrics are per image (:mod:`fsm_hf.metrics`: PSNR,
SSIM with the 11-px Gaussian window, LPIPS when the optional package is installed); summaries
average over images, as the official evaluation does.

Outputs (when ``output_dir`` is given): ``summary.json`` (protocol, one row per setting) and
``per_scene.csv`` (one row per scene and setting).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch

__all__ = [
    "EVAL_SETTINGS",
    "TIME_CONVENTIONS",
    "EvaluationSetting",
    "SyntheticScenes",
    "evaluate",
    "format_summary",
    "parse_synthetic_spec",
    "split_for_setting",
    "write_results",
]

EVAL_SETTINGS = ("sparse", "continuous")
#: Accepted ``time_convention`` values of :func:`evaluate` (``"auto"``: per scene, see the module docstring).
TIME_CONVENTIONS = ("auto", "official_inference", "training")


@dataclass(frozen=True)
class EvaluationSetting:
    """One evaluation condition: ``num_input_views`` inputs, ``num_target_views`` targets, ``setting``."""

    num_input_views: int
    num_target_views: int
    setting: str = "sparse"

    @property
    def name(self) -> str:
        return f"{self.setting}_{self.num_input_views}in_{self.num_target_views}out"


def split_for_setting(num_frames: int, setting: EvaluationSetting, window_size: int = 256):
    """``(input positions, target positions)`` of a scene of ``num_frames`` frames (see module docstring)."""
    from ..scene import split_input_target

    if setting.setting not in EVAL_SETTINGS:
        raise ValueError(f"setting must be one of {EVAL_SETTINGS}, got {setting.setting!r}.")
    needed = setting.num_input_views + setting.num_target_views
    window = min(window_size, num_frames) if setting.setting == "sparse" else needed
    if needed > min(window, num_frames):
        raise ValueError(f"{setting.name} needs {needed} frames; the scene has {num_frames} (window {window_size}).")
    return split_input_target(num_frames, setting.num_input_views, setting.num_target_views, "evenly", 0, window)


@dataclass(frozen=True)
class SyntheticScenes:
    """``count`` procedural scenes (:func:`fsm_hf.synthetic.generate_scene`) with seeds ``seed``,
    ``seed + 1``, ...: the parsed form of the spec ``synthetic:N[@SEED][xFRAMES]``.

    ``num_frames`` ``None`` means "not given" (the caller picks a default).
    """

    count: int
    seed: int
    num_frames: Optional[int] = None

    @property
    def seeds(self) -> List[int]:
        return list(range(self.seed, self.seed + self.count))

    def scenes(self, height: int, width: int, num_frames: Optional[int] = None) -> List["_LazySyntheticScene"]:
        """Lazy scenes (rendered on ``to_scene()``) of ``height x width`` pixels."""
        frames = self.num_frames or num_frames
        if frames is None:
            raise ValueError("SyntheticScenes.scenes needs num_frames (the spec gave none).")
        return [_LazySyntheticScene(seed, frames, height, width) for seed in self.seeds]


@dataclass(frozen=True)
class _LazySyntheticScene:
    """A procedural scene generated and rendered only when :meth:`to_scene` is called."""

    seed: int
    num_frames: int
    height: int
    width: int

    @property
    def name(self) -> str:
        return f"synthetic_{self.seed}"

    def __len__(self) -> int:
        return self.num_frames

    def to_scene(self):
        from ..synthetic import generate_scene

        return generate_scene(self.seed, self.num_frames, self.height, self.width).to_scene()


_SYNTHETIC_SPEC = re.compile(r"^synthetic:(?P<count>\d+)(?:@(?P<seed>-?\d+))?(?:x(?P<frames>\d+))?$")


def parse_synthetic_spec(spec: str, default_seed: Optional[int] = None) -> Optional[SyntheticScenes]:
    """``"synthetic:N[@SEED][xFRAMES]"`` -> :class:`SyntheticScenes`; ``None`` for anything not
    starting with ``synthetic:`` (a path). ``SEED`` defaults to ``default_seed`` (``None``: the
    first held-out seed of the built-in model, :data:`fsm_hf.demo.HELD_OUT_SEED_START`).

    Examples: ``synthetic:4`` (4 scenes, seeds 10000-10003), ``synthetic:2@10100x256``.
    """
    if not spec.startswith("synthetic:"):
        return None
    match = _SYNTHETIC_SPEC.match(spec.strip())
    if match is None:
        raise ValueError(
            f"Bad scene spec {spec!r}: expected synthetic:N[@SEED][xFRAMES], e.g. synthetic:4 or synthetic:2@10000x256."
        )
    if default_seed is None:
        from ..demo import HELD_OUT_SEED_START as default_seed
    count = int(match["count"])
    frames = int(match["frames"]) if match["frames"] else None
    if count < 1:
        raise ValueError(f"Scene spec {spec!r}: the number of scenes must be >= 1.")
    if frames is not None and frames < 2:
        raise ValueError(f"Scene spec {spec!r}: scenes need >= 2 frames, got {frames}.")
    return SyntheticScenes(count, int(match["seed"]) if match["seed"] else default_seed, frames)


def _as_scenes(scenes) -> List[Any]:
    """Scenes, scene paths, folders of scenes, or procedural scenes -> a list of :class:`Scene` s and
    objects with ``to_scene()`` (converted one at a time by :func:`evaluate`, so procedural scenes are
    not all rendered and held in memory at once)."""
    from ..scene import Scene, load_scene
    from .data import resolve_scenes

    if isinstance(scenes, (str, os.PathLike, Scene)) or hasattr(scenes, "to_scene"):
        scenes = [scenes]
    out = []
    for item in scenes:
        if isinstance(item, Scene):
            out.append(item)
        elif hasattr(item, "to_scene"):
            out.append(item)
        elif isinstance(item, (str, os.PathLike)):
            out += [load_scene(p) for p in resolve_scenes(item)]
        else:
            raise TypeError(f"Expected scenes as Scene objects, paths or SyntheticScene; got {type(item).__name__}.")
    if not out:
        raise ValueError("evaluate() needs at least one scene.")
    return out


def _scene_name(scene, index: int) -> str:
    name = scene.metadata.get("scene_name") if scene.metadata else None
    if name:
        return str(name)
    return Path(scene.source.path).stem if scene.source.path is not None else f"scene_{index:04d}"


def _timestamps(scene, convention: str) -> torch.Tensor:
    """Official inference uses frame indices; the training convention the scene's own times."""
    if convention == "official_inference" or scene.times is None:
        return torch.tensor(scene.frame_indices, dtype=torch.float64)
    return scene.times


def _scene_convention(scene, requested: str, default: str) -> str:
    """The time convention of one scene: ``requested``, or for ``"auto"`` ``"training"`` on procedural
    scenes (continuous times in [0, 1]) and the pipeline's ``default`` elsewhere."""
    if requested != "auto":
        return requested
    return "training" if scene.source.format == "synthetic" and scene.times is not None else default


def _lpips_function(lpips: Union[bool, str], net: str):
    from ..metrics import lpips as lpips_metric

    if lpips is False:
        return None
    try:
        import lpips as _  # noqa: F401
    except ImportError:
        if lpips is True:
            lpips_metric(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))  # raises the explanatory ImportError
        warnings.warn("The optional `lpips` package is not installed: LPIPS is not reported.", stacklevel=3)
        return None
    return lambda pred, target: lpips_metric(pred, target, net=net)


def _mean(values: Iterable[float]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(sum(values) / len(values)) if values else None


def evaluate(
    pipeline_or_model,
    scenes,
    num_input_views: Union[int, Sequence[int]] = 32,
    num_target_views: int = 8,
    settings: Union[str, Sequence[str]] = ("sparse",),
    *,
    window_size: int = 256,
    resolution: Optional[Union[int, Sequence[int]]] = None,
    time_convention: Optional[str] = None,
    lpips: Union[bool, str] = "auto",
    lpips_net: str = "vgg",
    batch_size: int = 8,
    max_views_per_batch: Optional[int] = None,
    output_dir: Optional[Union[str, os.PathLike]] = None,
    progress: bool = False,
) -> Dict[str, Any]:
    """Evaluate novel view-time synthesis with the fixed protocol of the module docstring.

    Args:
        pipeline_or_model: an :class:`~fsm_hf.FSMPipeline`, or an FSM model (wrapped in a pipeline
            with default settings).
        scenes: :class:`~fsm_hf.scene.Scene` s, scene paths or folders of scenes, or procedural scenes
            (anything with ``to_scene()``).
        num_input_views: one count or a list (e.g. ``[8, 16, 32]``).
        num_target_views: held-out targets per scene.
        settings: ``"sparse"`` and/or ``"continuous"``.
        window_size: frames the sparse setting spreads its views over.
        resolution: pipeline override (``None``: the pipeline's config).
        time_convention: ``"official_inference"``, ``"training"``, ``"auto"`` (per scene: ``"training"``
            for procedural scenes, the pipeline's otherwise) or ``None`` (the pipeline's config).
        lpips: ``"auto"`` (reported when the package is installed), ``True`` (required: ImportError
            otherwise) or ``False``.
        batch_size: target views per model call.
        max_views_per_batch: read the inputs this many views at a time (bounds memory for many
            input views; same results); ``None``: the pipeline's config.
        output_dir: where to write ``summary.json`` and ``per_scene.csv``.
        progress: show the pipeline's progress bars.

    Returns:
        ``{"protocol": {...}, "summary": [one dict per setting: psnr, ssim, lpips, num_images,
        num_scenes, skipped_scenes], "per_scene": [one dict per scene and setting, with the scene's
        time convention]}``. Scenes too short for a setting are skipped (listed in ``skipped_scenes``).
    """
    from ..metrics import psnr, ssim
    from ..modeling_fsm import FSMPreTrainedModel
    from ..normalization import resize_and_center_crop
    from ..pipeline_fsm import FSMPipeline
    from ..scene import Scene

    if isinstance(pipeline_or_model, FSMPreTrainedModel):
        pipe = FSMPipeline(model=pipeline_or_model.eval())
    elif isinstance(pipeline_or_model, FSMPipeline):
        pipe = pipeline_or_model
    else:
        raise TypeError(f"Expected an FSMPipeline or an FSM model, got {type(pipeline_or_model).__name__}.")
    pipe.set_progress_bar_config(disable=not progress)
    counts = [num_input_views] if isinstance(num_input_views, int) else [int(n) for n in num_input_views]
    names = [settings] if isinstance(settings, str) else list(settings)
    conditions = [EvaluationSetting(n, num_target_views, s) for s in names for n in counts]
    for condition in conditions:
        if condition.setting not in EVAL_SETTINGS:
            raise ValueError(f"settings must be among {EVAL_SETTINGS}, got {condition.setting!r}.")
        if condition.num_input_views < 2 or condition.num_target_views < 1:
            raise ValueError(f"Need >= 2 input views and >= 1 target view, got {condition}.")
    if time_convention is not None and time_convention not in TIME_CONVENTIONS:
        raise ValueError(f"time_convention must be one of {TIME_CONVENTIONS} or None, got {time_convention!r}.")
    requested = time_convention or pipe.config.time_convention
    lpips_fn = _lpips_function(lpips, lpips_net)
    scene_list = _as_scenes(scenes)

    per_scene: List[Dict[str, Any]] = []
    per_image: Dict[EvaluationSetting, Dict[str, List[float]]] = {c: {"psnr": [], "ssim": [], "lpips": []} for c in conditions}
    skipped: Dict[EvaluationSetting, List[str]] = {c: [] for c in conditions}
    conventions_used = set()
    for index, item in enumerate(scene_list):
        scene = item if isinstance(item, Scene) else item.to_scene()
        name = _scene_name(scene, index)
        convention = _scene_convention(scene, requested, pipe.config.time_convention)
        conventions_used.add(convention)
        times = _timestamps(scene, convention)
        for condition in conditions:
            try:
                inputs, targets = split_for_setting(len(scene), condition, window_size)
            except ValueError:
                skipped[condition].append(name)
                continue
            # 1. Reconstruct from the inputs (normalisation fitted on them), render the targets.
            memory = pipe.reconstruct(
                scene.load_images(inputs), scene.cameras.select(inputs), times[inputs],
                resolution=resolution, time_convention=convention, max_views_per_batch=max_views_per_batch,
            )  # fmt: skip
            target_cameras = scene.cameras.select(targets)
            pred = pipe.render(memory, target_cameras, times[targets], batch_size=batch_size, output_type="pt").images
            # 2. Ground truth through the same resize + centre crop: [T, 3, h, w].
            gt, _ = resize_and_center_crop(scene.load_images(targets), target_cameras, *pred.shape[-2:])
            pred, gt = pred.cpu().float(), gt.float()
            scores = {"psnr": psnr(pred, gt).tolist(), "ssim": ssim(pred, gt).tolist()}
            scores["lpips"] = lpips_fn(pred, gt).tolist() if lpips_fn is not None else []
            for key, values in scores.items():
                per_image[condition][key] += values
            per_scene.append({
                "scene": name, "setting": condition.setting, "num_input_views": condition.num_input_views,
                "num_target_views": condition.num_target_views, "psnr": _mean(scores["psnr"]),
                "ssim": _mean(scores["ssim"]), "lpips": _mean(scores["lpips"]), "num_images": len(scores["psnr"]),
                "time_convention": convention,
                "input_frames": " ".join(str(scene.frame_indices[i]) for i in inputs),
                "target_frames": " ".join(str(scene.frame_indices[i]) for i in targets),
            })  # fmt: skip

    summary = []
    for condition in conditions:
        values = per_image[condition]
        summary.append({
            **asdict(condition), "name": condition.name, "psnr": _mean(values["psnr"]), "ssim": _mean(values["ssim"]),
            "lpips": _mean(values["lpips"]), "num_images": len(values["psnr"]),
            "num_scenes": len(scene_list) - len(skipped[condition]), "skipped_scenes": skipped[condition],
        })  # fmt: skip
    model_cfg = pipe.model.config
    protocol = {
        "window_size": window_size, "split": "evenly (fixed, window starting at frame 0)",
        "time_convention": (
            requested if requested != "auto" or len(conventions_used) > 1
            else next(iter(conventions_used), pipe.config.time_convention)
        ),
        "max_frames": pipe.config.max_frames,
        "resolution": list(pipe.config.resolution) if resolution is None else resolution,
        "metrics": {"psnr": "per image, data range 1", "ssim": "11x11 Gaussian window, sigma 1.5",
                    "lpips": f"lpips package, net={lpips_net}" if lpips_fn is not None else "not available"},
        "model": getattr(model_cfg, "_name_or_path", None) or pipe.config.get("_name_or_path"),
    }  # fmt: skip
    result = {"protocol": protocol, "summary": summary, "per_scene": per_scene}
    if output_dir is not None:
        write_results(result, output_dir)
    return result


def format_summary(result: Dict[str, Any]) -> str:
    """The summary rows of an :func:`evaluate` result as a text table (one row per setting and view count)."""

    def number(value, digits):
        return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"

    header = ["setting", "inputs", "targets", "scenes", "images", "PSNR", "SSIM", "LPIPS"]
    cells = [
        [row["setting"], str(row["num_input_views"]), str(row["num_target_views"]), str(row["num_scenes"]),
         str(row["num_images"]), number(row["psnr"], 2), number(row["ssim"], 4), number(row["lpips"], 4)]
        for row in result["summary"]
    ]  # fmt: skip
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
    skipped = [f"{row['name']}: {', '.join(row['skipped_scenes'])}" for row in result["summary"] if row["skipped_scenes"]]
    if skipped:
        lines.append("skipped (too short): " + "; ".join(skipped))
    return "\n".join(lines)


def write_results(result: Dict[str, Any], output_dir: Union[str, os.PathLike]) -> Path:
    """Write ``summary.json`` (protocol + summary) and ``per_scene.csv``; returns the folder."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)

    def clean(value):
        return None if isinstance(value, float) and not math.isfinite(value) else value

    summary = {"protocol": result["protocol"], "summary": [{k: clean(v) for k, v in row.items()} for row in result["summary"]]}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    fields = ["scene", "setting", "num_input_views", "num_target_views", "psnr", "ssim", "lpips", "num_images",
              "time_convention", "input_frames", "target_frames"]  # fmt: skip
    with (folder / "per_scene.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in result["per_scene"]:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    return folder
