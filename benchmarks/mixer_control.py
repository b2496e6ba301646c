"""Control for the built-in model's plateau: the demo recipe with softmax attention in place of LaCET.

The built-in FSM-LVSM renders held-out views only about 1.3 dB better than the nearest input frame,
and renders its own input frames back only as well as it renders new ones (README, "Where the
built-in model stands"). Two explanations compete: LaCET's fast weights learn to retrieve slowly
(``retrieval_learning.py`` shows a plateau on a toy task), or the whole model family needs far more
than a CPU-hour of training on these scenes. This script separates them.

It trains the recipe of ``configs/demo_model.yaml`` twice, or only the control (``--mixers``), with
``finetune.py``'s training loop (:func:`fsm_hf.training.train`), the same data order, seed and steps:

* ``lacet``: the recipe as shipped;
* ``attention``: every LaCET layer replaced by :class:`InputAttention`, multi-head softmax attention
  from every token onto the input-view tokens (QK-RMSNorm, the model's width and attention head
  size). This is the cross-view read of an LVSM decoder whose targets look at the inputs. Everything
  else is unchanged, including the per-view attention, the MLPs, the tokenizer and the head.

Both are scored with the ``fsm demo`` protocol (:func:`fsm_hf.demo.evaluate_scenes`: held-out
seeds, PSNR next to the nearest-input-frame baseline) and by rendering each scene's input frames back
from its memory (:func:`fsm_hf.demo.input_recall_psnr`). The script prints a table and the training
PSNR curve, and can write JSON::

    OMP_NUM_THREADS=2 python benchmarks/mixer_control.py --json benchmarks/results/mixer_control.json
    # score a finished LaCET run of the recipe instead of training it again (about 35-48 minutes):
    OMP_NUM_THREADS=2 python benchmarks/mixer_control.py --existing lacet=runs/demo_model

The control is a measuring device for this question only. It ships nowhere: the package's models
are FSM (LaCET) models. Its "memory" holds the keys and values of the input tokens (an
:class:`~modeling.FastWeights` triple ``(keys, values, empty)``, so the pipeline's reconstruct/render
path carries it unchanged).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from modeling.lacet import FastWeights, LaCETLayer, TTTOperation  # noqa: E402

DEFAULT_CONFIG = REPO / "configs" / "demo_model.yaml"
MIXERS = ("lacet", "attention")
#: Held-out views per scene, as ``fsm demo`` scores them.
NUM_TARGET_VIEWS = 8


class InputAttention(nn.Module):
    """Softmax attention onto the tokens a schedule updates on, with :class:`LaCETLayer`'s interface.

    ``forward(x, schedule, elastic_state, memory)`` walks the schedule: an ``update`` operation adds
    its tokens' keys and values to the memory, an ``apply`` operation attends from its tokens to the
    memory gathered so far. The memory is ``FastWeights(keys [B, M, D], values [B, M, D], empty)``.
    """

    def __init__(self, hidden_size: int, head_dim: int):
        super().__init__()
        if hidden_size % head_dim != 0:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of head_dim {head_dim}")
        self.num_heads = hidden_size // head_dim
        self.head_dim = head_dim
        self.to_qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.q_norm = nn.RMSNorm(head_dim)
        self.k_norm = nn.RMSNorm(head_dim)
        self.c_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.c_proj.is_residual_projection = True

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, l, _ = t.shape
        return t.reshape(b, l, self.num_heads, self.head_dim).transpose(1, 2)  # [B, nh, L, dh]

    def initial_fast_weights(self, batch_size: int) -> FastWeights:
        empty = self.c_proj.weight.new_zeros(batch_size, 0, self.c_proj.in_features)
        return FastWeights(empty, empty, empty)

    def forward(self, x, schedule: Sequence[TTTOperation], elastic_state=None, fast_weights: Optional[FastWeights] = None):
        b, _, d = x.shape
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)  # each [B, L, D]
        keys, values, _ = fast_weights if fast_weights is not None else self.initial_fast_weights(b)
        outputs: List[torch.Tensor] = []
        for op in schedule:
            if op.update:
                keys = torch.cat([keys, k[:, op.start : op.end]], dim=1)
                values = torch.cat([values, v[:, op.start : op.end]], dim=1)
            if op.apply:
                if keys.shape[1] == 0:
                    raise ValueError("InputAttention: an apply operation before any update (empty memory)")
                query = self.q_norm(self._heads(q[:, op.start : op.end]))
                out = F.scaled_dot_product_attention(query, self.k_norm(self._heads(keys)), self._heads(values))
                outputs.append(out.transpose(1, 2).reshape(b, op.end - op.start, d))
        out = torch.cat(outputs, dim=1) if outputs else x.new_zeros(b, 0, d)
        return self.c_proj(out), FastWeights(keys, values, keys.new_zeros(b, 0, d)), elastic_state

    def apply_memory(self, x: torch.Tensor, fast_weights: FastWeights) -> torch.Tensor:
        out, _, _ = self.forward(x, [TTTOperation(0, x.shape[1], update=False, apply=True)], fast_weights=fast_weights)
        return out


def use_input_attention(model: nn.Module) -> int:
    """Replace every block's LaCET layer by a freshly initialised :class:`InputAttention`; returns the count."""
    config = model.config
    if config.elastic_enabled:
        raise ValueError("the attention control has no elastic state: build the model with elastic_enabled=False")
    blocks = [m for m in model.modules() if isinstance(getattr(m, "lacet", None), LaCETLayer)]
    for block in blocks:
        block.lacet = InputAttention(config.hidden_size, config.attention_head_dim)
        block.lacet.apply(model._init_weights)
    return len(blocks)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="training config (default: the demo model's)")
    parser.add_argument("--mixers", default="lacet,attention", help=f"comma list of {', '.join(MIXERS)}")
    parser.add_argument("--max_steps", type=int, default=None, help="optimiser steps (default: the config's)")
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
    from fsm_hf.training import load_config, train, trainer

    flags = ["--config", args.config, "--output_dir", str(Path(args.output_dir) / mixer), "--save_every", "0", "--image_every", "0"]
    if args.max_steps is not None:
        flags += ["--max_steps", str(args.max_steps)]
    if mixer == "attention":
        flags += ["--model_overrides", "elastic_enabled=false"]
    config = load_config(flags)
    original = trainer.load_model

    def load_with_attention(name, overrides=None):
        model, settings = original(name, overrides)
        use_input_attention(model)
        return model, settings

    if mixer == "attention":
        trainer.load_model = load_with_attention
    try:
        start = time.perf_counter()
        train(config)
        seconds = time.perf_counter() - start
    finally:
        trainer.load_model = original
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


@contextlib.contextmanager
def _quiet_transformers():
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def evaluate_mixer(mixer: str, run: Dict[str, object], num_scenes: int) -> Dict[str, float]:
    """Held-out demo scores and input recall PSNR of a trained variant."""
    from safetensors.torch import load_file

    from fsm_hf import FSMPipeline
    from fsm_hf.demo import HELD_OUT_SEED_START, DemoResult, evaluate_scenes, input_recall_psnr

    final = Path(run["final"])
    with _quiet_transformers():  # the folder's config builds LaCET layers: the attention weights load below
        pipe = FSMPipeline.from_pretrained(final)
    if mixer == "attention":
        use_input_attention(pipe.model)
        pipe.model.load_state_dict(load_file(str(final / "model" / "model.safetensors")), strict=True)
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
