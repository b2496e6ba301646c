"""Compute and data time of one training step of a ``finetune.py`` config, eager against ``torch.compile``.

Builds the config's model (a preset trains from scratch: the same compute as a warm start), draws
real batches from its dataset, then times forward + backward + AdamW step on one fixed batch, eager
and compiled in interleaved rounds (shared CPUs drift between minutes; interleaving keeps the ratio
honest), and the data loader's time per batch. Prints medians; ``--json`` writes them.

    OMP_NUM_THREADS=2 python benchmarks/bench_training_step.py --config configs/demo_model.yaml --model tiny
    OMP_NUM_THREADS=2 python benchmarks/bench_training_step.py --config configs/demo_warmup.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch
from torch.utils.data import default_collate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a finetune.py YAML config")
    parser.add_argument("--model", default=None, help="override the config's model (e.g. 'tiny': from scratch)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved eager/compiled rounds")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round and mode")
    parser.add_argument("--data_batches", type=int, default=16, help="batches timed through the data loader")
    parser.add_argument("--data_scenes", type=int, default=8, help="procedural scenes the data timing draws from")
    parser.add_argument("--json", default=None, help="write the medians here")
    args = parser.parse_args()

    from fsm_hf.training.config import load_config
    from fsm_hf.training.losses import FSMLoss
    from fsm_hf.training.trainer import _model_inputs, build_dataset, build_optimizer, load_model

    argv = ["--config", args.config] + (["--model", args.model] if args.model else [])
    config = load_config(argv)
    torch.manual_seed(config.seed)
    model, _ = load_model(config.model, config.model_overrides)
    if config.activation_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    # a few procedural scenes, visited until cached: the steady state of a long run (each of its
    # scenes renders its frames, and its novel-view pool if any, on its first visit only)
    data_config = dataclasses.replace(config, data=f"synthetic:{args.data_scenes}", cache_images=True)
    dataset = build_dataset(data_config, model.config, config.image_size or model.config.image_size)

    def collate(start: int):
        return default_collate([dataset[start + i] for i in range(config.batch_size)])

    for b in range(8 * args.data_scenes // config.batch_size):  # about 8 visits per scene: all cached
        collate(b * config.batch_size)
    data_times = []
    for b in range(args.data_batches):
        t0 = time.perf_counter()
        collate(10**6 + b * config.batch_size)
        data_times.append(time.perf_counter() - t0)

    batch = collate(0)
    loss_fn = FSMLoss(config.l2_loss_weight, 0.0, 0)
    optimizer = build_optimizer(model, config)
    compiled = torch.compile(model)

    def step(forward) -> float:
        t0 = time.perf_counter()
        out = forward(**_model_inputs(batch))
        loss_fn(out.images, batch["target_images"], 10**6).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    for forward in (model, compiled, compiled):  # warm-up and compilation
        step(forward)
    times = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        for name, forward in (("eager", model), ("compiled", compiled)):
            times[name] += [step(forward) for _ in range(args.steps)]
    result = {
        "config": args.config, "model": config.model, "batch_size": config.batch_size,
        "threads": torch.get_num_threads(),
        "data_s_per_batch": statistics.median(data_times),
        "eager_s_per_step": statistics.median(times["eager"]),
        "compiled_s_per_step": statistics.median(times["compiled"]),
    }  # fmt: skip
    result["compile_speedup"] = result["eager_s_per_step"] / result["compiled_s_per_step"]
    print(f"{args.config} (model {config.model}, batch {config.batch_size}, {result['threads']} threads)")
    print(f"  data per batch      {result['data_s_per_batch']:.3f} s")
    print(f"  step compute eager  {result['eager_s_per_step']:.3f} s")
    print(f"  step compute compiled {result['compiled_s_per_step']:.3f} s  ({result['compile_speedup']:.2f}x)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
