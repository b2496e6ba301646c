"""Ablation of the built-in demo model: LaCET vs LaCT, with equal training budgets.

Three variants of the ``configs/demo_model.yaml`` model are trained from the same starting point
(``--model``; default the config's: the warm-up run of ``configs/demo_warmup.yaml``, which must exist;
``--model tiny`` trains from scratch) with ``finetune.py``'s training loop
(:func:`fsm_hf.training.train`) on the same procedural scenes, with the same number of steps, batch
size and seed, and scored on the same held-out scenes (seeds ``>= fsm_hf.demo.HELD_OUT_SEED_START``)
with the ``fsm demo`` protocol (:func:`fsm_hf.demo.evaluate_scenes`):

* ``lacet-4chunks``: LaCET, elastic prior on (SI importances, streaming-EMA anchor, the paper's
  defaults), input tokens read in 4 chunks;
* ``lact-4chunks``: the same without the elastic prior (plain LaCT updates), 4 chunks;
* ``lact-1chunk``: LaCT reading all input tokens in one chunk (``ttt_chunk_size = 0``).

It prints a table and writes JSON. CPU (default) runs a small budget; ``--device cuda`` a larger
one (flags override either)::

    OMP_NUM_THREADS=1 python benchmarks/ablation_demo.py --output_dir runs/ablation_cpu
    python benchmarks/ablation_demo.py --device cuda --output_dir runs/ablation_cuda

Whatever it measures is what the model card reports; nothing here is taken from the paper.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "configs" / "demo_model.yaml"

#: Per-device default budgets: optimiser steps, samples per step, held-out scenes.
BUDGETS = {
    "cpu": dict(max_steps=300, batch_size=1, num_scenes=8),
    "cuda": dict(max_steps=4000, batch_size=8, num_scenes=32),
}


def variants(tokens_per_input_set: int) -> Dict[str, Dict[str, object]]:
    """Model overrides of each variant, given the number of input tokens per sample."""
    four_chunks = tokens_per_input_set // 4
    return {
        "lacet-4chunks": dict(elastic_enabled=True, ttt_chunk_size=four_chunks),
        "lact-4chunks": dict(elastic_enabled=False, ttt_chunk_size=four_chunks),
        "lact-1chunk": dict(elastic_enabled=False, ttt_chunk_size=0),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="training config of the demo model")
    parser.add_argument("--model", default=None, help="starting point of every variant (default: the config's model)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train and evaluate")
    parser.add_argument("--max_steps", type=int, default=None, help="optimiser steps per variant (default: per device)")
    parser.add_argument("--batch_size", type=int, default=None, help="samples per step (default: per device)")
    parser.add_argument("--num_scenes", type=int, default=None, help="held-out scenes (default: per device)")
    parser.add_argument("--num_target_views", type=int, default=8, help="held-out views per scene")
    parser.add_argument("--only", nargs="*", default=None, help="run only these variants")
    parser.add_argument("--output_dir", default="runs/ablation_demo", help="runs and results go here")
    parser.add_argument("--json", default=None, help="results file (default: OUTPUT_DIR/ablation.json)")
    return parser


def train_variant(name: str, overrides: Dict[str, object], args, budget: Dict[str, int], output_dir: Path) -> Dict:
    """Train one variant with the shared budget; returns its run record (final folder, time, last loss)."""
    from fsm_hf.training import load_config, train

    flags = [
        "--config", args.config, "--output_dir", str(output_dir / name),
        "--max_steps", str(budget["max_steps"]), "--batch_size", str(budget["batch_size"]),
        "--save_every", "0", "--image_every", "0",
        "--model_overrides", ",".join(f"{k}={v}" for k, v in overrides.items()),
    ]  # fmt: skip
    if args.model is not None:
        flags += ["--model", args.model]
    if args.device == "cuda":
        flags += ["--num_workers", "4"]
    config = load_config(flags)
    start = time.perf_counter()
    final = train(config)
    seconds = time.perf_counter() - start
    log = [json.loads(line) for line in (output_dir / name / "train_log.jsonl").read_text().splitlines() if line]
    tail = log[-5:]
    return {
        "final": str(final),
        "train_seconds": seconds,
        "final_train_l2": sum(r["l2"] for r in tail) / len(tail),
        "num_input_views": config.num_input_views,
        "model_overrides": config.model_overrides,
    }


def evaluate_variant(run: Dict, args, budget: Dict[str, int]) -> Dict[str, float]:
    """Mean demo scores of a trained variant on the shared held-out scenes."""
    import torch

    from fsm_hf import FSMPipeline
    from fsm_hf.demo import HELD_OUT_SEED_START, DemoResult, evaluate_scenes

    pipe = FSMPipeline.from_pretrained(run["final"]).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    seeds = range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + budget["num_scenes"])
    with torch.inference_mode():
        scores = evaluate_scenes(pipe, seeds, args.num_target_views, num_input_views=run["num_input_views"])
    result = DemoResult(scores, run["num_input_views"], args.num_target_views, pipe.config.resolution[0])
    keys = ("psnr", "ssim", "baseline_psnr", "baseline_ssim", "gain_db")
    return {key: getattr(result, key) for key in keys}


def format_table(results: Dict[str, Dict]) -> str:
    """Markdown table of the variants (what the model card shows)."""
    lines = [
        "| variant | held-out PSNR | SSIM | gain over baseline (dB) | final train L2 | train time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['gain_db']:+.2f} | {r['final_train_l2']:.4f} | "
            f"{r['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # Accelerate trains on CUDA whenever it sees a GPU
    sys.path.insert(0, str(REPO))
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available.", file=sys.stderr)
        return 2
    budget = dict(BUDGETS[args.device])
    for key in budget:
        if getattr(args, key) is not None:
            budget[key] = getattr(args, key)
    from fsm_hf.configuration_fsm import PRESETS
    from fsm_hf.training import load_config
    from fsm_hf.training.trainer import names_a_local_folder

    base = load_config(["--config", args.config] + (["--model", args.model] if args.model is not None else []))
    if base.model not in PRESETS and names_a_local_folder(base.model) and not Path(base.model).exists():
        print(f"The variants start from {base.model}, which does not exist: train it first "
              "(python finetune.py --config configs/demo_warmup.yaml), or pass --model tiny to start from scratch.",
              file=sys.stderr)  # fmt: skip
        return 2
    tokens = base.num_input_views * (base.image_size // base.model_overrides.get("patch_size", 8)) ** 2
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    results: Dict[str, Dict] = {}
    for name, overrides in variants(tokens).items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}: {overrides}, {budget['max_steps']} steps x {budget['batch_size']} samples", flush=True)
        run = train_variant(name, overrides, args, budget, output_dir)
        run.update(evaluate_variant(run, args, budget))
        results[name] = run
        print(f"   held-out PSNR {run['psnr']:.2f} dB (baseline {run['baseline_psnr']:.2f}), {run['train_seconds']:.0f} s",
              flush=True)  # fmt: skip

    record = {
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "budget": budget,
        "config": args.config,
        "model": base.model,
        "num_target_views": args.num_target_views,
        "results": results,
    }
    path = Path(args.json) if args.json else output_dir / "ablation.json"
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(format_table(results))
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
