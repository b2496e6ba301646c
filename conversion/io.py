"""Reading foreign checkpoints safely and writing converted folders atomically."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

import torch

from .official import ConversionError

PathLike = Union[str, os.PathLike]


def sha256_of(path: PathLike, block_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(block_size), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(path: PathLike) -> Mapping[str, Any]:
    """``torch.load`` with ``weights_only=True`` (a checkpoint can never run code), memory-mapped.

    Raises :class:`ConversionError` for a missing, truncated or non-PyTorch file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"Checkpoint {str(path)!r} does not exist.")
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except (zipfile.BadZipFile, EOFError) as err:
        raise ConversionError(f"{path.name} is truncated or not a PyTorch checkpoint ({type(err).__name__}: {err}).") from None
    except RuntimeError as err:
        hint = " (the file is truncated or corrupted)" if "zip archive" in str(err) else ""
        raise ConversionError(f"{path.name} could not be read as a PyTorch checkpoint{hint}: {err}") from None
    except Exception as err:  # pickle.UnpicklingError for weights_only violations and garbage files
        raise ConversionError(f"{path.name} could not be loaded safely with weights_only=True: {err}") from None
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(f"{path.name} holds a {type(checkpoint).__name__}, expected a dict / state dict.")
    return checkpoint


def conversion_command() -> str:
    """The command line that is running, for provenance."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program in ("__main__.py", "-m") or program.endswith(".py"):
        module = getattr(sys.modules.get("__main__"), "__spec__", None)
        program = f"python -m {module.name}" if module is not None else f"python {sys.argv[0]}"
    return " ".join([program, *sys.argv[1:]])


def write_folder_atomically(output: PathLike, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Run ``write(tmp_dir)`` in a temporary sibling folder, then move it to ``output``.

    On any error nothing is left at ``output`` (and an existing folder is untouched).
    """
    output = Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(f"Output folder {str(output)!r} exists and is not empty (pass --overwrite to replace it).")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        write(staging)
        if output.exists():
            shutil.rmtree(output)
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def save_converted(
    model,
    output: Path,
    *,
    provenance: Dict[str, Any],
    as_pipeline: bool = True,
    dtype: Optional[torch.dtype] = None,
    max_shard_size: str = "5GB",
) -> None:
    """Write ``model`` (optionally as an ``FSMPipeline`` folder) with a model card recording ``provenance``."""
    from fsm_hf.model_card import generate_model_card

    if dtype is not None:
        model = model.to(dtype)
    model.config.fsm_provenance = provenance
    if as_pipeline:
        from fsm_hf import FSMPipeline

        FSMPipeline(model=model).save_pretrained(output, safe_serialization=True, max_shard_size=max_shard_size)
        model_dir = output / "model"
    else:
        model.save_pretrained(output, safe_serialization=True, max_shard_size=max_shard_size)
        model_dir = output
    card = generate_model_card(model.config, provenance=provenance, license=provenance.get("license", "other"))
    (output / "README.md").write_text(card, encoding="utf-8")
    if model_dir != output:
        (model_dir / "README.md").write_text(card, encoding="utf-8")
