"""``fsm demo``: the built-in FSM model on held-out procedural 4D scenes, scored against ground truth.

The package ships a small 4D FSM-LVSM (``fsm_hf/assets/fsm-demo``, an :class:`~fsm_hf.FSMPipeline`
folder; :func:`builtin_model_path`) trained on CPU on procedural scenes
(:func:`fsm_hf.synthetic.generate_scene`). The demo:

1. loads it with ``FSMPipeline.from_pretrained(builtin_model_path())``;
2. generates held-out scenes: seeds ``>= HELD_OUT_SEED_START`` (10 000), never used in training
   (the shipped model's training scenes are seeds ``1000 * seed + 100 * source + k`` of
   :class:`fsm_hf.training.data.FSMTrainingDataset`, all below 10 000 for its config);
3. reconstructs each scene's spatial memory from its evenly spaced input frames, renders held-out
   views at held-out times (:meth:`~fsm_hf.synthetic.SyntheticScene.split`: times between input
   frames, half of the cameras moved off the captured path) and scores them (PSNR, SSIM) against
   the exact ground truth, next to the nearest-input-frame baseline
   (:func:`fsm_hf.metrics.nearest_input_frame_baseline`);
4. writes ``space_time.mp4`` (a camera path through the input cameras while time sweeps the clip;
   ground truth | FSM side by side), ``comparison.png`` (inputs / ground truth / ours / baseline)
   and ``metrics.json`` to the output folder.

Scene times are continuous in ``[0, 1]``, so the pipeline runs with the ``"training"`` time
convention (min-max over the input times), the convention the model was trained with.

Example::

    from fsm_hf.demo import run_demo

    result = run_demo(num_scenes=2, output_dir="fsm-demo-output")
    print(result.gain_db)        # mean PSNR gain over the nearest-input-frame baseline (dB)

Everything heavy (torch, diffusers, video I/O) is imported inside the functions, so the ``fsm``
command line stays fast to start.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

__all__ = [
    "BUILTIN_MODEL_NAME",
    "DEMO_DESCRIPTION",
    "DemoResult",
    "HELD_OUT_SEED_START",
    "MODEL_CARD_NUM_SCENES",
    "SceneScores",
    "add_demo_arguments",
    "builtin_model_path",
    "check_held_out_seed",
    "evaluate_scenes",
    "format_table",
    "held_out_split",
    "input_recall_psnr",
    "main",
    "package_builtin_model",
    "run_demo",
]

#: Folder name of the shipped model inside ``fsm_hf/assets``.
BUILTIN_MODEL_NAME = "fsm-demo"
#: Held-out scene seeds start here; the shipped model was trained on seeds below it.
HELD_OUT_SEED_START = 10_000
#: Held-out scenes the built-in model's card averages when packaging: scenes differ in gain by about
#: 0.35 dB, so the mean's standard error is about 0.05 dB.
MODEL_CARD_NUM_SCENES = 64
#: Frames of each generated clip (the shipped model was trained on 32-frame clips).
DEMO_NUM_FRAMES = 32
DEFAULT_OUTPUT_DIR = "fsm-demo-output"
#: Seed of :meth:`SyntheticScene.split` choosing the held-out times and cameras of every scene.
SPLIT_SEED = 0
#: The scene times are continuous in [0, 1]: the pipeline rescales them over the inputs.
TIME_CONVENTION = "training"


DEMO_DESCRIPTION = (
    "Run the built-in FSM model (trained on CPU on procedural 4D scenes) on held-out scenes: reconstruct each "
    "from its input frames, render held-out views at held-out times, print PSNR/SSIM against ground truth next "
    "to the nearest-input-frame baseline, and write a space-time video and a comparison image."
)


def builtin_model_path() -> Path:
    """Folder of the built-in FSM model (an ``FSMPipeline`` folder shipped inside the package)."""
    return Path(__file__).resolve().parent / "assets" / BUILTIN_MODEL_NAME


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------
@dataclass
class SceneScores:
    """Mean scores over one scene's held-out views: the model's and the nearest-input-frame baseline's."""

    seed: int
    camera_path: str
    psnr: float
    ssim: float
    baseline_psnr: float
    baseline_ssim: float

    @property
    def gain_db(self) -> float:
        """PSNR of the model minus PSNR of the baseline (dB)."""
        return self.psnr - self.baseline_psnr


@dataclass
class DemoResult:
    """What :func:`run_demo` measured and wrote.

    Attributes:
        scenes: per-scene scores.
        num_input_views, num_target_views, resolution: the evaluation setting.
        elapsed_s: wall time of the whole demo (loading included).
        files: ``{"video": ..., "comparison": ..., "metrics": ...}`` paths written.
    """

    scenes: List[SceneScores]
    num_input_views: int
    num_target_views: int
    resolution: int
    elapsed_s: float = 0.0
    files: Dict[str, str] = field(default_factory=dict)

    def _mean(self, name: str) -> float:
        return sum(getattr(s, name) for s in self.scenes) / len(self.scenes)

    @property
    def psnr(self) -> float:
        return self._mean("psnr")

    @property
    def ssim(self) -> float:
        return self._mean("ssim")

    @property
    def baseline_psnr(self) -> float:
        return self._mean("baseline_psnr")

    @property
    def baseline_ssim(self) -> float:
        return self._mean("baseline_ssim")

    @property
    def gain_db(self) -> float:
        """Mean PSNR gain over the nearest-input-frame baseline (dB)."""
        return self.psnr - self.baseline_psnr

    def to_dict(self) -> Dict[str, object]:
        """A JSON-serialisable summary (per-scene rows and means)."""
        return {
            "setting": {
                "num_input_views": self.num_input_views,
                "num_target_views": self.num_target_views,
                "resolution": self.resolution,
                "scene_frames": DEMO_NUM_FRAMES,
                "time_convention": TIME_CONVENTION,
            },
            "scenes": [{**asdict(s), "gain_db": s.gain_db} for s in self.scenes],
            "mean": {
                "psnr": self.psnr, "ssim": self.ssim, "baseline_psnr": self.baseline_psnr,
                "baseline_ssim": self.baseline_ssim, "gain_db": self.gain_db,
            },  # fmt: skip
            "elapsed_s": self.elapsed_s,
            "files": dict(self.files),
        }


@dataclass
class _SceneViews:
    """One evaluated scene's images, kept for the comparison figure: ``[V|T, 3, H, W]`` each."""

    inputs: "object"
    ground_truth: "object"
    prediction: "object"
    baseline: "object"


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
def check_held_out_seed(seed: int, what: str = "--seed") -> None:
    """Refuse a scene seed the built-in model may have been trained on (``what`` names it in the error)."""
    if seed < HELD_OUT_SEED_START:
        raise ValueError(
            f"{what} must be >= {HELD_OUT_SEED_START} with the built-in model: lower seeds may be its training "
            f"scenes; got {seed}."
        )


def _cameras(views):
    """:class:`~fsm_hf.cameras.Cameras` of :class:`~fsm_hf.synthetic.SyntheticViews`."""
    from .cameras import Cameras

    return Cameras(views.c2w, views.fxfycxcy, views.width, views.height)


def held_out_split(seed: int, num_input_views: int, num_target_views: int, resolution: int):
    """The demo's task on one scene: ``(scene, inputs, targets)``, the generated clip of
    :data:`DEMO_NUM_FRAMES` square frames, its evenly spaced input frames and its held-out views
    (:meth:`~fsm_hf.synthetic.SyntheticScene.split` with :data:`SPLIT_SEED`)."""
    from .synthetic import generate_scene

    scene = generate_scene(seed, DEMO_NUM_FRAMES, resolution, resolution)
    inputs, targets = scene.split(num_input_views, num_target_views, seed=SPLIT_SEED)
    return scene, inputs, targets


def _evaluate_scene(pipe, seed: int, num_input_views: int, num_target_views: int, resolution: int):
    """Reconstruct one held-out scene and score its held-out views; returns ``(scores, views, memory, inputs, scene)``."""
    from .metrics import nearest_input_frame_baseline, psnr, ssim

    scene, inputs, targets = held_out_split(seed, num_input_views, num_target_views, resolution)
    memory = pipe.reconstruct(inputs.images, _cameras(inputs), inputs.times, time_convention=TIME_CONVENTION)
    prediction = pipe.render(memory, _cameras(targets), targets.times, output_type="pt").images.cpu()  # [T, 3, H, W]
    baseline = nearest_input_frame_baseline(inputs.images, inputs.times, targets.times)  # [T, 3, H, W]
    truth = targets.images
    scores = SceneScores(
        seed=seed,
        camera_path=scene.camera_path.kind,
        psnr=psnr(prediction, truth).mean().item(),
        ssim=ssim(prediction, truth).mean().item(),
        baseline_psnr=psnr(baseline, truth).mean().item(),
        baseline_ssim=ssim(baseline, truth).mean().item(),
    )
    return scores, _SceneViews(inputs.images, truth, prediction, baseline), memory, inputs, scene


def evaluate_scenes(
    pipe,
    seeds: Sequence[int],
    num_target_views: int = 8,
    *,
    num_input_views: Optional[int] = None,
    keep_views: bool = False,
):
    """Score a pipeline on held-out procedural scenes.

    Args:
        pipe: an :class:`~fsm_hf.FSMPipeline` (4D model).
        seeds: scene seeds (each ``>= HELD_OUT_SEED_START``).
        num_target_views: held-out views per scene.
        num_input_views: evenly spaced input frames (default: the pipeline's ``num_input_views``).
        keep_views: also return the images and memories (for figures and videos).

    Returns:
        ``[SceneScores]``, or ``([SceneScores], [(views, memory, inputs, scene)])`` with ``keep_views``.
    """
    num_input_views = num_input_views or pipe.config.num_input_views
    height, width = pipe.config.resolution
    if height != width:
        raise ValueError(f"The demo renders square scenes; this pipeline's resolution is {height}x{width}.")
    scores, kept = [], []
    for seed in seeds:
        check_held_out_seed(seed)
        score, views, memory, inputs, scene = _evaluate_scene(pipe, seed, num_input_views, num_target_views, height)
        scores.append(score)
        if keep_views:
            kept.append((views, memory, inputs, scene))
    return (scores, kept) if keep_views else scores


def format_table(result: DemoResult) -> str:
    """The demo's score table: one row per scene, the mean, and the gain over the baseline."""
    header = (
        f"{'scene':>5}  {'seed':>6}  {'camera':<8}  {'FSM PSNR':>8}  {'SSIM':>6}  "
        f"{'baseline PSNR':>13}  {'SSIM':>6}  {'gain dB':>7}"
    )
    lines = [header, "-" * len(header)]

    def row(label, seed, camera, psnr, ssim, b_psnr, b_ssim):
        return (
            f"{label:>5}  {seed:>6}  {camera:<8}  {psnr:>8.2f}  {ssim:>6.3f}  {b_psnr:>13.2f}  {b_ssim:>6.3f}  "
            f"{psnr - b_psnr:>+7.2f}"
        )

    for i, s in enumerate(result.scenes, 1):
        lines.append(row(i, s.seed, s.camera_path, s.psnr, s.ssim, s.baseline_psnr, s.baseline_ssim))
    lines.append("-" * len(header))
    lines.append(row("mean", "", "", result.psnr, result.ssim, result.baseline_psnr, result.baseline_ssim))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Figures and video
# ----------------------------------------------------------------------------------------------
def _upscale(images, factor: int):
    """Nearest-neighbour upscaling of ``[N, 3, H, W]`` (crisp pixels in small figures)."""
    return images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1) if factor > 1 else images


def _comparison_figure(scenes: Sequence[_SceneViews], labels: Sequence[str], path: Path, scale: int):
    """``comparison.png``: per scene four labelled rows, inputs / ground truth / FSM / baseline."""
    import torch
    from PIL import Image, ImageDraw

    from .video import make_image_grid

    names = ("inputs", "ground truth", "FSM (ours)", "baseline")
    columns = max(max(v.inputs.shape[0], v.ground_truth.shape[0]) for v in scenes)
    cells, row_labels = [], []
    for views, label in zip(scenes, labels):
        for name, images in zip(names, (views.inputs, views.ground_truth, views.prediction, views.baseline)):
            images = _upscale(images.float().clamp(0, 1), scale)
            blank = torch.ones(columns - images.shape[0], *images.shape[1:])  # white filler cells
            cells.append(torch.cat([images, blank]))
            row_labels.append(f"{label}\n{name}")
    padding = 2
    grid = make_image_grid(torch.cat(cells), rows=len(cells), cols=columns, padding=padding)
    label_width, cell_height = 110, cells[0].shape[-2]
    figure = Image.new("RGB", (grid.width + label_width, grid.height), "white")
    figure.paste(grid, (label_width, 0))
    draw = ImageDraw.Draw(figure)
    for r, text in enumerate(row_labels):
        draw.multiline_text((4, r * (cell_height + padding) + cell_height // 2 - 12), text, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.save(path)
    return path


def _space_time_video(pipe, memory, inputs, scene, path: Path, num_frames: int, fps: float, scale: int) -> str:
    """A camera path through the input cameras while time sweeps the clip: ground truth | FSM per frame."""
    import torch

    from .camera_paths import make_trajectory
    from .video import export_to_video

    cameras, times = make_trajectory(_cameras(inputs), inputs.times, num_frames, "interp", "sweep")
    rendered = pipe.render(memory, cameras, times, output_type="pt").images.cpu()  # [N, 3, H, W]
    truth = scene.render(cameras.c2w.float(), cameras.fxfycxcy.float(), times.float())  # [N, 3, H, W]
    frames = _upscale(torch.cat([truth, rendered], dim=-1), scale)  # [N, 3, sH, 2sW]
    return export_to_video(frames.permute(0, 2, 3, 1).numpy(), path, fps=fps)


# ----------------------------------------------------------------------------------------------
# The demo
# ----------------------------------------------------------------------------------------------
def run_demo(
    num_scenes: int = 3,
    seed: int = HELD_OUT_SEED_START,
    device: str = "auto",
    output_dir: Union[str, Path] = DEFAULT_OUTPUT_DIR,
    *,
    model_path: Optional[Union[str, Path]] = None,
    num_target_views: int = 8,
    video_frames: int = 48,
    fps: float = 12.0,
    scale: int = 4,
    log: Optional[Callable[[str], None]] = print,
) -> DemoResult:
    """Run the built-in model on held-out scenes, print the score table and write the video and figure.

    Args:
        num_scenes: held-out scenes (seeds ``seed, seed + 1, ...``).
        seed: first scene seed, ``>= HELD_OUT_SEED_START``.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        output_dir: where ``space_time.mp4`` (or ``.gif`` without ffmpeg), ``comparison.png`` and
            ``metrics.json`` go.
        model_path: an ``FSMPipeline`` folder (default: :func:`builtin_model_path`).
        num_target_views: held-out views per scene.
        video_frames, fps: length and speed of the video (first scene).
        scale: pixel upscaling of the video and figure (the model works at 64x64).
        log: where the table and progress lines go (``None``: silent).

    Returns:
        :class:`DemoResult`.
    """
    import torch

    from .pipeline_fsm import FSMPipeline, resolve_device

    start = time.perf_counter()
    say = log or (lambda text: None)
    if num_scenes < 1:
        raise ValueError(f"num_scenes must be >= 1, got {num_scenes}.")
    check_held_out_seed(seed)
    folder = Path(model_path) if model_path is not None else builtin_model_path()
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"No FSM pipeline folder at {folder} (model_index.json missing).")

    # 1. The model.
    device = resolve_device(device)
    pipe = FSMPipeline.from_pretrained(folder).to(device)
    pipe.set_progress_bar_config(disable=True)
    height = pipe.config.resolution[0]
    say(f"FSM demo: {folder.name} ({sum(p.numel() for p in pipe.model.parameters()) / 1e6:.2f}M parameters) on {device}")

    # 2-3. Held-out scenes: reconstruct from the inputs, render held-out views and times, score.
    seeds = list(range(seed, seed + num_scenes))
    with torch.inference_mode():
        scores, kept = evaluate_scenes(pipe, seeds, num_target_views, keep_views=True)
    result = DemoResult(scores, pipe.config.num_input_views, num_target_views, height)
    say(
        f"{num_scenes} held-out scene(s) (seeds {seeds[0]}..{seeds[-1]}), {result.num_input_views} input frames each, "
        f"{num_target_views} held-out views at held-out times ({height}x{height}):"
    )
    say(format_table(result))
    say(
        f"FSM: {result.psnr:.2f} dB PSNR / {result.ssim:.3f} SSIM; nearest-input-frame baseline: "
        f"{result.baseline_psnr:.2f} dB / {result.baseline_ssim:.3f}; gain {result.gain_db:+.2f} dB"
    )

    # 4. Outputs.
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    views, memory, inputs, scene = kept[0]
    with torch.inference_mode():
        video = _space_time_video(pipe, memory, inputs, scene, output_dir / "space_time.mp4", video_frames, fps, scale)
    figure = _comparison_figure([k[0] for k in kept], [f"seed {s}" for s in seeds], output_dir / "comparison.png", 2)
    result.files = {"video": str(video), "comparison": str(figure), "metrics": str(output_dir / "metrics.json")}
    result.elapsed_s = time.perf_counter() - start
    Path(result.files["metrics"]).write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    say(f"Wrote {video} (ground truth | FSM along a camera path through space and time) and {figure}")
    say(f"Done in {result.elapsed_s:.1f} s")
    return result


# ----------------------------------------------------------------------------------------------
# Packaging the built-in model (maintainers)
# ----------------------------------------------------------------------------------------------
def input_recall_psnr(pipe, reconstructions: Sequence[Tuple[object, object]]) -> float:
    """Mean PSNR of input frames rendered back from their own memory (same cameras, same times).

    A diagnostic of how well a model looks views up in its fast weights: a model that stores its
    inputs faithfully scores far above its novel-view PSNR here.

    Args:
        pipe: the :class:`~fsm_hf.FSMPipeline` that reconstructed the memories.
        reconstructions: ``(memory, inputs)`` pairs: an :class:`~fsm_hf.memory.FSMMemory` and the
            :class:`~fsm_hf.synthetic.SyntheticViews` it was read from (as :func:`evaluate_scenes`
            returns them with ``keep_views=True``).
    """
    from .metrics import psnr

    values = []
    for memory, inputs in reconstructions:
        rendered = pipe.render(memory, _cameras(inputs), inputs.times, output_type="pt").images.cpu()
        values.append(psnr(rendered, inputs.images).mean().item())
    return sum(values) / len(values)


def _starting_point(model: str) -> str:
    from .configuration_fsm import PRESETS

    return "from scratch" if model in PRESETS else f"the checkpoint `{model}`"


def _demo_model_section(
    result: DemoResult, training: Dict[str, object], ablation: Optional[Dict], recall_psnr: Optional[float] = None
) -> str:
    """The model card's section on how the built-in model was trained and how it scores."""
    warmup_command = training.get("warmup_command")
    minutes = float(training["wall_time_s"]) / 60
    lines = [
        "## The built-in `fsm demo` model",
        "",
        "Trained on CPU with this repository's `finetune.py`, on procedural 4D scenes "
        "(`fsm_hf.synthetic.generate_scene`: a textured room with moving objects and soft blobs, filmed by a "
        "handheld camera). Shipped inside the package (`fsm_hf.builtin_model_path()`) and run by `fsm demo`.",
        "",
    ]
    if warmup_command:
        warmup_minutes = float(training["warmup_wall_time_s"]) / 60
        lines += [
            "Two stages. A warm-up trains the same architecture from scratch with softmax attention onto the input "
            "tokens in place of LaCET (`cross_view_mixer=\"attention\"`), which learns to read the input views far "
            "faster than fast weights do at this size. The FSM model then starts from it (every shared weight, and "
            "the mixer's q/k/v and output projections; fast weights freshly initialised) and trains with LaCET. "
            "The shipped model is the second stage's: LaCET only, no attention across views.",
            "",
            f"- Warm-up command: `{warmup_command}` ({warmup_minutes:.1f} min)",
            f"- Training command: `{training['command']}` ({minutes:.1f} min)",
            f"- Training wall time: {warmup_minutes + minutes:.1f} min in all on {training['hardware']}",
        ]
    else:
        lines += [
            f"- Training command: `{training['command']}`",
            f"- Training wall time: {minutes:.1f} min on {training['hardware']}",
        ]
    lines += [
        f"- Training data: {training['data']}",
        "- Newton-Schulz runs in **float32** (`newton_schulz_dtype=\"float32\"`): bf16 matrix products are about "
        "55x slower on CPUs without native bf16. The released FSM models use bf16 Newton-Schulz; set "
        "`newton_schulz_dtype` at load time to change it.",
        "- Time convention: `\"training\"` (the clip's times are min-max rescaled over the input frames), as in training.",
        "",
        "### Held-out evaluation (`fsm demo` protocol)",
        "",
        f"{len(result.scenes)} held-out scenes (seeds {result.scenes[0].seed}..{result.scenes[-1].seed}; training used "
        f"seeds below {HELD_OUT_SEED_START}), {DEMO_NUM_FRAMES}-frame clips at {result.resolution}x{result.resolution}, "
        f"{result.num_input_views} evenly spaced input frames, {result.num_target_views} held-out views per scene at "
        "times between input frames (half of them with the camera moved 0.3-0.8 units off the captured path). "
        "Baseline: the nearest-input-frame baseline (the input frame nearest in time, copied).",
        "",
        "| | PSNR (dB) | SSIM |",
        "|---|---|---|",
        f"| FSM (this model) | {result.psnr:.2f} | {result.ssim:.3f} |",
        f"| nearest-input-frame baseline | {result.baseline_psnr:.2f} | {result.baseline_ssim:.3f} |",
        f"| gain | {result.gain_db:+.2f} | {result.ssim - result.baseline_ssim:+.3f} |",
        "",
        "Per scene:",
        "",
        "```",
        format_table(result),
        "```",
    ]
    if ablation:
        budget = ablation["budget"]
        lines += [
            "",
            "### Ablation: LaCET vs LaCT (equal budgets)",
            "",
            f"Measured with `benchmarks/ablation_demo.py` ({ablation['device']}): the same architecture, data, seed, "
            f"starting point ({_starting_point(ablation.get('model', 'tiny'))}) and budget ({budget['max_steps']} steps "
            f"x {budget['batch_size']} sample(s), shorter than the shipped model's training), scored on "
            f"{budget['num_scenes']} held-out scenes with the protocol above.",
            "",
            "| variant | held-out PSNR (dB) | SSIM | gain over baseline (dB) | final train L2 |",
            "|---|---|---|---|---|",
        ]
        for name, r in ablation["results"].items():
            lines.append(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['gain_db']:+.2f} | {r['final_train_l2']:.4f} |")
        if ablation.get("note"):
            lines += ["", str(ablation["note"])]
    lines += [
        "",
        "### Limitations",
        "",
        "A demonstration model: tiny, trained for minutes on one kind of procedural scene at 64x64. It is not "
        "meant for real footage; convert a released FSM checkpoint for that (see the fsm-hf README).",
    ]
    if result.gain_db < 3.0:
        lines += [
            "",
            f"**It does not reach the goal it was trained for**: {result.gain_db:+.2f} dB against the "
            "nearest-input-frame baseline, where the goal is +3 dB. Its renders are blurrier than the ground truth.",
        ]
        if recall_psnr is not None:
            lines[-1] += (
                " A simpler test shows how well it looks views up in its fast weights: rendering its own input "
                f"frames back from the memory (same cameras, same times) scores {recall_psnr:.2f} dB."
            )
    return "\n".join(lines)


def package_builtin_model(
    trained_folder: Union[str, Path],
    training: Dict[str, object],
    *,
    destination: Optional[Union[str, Path]] = None,
    ablation_json: Optional[Union[str, Path]] = None,
    num_scenes: int = MODEL_CARD_NUM_SCENES,
    log: Optional[Callable[[str], None]] = print,
) -> DemoResult:
    """Turn a ``finetune.py`` output (``output_dir/final``) into the shipped model folder.

    Re-saves the pipeline with the demo's settings (``"training"`` time convention, the training
    number of input views and resolution), copies ``training_config.yaml``, scores the model on
    ``num_scenes`` held-out scenes and writes the model card (training command, data, wall time,
    scores, and the ablation table when ``ablation_json`` is given).

    Args:
        trained_folder: the ``FSMPipeline`` folder ``finetune.py`` wrote.
        training: ``{"command", "wall_time_s", "hardware", "data"}`` as recorded when training, plus
            ``"warmup_command"`` and ``"warmup_wall_time_s"`` when it started from a warm-up run.
        destination: default :func:`builtin_model_path`.
        num_scenes: held-out scenes the card's scores average (:data:`MODEL_CARD_NUM_SCENES`).
    """
    import shutil

    import torch
    import yaml

    from .model_card import generate_model_card
    from .pipeline_fsm import FSMPipeline

    trained_folder = Path(trained_folder)
    destination = Path(destination) if destination is not None else builtin_model_path()
    record = yaml.safe_load((trained_folder / "training_config.yaml").read_text(encoding="utf-8"))
    trained = FSMPipeline.from_pretrained(trained_folder)
    pipe = FSMPipeline(
        model=trained.model, resolution=record["image_size"], num_input_views=record["num_input_views"],
        time_convention=TIME_CONVENTION, max_frames=trained.model.config.max_frames,
    )  # fmt: skip
    if destination.exists():
        shutil.rmtree(destination)
    pipe.save_pretrained(destination, safe_serialization=True)
    shutil.copy(trained_folder / "training_config.yaml", destination / "training_config.yaml")

    pipe.set_progress_bar_config(disable=True)
    seeds = list(range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + num_scenes))
    with torch.inference_mode():
        scores, kept = evaluate_scenes(pipe, seeds, 8, keep_views=True)
        recall = input_recall_psnr(pipe, [(memory, inputs) for _, memory, inputs, _ in kept])
    result = DemoResult(scores, pipe.config.num_input_views, 8, record["image_size"])
    setting = f"{result.num_input_views} input frames, 8 held-out views"
    dataset = f"fsm-hf procedural 4D scenes (held-out seeds {seeds[0]}-{seeds[-1]})"
    eval_rows = [
        {"dataset": dataset, "setting": setting, "metric": "PSNR", "value": result.psnr},
        {"dataset": dataset, "setting": setting, "metric": "SSIM", "value": result.ssim},
        {"dataset": dataset, "setting": f"{setting}, nearest-input-frame baseline", "metric": "PSNR", "value": result.baseline_psnr},
        {"dataset": dataset, "setting": f"{setting}, nearest-input-frame baseline", "metric": "SSIM", "value": result.baseline_ssim},
    ]  # fmt: skip
    ablation = json.loads(Path(ablation_json).read_text(encoding="utf-8")) if ablation_json else None
    provenance = {"training_command": training["command"], "training_data": training["data"]}
    card = generate_model_card(
        pipe.model.config, provenance=provenance, eval_results=eval_rows, training_config=record, subfolder="model"
    )
    head, provenance_section = card.split("## Provenance", 1)
    section = _demo_model_section(result, training, ablation, recall)
    (destination / "model" / "README.md").write_text(f"{head}{section}\n\n## Provenance{provenance_section}", encoding="utf-8")
    if log:
        log(format_table(result))
        log(f"Input frames rendered back from the memory: {recall:.2f} dB PSNR")
        log(f"Packaged {trained_folder} as {destination}: mean gain {result.gain_db:+.2f} dB over the baseline")
    return result


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The demo's options (shared by ``fsm demo`` and ``python -m fsm_hf.demo``)."""
    parser.add_argument("--num-scenes", type=int, default=3, help="held-out scenes to evaluate (default 3)")
    parser.add_argument(
        "--seed", type=int, default=HELD_OUT_SEED_START,
        help=f"seed of the first scene (>= {HELD_OUT_SEED_START}: never seen in training; default {HELD_OUT_SEED_START})",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="torch device, e.g. cpu or cuda (default: cuda if available)")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help=f"output folder (default ./{DEFAULT_OUTPUT_DIR})")
    parser.add_argument("--model", default=None, help="an FSMPipeline folder instead of the built-in model")
    parser.add_argument("--num-target-views", type=int, default=8, help="held-out views per scene (default 8)")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Run the demo from parsed :func:`add_demo_arguments` options; returns the exit status."""
    run_demo(
        args.num_scenes, args.seed, args.device, args.output_dir,
        model_path=args.model, num_target_views=args.num_target_views,
    )  # fmt: skip
    return 0


def _package_main(argv: Sequence[str]) -> int:
    """``python -m fsm_hf.demo package RUN/final --command ... --wall-time-s ...`` (maintainers)."""
    parser = argparse.ArgumentParser(prog="python -m fsm_hf.demo package", description=package_builtin_model.__doc__)
    parser.add_argument("trained_folder", help="the FSMPipeline folder finetune.py wrote (OUTPUT_DIR/final)")
    parser.add_argument("--command", required=True, help="the exact training command")
    parser.add_argument("--wall-time-s", type=float, required=True, help="training wall time in seconds")
    parser.add_argument("--warmup-command", default=None, help="the command that trained the checkpoint training started from")
    parser.add_argument("--warmup-wall-time-s", type=float, default=None, help="its wall time in seconds")
    parser.add_argument("--hardware", default="2 shared CPU cores (OMP_NUM_THREADS=1)", help="what it trained on")
    parser.add_argument("--data", required=True, help="description of the training data")
    parser.add_argument("--ablation", default=None, help="JSON written by benchmarks/ablation_demo.py")
    parser.add_argument("--destination", default=None, help="default: the built-in model folder")
    parser.add_argument(
        "--num-scenes", type=int, default=MODEL_CARD_NUM_SCENES,
        help=f"held-out scenes to score (default {MODEL_CARD_NUM_SCENES})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if (args.warmup_command is None) != (args.warmup_wall_time_s is None):
        parser.error("--warmup-command and --warmup-wall-time-s go together")
    training = {"command": args.command, "wall_time_s": args.wall_time_s, "hardware": args.hardware, "data": args.data}
    if args.warmup_command is not None:
        training.update(warmup_command=args.warmup_command, warmup_wall_time_s=args.warmup_wall_time_s)
    package_builtin_model(
        args.trained_folder, training, destination=args.destination, ablation_json=args.ablation, num_scenes=args.num_scenes
    )
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m fsm_hf.demo [options]`` (the same as ``fsm demo``); ``python -m fsm_hf.demo package ...``
    writes the built-in model folder from a training run."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["package"]:
        return _package_main(argv[1:])
    parser = add_demo_arguments(argparse.ArgumentParser(prog="fsm demo", description=DEMO_DESCRIPTION))
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
