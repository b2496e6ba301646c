"""Scenes on disk: readers of real camera formats, lazy image loading and frame selection.

:func:`load_scene` reads a scene folder or file and returns a :class:`Scene`: canonical
:class:`~fsm_hf.cameras.Cameras` (OpenCV ``c2w``, pixel ``fxfycxcy``), optional raw timestamps,
per-view names, and images that are decoded only when :meth:`Scene.load_images` asks for them.

Supported formats (``SCENE_FORMATS``):

``"fsm_jsonl"``
    The official FSM video format: a ``.jsonl`` file holding **one** JSON object with
    ``scene_name``, ``video_path`` and ``frames`` (per frame ``frame_idx``, ``w2c`` 4x4 OpenCV
    world-to-camera, ``fx, fy, cx, cy`` pixels of ``h x w``). The video is looked up next to the
    JSON file by the basename of ``video_path``. Times are the frame indices.
``"nerfstudio"``
    nerfstudio / instant-ngp ``transforms.json``: OpenGL camera-to-world ``transform_matrix``,
    global or per-frame ``fl_x, fl_y, cx, cy, w, h`` (``camera_angle_x``/``_y`` as a fallback),
    optional per-frame ``time``. Distortion coefficients are ignored (with a warning).
``"blender"``
    Blender / NeRF-synthetic / D-NeRF ``transforms_{train,val,test}.json``: ``camera_angle_x``,
    OpenGL ``transform_matrix``, RGBA images composited on a background colour (white by default),
    optional D-NeRF per-frame ``time``. Choose the file with ``split=``.
``"opencv_cameras"``
    LaCT / GSO ``opencv_cameras.json`` and the official FSM image datasets: a list of frames (or
    ``{"frames": [...]}``) with ``w2c`` 4x4 OpenCV, ``fx, fy, cx, cy, w, h`` and ``file_path``;
    optional ``frame_time``.

For the file formats, frames whose image file is missing are skipped with one warning.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .cameras import Cameras
from .validation import view_positions

__all__ = [
    "SCENE_FORMATS",
    "Scene",
    "SceneSource",
    "load_scene",
    "detect_scene_format",
    "select_frames",
    "split_input_target",
]

PathLike = Union[str, os.PathLike]

#: Format names accepted by :func:`load_scene` (``format=``) and reported in ``Scene.source``.
SCENE_FORMATS = ("fsm_jsonl", "nerfstudio", "blender", "opencv_cameras")

_FORMAT_HELP = (
    "Supported scene formats: 'fsm_jsonl' (official FSM .jsonl + video), 'nerfstudio' (transforms.json), "
    "'blender' (transforms_{train,val,test}.json, D-NeRF), 'opencv_cameras' (LaCT/GSO opencv_cameras.json)."
)
_IMAGE_SUFFIXES = ("", ".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG", ".webp")
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


# ----------------------------------------------------------------------------------------------
# Scene
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneSource:
    """Where a scene came from: the file read, its format name, and the video for video formats."""

    path: Optional[Path]
    format: str
    video_path: Optional[Path] = None


ImageReader = Callable[[Sequence[Any]], torch.Tensor]


@dataclass
class Scene:
    """A posed (and possibly timed) set of views whose images are loaded on demand.

    Attributes:
        cameras: :class:`~fsm_hf.cameras.Cameras` of the ``N`` views (OpenCV ``c2w``, pixel intrinsics).
        times: float64 ``[N]`` raw timestamps in the file's units (seconds, D-NeRF ``time`` in
            ``[0, 1]``, or frame indices for video), or ``None`` for a static scene. Turn them into
            model time with :class:`~fsm_hf.normalization.TimeNormalization`.
        frame_indices: per view, its index in the source (video frame index, or position in the
            file's frame list before missing frames were skipped).
        names: per view, a readable identifier (image path or ``scene/frame``).
        source: :class:`SceneSource` (path and format name).
        image_refs: per view, what ``image_reader`` needs to load it (a path, a frame index, ...).
        image_reader: callable mapping a list of ``image_refs`` to float ``[n, 3, H, W]`` in [0, 1].
        metadata: free-form extras of the source (e.g. ``scene_name``).

    Build one with :func:`load_scene`, or from tensors with :meth:`from_tensors`.
    """

    cameras: Cameras
    times: Optional[torch.Tensor]
    frame_indices: List[int]
    names: List[str]
    source: SceneSource
    image_refs: Optional[List[Any]] = field(default=None, repr=False)
    image_reader: Optional[ImageReader] = field(default=None, repr=False)
    metadata: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.cameras)
        if self.times is not None:
            self.times = torch.as_tensor(self.times, dtype=torch.float64).flatten()
            if self.times.numel() != n:
                raise ValueError(f"Scene has {n} cameras but {self.times.numel()} times.")
            if not torch.isfinite(self.times).all():
                raise ValueError("Scene times must be finite; got NaN or inf.")
        self.frame_indices = [int(i) for i in self.frame_indices]
        self.names = [str(x) for x in self.names]
        for what, values in (("frame_indices", self.frame_indices), ("names", self.names)):
            if len(values) != n:
                raise ValueError(f"Scene has {n} cameras but {len(values)} {what}.")
        if self.image_refs is not None and len(self.image_refs) != n:
            raise ValueError(f"Scene has {n} cameras but {len(self.image_refs)} image references.")

    @classmethod
    def from_tensors(
        cls,
        cameras: Cameras,
        images: Optional[torch.Tensor] = None,
        times: Optional[torch.Tensor] = None,
        names: Optional[Sequence[str]] = None,
        source_format: str = "memory",
    ) -> "Scene":
        """A scene held in memory (e.g. synthetic): ``images`` float ``[N, 3, H, W]`` in [0, 1]."""
        n = len(cameras)
        if images is not None:
            expected = (n, 3, cameras.height, cameras.width)
            if tuple(images.shape) != expected:
                raise ValueError(
                    f"images must have shape {list(expected)} to match the cameras, got {list(images.shape)}."
                )
            stored = images

            def reader(refs: Sequence[int]) -> torch.Tensor:
                return stored[torch.as_tensor(list(refs), dtype=torch.long)]

        return cls(
            cameras=cameras,
            times=times,
            frame_indices=list(range(n)),
            names=list(names) if names is not None else [f"view_{i:05d}" for i in range(n)],
            source=SceneSource(None, source_format),
            image_refs=list(range(n)) if images is not None else None,
            image_reader=reader if images is not None else None,
        )

    def __len__(self) -> int:
        return len(self.cameras)

    @property
    def height(self) -> int:
        return self.cameras.height

    @property
    def width(self) -> int:
        return self.cameras.width

    @property
    def is_dynamic(self) -> bool:
        """Whether the views carry more than one distinct time."""
        return self.times is not None and bool((self.times != self.times[0]).any())

    def _positions(self, indices: Optional[Sequence[int]]) -> List[int]:
        if indices is None:
            return list(range(len(self)))
        return view_positions(indices, len(self), "views of the scene")

    def select(self, indices: Sequence[int]) -> "Scene":
        """The sub-scene of the given view positions (in that order; negative from the end) or of a
        boolean mask over the views; images stay lazy."""
        pos = self._positions(indices)
        if not pos:
            raise IndexError("Cannot select zero views from a Scene.")
        return replace(
            self,
            cameras=self.cameras.select(pos),
            times=None if self.times is None else self.times[pos],
            frame_indices=[self.frame_indices[i] for i in pos],
            names=[self.names[i] for i in pos],
            image_refs=None if self.image_refs is None else [self.image_refs[i] for i in pos],
            metadata=dict(self.metadata),
        )

    def load_images(self, indices: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Decode the images of the given view positions (all by default).

        Returns:
            float32 ``[n, 3, H, W]`` in ``[0, 1]``, ``H, W`` = ``cameras.height, cameras.width``.
        """
        if self.image_reader is None or self.image_refs is None:
            raise RuntimeError(f"This scene ({self.source.format}) has no images attached.")
        pos = self._positions(indices)
        if not pos:
            return torch.zeros(0, 3, self.height, self.width)
        images = self.image_reader([self.image_refs[i] for i in pos])
        if tuple(images.shape[1:]) != (3, self.height, self.width):
            raise ValueError(
                f"Decoded images are {list(images.shape[1:])} but the cameras describe [3, {self.height}, "
                f"{self.width}] (source {self.source.path}). Resize them or fix the intrinsics' w/h."
            )
        return images

    def __repr__(self) -> str:
        times = "static" if self.times is None else f"times [{self.times.min().item():g}, {self.times.max().item():g}]"
        return (
            f"Scene(format={self.source.format!r}, num_views={len(self)}, size={self.height}x{self.width}, "
            f"{times}, path={str(self.source.path)!r})"
        )


# ----------------------------------------------------------------------------------------------
# Image decoding
# ----------------------------------------------------------------------------------------------


def _to_float_images(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` arrays -> float32 ``[n, 3, H, W]`` in [0, 1]."""
    stacked = torch.from_numpy(np.stack(arrays))
    return stacked.permute(0, 3, 1, 2).float().div_(255.0)


class ImageFileReader:
    """Loads image files as RGB; transparent images are composited on ``background`` (RGB in [0, 1])."""

    def __init__(self, background: Sequence[float] = (1.0, 1.0, 1.0)):
        self.background = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)

    def __call__(self, paths: Sequence[Path]) -> torch.Tensor:
        from PIL import Image

        images = []
        for path in paths:
            with Image.open(path) as img:
                if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
                    alpha = rgba[..., 3:]
                    rgb = rgba[..., :3] * alpha + self.background * (1.0 - alpha)
                    images.append(torch.from_numpy(rgb).permute(2, 0, 1))
                    continue
                rgb8 = np.asarray(img.convert("RGB"))
            images.append(torch.from_numpy(rgb8.copy()).permute(2, 0, 1).float() / 255.0)
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) > 1:
            raise ValueError(f"Images of one scene must share one size, got {sorted(shapes)}.")
        return torch.stack(images)


class VideoFrameReader:
    """Decodes selected frames of a video file (PyAV; imageio-ffmpeg as a fallback).

    Frames are decoded in ascending order; the reader seeks to the key frame before a requested
    frame when it is far ahead, so only the needed stretches of the video are decoded.
    """

    #: Seek instead of decoding forward when the next wanted frame is this many frames ahead.
    seek_gap = 48

    def __init__(self, path: PathLike):
        self.path = Path(path)

    def __call__(self, frame_indices: Sequence[int]) -> torch.Tensor:
        wanted = [int(i) for i in frame_indices]
        if any(i < 0 for i in wanted):
            raise IndexError(f"Video frame indices must be >= 0, got {min(wanted)}.")
        try:
            import av  # noqa: F401
        except ImportError:
            frames = self._decode_imageio(sorted(set(wanted)))
        else:
            frames = self._decode_av(sorted(set(wanted)))
        return _to_float_images([frames[i] for i in wanted])

    def _decode_av(self, wanted: List[int]) -> Dict[int, np.ndarray]:
        import av

        out: Dict[int, np.ndarray] = {}
        with av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate, time_base = stream.average_rate or stream.guessed_rate, stream.time_base
            start = stream.start_time or 0
            if not rate or time_base is None:
                return self._decode_sequential(container, stream, wanted)

            def index_of(frame) -> Optional[int]:
                return None if frame.pts is None else int(round(float((frame.pts - start) * time_base * rate)))

            iterator, position = None, -1
            for target in wanted:
                if iterator is None or target - position > self.seek_gap:
                    container.seek(start + int(target / rate / time_base), stream=stream, backward=True)
                    iterator, position = container.decode(stream), -1
                found = False
                for frame in iterator:
                    position = index_of(frame)
                    if position is None or position > target:
                        # Timestamps missing or a seek past the frame: decode the reliable way.
                        container.seek(0)
                        return self._decode_sequential(container, stream, wanted)
                    if position == target:
                        out[target] = frame.to_ndarray(format="rgb24")
                        found = True
                        break
                if not found:
                    raise IndexError(f"Frame {target} is past the end of {self.path} ({position + 1} frames decoded).")
        return out

    def _decode_sequential(self, container, stream, wanted: List[int]) -> Dict[int, np.ndarray]:
        out: Dict[int, np.ndarray] = {}
        remaining, last = set(wanted), max(wanted)
        for index, frame in enumerate(container.decode(stream)):
            if index in remaining:
                out[index] = frame.to_ndarray(format="rgb24")
            if index >= last:
                break
        missing = sorted(set(wanted) - set(out))
        if missing:
            raise IndexError(f"Frames {missing[:10]} are past the end of {self.path}.")
        return out

    def _decode_imageio(self, wanted: List[int]) -> Dict[int, np.ndarray]:
        import imageio.v2 as imageio

        with imageio.get_reader(str(self.path), "ffmpeg") as reader:
            return {i: np.asarray(reader.get_data(i))[..., :3] for i in wanted}


# ----------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    """A JSON document, or the first non-empty line of a JSON-lines file."""
    text = path.read_text(encoding="utf-8-sig")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        for line in text.splitlines():
            if line.strip():
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    break
        raise ValueError(f"{path} is not valid JSON (or JSON lines): {err}") from None


def _frames_of(meta: Any, path: Path) -> List[dict]:
    frames = meta.get("frames") if isinstance(meta, dict) else meta
    if not isinstance(frames, list) or not frames:
        raise ValueError(f"{path}: expected a non-empty list of frames, got {type(frames).__name__} "
                         f"{'(empty)' if isinstance(frames, list) else ''}.")
    if not all(isinstance(f, dict) for f in frames):
        raise ValueError(f"{path}: every frame must be a JSON object.")
    return frames


def _require(frame: dict, keys: Sequence[str], path: Path, position: int) -> None:
    missing = [k for k in keys if k not in frame]
    if missing:
        raise ValueError(f"{path}: frame {position} lacks {missing}; it has keys {sorted(frame)}.")


def _one_size(sizes: Sequence[Tuple[int, int]], path: Path) -> Tuple[int, int]:
    distinct = sorted(set(sizes))
    if len(distinct) != 1:
        raise ValueError(f"{path}: all frames must share one image size (h, w), got {distinct[:5]}.")
    return distinct[0]


def _resolve_image(base: Path, file_path: str) -> Optional[Path]:
    candidate = base / file_path
    for suffix in _IMAGE_SUFFIXES:
        path = candidate.with_name(candidate.name + suffix) if suffix else candidate
        if path.is_file():
            return path
    return None


def _warn_missing(missing: List[str], path: Path) -> None:
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        warnings.warn(f"{path}: skipped {len(missing)} frame(s) whose image file is missing: {shown}", stacklevel=3)


def _existing_frame_images(frames: List[dict], keys: Sequence[str], path: Path) -> Tuple[List[int], List[Path]]:
    """``(positions, image paths)`` of the frames whose image file exists (each frame must have ``keys``).

    Missing files are skipped with one warning; none existing is an error.
    """
    kept, images, missing = [], [], []
    for i, frame in enumerate(frames):
        _require(frame, keys, path, i)
        image = _resolve_image(path.parent, str(frame["file_path"]))
        if image is None:
            missing.append(str(frame["file_path"]))
            continue
        kept.append(i)
        images.append(image)
    _warn_missing(missing, path)
    if not kept:
        raise FileNotFoundError(f"{path}: none of the {len(frames)} frames' image files exist.")
    return kept, images


def _times_from(values: List[Optional[float]], key: str, path: Path) -> Optional[torch.Tensor]:
    present = [v is not None for v in values]
    if not any(present):
        return None
    if not all(present):
        raise ValueError(f"{path}: '{key}' is given for some frames but not all ({sum(present)} of {len(values)}).")
    return torch.tensor([float(v) for v in values], dtype=torch.float64)


def _background(value: Union[str, Sequence[float]]) -> Tuple[float, float, float]:
    named = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}
    if isinstance(value, str):
        if value not in named:
            raise ValueError(f"background must be 'white', 'black' or an RGB triple in [0, 1], got {value!r}.")
        return named[value]
    rgb = tuple(float(v) for v in value)
    if len(rgb) != 3 or not all(0.0 <= v <= 1.0 for v in rgb):
        raise ValueError(f"background must be an RGB triple in [0, 1], got {value!r}.")
    return rgb


def _read_fsm_jsonl(path: Path, video_path: Optional[PathLike] = None, **_: Any) -> Scene:
    meta = _read_json(path)
    if not isinstance(meta, dict) or "frames" not in meta:
        raise ValueError(f"{path}: expected one JSON object with 'video_path' and 'frames' (official FSM format).")
    frames = _frames_of(meta, path)
    if video_path is None:
        if "video_path" not in meta:
            raise ValueError(f"{path}: no 'video_path' in the file; pass video_path= to load_scene.")
        video = path.parent / Path(str(meta["video_path"]).replace("\\", "/")).name
    else:
        video = Path(video_path)
    if not video.is_file():
        raise FileNotFoundError(
            f"{path}: the video {video.name!r} was not found next to the JSON file (looked for {video}); "
            "pass video_path= to load_scene."
        )
    for i, frame in enumerate(frames):
        _require(frame, ("w2c", "fx", "fy", "cx", "cy"), path, i)
    frame_idx = [int(f.get("frame_idx", i)) for i, f in enumerate(frames)]
    if any("h" not in f or "w" not in f for f in frames):
        height, width = _video_size(video)
    else:
        height, width = _one_size([(int(f["h"]), int(f["w"])) for f in frames], path)
    cameras = Cameras.from_arrays(
        [f["w2c"] for f in frames],
        [[f["fx"], f["fy"], f["cx"], f["cy"]] for f in frames],
        width,
        height,
        convention="opencv",
        pose_type="w2c",
    )
    scene_name = str(meta.get("scene_name", path.stem))
    return Scene(
        cameras=cameras,
        times=torch.tensor(frame_idx, dtype=torch.float64),
        frame_indices=frame_idx,
        names=[f"{scene_name}/{i:05d}" for i in frame_idx],
        source=SceneSource(path, "fsm_jsonl", video),
        image_refs=frame_idx,
        image_reader=VideoFrameReader(video),
        metadata={"scene_name": scene_name, "num_video_frames": meta.get("num_video_frames")},
    )


def _video_size(video: Path) -> Tuple[int, int]:
    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        return int(stream.height), int(stream.width)


def _image_size(path: Path) -> Tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:  # reads the header only
        return img.height, img.width


def _read_transforms(
    path: Path, background: Union[str, Sequence[float]] = "white", format_name: str = "nerfstudio", **_: Any
) -> Scene:
    meta = _read_json(path)
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object with 'frames' (transforms.json format).")
    frames = _frames_of(meta, path)

    kept, images = _existing_frame_images(frames, ("file_path", "transform_matrix"), path)

    def get(frame: dict, key: str, default: Any = None) -> Any:
        return frame.get(key, meta.get(key, default))

    distorted = sorted({k for i in kept for k in _DISTORTION_KEYS if float(get(frames[i], k, 0.0) or 0.0) != 0.0})
    if distorted:
        warnings.warn(
            f"{path}: lens distortion ({', '.join(distorted)}) is ignored; images are treated as pinhole. "
            "Undistort them first for accurate results.",
            stacklevel=3,
        )

    header_size: Optional[Tuple[int, int]] = None
    sizes, intrinsics = [], []
    for i, image in zip(kept, images):
        frame = frames[i]
        if get(frame, "w") is not None and get(frame, "h") is not None:
            h, w = int(get(frame, "h")), int(get(frame, "w"))
        else:
            header_size = header_size or _image_size(image)
            h, w = header_size
        if get(frame, "fl_x") is not None:
            fx = float(get(frame, "fl_x"))
            fy = float(get(frame, "fl_y", fx))
        elif get(frame, "camera_angle_x") is not None:
            fx = 0.5 * w / math.tan(0.5 * float(get(frame, "camera_angle_x")))
            angle_y = get(frame, "camera_angle_y")
            fy = fx if angle_y is None else 0.5 * h / math.tan(0.5 * float(angle_y))
        else:
            raise ValueError(
                f"{path}: frame {i} has no focal length ('fl_x' or 'camera_angle_x', per frame or global)."
            )
        cx, cy = float(get(frame, "cx", w / 2.0)), float(get(frame, "cy", h / 2.0))
        sizes.append((h, w))
        intrinsics.append([fx, fy, cx, cy])
    height, width = _one_size(sizes, path)

    cameras = Cameras.from_arrays(
        [frames[i]["transform_matrix"] for i in kept], intrinsics, width, height, convention="opengl", pose_type="c2w"
    )
    return Scene(
        cameras=cameras,
        times=_times_from([frames[i].get("time") for i in kept], "time", path),
        frame_indices=kept,
        names=[str(frames[i]["file_path"]) for i in kept],
        source=SceneSource(path, format_name),
        image_refs=images,
        image_reader=ImageFileReader(_background(background)),
    )


_TRAILING_INT = re.compile(r"_(\d+)$")


def _read_opencv_cameras(path: Path, background: Union[str, Sequence[float]] = "white", **_: Any) -> Scene:
    meta = _read_json(path)
    frames = _frames_of(meta, path)
    kept, images = _existing_frame_images(frames, ("w2c", "fx", "fy", "cx", "cy", "file_path"), path)
    if all("h" in frames[i] and "w" in frames[i] for i in kept):
        height, width = _one_size([(int(frames[i]["h"]), int(frames[i]["w"])) for i in kept], path)
    else:
        height, width = _image_size(images[0])
    cameras = Cameras.from_arrays(
        [frames[i]["w2c"] for i in kept],
        [[frames[i][k] for k in ("fx", "fy", "cx", "cy")] for i in kept],
        width,
        height,
        convention="opencv",
        pose_type="w2c",
    )
    # Times: explicit 'frame_time', else (as the official loader does for DL3DV) the integer
    # suffix of every file name ('frame_00012.png' -> 12); static when neither is available.
    times = _times_from([frames[i].get("frame_time") for i in kept], "frame_time", path)
    if times is None:
        suffixes = [_TRAILING_INT.search(Path(str(frames[i]["file_path"])).stem) for i in kept]
        if all(suffixes):
            times = torch.tensor([float(m.group(1)) for m in suffixes], dtype=torch.float64)
    return Scene(
        cameras=cameras,
        times=times,
        frame_indices=kept,
        names=[str(frames[i]["file_path"]) for i in kept],
        source=SceneSource(path, "opencv_cameras"),
        image_refs=images,
        image_reader=ImageFileReader(_background(background)),
    )


_READERS = {
    "fsm_jsonl": _read_fsm_jsonl,
    "nerfstudio": _read_transforms,
    "blender": _read_transforms,
    "opencv_cameras": _read_opencv_cameras,
}


def _detect_file(path: Path) -> Optional[str]:
    if path.suffix == ".jsonl":
        return "fsm_jsonl"
    if path.suffix != ".json":
        return None
    try:
        meta = _read_json(path)
    except ValueError:
        return None
    if isinstance(meta, dict) and "video_path" in meta and "frames" in meta:
        return "fsm_jsonl"
    frames = meta.get("frames") if isinstance(meta, dict) else meta
    if not isinstance(frames, list) or not frames or not isinstance(frames[0], dict):
        return None
    if "transform_matrix" in frames[0]:
        if path.name == "transforms.json":
            return "nerfstudio"
        if re.fullmatch(r"transforms_\w+\.json", path.name):
            return "blender"
        return "nerfstudio" if ("fl_x" in meta or "fl_x" in frames[0]) else "blender"
    if "w2c" in frames[0] and "file_path" in frames[0]:
        return "opencv_cameras"
    return None


def _scene_file_in(folder: Path, split: str) -> Tuple[Path, str]:
    named = [
        ("transforms.json", "nerfstudio"),
        (f"transforms_{split}.json", "blender"),
        ("opencv_cameras.json", "opencv_cameras"),
    ]
    for name, fmt in named:
        if (folder / name).is_file():
            return folder / name, fmt
    jsonl = sorted(folder.glob("*.jsonl"))
    if len(jsonl) == 1:
        return jsonl[0], "fsm_jsonl"
    splits = sorted(p.name for p in folder.glob("transforms_*.json"))
    hint = f" Found {splits}; choose one with split=." if splits else ""
    if len(jsonl) > 1:
        hint += f" Found several .jsonl files ({[p.name for p in jsonl[:5]]}); pass one of them."
    raise ValueError(f"No scene file found in folder {folder}.{hint} {_FORMAT_HELP}")


def detect_scene_format(path: PathLike, split: str = "train") -> Tuple[Path, str]:
    """The scene file to read and its format name (one of :data:`SCENE_FORMATS`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Scene path {path} does not exist.")
    if path.is_dir():
        return _scene_file_in(path, split)
    fmt = _detect_file(path)
    if fmt is None:
        raise ValueError(f"Cannot recognise the scene file {path}. {_FORMAT_HELP}")
    return path, fmt


def load_scene(
    path: PathLike,
    format: Optional[str] = None,  # noqa: A002 - the natural name
    *,
    split: str = "train",
    background: Union[str, Sequence[float]] = "white",
    video_path: Optional[PathLike] = None,
) -> Scene:
    """Read a scene (cameras, times, lazy images) from a folder or a scene file.

    Args:
        path: a scene file (``*.jsonl``, ``transforms*.json``, ``opencv_cameras.json``) or a folder
            holding one.
        format: one of :data:`SCENE_FORMATS` to skip autodetection.
        split: which ``transforms_{split}.json`` of a Blender-style folder to read.
        background: RGB in [0, 1] (or ``"white"``/``"black"``) behind transparent images.
        video_path: the video of an official ``.jsonl`` scene, when it is not next to the file.

    Returns:
        :class:`Scene`. No image is decoded until :meth:`Scene.load_images` is called.
    """
    path = Path(path)
    if format is not None and format not in SCENE_FORMATS:
        raise ValueError(f"Unknown scene format {format!r}. {_FORMAT_HELP}")
    if format is not None and path.is_file():
        scene_file = path
    else:
        scene_file, detected = detect_scene_format(path, split=split)
        if format is not None and format != detected and path.is_dir():
            raise ValueError(f"Folder {path} holds a {detected!r} scene ({scene_file.name}), not {format!r}.")
        format = format or detected
    return _READERS[format](scene_file, format_name=format, background=background, video_path=video_path)


# ----------------------------------------------------------------------------------------------
# Frame selection
# ----------------------------------------------------------------------------------------------

FRAME_POLICIES = ("evenly", "every", "random", "all", "indices")


def _check_count(value: Optional[int], name: str, policy: str) -> int:
    if value is None or isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"policy={policy!r} needs a positive integer {name}, got {value!r}.")
    return int(value)


def _evenly(lo: int, hi: int, n: int) -> List[int]:
    """``n`` distinct integers spread over ``[lo, hi]`` including both ends (``n <= hi - lo + 1``)."""
    if n == 1:
        return [lo]
    return [lo + int(math.floor(j * (hi - lo) / (n - 1) + 0.5)) for j in range(n)]


def select_frames(
    num_frames: int,
    policy: str = "evenly",
    n: Optional[int] = None,
    k: Optional[int] = None,
    seed: Optional[int] = None,
    indices: Optional[Sequence[int]] = None,
) -> List[int]:
    """Choose frame positions out of ``num_frames``.

    Policies:
        ``"evenly"``: ``n`` frames spread evenly, first and last included (``round(linspace(0, N-1, n))``).
        ``"every"``: every ``k``-th frame from the first (``0, k, 2k, ...``).
        ``"random"``: ``n`` distinct frames drawn with ``random.Random(seed)``, returned sorted.
        ``"all"``: every frame.
        ``"indices"``: the given ``indices``, checked to be in range (order kept).

    Returns:
        A list of ints in ``[0, num_frames)``.
    """
    if isinstance(num_frames, bool) or int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}.")
    num_frames = int(num_frames)
    if policy == "all":
        return list(range(num_frames))
    if policy == "every":
        return list(range(0, num_frames, _check_count(k, "k", policy)))
    if policy == "indices":
        if indices is None:
            raise ValueError("policy='indices' needs indices=[...].")
        chosen = [int(i) for i in indices]
        bad = [i for i in chosen if not 0 <= i < num_frames]
        if bad or not chosen:
            raise ValueError(f"indices must be a non-empty list in [0, {num_frames}), got out-of-range {bad[:10]}.")
        return chosen
    if policy in ("evenly", "random"):
        n = _check_count(n, "n", policy)
        if n > num_frames:
            raise ValueError(f"Cannot select n={n} distinct frames out of {num_frames}.")
        if policy == "evenly":
            return _evenly(0, num_frames - 1, n)
        return sorted(random.Random(seed).sample(range(num_frames), n))
    raise ValueError(f"Unknown frame selection policy {policy!r}; expected one of {FRAME_POLICIES}.")


def split_input_target(
    num_frames: int,
    num_inputs: int,
    num_targets: int,
    policy: str = "evenly",
    start: int = 0,
    window: Optional[int] = None,
) -> Tuple[List[int], List[int]]:
    """Split frames into input views and held-out target views.

    Policies:
        ``"evenly"``: inputs spread evenly over the window (first and last frame included);
            targets are ``num_targets`` frames spread evenly over the *non-input* frames between
            the first and the last input, so every target is held out in between inputs.
        ``"official"``: the official inference sampler with a fixed window start: ``num_inputs +
            num_targets`` frames at ``start + int(i * window / (num_inputs + num_targets))``, the even
            positions of that list are inputs and the odd ones targets (needs
            ``num_targets <= num_inputs <= num_targets + 1``, which the official sampler
            implicitly assumes).

    Args:
        num_frames: frames available.
        start, window: restrict to frames ``[start, start + window)`` (``window`` defaults to the rest).

    Returns:
        ``(input_indices, target_indices)``: disjoint lists of frame positions, inputs ascending.
    """
    if isinstance(num_frames, bool) or int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}.")
    num_inputs = _check_count(num_inputs, "num_inputs", policy)
    if isinstance(num_targets, bool) or int(num_targets) != num_targets or num_targets < 0:
        raise ValueError(f"num_targets must be a non-negative integer, got {num_targets!r}.")
    if not 0 <= start < num_frames:
        raise ValueError(f"start must be in [0, {num_frames}), got {start}.")
    window = num_frames - start if window is None else int(window)
    if window < 1 or start + window > num_frames:
        raise ValueError(f"window={window} from start={start} does not fit in {num_frames} frames.")
    total = num_inputs + num_targets
    if total > window:
        raise ValueError(
            f"Cannot hold out {num_targets} targets and {num_inputs} inputs in a window of {window} frames."
        )

    if policy == "official":
        if not num_targets <= num_inputs <= num_targets + 1:
            raise ValueError(
                "policy='official' interleaves inputs and targets, so it needs num_targets <= num_inputs <= "
                f"num_targets + 1; got {num_inputs} inputs and {num_targets} targets."
            )
        step = window / total
        chosen = [start + int(i * step) for i in range(total)]
        return chosen[0::2][:num_inputs], chosen[1::2][:num_targets]
    if policy != "evenly":
        raise ValueError(f"Unknown split policy {policy!r}; expected 'evenly' or 'official'.")

    if num_targets == 0:
        return _evenly(start, start + window - 1, num_inputs), []
    if num_inputs < 2:
        raise ValueError("policy='evenly' holds targets out between inputs, so it needs num_inputs >= 2.")
    inputs = _evenly(start, start + window - 1, num_inputs)
    taken = set(inputs)
    # Inputs include both window ends, so the window's other frames all lie between them and
    # (window >= num_inputs + num_targets) there are enough candidates.
    between = [i for i in range(inputs[0], inputs[-1] + 1) if i not in taken]
    # Target j is the middle element (the lower one of an even-sized slice) of the j-th of
    # num_targets equal slices of the candidates.
    slice_len = len(between) / num_targets
    targets = [between[int(math.floor((j + 0.5) * slice_len - 0.5))] for j in range(num_targets)]
    return inputs, targets
