"""Rendering speed of the procedural 4D scenes (``fsm_hf.synthetic``) on CPU.

Renders the captured trajectory of a few seeded scenes at 64x64 and 128x128 (optionally with
2x2 supersampling) and prints frames per second and frames per minute, plus the time to build
a scene and the mean nearest-input-frame baseline PSNR at the demo settings.

    python benchmarks/bench_synthetic.py [--threads 2] [--frames 128] [--scenes 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from fsm_hf.metrics import nearest_input_frame_baseline, psnr
from fsm_hf.synthetic import generate_scene


def frames_per_second(size: int, supersample: int, num_frames: int, seeds) -> float:
    """Frames rendered per second (trajectory cameras, every scene rendered once untimed first)."""
    elapsed, rendered = 0.0, 0
    for seed in seeds:
        scene = generate_scene(seed, num_frames=num_frames, height=size, width=size, supersample=supersample)
        times = scene.frame_times()
        c2w, fxfycxcy = scene.trajectory(times)
        scene.render(c2w[:4], fxfycxcy[:4], times[:4])  # warm-up
        start = time.perf_counter()
        scene.render(c2w, fxfycxcy, times)
        elapsed += time.perf_counter() - start
        rendered += num_frames
    return rendered / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--frames", type=int, default=128, help="frames rendered per scene")
    parser.add_argument("--scenes", type=int, default=3, help="number of seeded scenes")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = range(args.scenes)
    results = {"threads": torch.get_num_threads(), "frames_per_scene": args.frames, "scenes": args.scenes}

    start = time.perf_counter()
    for seed in seeds:
        generate_scene(seed)
    results["generate_scene_ms"] = 1000 * (time.perf_counter() - start) / args.scenes

    print(f"fsm_hf.synthetic on CPU, {results['threads']} thread(s), {args.scenes} scenes x {args.frames} frames")
    print(f"  generate_scene: {results['generate_scene_ms']:.2f} ms per scene (frames render lazily)")
    for size in (64, 128):
        for supersample in (1, 2):
            fps = frames_per_second(size, supersample, args.frames, seeds)
            results[f"fps_{size}_ss{supersample}"] = fps
            print(f"  {size:>3}x{size:<3} supersample {supersample}: {fps:8.1f} frames/s  ({60 * fps:9.0f} frames/min)")

    scores = []
    for seed in seeds:
        inputs, targets = generate_scene(seed, num_frames=32).split(num_targets=8, seed=0)
        baseline = nearest_input_frame_baseline(inputs.images, inputs.times, targets.times)
        scores.append(psnr(baseline, targets.images).mean())
    results["baseline_psnr_db"] = torch.stack(scores).mean().item()
    print(f"  nearest-input-frame baseline at 64x64, 32 inputs, 8 held-out targets: {results['baseline_psnr_db']:.2f} dB PSNR")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
