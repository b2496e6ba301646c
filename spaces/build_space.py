#!/usr/bin/env python
"""Build the Hugging Face Space folder: the fsm-hf wheel and a fully pinned ``requirements.txt``.

Usage (from anywhere; the repository root is this file's parent's parent)::

    python spaces/build_space.py                       # build into spaces/ itself
    python spaces/build_space.py --output-dir /tmp/sp  # a copy of the Space folder elsewhere

Steps:

1. ``pip wheel . --no-deps -w OUTPUT`` builds ``fsm_hf-<version>-py3-none-any.whl`` (the built-in demo
   model, ``fsm_hf/assets/fsm-demo``, is package data, so the wheel carries it; a warning is printed
   when it is missing). Older ``fsm_hf-*.whl`` files in the output folder are removed first.
2. ``requirements.txt`` is rewritten: the wheel's own requirements plus those of its ``space`` extra
   (gradio, imageio, imageio-ffmpeg, plyfile) and, recursively, everything they require, each pinned
   (``==``) at the version installed in the Python running this script (read with
   ``importlib.metadata``; local version labels such as ``+cpu`` are dropped, so
   ``torch==2.13.0``), then the wheel as a relative path (``./fsm_hf-0.1.0-py3-none-any.whl``).
   Run it from the environment the tests pass in: the Space then installs exactly that set.
3. With ``--output-dir``, ``app.py`` and ``README.md`` are copied next to them.

The wheel is a build product (``spaces/*.whl`` is git-ignored): upload the folder as it is after
building (see ``spaces/README.md``).
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

SPACE_DIR = Path(__file__).resolve().parent
REPO_ROOT = SPACE_DIR.parent
#: Extras of fsm-hf whose requirements the Space installs.
SPACE_EXTRAS = ("space",)
#: Files of the Space folder copied by ``--output-dir``.
SPACE_FILES = ("app.py", "README.md")
#: Packages that must end up pinned (a missing one means the environment is not the tested one).
REQUIRED_PINS = (
    "torch", "gradio", "numpy", "transformers", "diffusers", "accelerate", "huggingface-hub", "safetensors",
    "pillow", "pyyaml", "tqdm", "imageio", "imageio-ffmpeg", "gsplat", "plyfile",
)  # fmt: skip
BUILTIN_MODEL_FILE = "fsm_hf/assets/fsm-demo/model_index.json"


def _canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


def build_wheel(output_dir: Path) -> Path:
    """``pip wheel . --no-deps -w output_dir`` in the repository root; returns the wheel's path."""
    for old in output_dir.glob("fsm_hf-*.whl"):
        old.unlink()
    # setuptools reuses build/lib between builds, so files deleted from the sources would linger in
    # the wheel: start from a clean build folder (a git-ignored build product).
    shutil.rmtree(REPO_ROOT / "build", ignore_errors=True)
    command = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w", str(output_dir)]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO_ROOT, check=True)
    wheels = sorted(output_dir.glob("fsm_hf-*.whl"))
    if len(wheels) != 1:
        found = [w.name for w in wheels]
        raise RuntimeError(f"Expected one fsm_hf wheel in {output_dir} after building, found {found}.")
    return wheels[0]


def wheel_metadata(wheel: Path) -> Tuple[List[str], bool]:
    """``(Requires-Dist lines, whether the built-in model is inside)`` of a wheel."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(archive.read(meta_name).decode("utf-8"))
    return list(message.get_all("Requires-Dist") or []), BUILTIN_MODEL_FILE in names


def _installed_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _public_version(version: str) -> str:
    """Drop a local version label (``2.13.0+cpu`` -> ``2.13.0``): PyPI has only public versions."""
    return version.split("+", 1)[0]


def resolve_pins(requirements: Iterable[str], extras: Sequence[str]) -> Dict[str, Tuple[str, str]]:
    """Pin ``requirements`` (Requires-Dist strings of the root package, with its ``extras`` active)
    and everything they require, at the installed versions.

    Returns:
        ``{canonical name: (display name, installed version)}``.

    Raises:
        RuntimeError: a required package is not installed, or its version does not satisfy a requirement.
    """
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    pins: Dict[str, Tuple[str, str]] = {}
    visited: Set[Tuple[str, str]] = set()  # (package, extra) pairs expanded
    queue: List[Tuple[str, Tuple[str, ...], str]] = [(r, tuple(extras), "fsm-hf") for r in requirements]
    while queue:
        text, active_extras, parent = queue.pop()
        requirement = Requirement(text)
        if requirement.marker is not None:
            environments = [dict(default_environment(), extra=e) for e in (active_extras or ("",))]
            if not any(requirement.marker.evaluate(env) for env in environments):
                continue
        name = _canonical(requirement.name)
        version = _installed_version(requirement.name)
        if version is None:
            raise RuntimeError(
                f"{requirement.name} (required by {parent}: {text!r}) is not installed here; install it first."
            )
        if requirement.specifier and not requirement.specifier.contains(_public_version(version), prereleases=True):
            raise RuntimeError(f"{requirement.name} {version} is installed but {parent} requires {text!r}.")
        display = metadata.metadata(requirement.name)["Name"]
        pins[name] = (display, version)
        for extra in ("",) + tuple(sorted(requirement.extras)):
            if (name, extra) in visited:
                continue
            visited.add((name, extra))
            for child in metadata.requires(requirement.name) or []:
                queue.append((child, (extra,) if extra else (), requirement.name))
    return pins


def requirements_text(pins: Dict[str, Tuple[str, str]], wheel_name: str) -> str:
    """The ``requirements.txt`` of the Space: one ``name==version`` a line (sorted), then the wheel."""
    python = ".".join(map(str, sys.version_info[:3]))
    lines = [
        "# Generated by spaces/build_space.py: every dependency pinned at the version installed where the",
        f"# Space was built and tested (Python {python}). Rebuild instead of editing by hand.",
    ]
    lines += [f"{display}=={_public_version(version)}" for _, (display, version) in sorted(pins.items())]
    lines.append(f"./{wheel_name}")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--output-dir", default=str(SPACE_DIR),
        help="folder to build the Space in (default: spaces/ itself); app.py and README.md are copied there",
    )  # fmt: skip
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    if output_dir != SPACE_DIR:
        for name in SPACE_FILES:
            shutil.copy(SPACE_DIR / name, output_dir / name)

    wheel = build_wheel(output_dir)
    requires, has_model = wheel_metadata(wheel)
    if not has_model:
        print(
            f"warning: {wheel.name} does not contain the built-in model ({BUILTIN_MODEL_FILE}); the Space will ask "
            "for a local folder or a Hub id.",
            file=sys.stderr,
        )
    pins = resolve_pins(requires, SPACE_EXTRAS)
    missing = [name for name in REQUIRED_PINS if _canonical(name) not in pins]
    if missing:
        raise RuntimeError(f"These packages should be pinned but are not required by the wheel: {missing}.")
    (output_dir / "requirements.txt").write_text(requirements_text(pins, wheel.name), encoding="utf-8")
    size = wheel.stat().st_size / 1e6
    print(f"Wrote {wheel} ({size:.1f} MB) and {output_dir / 'requirements.txt'} ({len(pins)} pins).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
