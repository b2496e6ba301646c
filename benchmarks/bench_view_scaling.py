"""Scaling with the number of input views: time and peak memory of the streamed and the plain forward.

For every input-view count ``V`` (``--views``), one joint forward (``V`` input views -> ``--targets``
targets) of a randomly initialised FSM-LVSM through

* ``streamed``: the memory-bounded path, ``max_views_per_batch=K`` (``--max-views-per-batch``;
  :meth:`modeling.blocks.FSMBlock.forward_streamed`: only the hidden states span all tokens; attention,
  the apply step and the MLP run ``K`` views at a time, the fast-weight update one LaCET chunk at a time);
* ``plain``: every layer over all tokens at once (``max_views_per_batch=None``).

Per path it prints the median time and peak memory per ``V``, the maximum difference between the two
paths' outputs (they compute the same thing), and a least-squares line ``footprint(V) = a + b V`` where
the footprint is the peak growth during the call plus the input tensors. From the line: the largest
``V`` whose footprint plus the model weights fits in ``--memory-budget-gb`` (**extrapolated** from the
fit, stated as such). On CUDA, ``--probe`` also **measures** it: ``V`` doubles from the largest measured
count until the forward runs out of memory (the budget is enforced with
``torch.cuda.set_per_process_memory_fraction`` when it is below the device's memory).

Defaults depend on ``--device``: CPU, a small model (2 layers, width 256, LaCET chunk 512 tokens,
64 px, fp32 Newton–Schulz) with ``V`` in 4 8 16 32 64 and ``K`` 4; CUDA, the released size (24 layers,
width 768, chunk 8192, 256 px, bf16 autocast and bf16 Newton–Schulz) with ``V`` in 8 ... 512 and
``K`` 16. Peak memory is measured as in the other scripts (README "Measurement notes").

Examples::

    python benchmarks/bench_view_scaling.py                       # CPU, a couple of minutes
    python benchmarks/bench_view_scaling.py --device cuda --memory-budget-gb 80 --probe --json scaling.json
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

if __name__ == "__main__" and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # freed tensors leave the RSS at once (CPU peak memory)
    os.execv(sys.executable, [sys.executable] + sys.argv)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.bench_lacet import (  # noqa: E402
    MB, add_run_arguments, environment, free_memory, interleaved, is_oom, print_table, write_json,
)
from benchmarks.bench_model import Workbench  # noqa: E402
from benchmarks.reference import ours_kwargs  # noqa: E402

GB = 2**30
PATHS = ("streamed", "plain")

#: Per-device defaults (``None`` options of :func:`parse_args`).
DEFAULTS = {
    "cpu": dict(views="4,8,16,32,64", layers=2, dim=256, chunk_size=512, resolution=64, dtype="float32",
                ns_dtype="float32", max_views_per_batch=4),
    "cuda": dict(views="8,16,32,64,128,256,512", layers=24, dim=768, chunk_size=8192, resolution=256,
                 dtype="bfloat16", ns_dtype="bfloat16", max_views_per_batch=16),
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------
def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def measure(bench: Workbench, views: int, path: str, args) -> dict:
    """One row: median seconds and peak growth of a forward with ``views`` inputs along ``path``."""
    row = {"path": path, "views": views, "targets": args.targets}
    inputs = None
    try:
        inputs = bench.inputs(views, args.targets)
        row["input_mb"] = _bytes(ours_kwargs(inputs).values()) / MB
        k = args.max_views_per_batch if path == "streamed" else None
        res = interleaved({path: lambda: bench.run_ours(inputs, k)}, bench.device, args.reps, args.warmup)[path]
        row.update(seconds=res["seconds"], peak_mb=res["peak_bytes"] / MB, result=res["result"].cpu())
        row["footprint_mb"] = row["peak_mb"] + row["input_mb"]
        row["ms_per_view"] = 1000 * row["seconds"] / views
    except Exception as err:  # noqa: BLE001
        if not is_oom(err):
            raise
        row["error"] = "OOM"
    inputs = None
    free_memory(bench.device)
    return row


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> Optional[Dict[str, float]]:
    """Least squares ``y = intercept + slope x``: ``{"slope", "intercept", "r2"}`` (``None`` under 2 points)."""
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    return {"slope": slope, "intercept": intercept, "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0}


def max_views_in_budget(fit: Optional[dict], budget_mb: float, weights_mb: float) -> Optional[int]:
    """Largest ``V`` with ``weights + intercept + slope V <= budget`` (extrapolated); ``None`` if unbounded."""
    if fit is None or fit["slope"] <= 0:
        return None
    return max(0, math.floor((budget_mb - weights_mb - fit["intercept"]) / fit["slope"]))


def probe(bench: Workbench, path: str, start: int, args) -> dict:
    """Double ``V`` from ``start`` until the forward runs out of memory (CUDA): the largest ``V`` that ran."""
    views, largest, failed = start, None, None
    while views <= args.probe_max_views:
        row = measure(bench, views, path, argparse.Namespace(**{**vars(args), "reps": 1, "warmup": 0}))
        outcome = row.get("error") or "{:.3g} s, {:.0f} MB".format(row["seconds"], row["peak_mb"])
        print(f"  probe {path}: {views} views -> {outcome}")
        sys.stdout.flush()
        if row.get("error"):
            failed = views
            break
        largest, views = views, views * 2
    return {"path": path, "largest_measured": largest, "first_oom": failed, "cap": args.probe_max_views}


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--views", default=None, help="comma list of input-view counts (default: per device, see above)")
    p.add_argument("--targets", type=int, default=2, help="target views of each forward (default 2)")
    p.add_argument("--max-views-per-batch", type=int, default=None, help="K of the streamed path (default: CPU 4, CUDA 16)")
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--dim", type=int, default=None, help="width (= the single LaCET head's dim, as released)")
    p.add_argument("--chunk-size", type=int, default=None, help="LaCET chunk in tokens")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="bfloat16 = autocast")
    p.add_argument("--ns-dtype", default=None, choices=["float32", "bfloat16"], help="Newton–Schulz dtype")
    p.add_argument("--memory-budget-gb", type=float, default=None,
                   help="memory the model may use (default: the device's total memory)")  # fmt: skip
    p.add_argument("--probe", action="store_true", help="CUDA: measure the largest V by doubling until OOM")
    p.add_argument("--probe-max-views", type=int, default=4096, help="stop probing at this V (default 4096)")
    add_run_arguments(p, reps=2)
    args = p.parse_args(argv)
    kind = torch.device(args.device).type
    for key, value in DEFAULTS["cuda" if kind == "cuda" else "cpu"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.view_counts = sorted({int(v) for v in args.views.split(",")})
    if min(args.view_counts) < 1 or args.targets < 1 or args.max_views_per_batch < 1:
        p.error("--views, --targets and --max-views-per-batch must be positive")
    if args.probe and kind != "cuda":
        p.error("--probe needs CUDA (on a CPU running out of memory kills the process instead of raising)")
    # What Workbench (benchmarks/bench_model.py) reads.
    args.reference, args.compile, args.emulate_bf16, args.batch = None, False, None, 1
    return args


def device_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("cannot read the memory size from /proc/meminfo")


def main(argv=None):
    args = parse_args(argv)
    if args.threads or args.device == "cpu":
        torch.set_num_threads(args.threads or 1)
    bench = Workbench(args)
    bench.set_ns_dtype(args.ns_dtype)
    device = bench.device
    total = device_memory_bytes(device)
    budget = args.memory_budget_gb * GB if args.memory_budget_gb else total
    if device.type == "cuda" and budget < total:
        torch.cuda.set_per_process_memory_fraction(budget / total, device)
    weights_mb = _bytes(list(bench.ours.parameters()) + list(bench.ours.buffers())) / MB
    env = environment(args.device)
    tokens = (args.resolution // bench.ours.config.patch_size) ** 2
    print(
        f"View scaling: {args.layers} layers, width {args.dim}, LaCET chunk {args.chunk_size} tokens, {args.resolution}px "
        f"({tokens} tokens/view), V -> {args.targets} targets, dtype {args.dtype}, Newton–Schulz {args.ns_dtype}, "
        f"streamed K={args.max_views_per_batch}, weights {weights_mb:.1f} MB, budget {budget / GB:.1f} GB, {env}"
    )

    # 1. Time and peak memory per V and path (the plain path stops at its first OOM).
    rows: List[dict] = []
    columns = ["path", "views", "seconds", "ms_per_view", "peak_mb", "input_mb", "footprint_mb", "max_abs_diff", "error"]
    plain_oom = False
    for views in args.view_counts:
        pair = {}
        for path in PATHS:
            if path == "plain" and plain_oom:
                pair[path] = {"path": path, "views": views, "targets": args.targets, "error": "OOM (skipped)"}
            else:
                pair[path] = measure(bench, views, path, args)
                plain_oom = plain_oom or (path == "plain" and bool(pair[path].get("error")))
        if "result" in pair["streamed"] and "result" in pair["plain"]:
            pair["streamed"]["max_abs_diff"] = (pair["streamed"]["result"] - pair["plain"]["result"]).abs().max().item()
        for path in PATHS:
            pair[path].pop("result", None)
            rows.append(pair[path])
        print_table([pair[p] for p in PATHS], columns)

    # 2. Per-view slope and the largest V in the budget (extrapolated from the fit).
    fits = []
    for path in PATHS:
        ok = [r for r in rows if r["path"] == path and not r.get("error")]
        mem = linear_fit([r["views"] for r in ok], [r["footprint_mb"] for r in ok])
        sec = linear_fit([r["views"] for r in ok], [r["seconds"] for r in ok])
        fits.append({
            "path": path, "mb_per_view": mem and mem["slope"], "intercept_mb": mem and mem["intercept"],
            "r2": mem and mem["r2"], "ms_per_view_fit": sec and 1000 * sec["slope"],
            "max_views_extrapolated": max_views_in_budget(mem, budget / MB, weights_mb),
        })  # fmt: skip

    # 3. CUDA: measure the largest V by doubling until OOM.
    probes = []
    if args.probe:
        for path in PATHS:
            ok = [r["views"] for r in rows if r["path"] == path and not r.get("error")]
            oom = [r["views"] for r in rows if r["path"] == path and r.get("error")]
            if oom:  # the ladder already found the limit
                probes.append({"path": path, "largest_measured": max(ok) if ok else None, "first_oom": min(oom)})
            else:
                probes.append(probe(bench, path, 2 * max(ok), args))
                probes[-1]["largest_measured"] = probes[-1]["largest_measured"] or max(ok)  # the ladder's last
            fit = next(f for f in fits if f["path"] == path)
            fit["max_views_measured"] = probes[-1]["largest_measured"]

    print_table(rows, columns, title="summary (medians; footprint = peak growth during the call + input tensors)")
    fit_columns = ["path", "mb_per_view", "intercept_mb", "r2", "ms_per_view_fit", "max_views_extrapolated"]
    if args.probe:
        fit_columns.append("max_views_measured")
    print_table(
        fits, fit_columns,
        title=f"linear fit footprint = intercept + slope * V; max V with weights ({weights_mb:.1f} MB) + footprint "
        f"<= {budget / GB:.1f} GB, extrapolated from the fit" + (" and measured by doubling" if args.probe else ""),
    )  # fmt: skip
    write_json(args.json, {"benchmark": "view-scaling", "args": vars(args), "env": env, "weights_mb": weights_mb,
                           "budget_bytes": budget, "rows": rows, "fits": fits, "probes": probes})  # fmt: skip


if __name__ == "__main__":
    main()
