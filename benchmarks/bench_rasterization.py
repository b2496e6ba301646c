"""Speed of the Gaussian rasteriser: the torch compositor (CPU, and CUDA when present) and gsplat.

    python benchmarks/bench_rasterization.py                       # 1k/10k/100k Gaussians at 64^2, 256^2
    python benchmarks/bench_rasterization.py --sizes 1k@64 10k@256 --backward --json out.json

Each row is one camera rendering N random Gaussians in front of it (about the coverage of an LRM
head's pixel-aligned splats). Times are the best of ``--repeats`` runs after one warm-up run
(the warm-up is skipped for CPU cases above 20k Gaussians to keep the default run short).
On a CPU shared with other jobs, ``--threads 1`` avoids OpenMP contention (it dominates the
backward pass there).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from modeling.rasterization import gsplat_cuda_available, rasterization  # noqa: E402

DEFAULT_SIZES = ["1k@64", "10k@64", "100k@64", "1k@256", "10k@256", "100k@256"]


def parse_size(text: str) -> tuple:
    """``"10k@256"`` -> (10000, 256)."""
    count, _, res = text.partition("@")
    mult = {"k": 1000, "m": 1000000}.get(count[-1].lower(), 1)
    return int(float(count.rstrip("kKmM")) * mult), int(res or 256)


def make_scene(n: int, width: int, height: Optional[int] = None, seed: int = 0, device="cpu",
               dtype=torch.float32, spread: float = 1.0, cameras: int = 1) -> Dict:  # fmt: skip
    """Random Gaussians in front of ``cameras`` pinhole cameras (inputs of ``rasterization``).

    ``spread`` > 1 widens the cloud beyond the field of view and in depth, so that some Gaussians
    are behind the camera, off the image or far off-axis (the culling and clamping rules matter).
    Scales shrink with ``sqrt(n)`` so coverage stays comparable across ``n``.
    """
    height = height or width
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    z = 3.0 + (r(n) - 0.5) * 4.0 * spread  # [1, 5] at spread 1; [-1, 7] at spread 2
    xy = (r(n, 2) - 0.5) * 1.6 * spread * z[:, None] / 1.2
    means = torch.cat([xy, z[:, None]], dim=1)
    scales = (r(n, 3) * 0.04 + 0.004) * math.sqrt(1000.0 / n) * torch.exp(r(n, 1) - 0.5)
    quats = torch.randn(n, 4, generator=g)
    opacities = r(n) * 0.85 + 0.1
    colors = r(n, 3)
    viewmats = torch.eye(4).repeat(cameras, 1, 1)
    for c in range(1, cameras):  # small yaw per extra camera
        a = 0.15 * c
        viewmats[c, :3, :3] = torch.tensor([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
        viewmats[c, 0, 3] = 0.1 * c
    Ks = torch.tensor([[1.2 * width, 0, width / 2], [0, 1.2 * width, height / 2], [0, 0, 1]]).repeat(cameras, 1, 1)
    backgrounds = torch.ones(cameras, 3)
    out = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, viewmats=viewmats,
               Ks=Ks, backgrounds=backgrounds)  # fmt: skip
    out = {k: v.to(device=device, dtype=dtype) for k, v in out.items()}
    out.update(width=width, height=height)
    return out


TENSOR_KEYS = ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")
GRAD_KEYS = ("means", "quats", "scales", "opacities", "colors")


def run_once(scene: Dict, backend: str, backward: bool, **kw):
    """One render (and backward of a fixed weighting when ``backward``); returns (rgb, alpha, grads)."""
    inputs = [scene[k].detach().clone().requires_grad_(backward and k in GRAD_KEYS) for k in TENSOR_KEYS]
    with torch.set_grad_enabled(backward):
        rgb, alpha, _ = rasterization(*inputs, scene["width"], scene["height"], backgrounds=scene["backgrounds"],
                                      backend=backend, **kw)  # fmt: skip
        grads = None
        if backward:
            weight = torch.linspace(0, 1, rgb.numel(), device=rgb.device, dtype=rgb.dtype).reshape(rgb.shape)
            grads = torch.autograd.grad((rgb * weight).sum(), inputs[: len(GRAD_KEYS)])
    return rgb, alpha, grads


def time_case(scene: Dict, backend: str, backward: bool, repeats: int, warmup: bool) -> float:
    cuda = scene["means"].is_cuda
    if warmup:
        run_once(scene, backend, backward)
    best = float("inf")
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        run_once(scene, backend, backward)
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="cases as COUNT@RESOLUTION, e.g. 10k@256")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backward", action="store_true", help="time forward + backward instead of forward")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU compositor")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = [] if args.no_cpu else ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    rows = []
    print(f"{'N':>8} {'res':>5} {'device':>6} {'backend':>7} {'mode':>8} {'ms':>10}")
    for size in args.sizes:
        n, res = parse_size(size)
        for device in devices:
            scene = make_scene(n, res, device=device)
            backends = ["torch"] + (["gsplat"] if device == "cuda" and gsplat_cuda_available() else [])
            for backend in backends:
                warmup = device == "cuda" or n <= 20000
                seconds = time_case(scene, backend, args.backward, args.repeats if warmup else 1, warmup)
                row = dict(n=n, resolution=res, device=device, backend=backend,
                           mode="fwd+bwd" if args.backward else "fwd", ms=seconds * 1e3)  # fmt: skip
                rows.append(row)
                print(f"{n:>8} {res:>5} {device:>6} {backend:>7} {row['mode']:>8} {row['ms']:>10.1f}", flush=True)
    if args.json:
        env = dict(torch=torch.__version__, python=platform.python_version(), threads=torch.get_num_threads(),
                   cpu_count=os.cpu_count(), cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None)  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": env, "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
