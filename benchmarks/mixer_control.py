"""Control for the built-in model's plateau: the demo recipe with softmax attention in place of LaCET.

The built-in FSM-LVSM renders held-out views only about 1.3 dB better than the nearest input frame,
and renders its own input frames back only as well as it renders new ones (README, "Where the
built-in model stands"). Two explanations compete: LaCET's fast weights learn to retrieve slowly
(``retrieval_learning.py`` shows a plateau on a toy task), or the whole model family needs far more
than a CPU-hour of training on these scenes. This script separates them.

It trains the architecture and training settings of ``configs/demo_model.yaml`` from scratch
(``--model tiny``) twice, or only the control (``--mixers``), with ``finetune.py``'s training loop
(:func:`fsm_hf.training.train`), the same data order, seed and steps (3000 by default):

* ``lacet``: the FSM model (LaCET with the elastic prior);
* ``attention``: every LaCET layer replaced by :class:`~modeling.blocks.InputAttention`
  (``cross_view_mixer="attention"``), multi-head softmax attention from every token onto the
  input-view tokens (QK-RMSNorm, the model's width and attention head size). This is the cross-view
  read of an LVSM decoder whose targets look at the inputs. Everything else is unchanged, including
  the per-view attention, the MLPs, the tokenizer and the head.

Both are scored with the ``fsm demo`` protocol (:func:`fsm_hf.demo.evaluate_scenes`: held-out
seeds, PSNR next to the nearest-input-frame baseline) and by rendering each scene's input frames back
from its memory (:func:`fsm_hf.demo.input_recall_psnr`). The script prints a table and the training
PSNR curve, and can write JSON::

    OMP_NUM_THREADS=2 python benchmarks/mixer_control.py --json benchmarks/results/mixer_control.json
    # score a finished from-scratch LaCET run instead of training it again (about 35 minutes):
    OMP_NUM_THREADS=2 python benchmarks/mixer_control.py --existing lacet=runs/mixer_control/lacet

What it found (README, "Where the built-in model stands") shaped the built-in model's recipe: the
attention model is now its warm-up stage (``configs/demo_warmup.yaml``), and the shipped model is
the LaCET model trained from it (``configs/demo_model.yaml``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


DEFAULT_CONFIG = REPO / "configs" / "demo_model.yaml"
MIXERS = ("lacet", "attention")
#: Held-out views per scene, as ``fsm demo`` scores them.
NUM_TARGET_VIEWS = 8


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="training config (default: the demo model's)")
    parser.add_argument("--mixers", default="lacet,attention", help=f"comma list of {', '.join(MIXERS)}")
    parser.add_argument("--max_steps", type=int, default=3000, help="optimiser steps (default 3000)")
    parser.add_argument("--num_scenes", type=int, default=8, help="held-out scenes to score")
    parser.add_argument("--output_dir", default="runs/mixer_control", help="training runs go here")
    parser.add_argument(
        "--existing", action="append", default=[], metavar="MIXER=RUN_DIR",
        help="score a finished finetune.py run of this recipe (RUN_DIR/final, RUN_DIR/train_log.jsonl) instead of "
        "training MIXER again, e.g. lacet=runs/demo_model (repeatable)",
    )  # fmt: skip
    parser.add_argument("--json", default=None, help="write the results here")
    return parser


def _parse_mixers(text: str) -> List[str]:
    mixers = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in mixers if m not in MIXERS]
    if unknown or not mixers:
        raise SystemExit(f"--mixers: expected a comma list of {', '.join(MIXERS)}, got {text!r}")
    return mixers


def _parse_existing(items: Sequence[str], mixers: Sequence[str]) -> Dict[str, Path]:
    existing = {}
    for item in items:
        mixer, sep, run_dir = item.partition("=")
        if not sep or mixer not in mixers:
            raise SystemExit(f"--existing: expected MIXER=RUN_DIR with MIXER one of {', '.join(mixers)}, got {item!r}")
        run_dir = Path(run_dir)
        for needed in (run_dir / "final", run_dir / "train_log.jsonl"):
            if not needed.exists():
                raise SystemExit(f"--existing {item}: {needed} does not exist (expected a finished finetune.py run)")
        existing[mixer] = run_dir
    return existing


def read_run(run_dir: Path, num_input_views: int) -> Dict[str, object]:
    """The record of a finished ``finetune.py`` run: final folder, steps, mean steps/s, PSNR curve."""
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line]
    return {
        "final": str(run_dir / "final"),
        "steps": max(r["step"] for r in log),
        "steps_per_s": sum(r["steps_per_s"] for r in log) / len(log),
        "num_input_views": num_input_views,
        "curve": psnr_curve(log),
    }


def train_mixer(mixer: str, args) -> Dict[str, object]:
    """Train one variant; returns its :func:`read_run` record and the wall time."""
    from fsm_hf.training import load_config, train

    flags = ["--config", args.config, "--model", "tiny", "--max_steps", str(args.max_steps)]
    flags += ["--output_dir", str(Path(args.output_dir) / mixer), "--save_every", "0", "--image_every", "0"]
    if mixer == "attention":
        flags += ["--model_overrides", "cross_view_mixer=attention,elastic_enabled=false"]
    config = load_config(flags)
    start = time.perf_counter()
    train(config)
    seconds = time.perf_counter() - start
    return dict(read_run(Path(config.output_dir), config.num_input_views), train_seconds=seconds)


def psnr_curve(log: Sequence[Dict[str, float]], every: int = 250) -> List[Dict[str, float]]:
    """Mean training PSNR over each ``every``-step window of a ``train_log.jsonl``."""
    curve = []
    last = max(r["step"] for r in log)
    for end in range(every, last + every, every):
        window = [r["psnr"] for r in log if end - every < r["step"] <= end]
        if window:
            curve.append({"step": min(end, last), "psnr": sum(window) / len(window)})
    return curve


def evaluate_mixer(mixer: str, run: Dict[str, object], num_scenes: int) -> Dict[str, float]:
    """Held-out demo scores and input recall PSNR of a trained variant."""
    from fsm_hf import FSMPipeline
    from fsm_hf.demo import HELD_OUT_SEED_START, DemoResult, evaluate_scenes, input_recall_psnr

    pipe = FSMPipeline.from_pretrained(run["final"])
    if pipe.model.config.cross_view_mixer != mixer:
        raise SystemExit(f"{run['final']} is a {pipe.model.config.cross_view_mixer!r} model, not {mixer!r}")
    pipe.set_progress_bar_config(disable=True)
    seeds = range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + num_scenes)
    with torch.inference_mode():
        scores, kept = evaluate_scenes(
            pipe, seeds, NUM_TARGET_VIEWS, num_input_views=run["num_input_views"], keep_views=True
        )
        recall = input_recall_psnr(pipe, [(memory, inputs) for _, memory, inputs, _ in kept])
    result = DemoResult(scores, run["num_input_views"], NUM_TARGET_VIEWS, pipe.config.resolution[0])
    return {"psnr": result.psnr, "baseline_psnr": result.baseline_psnr, "gain_db": result.gain_db, "recall_psnr": recall}


#: Columns of the printed table: header and the cell of a result row.
TABLE_COLUMNS = (
    ("steps", lambda r: f"{r['steps']}"),
    ("steps/s", lambda r: f"{r['steps_per_s']:.2f}"),
    ("held-out PSNR", lambda r: f"{r['psnr']:.2f}"),
    ("baseline", lambda r: f"{r['baseline_psnr']:.2f}"),
    ("gain (dB)", lambda r: f"{r['gain_db']:+.2f}"),
    ("input recall PSNR", lambda r: f"{r['recall_psnr']:.2f}"),
)


def format_table(results: Dict[str, Dict[str, object]]) -> str:
    """Markdown table, one row per mixer."""
    rows = [["mixer"] + [header for header, _ in TABLE_COLUMNS], ["---"] * (len(TABLE_COLUMNS) + 1)]
    rows += [[mixer] + [cell(r) for _, cell in TABLE_COLUMNS] for mixer, r in results.items()]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def _repo_relative(path: str) -> str:
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else path


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    mixers = _parse_mixers(args.mixers)
    existing = _parse_existing(args.existing, mixers)
    results: Dict[str, Dict[str, object]] = {}
    if existing:
        from fsm_hf.training import load_config

        num_input_views = load_config(["--config", args.config]).num_input_views
    for mixer in mixers:
        if mixer in existing:
            run = read_run(existing[mixer], num_input_views)
        else:
            run = train_mixer(mixer, args)
        run.update(evaluate_mixer(mixer, run, args.num_scenes))
        results[mixer] = run
        print(f"[{mixer}] training PSNR: " + ", ".join(f"{p['step']}: {p['psnr']:.2f}" for p in run["curve"]), flush=True)
    print(format_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        recorded = dict(vars(args), config=_repo_relative(args.config))
        Path(args.json).write_text(json.dumps({"args": recorded, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
