"""Peak memory of converting a full-size official checkpoint (issue: conversion).

Writes a random full-size official-format checkpoint (preset ``fsm-4d-lvsm``: 24 layers, width
768), converts it with ``python -m conversion.convert_fsm_official`` in a fresh process, and
prints the checkpoint size, the converter's peak resident memory and their ratio.

    python benchmarks/bench_conversion.py [--preset fsm-4d-lvsm] [--workdir /tmp/fsm-bench] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_random_official_checkpoint(preset: str, path: Path) -> None:
    """Run in a child process so its memory does not count towards the conversion's peak."""
    code = f"""
import torch, sys
sys.path.insert(0, {str(REPO)!r})
from fsm_hf import FSMConfig, FSMForNovelViewSynthesis
from conversion.official import to_official_checkpoint
torch.manual_seed(0)
model = FSMForNovelViewSynthesis(FSMConfig.from_preset({preset!r}))
torch.save(to_official_checkpoint(model.state_dict()), {str(path)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="fsm-4d-lvsm")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fsm-bench-conv-"))
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoint = workdir / "official.pth"
    if not checkpoint.exists():
        write_random_official_checkpoint(args.preset, checkpoint)
    size = checkpoint.stat().st_size
    out = workdir / "converted"
    # The converter runs in its own process and reports its own peak (the writer's is not mixed in).
    code = (
        "import resource, sys, time; from conversion.convert_fsm_official import main; t = time.perf_counter(); "
        f"code = main(['--checkpoint', {str(checkpoint)!r}, '--output', {str(out)!r}, '--overwrite', '--no-pipeline']); "
        "print('RESULT', code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, time.perf_counter() - t)"
    )
    lines = subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True, text=True).stdout
    _, status, peak, seconds = next(line for line in lines.splitlines() if line.startswith("RESULT")).split()
    if status != "0":
        raise SystemExit(f"conversion failed:\n{lines}")
    peak, seconds = int(peak), float(seconds)
    result = {
        "preset": args.preset,
        "checkpoint_bytes": size,
        "converter_peak_rss_bytes": peak,
        "peak_over_checkpoint": peak / size,
        "seconds": seconds,
    }
    print(f"{'preset':<14}{'checkpoint':>14}{'peak RSS':>14}{'ratio':>8}{'time':>9}")
    print(f"{args.preset:<14}{size / 2**30:>12.2f}GB{peak / 2**30:>12.2f}GB{peak / size:>8.2f}{seconds:>8.1f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
