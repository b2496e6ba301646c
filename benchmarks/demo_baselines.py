"""Reference predictions on the `fsm demo` task, next to the built-in model.

`fsm demo` scores the built-in model against one baseline, the nearest input frame in time. This
script puts the model among stronger model-free references on the same held-out scenes and the
same held-out views (the demo's split, :func:`fsm_hf.demo.held_out_split`), so that its numbers can be
read for what they are:

* ``nearest``: the nearest input frame in time (the demo's baseline);
* ``nearest-blur<s>``: the same, blurred by a Gaussian of standard deviation ``s`` pixels. Blur
  trades sharpness for smaller misalignment errors, which PSNR rewards;
* ``blend``: the two input frames around the target time, weighted linearly in time, with and
  without blur;
* ``input-mean``: the mean of all input frames;
* ``fsm-demo``: the built-in model (``fsm demo``'s numbers).

None of the references uses the target cameras; they show how much a prediction that ignores
geometry can score, i.e. where the model's own contribution starts::

    python benchmarks/demo_baselines.py --num_scenes 8 --json benchmarks/results/demo_baselines.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsm_hf.demo import (  # noqa: E402
    HELD_OUT_SEED_START, builtin_model_path, check_held_out_seed, evaluate_scenes, held_out_split,
)  # fmt: skip
from fsm_hf.metrics import _gaussian_window, nearest_input_frame_baseline, psnr, ssim  # noqa: E402

BLUR_SIGMAS = (1.0, 2.0, 3.0)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """``[..., 3, H, W]`` images blurred by a separable Gaussian (``sigma`` pixels, edges replicated)."""
    radius = max(int(3 * sigma + 0.5), 1)
    kernel = _gaussian_window(2 * radius + 1, sigma, images.dtype, images.device)  # SSIM's window
    x = F.pad(images.reshape(-1, 3, *images.shape[-2:]), (radius,) * 4, mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return x.reshape(images.shape)


def time_blend(input_images: torch.Tensor, input_times: torch.Tensor, target_times: torch.Tensor) -> torch.Tensor:
    """``[T, 3, H, W]``: the two inputs around each target time, weighted linearly in time.

    Inputs must be sorted by time; targets outside the inputs' time range take the end frame.
    """
    times = target_times.clamp(input_times[0], input_times[-1])
    right = torch.searchsorted(input_times, times).clamp(1, len(input_times) - 1)
    left = right - 1
    weight = ((times - input_times[left]) / (input_times[right] - input_times[left])).view(-1, 1, 1, 1)
    return (1 - weight) * input_images[left] + weight * input_images[right]


def reference_predictions(seed: int, num_input_views: int, num_target_views: int, resolution: int):
    """``(truth, {name: prediction})`` for one held-out scene with the demo's split."""
    _, inputs, targets = held_out_split(seed, num_input_views, num_target_views, resolution)
    nearest = nearest_input_frame_baseline(inputs.images, inputs.times, targets.times)
    blend = time_blend(inputs.images, inputs.times, targets.times)
    predictions = {"nearest": nearest}
    predictions.update({f"nearest-blur{s:g}": gaussian_blur(nearest, s) for s in BLUR_SIGMAS})
    predictions["blend"] = blend
    predictions.update({f"blend-blur{s:g}": gaussian_blur(blend, s) for s in BLUR_SIGMAS})
    predictions["input-mean"] = inputs.images.mean(0, keepdim=True).expand_as(nearest)
    return targets.images, predictions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_scenes", type=int, default=8, help="held-out scenes (seeds first_seed, first_seed + 1, ...)")
    parser.add_argument(
        "--first_seed", type=int, default=HELD_OUT_SEED_START, help=f"seed of the first scene (>= {HELD_OUT_SEED_START})"
    )
    parser.add_argument("--num_target_views", type=int, default=8, help="held-out views per scene")
    parser.add_argument("--model", default=None, help="pipeline folder to score as well (default: the built-in model)")
    parser.add_argument(
        "--num_input_views", type=int, default=None,
        help="input frames per scene (default: the pipeline's; a finetune.py output folder needs the training value, 8 for the demo recipe)",
    )  # fmt: skip
    parser.add_argument("--json", default=None, help="write the table to this file")
    args = parser.parse_args(argv)
    try:
        check_held_out_seed(args.first_seed, "--first_seed")
    except ValueError as error:
        parser.error(str(error))

    from fsm_hf import FSMPipeline

    pipe = FSMPipeline.from_pretrained(args.model or builtin_model_path())
    pipe.set_progress_bar_config(disable=True)
    seeds = list(range(args.first_seed, args.first_seed + args.num_scenes))
    resolution = pipe.config.resolution[0]
    num_input_views = args.num_input_views or pipe.config.num_input_views
    scores: Dict[str, Dict[str, List[float]]] = {}
    for seed in seeds:
        truth, predictions = reference_predictions(seed, num_input_views, args.num_target_views, resolution)
        for name, prediction in predictions.items():
            entry = scores.setdefault(name, {"psnr": [], "ssim": []})
            entry["psnr"].append(psnr(prediction, truth).mean().item())
            entry["ssim"].append(ssim(prediction, truth).mean().item())
    model_name = Path(args.model).name if args.model else "fsm-demo"
    model_scores = evaluate_scenes(pipe, seeds, args.num_target_views, num_input_views=num_input_views)
    scores[model_name] = {"psnr": [s.psnr for s in model_scores], "ssim": [s.ssim for s in model_scores]}

    base = sum(scores["nearest"]["psnr"]) / len(seeds)
    rows = []
    print(f"{len(seeds)} held-out scenes (seeds {seeds[0]}..{seeds[-1]}), {num_input_views} input frames, "
          f"{args.num_target_views} held-out views each, {resolution}x{resolution}")  # fmt: skip
    print(f"{'prediction':<16} {'PSNR':>7} {'SSIM':>7} {'vs nearest':>11}")
    for name, entry in sorted(scores.items(), key=lambda kv: sum(kv[1]["psnr"])):
        mean_psnr, mean_ssim = (sum(v) / len(v) for v in (entry["psnr"], entry["ssim"]))
        rows.append({"prediction": name, "psnr": mean_psnr, "ssim": mean_ssim, "gain_db": mean_psnr - base,
                     "per_scene_psnr": entry["psnr"]})  # fmt: skip
        print(f"{name:<16} {mean_psnr:7.2f} {mean_ssim:7.3f} {mean_psnr - base:+10.2f}")
    if args.json:
        record = {"seeds": seeds, "num_input_views": num_input_views, "num_target_views": args.num_target_views,
                  "resolution": resolution, "rows": rows}  # fmt: skip
        Path(args.json).write_text(json.dumps(record, indent=2), encoding="utf-8")
        print(f"Wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
