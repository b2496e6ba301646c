"""Full FSM-LVSM inference: latency, peak memory, render-many cost, scaling with input views.

Default model: the released size (preset ``fsm-4d-lvsm``: 24 layers, width 768, one LaCET head of
768, chunk 8192, 256x256, 32 input views -> 8 targets). That takes hours on a small CPU with bf16
Newton–Schulz, so shrink it there with ``--layers/--dim/--views/--targets/--resolution``.

Sections:

1. ``forward``: one joint forward (input + target views), per Newton–Schulz dtype.
2. ``render-many``: ``reconstruct`` once, then ``render`` 1 and ``--targets`` views from the memory;
   the cost of each extra target view is ``(render(T) - render(1)) / (T - 1)``, printed as a ratio of
   one full forward (goal: < 5% at 32 input views).
3. ``views`` (``--view-scaling 8,16,32,...``): forward latency and peak memory vs input views; OOM is
   caught and reported. ``--max-views-per-batch`` selects the memory-bounded path.
   ``bench_view_scaling.py`` runs both paths side by side, fits the per-view memory slope and
   extrapolates (or, on CUDA, measures) the largest view count in a memory budget.

``--reference PATH``: the same workloads through the official code on identical weights and
inputs (official model built from the YAML, its state dict converted into ours), repetitions
interleaved; ratios ours/official (time, peak memory) and the max output difference per row.
``--dtype bfloat16`` runs both under bf16 autocast (as the official inference does on GPUs).

Examples::

    python benchmarks/bench_model.py --layers 2 --dim 256 --views 4 --targets 2 --resolution 64
    python benchmarks/bench_model.py --layers 2 --dim 256 --views 4 --resolution 64 --reference /tmp/fsm-official
    python benchmarks/bench_model.py --device cuda --dtype bfloat16 --view-scaling 8,16,32,64,128 --json model.json
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __name__ == "__main__" and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # freed tensors leave the RSS at once (CPU peak memory)
    os.execv(sys.executable, [sys.executable] + sys.argv)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.bench_lacet import (  # noqa: E402
    MB, add_reference_arguments, add_run_arguments, environment, free_memory, interleaved, is_oom, print_table, write_json,
)
from benchmarks.reference import OfficialFSM, model_inputs, ours_kwargs, released_yaml  # noqa: E402


class Workbench:
    """Our model (and optionally the official one) with identical weights, on one device."""

    def __init__(self, args):
        from conversion import convert_official
        from modeling.lacet import configure_lacet

        self.args = args
        self.device = torch.device(args.device)
        self.yaml = released_yaml(num_layers=args.layers, dim=args.dim, chunk_size=args.chunk_size, image_size=args.resolution)
        self.official = OfficialFSM(args.reference) if args.reference else None
        if self.official is not None:
            self.theirs = self.official.build_model(self.yaml, seed=0).to(self.device)
            self.checkpoint = self.official.checkpoint(self.theirs)
            self.ours = convert_official(self.checkpoint, self.yaml).eval().to(self.device)
        else:  # no official code: our own random init of the same architecture
            from conversion.official import config_from_official_yaml
            from fsm_hf import FSMForNovelViewSynthesis

            torch.manual_seed(0)
            self.theirs = self.checkpoint = None
            self.ours = FSMForNovelViewSynthesis(config_from_official_yaml(self.yaml)).eval().to(self.device)
        configure_lacet(self.ours, newton_schulz_batching=args.batching, compile=args.compile, newton_schulz_method=args.ns_method)
        if args.emulate_bf16 is not None:
            import modeling.lacet as lacet

            lacet._EMULATION_AGREES = args.emulate_bf16 == "on" and lacet.bf16_emulation_available()
        self.max_frames = self.ours.config.max_frames

    def set_ns_dtype(self, dtype: str) -> None:
        self.ours.config.newton_schulz_dtype = dtype
        for layer in self.ours.fsm.backbone.layers:
            layer.lacet.newton_schulz_dtype = dtype

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.args.dtype == "bfloat16")

    def inputs(self, views: int, targets: int):
        a = self.args
        return model_inputs(a.batch, views, targets, a.resolution, self.max_frames, device=self.device, seed=views)

    def run_ours(self, inputs, max_views_per_batch=None):
        with torch.no_grad(), self.autocast():
            return self.ours(**ours_kwargs(inputs), max_views_per_batch=max_views_per_batch).images.float()

    def run_official(self, inputs, ns_dtype):
        with torch.no_grad(), self.autocast(), self.official.newton_schulz_dtype(ns_dtype):
            return self.official.forward(self.theirs, self.yaml, self.checkpoint, dict(inputs)).float()


def compare(bench, fns, reps, warmup, row):
    """Time ``fns`` (``ours`` and maybe ``official``) interleaved; fill ``row`` with medians and ratios."""
    res = interleaved(fns, bench.device, reps, warmup=warmup)
    o = res["ours"]
    row.update(ours_s=o["seconds"], ours_peak_mb=o["peak_bytes"] / MB, ours_all_s=o["all_seconds"])
    if "official" in res:
        t = res["official"]
        row.update(
            official_s=t["seconds"], official_peak_mb=t["peak_bytes"] / MB, official_all_s=t["all_seconds"],
            speedup=t["seconds"] / o["seconds"],
            mem_ratio=(o["peak_bytes"] / t["peak_bytes"]) if t["peak_bytes"] > 0 else None,
            max_abs_diff=(o["result"] - t["result"]).abs().max().item(),
        )  # fmt: skip
    return row


COLUMNS = ["section", "ns_dtype", "views", "targets", "ours_s", "ours_peak_mb", "official_s", "official_peak_mb",
           "speedup", "mem_ratio", "max_abs_diff", "error"]  # fmt: skip


def forward_rows(bench, args):
    rows = []
    for ns in args.ns_dtypes.split(","):
        bench.set_ns_dtype(ns)
        row = {"section": "forward", "ns_dtype": ns, "views": args.views, "targets": args.targets}
        inputs = bench.inputs(args.views, args.targets)
        fns = {"ours": lambda: bench.run_ours(inputs)}
        if bench.theirs is not None:
            fns["official"] = lambda: bench.run_official(inputs, ns)
        try:
            compare(bench, fns, args.reps, args.warmup, row)
        except Exception as err:  # noqa: BLE001
            if not is_oom(err):
                raise
            row["error"] = "OOM"
        free_memory(bench.device)
        rows.append(row)
        print_table([row], COLUMNS)
    return rows


def render_many_rows(bench, args, forward_s):
    """Reconstruct once, render 1 and T views; marginal cost per extra target vs one full forward."""
    ns = args.ns_dtypes.split(",")[0]
    bench.set_ns_dtype(ns)
    inputs = bench.inputs(args.views, args.targets)
    kw = ours_kwargs(inputs)
    t = args.targets
    with torch.no_grad(), bench.autocast():
        memory = bench.ours.reconstruct(kw["input_images"], kw["input_fxfycxcy"], kw["input_c2w"], kw["input_times"])

        def render(n):
            return lambda: bench.ours.render(memory, kw["target_fxfycxcy"][:, :n], kw["target_c2w"][:, :n], kw["target_times"][:, :n])

        def reconstruct():
            return bench.ours.reconstruct(kw["input_images"], kw["input_fxfycxcy"], kw["input_c2w"], kw["input_times"])

        res = interleaved({"reconstruct": reconstruct, "render1": render(1), f"render{t}": render(t)}, bench.device, args.reps, args.warmup)
        joint = bench.ours(**kw).images.float()
        rendered = bench.ours.render(memory, kw["target_fxfycxcy"], kw["target_c2w"], kw["target_times"]).float()
    per_extra = (res[f"render{t}"]["seconds"] - res["render1"]["seconds"]) / max(t - 1, 1)
    row = {
        "section": "render-many", "ns_dtype": ns, "views": args.views, "targets": t,
        "reconstruct_s": res["reconstruct"]["seconds"], "render_1_s": res["render1"]["seconds"],
        f"render_{t}_s": res[f"render{t}"]["seconds"], "per_extra_target_s": per_extra,
        "full_forward_s": forward_s, "per_extra_target_over_forward": per_extra / forward_s if forward_s else None,
        "render_peak_mb": res[f"render{t}"]["peak_bytes"] / MB,
        "render_vs_joint_max_abs_diff": (rendered - joint).abs().max().item(),
    }  # fmt: skip
    print_table([row], list(row))
    return [row]


def view_scaling_rows(bench, args):
    rows = []
    ns = args.ns_dtypes.split(",")[0]
    bench.set_ns_dtype(ns)
    for views in (int(v) for v in args.view_scaling.split(",")):
        row = {"section": "views", "ns_dtype": ns, "views": views, "targets": args.targets}
        try:
            inputs = bench.inputs(views, args.targets)
            fns = {"ours": lambda: bench.run_ours(inputs, args.max_views_per_batch)}
            if bench.theirs is not None and not args.ours_only_scaling:
                fns["official"] = lambda: bench.run_official(inputs, ns)
            compare(bench, fns, max(1, args.reps - 1), args.warmup, row)
        except Exception as err:  # noqa: BLE001
            if not is_oom(err):
                raise
            row["error"] = "OOM"
        inputs = fns = None
        free_memory(bench.device)
        rows.append(row)
        print_table([row], COLUMNS)
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="bfloat16 = autocast")
    p.add_argument("--ns-dtypes", default="bfloat16,float32", help="Newton–Schulz dtypes to run (comma list)")
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--dim", type=int, default=768, help="width (= the single LaCET head's dim, as released)")
    p.add_argument("--chunk-size", type=int, default=8192)
    p.add_argument("--views", type=int, default=32)
    p.add_argument("--targets", type=int, default=8)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--view-scaling", default="", help="comma list of input-view counts, e.g. 8,16,32,64,128")
    p.add_argument("--ours-only-scaling", action="store_true", help="skip the official model in the view scaling")
    p.add_argument("--max-views-per-batch", type=int, default=None, help="memory-bounded path in the view scaling")
    p.add_argument("--no-render-many", action="store_true")
    p.add_argument("--emulate-bf16", default=None, choices=["on", "off"], help="CPU bf16 emulation (default: auto)")
    add_run_arguments(p)
    add_reference_arguments(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads or args.device == "cpu":
        torch.set_num_threads(args.threads or 1)
    bench = Workbench(args)
    env = environment(args.device)
    print(
        f"FSM-LVSM inference: {args.layers} layers, width {args.dim}, {args.resolution}px, {args.views} -> {args.targets} views, "
        f"batch {args.batch}, dtype {args.dtype}, batching {args.batching}, fp32 NS {args.ns_method}, {env}"
    )
    rows = forward_rows(bench, args)
    if not args.no_render_many:
        fwd = next((r.get("ours_s") for r in rows if r.get("ours_s")), None)
        rows += render_many_rows(bench, args, fwd)
    if args.view_scaling:
        rows += view_scaling_rows(bench, args)
    print_table([r for r in rows if r["section"] != "render-many"], COLUMNS, title="summary (medians; speedup = official_s / ours_s, mem_ratio = ours / official)")
    write_json(args.json, {"benchmark": "model", "args": vars(args), "env": env, "rows": rows})


if __name__ == "__main__":
    main()
