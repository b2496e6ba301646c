"""LaCET layer throughput and peak memory vs sequence length and chunk size (a benchmark, not a test).

Workload per row: one :class:`modeling.lacet.LaCETLayer` (elastic prior on: streaming-ema + SI, the
paper default) that updates on all ``L`` tokens chunk by chunk and then applies the final fast
weights to all ``L`` tokens (the novel-view-synthesis schedule); forward, and optionally
forward + backward. Newton–Schulz in fp32 and/or bf16.

With ``--reference PATH`` (a checkout of github Mars-tin/fast-spatial-mem) the same workload runs
through the official ``FastWeightGluMLPMultihead`` with identical weights and inputs, repetitions
interleaved with ours, and each row prints ours/official time and peak-memory ratios and the max
output difference.

Examples::

    python benchmarks/bench_lacet.py                      # short CPU run
    python benchmarks/bench_lacet.py --reference /tmp/fsm-official --json lacet.json
    python benchmarks/bench_lacet.py --device cuda --dim 768 --seq-lens 1024,4096,16384,65536 \\
        --chunk-sizes 2048,8192 --backward

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the level before the call; on CPU the
peak resident-set growth during the call, sampled every millisecond (the script re-executes itself
with ``MALLOC_MMAP_THRESHOLD_=65536`` so freed tensors leave the RSS at once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

if __name__ == "__main__" and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
    # Large allocations via mmap: freed memory leaves the RSS immediately, so the sampled RSS tracks live tensors.
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    os.execv(sys.executable, [sys.executable] + sys.argv)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Measurement helpers (shared with bench_model.py and gpu_benchmarks.py)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory growth (bytes) during a ``with`` block: CUDA allocator stats, or sampled RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.base = _rss_bytes()
            self._max = self.base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._max = max(self._max, _rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, _rss_bytes()) - self.base
        return False


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable, device) -> Dict[str, object]:
    """Run ``fn`` once: ``{"seconds", "peak_bytes", "result"}``."""
    sync(device)
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        result = fn()
        sync(device)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_bytes": mem.peak, "result": result}


def interleaved(fns: Dict[str, Callable], device, reps: int, warmup: int = 1) -> Dict[str, Dict[str, object]]:
    """Run every callable ``warmup + reps`` times, alternating between them (noise hits all alike).

    Returns per name: median seconds, all seconds, median peak bytes, and the last result.
    """
    runs: Dict[str, List[dict]] = {name: [] for name in fns}
    for rep in range(warmup + reps):
        for name, fn in fns.items():
            r = timed(fn, device)
            if rep >= warmup:
                runs[name].append(r)
    return {
        name: {
            "seconds": statistics.median(r["seconds"] for r in rs),
            "all_seconds": [round(r["seconds"], 5) for r in rs],
            "peak_bytes": statistics.median(r["peak_bytes"] for r in rs),
            "result": rs[-1]["result"],
        }
        for name, rs in runs.items()
    }


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def free_memory(device) -> None:
    import gc

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def print_table(rows: List[dict], columns: List[str], title: str = "") -> None:
    """Print ``rows`` (dicts) as an aligned text table with the given column keys."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    if title:
        print(f"\n{title}")
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
    sys.stdout.flush()


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def environment(device) -> dict:
    env = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(), "cpu": cpu_name(), "cores": os.cpu_count()}
    if torch.device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def write_json(path: Optional[str], payload: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=1, default=str))
        print(f"\nwrote {path}")


MB = 2**20

# ---------------------------------------------------------------------------------------------
# The LaCET workload


def build_layer(
    dim: int, head_dim: int, chunk_size: int, ns_dtype: str, device, seed: int = 0, batching: str = "exact", compile: bool = False,
    ns_method: str = "auto",
):  # fmt: skip
    from modeling.lacet import ElasticSettings, LaCETLayer

    torch.manual_seed(seed)
    layer = LaCETLayer(
        dim, head_dim, inter_multi=2, base_lr=0.01, chunk_size=chunk_size, newton_schulz_steps=5,
        newton_schulz_dtype=ns_dtype, elastic=ElasticSettings(enabled=True), newton_schulz_batching=batching, compile=compile,
        newton_schulz_method=ns_method,
    )  # fmt: skip
    for lin in (layer.to_qkv, layer.c_proj, layer.lr_fc):
        torch.nn.init.normal_(lin.weight, std=0.02)
    torch.nn.init.zeros_(layer.lr_fc.bias)
    layer.reset_fast_weights()
    layer.reset_elastic_buffers()
    return layer.to(device)


def official_layer(official, ours, chunk_size: int):
    """The official ``FastWeightGluMLPMultihead`` with our layer's weights."""
    d = ours.hidden_size
    layer = official.lacet.FastWeightGluMLPMultihead(
        d, ours.head_dim, inter_multi=ours.inner_dim // ours.head_dim, base_lr=0.01, muon_update_steps=ours.newton_schulz_steps, chunk_size=chunk_size
    )
    state = {k: v for k, v in ours.state_dict().items() if not k.startswith(("anchor_", "importance_"))}
    layer.load_state_dict(state)
    layer.anchor_mode, layer.anchor_beta = 2, 0.5  # streaming-ema, beta 0.5
    return layer.to(next(ours.parameters()).device)


def official_info(official, ours, length: int, batch: int) -> dict:
    op = official.lacet.TTTOperator
    info = {
        "ttt_op_order": [op(0, length, True, False), op(0, length, False, True)],
        "ewc_enabled": True, "lambda_ewc": 0.5, "fisher_alpha": 0.5, "fisher_mode": 2,
    }  # fmt: skip
    for i in range(3):
        info[f"w{i}_star"] = getattr(ours, f"anchor_w{i}").detach().clone().repeat_interleave(batch, 0)
        info[f"F{i}"] = getattr(ours, f"importance_w{i}").detach().clone().repeat_interleave(batch, 0)
    return info


def output_and_input_gradient(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """What a row compares between the implementations: the output, and in training mode (``x``
    requires grad) also the gradient of ``out.sum()`` with respect to the input, flattened into one
    fp32 vector (so a row's ``max_abs_diff`` covers the backward too)."""
    if not x.requires_grad:
        return out.detach().float()
    out.float().sum().backward()
    return torch.cat([out.detach().float().flatten(), x.grad.float().flatten()])


def run_rows(args) -> List[dict]:
    from modeling.lacet import TTTOperation

    device = torch.device(args.device)
    official = None
    if args.reference:
        from benchmarks.reference import OfficialFSM

        official = OfficialFSM(args.reference)
    rows = []
    modes = ["forward"] + (["forward+backward"] if args.backward else [])
    for ns_dtype in args.ns_dtypes.split(","):
        for chunk in (int(c) for c in args.chunk_sizes.split(",")):
            for length in (int(n) for n in args.seq_lens.split(",")):
                for mode in modes:
                    row = {"ns_dtype": ns_dtype, "chunk": chunk, "tokens": length, "mode": mode}
                    try:
                        ours = build_layer(args.dim, args.head_dim or args.dim, chunk, ns_dtype, device, batching=args.batching, compile=args.compile, ns_method=args.ns_method)
                        x = torch.randn(args.batch, length, args.dim, device=device)
                        schedule = [TTTOperation(0, length, True, False), TTTOperation(0, length, False, True)]
                        grad = mode != "forward"
                        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.autocast)

                        def run_ours():
                            xi = x.clone().requires_grad_(grad)
                            with torch.set_grad_enabled(grad), autocast:
                                out = ours(xi, schedule)[0]
                            return output_and_input_gradient(out, xi)

                        fns = {"ours": run_ours}
                        if official is not None:
                            theirs = official_layer(official, ours, chunk)

                            def run_official():
                                xi = x.clone().requires_grad_(grad)
                                with torch.set_grad_enabled(grad), autocast, official.newton_schulz_dtype(ns_dtype):
                                    out = theirs(xi, official_info(official, ours, length, args.batch))[0]
                                return output_and_input_gradient(out, xi)

                            fns["official"] = run_official
                        res = interleaved(fns, device, args.reps, warmup=args.warmup)
                        o = res["ours"]
                        row.update(
                            ours_s=o["seconds"], ours_tok_s=args.batch * length / o["seconds"], ours_peak_mb=o["peak_bytes"] / MB,
                            ours_all_s=o["all_seconds"],
                        )  # fmt: skip
                        if "official" in res:
                            t = res["official"]
                            row.update(
                                official_s=t["seconds"], official_tok_s=args.batch * length / t["seconds"],
                                official_peak_mb=t["peak_bytes"] / MB, official_all_s=t["all_seconds"],
                                speedup=t["seconds"] / o["seconds"],
                                mem_ratio=(o["peak_bytes"] / t["peak_bytes"]) if t["peak_bytes"] > 0 else None,
                                max_abs_diff=(o["result"] - t["result"]).abs().max().item(),
                            )  # fmt: skip
                    except Exception as err:  # noqa: BLE001 - a benchmark row reports its failure and goes on
                        if not is_oom(err):
                            raise
                        row["error"] = "OOM"
                    finally:
                        ours = theirs = x = None
                        free_memory(device)
                    rows.append(row)
                    print_table([row], COLUMNS if official else COLUMNS[:8])
    return rows


COLUMNS = ["ns_dtype", "chunk", "tokens", "mode", "ours_s", "ours_tok_s", "ours_peak_mb", "error",
           "official_s", "official_peak_mb", "speedup", "mem_ratio", "max_abs_diff"]  # fmt: skip


def add_run_arguments(p: argparse.ArgumentParser, reps: int = 3) -> None:
    """Options every benchmark script shares: Newton–Schulz batching and method, threads, repetitions, JSON output."""
    p.add_argument("--batching", default="exact", choices=["exact", "all", "none"], help="Newton–Schulz batching (ours)")
    p.add_argument("--ns-method", default="auto", choices=["auto", "dense", "factored"],
                   help="fp32 Newton–Schulz: dense, factored through C x C cores, or auto (ours)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 on CPU; see README)")
    p.add_argument("--reps", type=int, default=reps)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", default=None)


def add_reference_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the scripts that also run the official implementation."""
    p.add_argument("--compile", action="store_true", help="torch.compile our per-chunk update step")
    p.add_argument("--reference", default=None, help="path to a checkout of Mars-tin/fast-spatial-mem")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dim", type=int, default=None, help="hidden size (default: 256 on CPU, 768 on CUDA)")
    p.add_argument("--head-dim", type=int, default=None, help="LaCET head dim (default: = dim, one head as released)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq-lens", default=None, help="comma list (default CPU 1024,4096; CUDA 1024,4096,16384,65536)")
    p.add_argument("--chunk-sizes", default=None, help="comma list (default CPU 1024; CUDA 2048,8192)")
    p.add_argument("--ns-dtypes", default="float32,bfloat16")
    p.add_argument("--backward", action="store_true", help="also time forward+backward")
    p.add_argument("--autocast", action="store_true", help="run under bf16 autocast (as the official inference on GPU)")
    add_run_arguments(p)
    add_reference_arguments(p)
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.dim = args.dim or (768 if cuda else 256)
    args.seq_lens = args.seq_lens or ("1024,4096,16384,65536" if cuda else "1024,4096")
    args.chunk_sizes = args.chunk_sizes or ("2048,8192" if cuda else "1024")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads or args.device == "cpu":
        torch.set_num_threads(args.threads or 1)
    torch.manual_seed(0)
    env = environment(args.device)
    print(f"LaCET layer benchmark: dim {args.dim}, head_dim {args.head_dim or args.dim}, batch {args.batch}, {env}")
    rows = run_rows(args)
    print_table(rows, COLUMNS, title="summary (medians; speedup = official_s / ours_s, mem_ratio = ours / official)")
    write_json(args.json, {"benchmark": "lacet", "args": vars(args), "env": env, "rows": rows})


if __name__ == "__main__":
    main()
