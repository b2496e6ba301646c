"""The ``fsm`` command line: render videos, reconstruct memories, evaluate, convert and publish checkpoints.

This is the one top-layer module inside ``fsm_hf`` (DESIGN §1): it imports ``conversion`` lazily,
inside ``fsm convert``, and everything heavy (torch, diffusers, video I/O) inside the subcommand
that needs it, so ``fsm --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["build_parser", "main"]

_CONVENTIONS = """\
conventions:
  cameras     read from the scene file and converted to OpenCV camera-to-world (x right, y down,
              z forward) with pixel intrinsics (fx, fy, cx, cy); supported scene files are the
              official FSM .jsonl (+ video), nerfstudio transforms.json, Blender/D-NeRF
              transforms_*.json and LaCT/GSO opencv_cameras.json.
  inputs      --num-input-views views taken evenly over the scene (default: the checkpoint's).
  resolution  frames are resized to cover the processing resolution and centre-cropped; the
              intrinsics follow. It must be a multiple of the model's patch size.
  poses       normalised from the input views only (re-centred on their mean camera, scaled so
              camera positions lie in [-1, 1]); the same transform is applied to every target.
  time        "official_inference" (default of released checkpoints): integer frame indices,
              t = frame_idx % max_frames; "training": timestamps min-max rescaled over the inputs.
              Model time is tau = t / (max_frames - 1) * 2 - 1.
"""

_EVAL_DESCRIPTION = """\
Test-time scaling evaluation: for every scene, number of input views V and setting, reconstruct
from V input frames and score held-out frames against the ground truth (per-image PSNR, SSIM, and
LPIPS when the lpips package is installed). Prints the table and writes summary.json,
per_scene.csv and scaling.png (quality vs V, log2 axis, one line per setting) to --output-dir."""

_EVAL_EPILOG = """\
scenes (--scenes SPEC [SPEC ...]):
  PATH        a scene file or folder, or a folder of scenes (formats: see 'fsm --help').
  synthetic:N[@SEED][xFRAMES]
              N procedural 4D scenes (fsm_hf.synthetic) with seeds SEED, SEED+1, ... and FRAMES frames
              each, rendered at the processing resolution. SEED defaults to 10000, the first seed held
              out from the built-in model's training (lower seeds are refused with --model builtin);
              FRAMES defaults to enough frames for the largest setting, at least --window-size.
              Examples: synthetic:4   synthetic:2@10100x512

settings (--settings):
  sparse      V inputs spread evenly over the first --window-size frames (first and last included),
              --num-target-views targets evenly between them.
  continuous  the same split over the first V + --num-target-views consecutive frames (a dense clip
              with targets held out in between).
  Splits are fixed (the window starts at frame 0). A scene too short for a setting is an error
  before anything runs; --skip-short-scenes skips it for that setting instead.

time (--time-convention):
  auto (default)      synthetic scenes: "training" (their times are continuous in [0, 1], min-max
                      rescaled over the inputs); scene files: the checkpoint's convention.
  official_inference  integer frame indices, t = frame_idx % max_frames (released checkpoints).
  training            the scene's timestamps, min-max rescaled over the inputs.

example:
  fsm eval --model builtin --scenes synthetic:4x256 --num-input-views 4,8,16,32,64 --output-dir eval-out
"""


# ----------------------------------------------------------------------------------------------
# Parser
# ----------------------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _view_counts(text: str) -> list:
    """``"8,16,32"`` -> ``[8, 16, 32]`` (sorted, unique, each >= 2)."""
    counts = []
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 8,16,32, got {text!r}") from None
        if value < 2:
            raise argparse.ArgumentTypeError(f"every input-view count must be >= 2 (a reconstruction needs two views), got {value}")
        counts.append(value)
    return sorted(set(counts))


def _eval_settings(text: str) -> list:
    """``"sparse,continuous"`` -> ``["sparse", "continuous"]`` (known settings only)."""
    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in ("sparse", "continuous")]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"settings must be among sparse,continuous; got {text!r}")
    return names


def _add_model_and_scene(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and scene")
    group.add_argument("--model", required=True, help="pipeline folder (model_index.json + model/) or Hub id")
    group.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    group.add_argument("--scene", required=True, help="scene file or folder (see 'conventions' below)")
    group.add_argument("--num-input-views", type=_positive_int, default=None, help="input views (default: checkpoint's)")
    group.add_argument(
        "--frame-selection", choices=("evenly", "every", "all"), default="evenly",
        help="which frames are inputs: N evenly spaced (--num-input-views), every k-th (--frame-stride), or all",
    )  # fmt: skip
    group.add_argument("--frame-stride", type=_positive_int, default=None, help="k for --frame-selection every")
    group.add_argument(
        "--max-views-per-batch", type=_positive_int, default=None,
        help="read the inputs this many views at a time: bounds memory for long sequences (same results)",
    )  # fmt: skip
    group.add_argument(
        "--resolution", type=_positive_int, default=None, help="processing side in pixels (default: checkpoint's)"
    )
    group.add_argument(
        "--time-convention", choices=("official_inference", "training"), default=None,
        help="how timestamps become model time (default: checkpoint's)",
    )  # fmt: skip
    group.add_argument("--device", default="auto", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    group.add_argument(
        "--ns-dtype", choices=("float32", "bfloat16"), default=None,
        help="Newton-Schulz dtype (default: checkpoint's; bfloat16 reproduces the reference, float32 is "
        "faster on CPUs without bf16 and deterministic)",
    )  # fmt: skip
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and scenes")
    group.add_argument(
        "--model", required=True,
        help="pipeline folder (model_index.json + model/), Hub id, or 'builtin' (the model of 'fsm demo')",
    )  # fmt: skip
    group.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    group.add_argument(
        "--scenes", "--data", dest="scenes", nargs="+", required=True, metavar="SPEC",
        help="scene files/folders and synthetic:N[@SEED][xFRAMES] specs (see 'scenes' below)",
    )  # fmt: skip
    group.add_argument("--device", default="auto", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    group.add_argument(
        "--ns-dtype", choices=("float32", "bfloat16"), default=None, help="Newton-Schulz dtype (default: checkpoint's)"
    )
    protocol = parser.add_argument_group("protocol")
    protocol.add_argument(
        "--num-input-views", type=_view_counts, default=_view_counts("8,16,32,64,128"), metavar="V1,V2,...",
        help="input-view counts to evaluate, comma-separated, each >= 2 (default 8,16,32,64,128)",
    )  # fmt: skip
    protocol.add_argument("--num-target-views", type=_positive_int, default=8, help="held-out targets per scene (default 8)")
    protocol.add_argument(
        "--settings", type=_eval_settings, default=["sparse", "continuous"], metavar="S1,S2",
        help="sparse and/or continuous, comma-separated (default both; see 'settings' below)",
    )  # fmt: skip
    protocol.add_argument("--window-size", type=_positive_int, default=256, help="frames the sparse setting spans (default 256)")
    protocol.add_argument(
        "--resolution", type=_positive_int, default=None,
        help="processing side in pixels, a multiple of the patch size (default: checkpoint's)",
    )  # fmt: skip
    protocol.add_argument(
        "--time-convention", choices=("auto", "official_inference", "training"), default="auto",
        help="how timestamps become model time (default auto; see 'time' below)",
    )  # fmt: skip
    protocol.add_argument(
        "--skip-short-scenes", action="store_true",
        help="skip a scene for the settings it is too short for (default: refuse to start)",
    )  # fmt: skip
    protocol.add_argument(
        "--lpips", action=argparse.BooleanOptionalAction, default=None,
        help="report LPIPS (--lpips: required, --no-lpips: off; default: when the lpips package is installed)",
    )  # fmt: skip
    protocol.add_argument("--lpips-net", choices=("vgg", "alex"), default="vgg", help="LPIPS backbone (default vgg)")
    run = parser.add_argument_group("run")
    run.add_argument(
        "--max-views-per-batch", type=_positive_int, default=None,
        help="read the inputs this many views at a time: bounds memory for many input views (same results)",
    )  # fmt: skip
    run.add_argument("--batch-size", type=_positive_int, default=8, help="target views rendered per model call (default 8)")
    run.add_argument("--output-dir", default="fsm-eval-output", help="output folder (default ./fsm-eval-output)")
    run.add_argument("--no-plot", action="store_true", help="do not write scaling.png")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The ``fsm`` argument parser (subcommands ``render``, ``reconstruct``, ``convert``, ``push``, ``demo``, ``eval``)."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="fsm",
        description="Fast Spatial Memory (FSM): 4D reconstruction and novel view-time synthesis.",
        epilog=_CONVENTIONS,
        formatter_class=formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    render = sub.add_parser(
        "render", help="render a video along a camera path from a scene", epilog=_CONVENTIONS, formatter_class=formatter,
        description="Reconstruct a scene from its input views and render a video along a camera trajectory.",
    )  # fmt: skip
    _add_model_and_scene(render)
    path = render.add_argument_group("video")
    path.add_argument(
        "--trajectory", choices=("orbit", "spiral", "interp", "static"), default="interp",
        help="orbit: circle around the look-at point; spiral: forward-facing spiral around the mean "
        "input pose; interp: smooth path through the input cameras; static: the first input camera",
    )  # fmt: skip
    path.add_argument(
        "--time", choices=("fixed", "sweep"), default="sweep",
        help="fixed: bullet time at the middle of the clip; sweep: from the first to the last input time",
    )  # fmt: skip
    path.add_argument("--num-frames", type=_positive_int, default=60, help="video length in frames (default 60)")
    path.add_argument("--fps", type=float, default=24.0, help="frames per second (default 24)")
    path.add_argument("--batch-size", type=_positive_int, default=8, help="views rendered per model call (default 8)")
    path.add_argument("--save-memory", default=None, help="also write the spatial memory (.safetensors)")
    path.add_argument(
        "--out", required=True, help="output video (.mp4; .gif also works, and is the fallback without ffmpeg)"
    )

    recon = sub.add_parser(
        "reconstruct", help="reconstruct a scene into a spatial memory file", epilog=_CONVENTIONS,
        formatter_class=formatter,
        description="Read a scene's input views once and save the spatial memory (fast weights and the pose/time "
        "normalisation) for later rendering with FSMPipeline.render.",
    )  # fmt: skip
    _add_model_and_scene(recon)
    recon.add_argument("--out", required=True, help="output memory file (.safetensors)")

    convert = sub.add_parser(
        "convert", help="convert a foreign checkpoint to an FSMPipeline folder",
        description="Forwards the remaining arguments to python -m conversion.convert_fsm_official (official) or "
        "python -m conversion.convert_lact_nvs (lact). Run 'fsm convert official --help' for their options.",
    )  # fmt: skip
    convert.add_argument("source", choices=("official", "lact"), help="official FSM release (.pth) or LaCT NVS (.pt)")
    convert.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the converter")

    push = sub.add_parser("push", help="upload a pipeline or model folder to the Hugging Face Hub")
    push.add_argument("folder", help="folder to upload")
    push.add_argument("repo_id", help="Hub repository id, e.g. user/fsm-4d-lvsm")
    push.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", default=None, help="branch to push to")

    from .demo import DEMO_DESCRIPTION, add_demo_arguments  # light: no torch at import

    add_demo_arguments(sub.add_parser(
        "demo", help="run the built-in model on held-out procedural 4D scenes (scores, video, figure)",
        description=DEMO_DESCRIPTION,
    ))  # fmt: skip

    _add_eval_arguments(sub.add_parser(
        "eval", help="test-time scaling evaluation: quality vs number of input views, per setting",
        description=_EVAL_DESCRIPTION, epilog=_EVAL_EPILOG, formatter_class=formatter,
    ))  # fmt: skip
    return parser


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------
def _error(command: str, message: str) -> int:
    print(f"fsm {command}: error: {message}", file=sys.stderr)
    return 1


def _load_pipeline(args):
    from .pipeline_fsm import FSMPipeline, resolve_device

    overrides = {}
    if args.ns_dtype is not None:
        overrides["newton_schulz_dtype"] = args.ns_dtype
    pipe = FSMPipeline.from_pretrained(args.model, revision=args.revision, **overrides)
    pipe = pipe.to(resolve_device(args.device))
    pipe.set_progress_bar_config(disable=args.no_progress, leave=False)
    return pipe


def _load_inputs(pipe, args):
    """The scene's input views (a ``Scene``), chosen as the pipeline chooses them."""
    from .scene import load_scene

    return pipe.select_input_views(
        load_scene(args.scene), args.num_input_views, frame_selection=args.frame_selection, frame_stride=args.frame_stride
    )


def _reconstruct(pipe, inputs, args):
    memory = pipe.reconstruct(
        None, inputs, resolution=args.resolution, time_convention=args.time_convention,
        frame_selection="all", max_views_per_batch=args.max_views_per_batch,
    )  # fmt: skip
    memory.metadata.update(scene=str(args.scene), input_frame_indices=list(inputs.frame_indices))
    return memory


def _cmd_reconstruct(args) -> int:
    pipe = _load_pipeline(args)
    inputs = _load_inputs(pipe, args)
    memory = _reconstruct(pipe, inputs, args)
    memory.save(args.out)
    print(f"Wrote the memory of {len(inputs)} input views ({memory.image_size[0]}x{memory.image_size[1]}) to {args.out}")
    return 0


def _cmd_render(args) -> int:
    import torch

    from .camera_paths import make_trajectory
    from .video import export_to_video

    pipe = _load_pipeline(args)
    inputs = _load_inputs(pipe, args)
    memory = _reconstruct(pipe, inputs, args)
    if args.save_memory:
        memory.save(args.save_memory)
    input_times = inputs.times if inputs.times is not None else torch.zeros(len(inputs), dtype=torch.float64)
    cameras, times = make_trajectory(inputs.cameras, input_times, args.num_frames, args.trajectory, args.time)
    convention = memory.metadata.get("time_convention")
    if convention == "official_inference":
        times = times.round()  # this convention takes integer frame indices
    out = pipe.render(memory, cameras, times, batch_size=args.batch_size, output_type="np")
    written = export_to_video(out.images, args.out, fps=args.fps)
    print(f"Wrote {args.num_frames} frames ({args.trajectory}, time {args.time}) to {written}")
    return 0


def _cmd_convert(args) -> int:
    import importlib

    module = {"official": "conversion.convert_fsm_official", "lact": "conversion.convert_lact_nvs"}[args.source]
    try:
        converter = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and module.startswith(err.name):
            return _error("convert", f"the converter {module} is not available in this installation ({err}).")
        raise
    return int(converter.main(list(args.args)) or 0)


def _cmd_push(args) -> int:
    try:
        from .hub import push_folder
    except ImportError as err:
        _error("push", f"uploading is not available yet (fsm_hf.hub.push_folder could not be imported: {err}).")
        return 2
    try:
        url = push_folder(args.folder, args.repo_id, token=args.token, private=args.private, revision=args.revision)
    except PermissionError as err:
        return _error("push", str(err))
    print(f"Uploaded {args.folder} to {url or args.repo_id}")
    return 0


def _eval_scene_sources(specs):
    """Parse ``--scenes`` before any work: ``[("synthetic", SyntheticScenes) | ("path", Path)]``."""
    from .training.evaluation import parse_synthetic_spec

    sources = []
    for spec in specs:
        synthetic = parse_synthetic_spec(spec)
        if synthetic is not None:
            sources.append(("synthetic", synthetic))
        elif not Path(spec).exists():
            raise FileNotFoundError(f"scene {spec!r} does not exist (expected a scene file/folder or synthetic:N[@SEED][xFRAMES]).")
        else:
            sources.append(("path", Path(spec)))
    return sources


def _is_builtin_model(model: str) -> bool:
    """``--model builtin``, or the built-in model's folder given by path."""
    from .demo import builtin_model_path

    if model == "builtin":
        return True
    try:
        return Path(model).exists() and Path(model).resolve() == builtin_model_path().resolve()
    except OSError:
        return False


def _cmd_eval(args) -> int:
    from .training.evaluation import EvaluationSetting, _scene_name, evaluate, format_summary, split_for_setting

    # 1. Everything that can be checked without the model.
    sources = _eval_scene_sources(args.scenes)
    builtin = _is_builtin_model(args.model)
    if builtin:
        from .demo import builtin_model_path, check_held_out_seed

        for _, synthetic in (s for s in sources if s[0] == "synthetic"):
            check_held_out_seed(synthetic.seed, "synthetic seeds")
        if args.model == "builtin":
            if not (builtin_model_path() / "model_index.json").is_file():
                raise FileNotFoundError(f"the built-in model is not packaged in this installation ({builtin_model_path()}).")
            args.model = str(builtin_model_path())
    conditions = [EvaluationSetting(n, args.num_target_views, s) for s in args.settings for n in args.num_input_views]
    longest = max(c.num_input_views + c.num_target_views for c in conditions)

    # 2. The model, the processing resolution, the scenes (lazy: nothing rendered or decoded yet).
    pipe = _load_pipeline(args)
    height, width = pipe._check_resolution(args.resolution or pipe.config.resolution, pipe.model)
    scenes = []  # (name, number of frames, scene or lazy synthetic scene)
    for kind, source in sources:
        if kind == "synthetic":
            frames = source.num_frames or max(args.window_size, longest)
            scenes += [(s.name, len(s), s) for s in source.scenes(height, width, frames)]
        else:
            from .scene import load_scene
            from .training.data import resolve_scenes

            for path in resolve_scenes(source):
                scene = load_scene(path)
                scenes.append((_scene_name(scene, len(scenes)), len(scene), scene))

    # 3. Every scene must be long enough for every setting (or be skipped, with --skip-short-scenes).
    short = []
    for name, frames, _ in scenes:
        for condition in conditions:
            try:
                split_for_setting(frames, condition, args.window_size)
            except ValueError:
                short.append(f"{name} ({frames} frames) for {condition.setting} with {condition.num_input_views} inputs")
    if short and not args.skip_short_scenes:
        shown = "; ".join(short[:4]) + (f"; and {len(short) - 4} more" if len(short) > 4 else "")
        raise ValueError(
            f"scenes too short: {shown}. A setting needs inputs + targets frames (sparse: within --window-size "
            f"{args.window_size}). Use fewer --num-input-views, longer scenes (synthetic:NxFRAMES), or --skip-short-scenes."
        )

    # 4. Evaluate, write, plot, print.
    lpips = "auto" if args.lpips is None else args.lpips
    try:
        result = evaluate(
            pipe, [scene for _, _, scene in scenes], args.num_input_views, args.num_target_views, args.settings,
            window_size=args.window_size, resolution=(height, width), time_convention=args.time_convention,
            lpips=lpips, lpips_net=args.lpips_net, batch_size=args.batch_size,
            max_views_per_batch=args.max_views_per_batch, output_dir=args.output_dir, progress=not args.no_progress,
        )  # fmt: skip
    except ImportError as err:  # --lpips without the package
        return _error("eval", str(err))
    print(format_summary(result))
    written = ["summary.json", "per_scene.csv"]
    if not args.no_plot:
        from .training.plots import plot_scaling

        try:
            plot_scaling(result, Path(args.output_dir) / "scaling.png")
            written.append("scaling.png")
        except ImportError as err:
            print(f"fsm eval: warning: no scaling.png ({err})", file=sys.stderr)
    print(f"Wrote {', '.join(written)} to {args.output_dir}")
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_from_args

    return run_from_args(args)


_COMMANDS = {
    "render": _cmd_render, "reconstruct": _cmd_reconstruct, "convert": _cmd_convert, "push": _cmd_push,
    "demo": _cmd_demo, "eval": _cmd_eval,
}  # fmt: skip


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``fsm`` command line; returns the exit status (0 success, 1 bad input, 2 unavailable/usage)."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        return _COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as err:  # bad input: one line, no traceback
        return _error(args.command, str(err))


if __name__ == "__main__":
    raise SystemExit(main())
