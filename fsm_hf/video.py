"""Frames in, files out: video export, video reading and image grids.

Every function here accepts frames in any of the forms the pipeline returns or accepts:

* a list of ``PIL.Image.Image``;
* a list of ``numpy`` arrays ``[H, W, 3]`` (``uint8``, or float in ``[0, 1]``);
* one ``numpy`` array ``[N, H, W, 3]`` (same dtypes);
* one ``torch`` tensor ``[N, 3, H, W]`` (float in ``[0, 1]`` or ``uint8``), or a list of ``[3, H, W]`` tensors.

``imageio`` (and its ffmpeg plugin) is imported only when a function needs it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["export_to_video", "ffmpeg_available", "frames_to_uint8", "make_image_grid", "read_video"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: File suffixes read as videos (everything else the image readers handle).
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif", ".m4v")


def _frame_to_uint8(frame: Any, index: int) -> np.ndarray:
    """One frame -> ``[H, W, 3]`` uint8."""
    from PIL import Image

    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu()
        if frame.ndim == 3 and frame.shape[0] in (1, 3) and frame.shape[-1] not in (1, 3):
            frame = frame.permute(1, 2, 0)  # [3, H, W] -> [H, W, 3]
        frame = frame.float().numpy() if frame.dtype != torch.uint8 else frame.numpy()
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[-1] not in (1, 3, 4):
        raise ValueError(f"Frame {index} must be an RGB image [H, W, 3] (or [3, H, W] tensor), got shape {frame.shape}.")
    if frame.shape[-1] == 1:
        frame = np.repeat(frame, 3, axis=-1)
    frame = frame[..., :3]
    if frame.dtype == np.uint8:
        return np.ascontiguousarray(frame)
    if np.issubdtype(frame.dtype, np.floating):
        return np.ascontiguousarray((np.clip(frame, 0.0, 1.0) * 255.0).round().astype(np.uint8))
    raise TypeError(f"Frame {index} must be uint8 or float in [0, 1], got dtype {frame.dtype}.")


def frames_to_uint8(frames: Any) -> List[np.ndarray]:
    """Normalise any supported frame collection to a list of ``[H, W, 3]`` uint8 arrays.

    Raises:
        ValueError: no frames, frames of different sizes, or frames that are not RGB images.
    """
    if isinstance(frames, torch.Tensor):
        if frames.ndim != 4:
            raise ValueError(f"A frame tensor must be [N, 3, H, W] (or [N, H, W, 3]), got shape {tuple(frames.shape)}.")
        frames = list(frames.unbind(0))
    elif isinstance(frames, np.ndarray):
        if frames.ndim != 4:
            raise ValueError(f"A frame array must be [N, H, W, 3], got shape {frames.shape}.")
        frames = list(frames)
    else:
        frames = list(frames)
    if not frames:
        raise ValueError("Expected at least one frame, got none.")
    out = [_frame_to_uint8(f, i) for i, f in enumerate(frames)]
    sizes = {f.shape[:2] for f in out}
    if len(sizes) != 1:
        raise ValueError(f"All frames must share one size (H, W); got {sorted(sizes)}.")
    return out


def ffmpeg_available() -> bool:
    """Whether ``imageio`` can write mp4 files (``imageio-ffmpeg`` installed with a working binary)."""
    try:
        import imageio_ffmpeg

        return os.path.isfile(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception:  # ImportError, or RuntimeError when no binary is found
        return False


def _pad_even(frame: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs even sides: replicate the last row/column when a side is odd."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if (h % 2 or w % 2) else frame


def export_to_video(frames: Any, path: PathLike, fps: float = 24, *, quality: Optional[float] = 8) -> str:
    """Write frames to a video file and return the path actually written.

    ``.mp4`` (and other ffmpeg containers) are written with ``imageio-ffmpeg`` (H.264, yuv420p;
    odd sides are padded by one replicated row/column). When ffmpeg is not available the frames are
    written as an animated GIF next to the requested path (same name, ``.gif`` suffix) and a warning
    is logged. A ``.gif`` path is always written as a GIF.

    Args:
        frames: the frames (see the module docstring for accepted forms).
        path: output file; parent folders are created.
        fps: frames per second (> 0).
        quality: ffmpeg quality 0-10 (``None`` for ffmpeg's default).

    Returns:
        The path of the written file (``str``), which differs from ``path`` only in the GIF fallback.
    """
    import imageio.v2 as imageio

    if not fps or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}.")
    arrays = frames_to_uint8(frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() != ".gif" and not ffmpeg_available():
        gif = path.with_suffix(".gif")
        logger.warning("ffmpeg is not available (pip install imageio-ffmpeg); writing %s instead of %s.", gif, path)
        path = gif
    if path.suffix.lower() == ".gif":
        # GIF frame durations are in milliseconds in imageio's pillow plugin.
        imageio.mimsave(path, arrays, format="GIF", duration=1000.0 / fps, loop=0)
        return str(path)
    writer = imageio.get_writer(
        path, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=quality, macro_block_size=1,
        pixelformat="yuv420p",
    )  # fmt: skip
    try:
        for frame in arrays:
            writer.append_data(_pad_even(frame))
    finally:
        writer.close()
    return str(path)


def read_video(path: PathLike, indices: Optional[Sequence[int]] = None) -> np.ndarray:
    """Decode frames of a video file as ``[N, H, W, 3]`` uint8.

    Args:
        path: a video file (see :data:`VIDEO_SUFFIXES`).
        indices: frame indices to keep (any order, repeats allowed); ``None`` keeps every frame.
            Decoding streams through the file once and keeps only the requested frames.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IndexError: an index is outside the video.
    """
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Video file not found: {path}")
    wanted = None if indices is None else [int(i) for i in indices]
    if wanted is not None and any(i < 0 for i in wanted):
        raise IndexError(f"Frame indices must be >= 0, got {[i for i in wanted if i < 0][:5]}.")
    keep = None if wanted is None else set(wanted)
    last = None if wanted is None else max(wanted, default=-1)
    frames = {}
    count = 0
    for i, frame in enumerate(iio.imiter(path)):
        count = i + 1
        if keep is None or i in keep:
            frames[i] = np.asarray(frame)[..., :3]
        if last is not None and i >= last:
            break
    order = list(range(count)) if wanted is None else wanted
    missing = [i for i in order if i not in frames]
    if missing:
        raise IndexError(f"{path} has {count} frame(s); requested frame(s) {missing[:5]} do not exist.")
    if not order:
        raise ValueError(f"No frames read from {path}.")
    return np.stack([frames[i] for i in order]).astype(np.uint8, copy=False)


def make_image_grid(frames: Any, rows: Optional[int] = None, cols: Optional[int] = None, padding: int = 0):
    """Tile frames into one ``PIL.Image`` (row-major; empty cells are white).

    Args:
        frames: the frames (see the module docstring).
        rows, cols: grid shape; when one is ``None`` it is derived from the other, when both are
            ``None`` the grid is as square as possible. ``rows * cols`` must hold every frame.
        padding: white pixels between cells.
    """
    from PIL import Image

    arrays = frames_to_uint8(frames)
    n = len(arrays)
    if rows is None and cols is None:
        cols = int(np.ceil(np.sqrt(n)))
    if rows is None:
        rows = int(np.ceil(n / cols))
    if cols is None:
        cols = int(np.ceil(n / rows))
    if rows <= 0 or cols <= 0 or rows * cols < n:
        raise ValueError(f"A {rows}x{cols} grid cannot hold {n} frame(s).")
    h, w = arrays[0].shape[:2]
    grid = np.full((rows * h + (rows - 1) * padding, cols * w + (cols - 1) * padding, 3), 255, dtype=np.uint8)
    for i, frame in enumerate(arrays):
        r, c = divmod(i, cols)
        top, left = r * (h + padding), c * (w + padding)
        grid[top : top + h, left : left + w] = frame
    return Image.fromarray(grid)
