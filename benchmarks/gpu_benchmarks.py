"""One-shot GPU benchmark suite for an NVIDIA H100 (80 GB): run it, send back ``--out results.json``.

    python benchmarks/gpu_benchmarks.py --out results.json [--reference /path/to/fast-spatial-mem]

Steps (each prints progress, catches OOM, and is skipped when the time budget is spent; the whole
run stops starting new work after ``--budget-s`` seconds, 420 by default, so it ends in < 8 minutes):

1. full-size inference (preset ``fsm-4d-lvsm``: 24 layers, width 768, 256x256), 32 -> 8 views, bf16
   autocast: latency (target < 0.3 s) and peak memory, with bf16 and fp32 Newton–Schulz and each
   Newton–Schulz batching (``exact``/``all``); official code side by side when ``--reference``;
2. reconstruct once / render many: cost per extra target view vs one full forward (goal < 5%);
3. largest number of input views that fits: a ladder of view counts (plain path, then the
   memory-bounded ``max_views_per_batch`` path), stopping at the first OOM;
4. LaCET layer throughput (width 768) vs sequence length, forward and forward+backward;
5. optional ``torch.compile`` of the update step (``--compile``).

Weights are random (speed and memory do not depend on their values).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks import bench_lacet, bench_model  # noqa: E402

START = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - START:6.1f}s] {msg}", flush=True)


class Suite:
    def __init__(self, args):
        self.args = args
        self.results = {"env": bench_lacet.environment(args.device), "args": vars(args), "steps": {}}

    def time_left(self) -> float:
        return self.args.budget_s - (time.time() - START)

    def save(self) -> None:
        Path(self.args.out).write_text(json.dumps(self.results, indent=1, default=str))

    def step(self, name: str, fn, min_time_s: float = 20.0) -> None:
        if self.time_left() < min_time_s:
            log(f"skip {name}: time budget spent")
            self.results["steps"][name] = {"skipped": "time budget"}
            return
        log(f"start {name}")
        try:
            self.results["steps"][name] = fn()
        except Exception as err:  # noqa: BLE001 - keep going, record the failure
            kind = "OOM" if bench_lacet.is_oom(err) else "error"
            log(f"{name}: {kind}: {err}")
            self.results["steps"][name] = {kind: str(err), "traceback": traceback.format_exc()}
        bench_lacet.free_memory(self.args.device)
        self.save()
        log(f"done {name}")


def model_args(args, **overrides):
    # bf16 autocast as the official inference; a CPU smoke run uses fp32 (the official code only
    # turns autocast off for its ray computation with device_type="cuda").
    dtype = "float32" if args.smoke and args.device == "cpu" else "bfloat16"
    argv = ["--device", args.device, "--dtype", dtype, "--reps", str(args.reps), "--warmup", "1"]
    if args.reference:
        argv += ["--reference", args.reference]
    ns = bench_model.parse_args(argv)
    if args.smoke:  # plumbing check on any device: a tiny model
        overrides = {"layers": 1, "dim": 64, "resolution": 32, "views": 2, "targets": 2, "reps": 1, **overrides}
    for k, v in overrides.items():
        setattr(ns, k, v)
    return ns


def full_size(args):
    rows = []
    for batching in ("exact", "all"):
        margs = model_args(args, batching=batching, ns_dtypes="bfloat16,float32")
        bench = bench_model.Workbench(margs)
        for row in bench_model.forward_rows(bench, margs):
            row["batching"] = batching
            row["meets_0.3s_target"] = row.get("ours_s") is not None and row["ours_s"] < 0.3
            rows.append(row)
        del bench
        bench_lacet.free_memory(args.device)
    return rows


def render_many(args):
    margs = model_args(args, reference=None, ns_dtypes="bfloat16")
    bench = bench_model.Workbench(margs)
    fwd = bench_model.forward_rows(bench, margs)[0].get("ours_s")
    return bench_model.render_many_rows(bench, margs, fwd)


def view_ladder(args, suite, max_views_per_batch):
    margs = model_args(args, reference=None, ns_dtypes="bfloat16", reps=1, max_views_per_batch=max_views_per_batch)
    bench = bench_model.Workbench(margs)
    rows, largest = [], None
    for views in args.view_ladder:
        if suite.time_left() < 30:
            rows.append({"views": views, "skipped": "time budget"})
            break
        margs.view_scaling = str(views)
        row = bench_model.view_scaling_rows(bench, margs)[0]
        row["max_views_per_batch"] = max_views_per_batch
        rows.append(row)
        log(f"  views {views}: {row.get('ours_s')} s, {row.get('ours_peak_mb')} MB {row.get('error', '')}")
        if row.get("error"):
            break
        largest = views
    total = torch.cuda.get_device_properties(0).total_memory / 2**20 if torch.cuda.is_available() else None
    return {"rows": rows, "largest_views_fitting": largest, "device_total_mb": total}


def lacet_throughput(args):
    argv = ["--device", args.device, "--dim", "768", "--seq-lens", "1024,4096,16384,65536", "--chunk-sizes", "2048,8192",
            "--backward", "--reps", str(args.reps), "--autocast"]  # fmt: skip
    if args.smoke:
        argv += ["--dim", "64", "--seq-lens", "256", "--chunk-sizes", "128", "--reps", "1"]
    if args.reference:
        argv += ["--reference", args.reference]
    return bench_lacet.run_rows(bench_lacet.parse_args(argv))


def compiled(args):
    margs = model_args(args, reference=None, ns_dtypes="bfloat16", compile=True, no_render_many=True)
    bench = bench_model.Workbench(margs)
    return bench_model.forward_rows(bench, margs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results.json")
    p.add_argument("--device", default="cuda")
    p.add_argument("--reference", default=None, help="checkout of Mars-tin/fast-spatial-mem (adds official columns)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--budget-s", type=float, default=420.0, help="start no new step after this many seconds")
    p.add_argument("--view-ladder", default="32,64,128,192,256,384,512,768,1024")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the update step")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, any device: checks the script end to end")
    args = p.parse_args(argv)
    args.view_ladder = [int(v) for v in args.view_ladder.split(",")]
    if args.smoke:
        args.view_ladder = [2, 4]
    elif not torch.cuda.is_available():
        sys.exit("gpu_benchmarks.py needs CUDA (or --smoke --device cpu for a plumbing check)")
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True  # as the official inference config (use_tf32: true)
    suite = Suite(args)
    log(f"{suite.results['env']}")
    suite.step("full_size_32to8_bf16_autocast", lambda: full_size(args), min_time_s=60)
    suite.step("render_many", lambda: render_many(args))
    suite.step("view_ladder_plain", lambda: view_ladder(args, suite, None), min_time_s=60)
    suite.step("view_ladder_streamed", lambda: view_ladder(args, suite, 16), min_time_s=60)
    suite.step("lacet_throughput", lambda: lacet_throughput(args), min_time_s=60)
    if args.compile:
        suite.step("compile_update_step", lambda: compiled(args), min_time_s=90)
    suite.save()
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
