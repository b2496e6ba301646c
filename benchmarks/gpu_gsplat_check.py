"""On a CUDA machine: compare the torch compositor with gsplat, and save a CPU test fixture.

    python benchmarks/gpu_gsplat_check.py [OUT.safetensors] [--extensions-dir DIR] [--arch 9.0]

1. Builds/loads gsplat's CUDA extension (JIT on first use; ``TORCH_CUDA_ARCH_LIST`` from
   ``--arch``, default ``9.0`` for H100/H200; ``MAX_JOBS`` from ``--max-jobs``; the build goes to
   ``--extensions-dir`` via ``TORCH_EXTENSIONS_DIR`` when given, so a later run can reuse it).
2. Renders random scenes (1k..100k Gaussians, some behind the camera / off the image) with both
   backends on the GPU and prints the largest differences of colours, alphas and gradients.
3. Saves gsplat's outputs, radii and gradients, with the inputs, for three small scenes to
   ``OUT`` (default ``tests/fixtures/gsplat_reference.safetensors``, a few hundred kB), which
   ``tests/test_rasterization.py::test_matches_gsplat_cuda_fixture`` checks on CPU.

Exit status 1 when a fixture scene differs by more than the tests' tolerance, or more than 0.1%
of a random scene's pixels differ by more than 1e-3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOL_IMAGE = 2e-4  # absolute, on images (the tests' tolerance)
# Large random scenes: float32 rounding (gsplat uses __expf) can flip an alpha across 1/255 or a
# pixel's stop across T = 1e-4, a jump of ~1/255 at isolated pixels. Judge them by the fraction of
# pixels that differ by more than 1e-3.
TOL_BAD_PIXELS = 1e-3


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "tests" / "fixtures" / "gsplat_reference.safetensors")
    parser.add_argument("--extensions-dir", type=Path, default=None, help="TORCH_EXTENSIONS_DIR for gsplat's JIT build")
    parser.add_argument("--arch", default=os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0"), help="TORCH_CUDA_ARCH_LIST")
    parser.add_argument("--max-jobs", type=int, default=int(os.environ.get("MAX_JOBS", os.cpu_count() or 8)))
    parser.add_argument("--fast-compile", action="store_true", help="gsplat's FAST_COMPILE (host code at -O0)")
    parser.add_argument("--skip-random", action="store_true", help="only write the fixture")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="exercise the script without CUDA: the torch compositor stands in for gsplat (not a fixture!)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    # the build settings must be in the environment before torch / gsplat look at them
    os.environ["TORCH_CUDA_ARCH_LIST"] = args.arch
    os.environ["MAX_JOBS"] = str(args.max_jobs)
    if args.extensions_dir:
        args.extensions_dir.mkdir(parents=True, exist_ok=True)
        os.environ["TORCH_EXTENSIONS_DIR"] = str(args.extensions_dir.resolve())
    if args.fast_compile:
        os.environ["FAST_COMPILE"] = "1"
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))

    import torch

    from bench_rasterization import make_scene, run_once
    from modeling.rasterization import gsplat_cuda_available, rasterization

    if args.cpu_dry_run:
        return write_fixture(args, torch, rasterization, device="cpu", backend="torch", versions={"gsplat_version": "none (dry run)"})
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to do")
        return 1
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}, "
          f"TORCH_CUDA_ARCH_LIST={args.arch}, MAX_JOBS={args.max_jobs}", flush=True)  # fmt: skip
    start = time.perf_counter()
    if not gsplat_cuda_available():
        from modeling.rasterization import _GSPLAT_STATE

        print(f"gsplat's CUDA backend is unusable: {_GSPLAT_STATE.get('reason')}")
        return 1
    import gsplat

    print(f"gsplat {gsplat.__version__} CUDA backend ready in {time.perf_counter() - start:.0f} s", flush=True)
    failed = False

    # ---- 1. random scenes: torch compositor vs gsplat on the GPU --------------------------------
    if not args.skip_random:
        print(f"{'N':>7} {'res':>4} {'spread':>6} {'max|drgb|':>10} {'max|dalpha|':>11} {'px>1e-3':>8} "
              f"{'max rel dgrad':>13} {'torch ms':>9} {'gsplat ms':>9}")  # fmt: skip
        for n, res, spread in [(1000, 64, 2.0), (10000, 128, 1.0), (10000, 256, 2.0), (100000, 256, 1.0)]:
            scene = make_scene(n, res, device="cuda", spread=spread, cameras=2, seed=n + res)
            outs, times = {}, {}
            for backend in ("torch", "gsplat"):
                run_once(scene, backend, True)  # warm-up
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                outs[backend] = run_once(scene, backend, True)
                torch.cuda.synchronize()
                times[backend] = (time.perf_counter() - t0) * 1e3
            (rgb_t, a_t, g_t), (rgb_g, a_g, g_g) = outs["torch"], outs["gsplat"]
            # gradients: relative to the largest entry (max over means, quats, scales, opacities, colors)
            d_rgb, d_a = (rgb_t - rgb_g).abs().max().item(), (a_t - a_g).abs().max().item()
            bad_px = ((rgb_t - rgb_g).abs().amax(-1) > 1e-3).float().mean().item()
            d_grad = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() for a, b in zip(g_t, g_g))
            print(f"{n:>7} {res:>4} {spread:>6.1f} {d_rgb:>10.2e} {d_a:>11.2e} {bad_px:>8.2%} {d_grad:>13.2e} "
                  f"{times['torch']:>9.1f} {times['gsplat']:>9.1f}", flush=True)  # fmt: skip
            failed |= bad_px > TOL_BAD_PIXELS

    versions = {"gsplat_version": gsplat.__version__, "device": torch.cuda.get_device_name()}
    failed |= bool(write_fixture(args, torch, rasterization, device="cuda", backend="gsplat", versions=versions))
    print(f"total {time.perf_counter() - start:.0f} s")
    return int(failed)


def write_fixture(args, torch, rasterization, device: str, backend: str, versions: dict) -> int:
    """Three small scenes: inputs, the ``backend``'s outputs, radii and gradients -> ``args.out``."""
    from safetensors.torch import save_file

    from bench_rasterization import GRAD_KEYS, TENSOR_KEYS, make_scene

    failed = False
    configs = [
        dict(n=64, width=32, height=24, spread=2.0, opts=dict(render_mode="RGB")),
        dict(n=96, width=28, height=20, spread=1.0, opts=dict(render_mode="RGB+D", rasterize_mode="antialiased")),
        dict(n=128, width=32, height=32, spread=1.5, sh=True, opts=dict(render_mode="RGB", sh_degree=0, near_plane=0.5)),
    ]  # fmt: skip
    tensors, infos = {}, []
    for k, cfg in enumerate(configs):
        scene = make_scene(cfg["n"], cfg["width"], cfg["height"], seed=100 + k, device=device, spread=cfg["spread"], cameras=2)
        if cfg.get("sh"):  # SH degree-0 coefficients [N, 1, 3], some giving negative colours (clamped)
            scene["colors"] = (torch.randn(cfg["n"], 1, 3, generator=torch.Generator().manual_seed(k)) * 2.0).to(device)
        opts = dict(width=cfg["width"], height=cfg["height"], **cfg["opts"])
        inputs = [scene[name].clone().requires_grad_(name in GRAD_KEYS) for name in TENSOR_KEYS]
        rgb, alpha, meta = rasterization(*inputs, backgrounds=scene["backgrounds"], backend=backend, packed=False, **opts)
        grad_out = torch.rand(rgb.shape, generator=torch.Generator().manual_seed(50 + k)).to(device)
        grads = torch.autograd.grad((rgb * grad_out).sum(), inputs[: len(GRAD_KEYS)])
        saved = {name: scene[name] for name in TENSOR_KEYS + ("backgrounds",)}
        saved.update(render_colors=rgb, render_alphas=alpha, radii=meta["radii"], grad_out=grad_out)
        saved.update({f"grad.{name}": g for name, g in zip(GRAD_KEYS, grads)})
        tensors.update({f"{k}.{name}": v.detach().cpu().contiguous() for name, v in saved.items()})
        infos.append(opts)
        # the same check the CPU test makes, here on the GPU
        rgb_t, alpha_t, _ = rasterization(*inputs, backgrounds=scene["backgrounds"], backend="torch", packed=False, **opts)
        d_rgb, d_alpha = (rgb_t - rgb).abs().max().item(), (alpha_t - alpha).abs().max().item()
        print(f"fixture scene {k}: {opts} max|drgb| {d_rgb:.2e} max|dalpha| {d_alpha:.2e}")
        failed |= d_rgb > TOL_IMAGE or d_alpha > TOL_IMAGE
    args.out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"scenes": json.dumps(infos), "torch_version": torch.__version__, "made_by": "benchmarks/gpu_gsplat_check.py", **versions}
    save_file(tensors, str(args.out), metadata=metadata)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} kB)")
    if failed:
        print(f"FAILED: the torch compositor differs from {backend} by more than {TOL_IMAGE}")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
