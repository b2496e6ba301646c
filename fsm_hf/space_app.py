"""The fsm-hf Gradio Space: reconstruct a 4D scene once, then move through it in space and time.

The app (``spaces/app.py`` launches it; ``python -m fsm_hf.space_app`` does the same) has three steps:

1. **Model**: the built-in demo model shipped inside the package (:func:`fsm_hf.demo.builtin_model_path`),
   an ``FSMPipeline`` folder on the server, or a Hub id (``FSMPipeline.from_pretrained``).
2. **Scene**: the built-in example (a procedural 4D scene, :func:`fsm_hf.synthetic.generate_scene`),
   a video plus a camera file (official FSM ``.jsonl``, nerfstudio/Blender ``transforms.json`` or
   ``opencv_cameras.json``: for the JSON formats, the video's ``k``-th frame is the ``k``-th frame
   entry's image), or images plus a camera file (matched to the entries' ``file_path`` by file
   name). The input views are chosen ``"evenly"``, ``"every"`` ``k``-th frame, or ``"all"``.
3. **Explore**: :meth:`FSMPipeline.reconstruct` reads the input views **once** into a spatial
   memory, kept per browser session (``gr.State``); every camera move (azimuth, elevation and
   distance around the scene's focus point) or time change renders one view from that memory.
   A video along a trajectory with a time schedule, and for Gaussian (FSM-LRM) models a ``.ply``
   of the Gaussians at the chosen time, are one click away.

The logic lives in :class:`FSMSpace` (plain Python, no gradio: tests call it directly); gradio is
imported only by :func:`build_demo`, :func:`launch` and :func:`main`, with telemetry switched off
before the import. The app never opens a public share link.

Example::

    from fsm_hf.space_app import FSMSpace, build_demo, launch

    demo = build_demo(FSMSpace(builtin_model="path/to/pipeline-folder"))
    launch(demo, host="127.0.0.1", port=7860)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

__all__ = [
    "FRAME_SELECTIONS",
    "MODEL_SOURCES",
    "SCENE_SOURCES",
    "TIME_CONVENTION_CHOICES",
    "VIDEO_SCHEDULES",
    "VIDEO_TRAJECTORIES",
    "FSMSpace",
    "SceneState",
    "SpaceError",
    "SpaceLimits",
    "build_demo",
    "display_scale",
    "launch",
    "main",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
Progress = Callable[[float, str], None]

#: ``(label, value)`` of the model choices; the value is what the API takes.
MODEL_SOURCES = (("Built-in demo model", "builtin"), ("Local folder", "local"), ("Hugging Face Hub id", "hub"))
#: ``(label, value)`` of the scene choices.
SCENE_SOURCES = (
    ("Built-in example (procedural 4D scene)", "example"),
    ("Video + camera file", "video"),
    ("Images + camera file (transforms.json)", "images"),
)
#: How input views are taken from a scene (see :meth:`FSMPipeline.select_input_views`).
FRAME_SELECTIONS = ("evenly", "every", "all")
#: ``"auto"``: the pipeline's convention, or ``"training"`` when the times are not integer frame indices.
TIME_CONVENTION_CHOICES = ("auto", "training", "official_inference")
#: Camera paths of the video: the three of :mod:`fsm_hf.camera_paths`, or the slider camera held still.
VIDEO_TRAJECTORIES = ("orbit", "spiral", "interp", "current view")
#: ``"sweep"``: first to last input time; ``"fixed"``: frozen at the time slider (bullet time).
VIDEO_SCHEDULES = ("sweep", "fixed")

#: Environment variable naming the folder used as the "built-in" model (tests, custom deployments).
BUILTIN_MODEL_ENV = "FSM_SPACE_BUILTIN_MODEL"
#: Seed of the default example scene: held-out seeds start here (the built-in model never saw them).
DEFAULT_EXAMPLE_SEED = 10_000
_DISPLAY_SIDE = 256  # rendered views are upscaled (nearest neighbour) to about this many pixels
_THUMBNAIL_SIDE = 128
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_MAX_ELEVATION_DEG = 85.0
_KEEP_REQUEST_DIRS = 32


class SpaceError(ValueError):
    """A problem with what the user asked for; its message says what was expected and what was given."""


@dataclass(frozen=True)
class SpaceLimits:
    """What one request may ask of the Space.

    Attributes:
        max_file_size: largest upload (gradio's ``launch(max_file_size=...)``).
        max_scene_frames: frames (camera entries) a scene may have.
        max_input_views: input views one reconstruction may read.
        max_image_side: largest input frame side in pixels.
        example_frames: ``(min, max)`` frames of the built-in example scene.
        max_video_frames: frames of a rendered video.
        queue_size: requests waiting in the queue before new ones are refused.
    """

    max_file_size: str = "200mb"
    max_scene_frames: int = 2000
    max_input_views: int = 64
    max_image_side: int = 4096
    example_frames: Tuple[int, int] = (4, 128)
    max_video_frames: int = 240
    queue_size: int = 16


@dataclass
class SceneState:
    """One reconstructed scene, kept per browser session between renders.

    Attributes:
        model_key: ``(source, name)`` of the pipeline that built the memory.
        memory: the :class:`~fsm_hf.FSMMemory` of the input views.
        cameras: the input views' :class:`~fsm_hf.cameras.Cameras` (user world, input image size).
        times: float64 ``[V]`` raw input times (the time slider's units).
        time_convention: the convention the memory was built with.
        use_time: whether the model has a time channel (4D).
        gaussian: whether the model is a Gaussian (FSM-LRM) model (``.ply`` export).
        focus, up, reference: float64 ``[3]``: the orbit centre, the world up direction and the
            camera centre that azimuth 0, elevation 0, distance 1 reproduce (the middle input view).
        description: what was reconstructed (shown in the status line).
    """

    model_key: Tuple[str, str]
    memory: Any
    cameras: Any
    times: Any
    time_convention: str
    use_time: bool
    gaussian: bool
    focus: Any
    up: Any
    reference: Any
    description: str = ""

    @property
    def time_range(self) -> Tuple[float, float]:
        return float(self.times.min()), float(self.times.max())


@dataclass
class _Inputs:
    """Input views ready for ``reconstruct``: images float ``[V, 3, H, W]``, cameras, times ``[V]``."""

    images: Any
    cameras: Any
    times: Any
    description: str
    time_unit: str
    forced_convention: Optional[str] = None


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------
def display_scale(height: int, width: int, target: int = _DISPLAY_SIDE) -> int:
    """Integer upscaling factor of a ``height x width`` render for display (nearest neighbour)."""
    return max(1, target // max(int(height), int(width)))


def _upscale(image, target: int = _DISPLAY_SIDE):
    """A PIL image enlarged by :func:`display_scale` (crisp pixels)."""
    from PIL import Image

    factor = display_scale(image.height, image.width, target)
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def _as_int(value: Any, name: str, low: int, high: Optional[int] = None) -> int:
    """An integer in ``[low, high]`` from a number or numeric string, else a :class:`SpaceError`."""
    expected = f"an integer >= {low}" if high is None else f"an integer between {low} and {high}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpaceError(f"{name} must be {expected}, got {value!r}.") from None
    if not math.isfinite(number) or number != int(number) or number < low or (high is not None and number > high):
        raise SpaceError(f"{name} must be {expected}, got {value!r}.")
    return int(number)


def _as_float(value: Any, name: str, low: Optional[float] = None, high: Optional[float] = None) -> float:
    """A finite number in ``[low, high]``, else a :class:`SpaceError`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpaceError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise SpaceError(f"{name} must be a finite number, got {value!r}.")
    if (low is not None and number < low) or (high is not None and number > high):
        raise SpaceError(f"{name} must be between {low:g} and {high:g}, got {number:g}.")
    return number


def _upload_path(value: Any, what: str) -> Path:
    """The path of one uploaded file (gradio passes a path string, a dict or an object with ``.name``)."""
    if isinstance(value, dict):
        value = value.get("path") or value.get("name")
    elif value is not None and not isinstance(value, (str, os.PathLike)):
        value = getattr(value, "path", None) or getattr(value, "name", None)
    if value is None or value == "":
        raise SpaceError(f"Please upload {what}.")
    path = Path(value)
    if not path.is_file():
        raise SpaceError(f"The uploaded {what} was not found on the server ({path.name}); upload it again.")
    return path


def _upload_paths(values: Any, what: str) -> List[Path]:
    if values is None or (isinstance(values, (list, tuple)) and not values):
        raise SpaceError(f"Please upload {what}.")
    if not isinstance(values, (list, tuple)):
        values = [values]
    return [_upload_path(v, what) for v in values]


def _read_json_upload(path: Path) -> Any:
    """A JSON document (or the first line of a JSON-lines file) from an upload, with a clear error."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise SpaceError(f"The camera file {path.name!r} is not a text (JSON) file.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        first = next((line for line in text.splitlines() if line.strip()), "")
        try:
            return json.loads(first)
        except json.JSONDecodeError:
            raise SpaceError(f"The camera file {path.name!r} is not valid JSON: {err}.") from None


def _frame_entries(meta: Any, path: Path) -> List[dict]:
    frames = meta.get("frames") if isinstance(meta, dict) else meta
    if not isinstance(frames, list) or not frames or not all(isinstance(f, dict) for f in frames):
        raise SpaceError(
            f"The camera file {path.name!r} has no frame list: expected a JSON object with a non-empty "
            "'frames' list (or a list of frame objects)."
        )
    return frames


def _to_pil(image) -> Any:
    """float ``[3, H, W]`` in [0, 1] -> PIL image."""
    import numpy as np
    from PIL import Image

    array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array)


# ----------------------------------------------------------------------------------------------
# The app's logic (no gradio)
# ----------------------------------------------------------------------------------------------
class FSMSpace:
    """Everything the Space does, as plain methods (the gradio layer only wires widgets to them).

    Args:
        builtin_model: the folder used as "Built-in demo model" (default: the ``FSM_SPACE_BUILTIN_MODEL``
            environment variable, else :func:`fsm_hf.demo.builtin_model_path`).
        limits: :class:`SpaceLimits`.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        work_dir: where videos, ``.ply`` files and unpacked uploads go (default: a new temporary folder).
        max_cached_models: pipelines kept loaded at once.
    """

    def __init__(
        self,
        builtin_model: Optional[PathLike] = None,
        limits: SpaceLimits = SpaceLimits(),
        device: str = "auto",
        work_dir: Optional[PathLike] = None,
        max_cached_models: int = 2,
    ):
        from .demo import builtin_model_path

        if builtin_model is None:
            builtin_model = os.environ.get(BUILTIN_MODEL_ENV) or builtin_model_path()
        self.builtin_model = Path(builtin_model)
        self.limits = limits
        self.device = device
        self.work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="fsm-space-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.max_cached_models = max(1, int(max_cached_models))
        self._pipelines: "OrderedDict[Tuple[str, str], Any]" = OrderedDict()
        self._lock = threading.RLock()

    # -- models --------------------------------------------------------------------------------
    def builtin_available(self) -> bool:
        """Whether the built-in model folder holds an ``FSMPipeline`` (``model_index.json``)."""
        return (self.builtin_model / "model_index.json").is_file()

    def builtin_status(self) -> str:
        """One Markdown line on the built-in model."""
        if self.builtin_available():
            return f"Built-in demo model: `{self.builtin_model.name}` (an FSM model trained on procedural 4D scenes)."
        return (
            f"**The built-in demo model is not installed** in this build (no `model_index.json` in "
            f"`{self.builtin_model}`). Choose *Local folder* or *Hugging Face Hub id* instead."
        )

    def model_key(self, source: str, name: Optional[str]) -> Tuple[str, str]:
        """Validate a model choice and return its cache key ``(source, location)``."""
        name = (name or "").strip()
        if source == "builtin":
            if not self.builtin_available():
                raise SpaceError(
                    f"The built-in demo model is not installed in this build (expected an FSMPipeline folder with "
                    f"model_index.json at {self.builtin_model}). Choose 'Local folder' or 'Hugging Face Hub id' "
                    "instead."
                )
            return ("builtin", str(self.builtin_model.resolve()))
        if source == "local":
            if not name:
                raise SpaceError("Enter the path of an FSMPipeline folder (model_index.json and model/ inside).")
            folder = Path(name).expanduser()
            if not (folder / "model_index.json").is_file():
                raise SpaceError(
                    f"{name!r} is not an FSMPipeline folder on this server: expected a folder holding "
                    "model_index.json and model/ (write one with FSMPipeline.save_pretrained)."
                )
            return ("local", str(folder.resolve()))
        if source == "hub":
            if not _HUB_ID.match(name):
                raise SpaceError(f"Enter a Hugging Face Hub model id like 'owner/name', got {name!r}.")
            return ("hub", name)
        choices = [value for _, value in MODEL_SOURCES]
        raise SpaceError(f"The model source must be one of {choices}, got {source!r}.")

    def load_pipeline(self, source: str, name: Optional[str] = None) -> Tuple[Tuple[str, str], Any]:
        """The (cached) :class:`~fsm_hf.FSMPipeline` of a model choice; returns ``(key, pipeline)``."""
        key = self.model_key(source, name)
        return key, self._pipeline(key)

    def _pipeline(self, key: Tuple[str, str]):
        from .pipeline_fsm import FSMPipeline, resolve_device

        with self._lock:
            if key in self._pipelines:
                self._pipelines.move_to_end(key)
                return self._pipelines[key]
            device = resolve_device(self.device)
            # bf16 Newton-Schulz is ~55x slower on CPUs without native bf16; float32 gives the same renders
            # up to rounding. On GPUs the checkpoint's own setting is kept.
            overrides = {"newton_schulz_dtype": "float32"} if device == "cpu" else {}
            source, location = key
            try:
                pipe = FSMPipeline.from_pretrained(location, **overrides)
            except Exception as err:  # noqa: BLE001 - any loading failure is reported to the user
                where = "from the Hub" if source == "hub" else f"from {location}"
                raise SpaceError(f"Could not load the FSM pipeline {where}: {err}") from err
            pipe = pipe.to(device)
            pipe.set_progress_bar_config(disable=True)
            self._pipelines[key] = pipe
            while len(self._pipelines) > self.max_cached_models:
                self._pipelines.popitem(last=False)
            return pipe

    # -- scenes --------------------------------------------------------------------------------
    def _request_dir(self, prefix: str) -> Path:
        """A new folder for one request's files; the oldest ones are deleted beyond a few dozen."""
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=self.work_dir))
        old = sorted(self.work_dir.iterdir(), key=lambda p: p.stat().st_mtime)[:-_KEEP_REQUEST_DIRS]
        for path in old:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        return folder

    def select_positions(self, total: int, num_views: Any, selection: str, stride: Any) -> List[int]:
        """Positions of the input views among ``total`` frames, within the Space's limits."""
        from .scene import select_frames

        limits = self.limits
        if total > limits.max_scene_frames:
            raise SpaceError(
                f"The scene has {total} frames; this Space reads scenes of at most {limits.max_scene_frames}."
            )
        if selection == "evenly":
            n = _as_int(num_views, "The number of input views", 1, total)
            positions = select_frames(total, "evenly", n=n)
        elif selection == "every":
            positions = select_frames(total, "every", k=_as_int(stride, "The frame stride", 1, None))
        elif selection == "all":
            positions = list(range(total))
        else:
            raise SpaceError(f"The frame selection must be one of {list(FRAME_SELECTIONS)}, got {selection!r}.")
        if len(positions) > limits.max_input_views:
            smallest_stride = math.ceil(total / limits.max_input_views)
            raise SpaceError(
                f"Frame selection {selection!r} gives {len(positions)} input views of the scene's {total} frames; this "
                f"Space reads at most {limits.max_input_views}. Use 'evenly' with at most {limits.max_input_views} "
                f"views, or 'every' with a stride of at least {smallest_stride}."
            )
        return positions

    def _check_size(self, height: int, width: int, what: str) -> None:
        side = self.limits.max_image_side
        if max(height, width) > side:
            raise SpaceError(
                f"The {what} are {width}x{height} pixels (WxH); this Space takes frames up to {side} pixels a side."
            )

    def example_inputs(self, pipe, seed: Any, num_frames: Any, num_views: Any, selection: str, stride: Any) -> _Inputs:
        """The built-in example: a procedural 4D scene at the pipeline's resolution, times in frames."""
        import torch

        from .cameras import Cameras
        from .synthetic import generate_scene

        seed = _as_int(seed, "The example seed", 0, 2**31 - 1)
        low, high = self.limits.example_frames
        num_frames = _as_int(num_frames, "The number of example frames", low, high)
        height, width = pipe.config.resolution
        scene = generate_scene(seed, num_frames, height, width)
        positions = self.select_positions(num_frames, num_views, selection, stride)
        frames = scene.frames
        index = torch.as_tensor(positions, dtype=torch.long)
        cameras = Cameras(frames.c2w[index], frames.fxfycxcy[index], width, height)
        # Frame-index units for the time slider; the "training" convention (the built-in model's) is
        # invariant to the unit, so this equals the scene's [0, 1] times.
        times = index.to(torch.float64)
        description = (
            f"the built-in example scene (seed {seed}, {num_frames} frames, {scene.camera_path.kind} camera path)"
        )
        return _Inputs(frames.images[index], cameras, times, description, "frames", forced_convention="training")

    def _scene_inputs(self, scene, num_views: Any, selection: str, stride: Any, description: str) -> _Inputs:
        """Select and decode the input views of a :class:`~fsm_hf.scene.Scene`."""
        import torch

        self._check_size(scene.height, scene.width, "scene's frames")
        positions = self.select_positions(len(scene), num_views, selection, stride)
        chosen = scene.select(positions)
        try:
            images = chosen.load_images()
        except Exception as err:  # noqa: BLE001 - decoding errors of any library
            raise SpaceError(f"Could not decode the scene's images: {err}") from err
        times = chosen.times if chosen.times is not None else torch.zeros(len(chosen), dtype=torch.float64)
        unit = "scene time" if chosen.times is not None else "static scene"
        return _Inputs(images, chosen.cameras, times, f"{description} ({len(scene)} frames)", unit)

    def video_inputs(self, video: Any, camera_file: Any, num_views: Any, selection: str, stride: Any) -> _Inputs:
        """A video and a camera file: official ``.jsonl`` (read with the video), or a JSON format whose
        ``k``-th frame entry gets the video's ``k``-th frame as its image."""
        from PIL import Image

        from .scene import detect_scene_format, load_scene
        from .video import VIDEO_SUFFIXES, read_video

        video = _upload_path(video, "a video")
        camera_file = _upload_path(camera_file, "a camera file (.jsonl or .json)")
        if video.suffix.lower() not in VIDEO_SUFFIXES:
            raise SpaceError(f"The video must be one of {', '.join(VIDEO_SUFFIXES)}; got {video.name!r}.")
        meta = _read_json_upload(camera_file)
        entries = _frame_entries(meta, camera_file)
        fmt = self._camera_format(camera_file, detect_scene_format)
        if fmt == "fsm_jsonl":
            try:
                scene = load_scene(camera_file, format=fmt, video_path=video)
            except Exception as err:  # noqa: BLE001
                raise SpaceError(f"Could not read the camera file {camera_file.name!r} with the video: {err}") from err
            return self._scene_inputs(scene, num_views, selection, stride, f"{video.name} with {camera_file.name}")

        # JSON formats name image files: write the selected video frames as those images.
        positions = self.select_positions(len(entries), num_views, selection, stride)
        try:
            first = read_video(video, [0])
        except Exception as err:  # noqa: BLE001 - imageio raises many kinds of errors for bad files
            raise SpaceError(
                f"Could not read the video {video.name!r}: {err}. Expected a video file ({', '.join(VIDEO_SUFFIXES)})."
            ) from err
        self._check_size(first.shape[1], first.shape[2], "video frames")
        try:
            frames = read_video(video, positions)
        except IndexError as err:
            raise SpaceError(
                f"The camera file {camera_file.name!r} describes {len(entries)} frames but the video is shorter: {err}"
            ) from err
        except Exception as err:  # noqa: BLE001
            raise SpaceError(f"Could not read the video {video.name!r}: {err}") from err
        folder = self._request_dir("video-")
        (folder / "frames").mkdir()
        kept = []
        for k, (position, frame) in enumerate(zip(positions, frames)):
            entry = dict(entries[position])
            entry["file_path"] = f"frames/{k:05d}.png"
            Image.fromarray(frame).save(folder / entry["file_path"])
            kept.append(entry)
        scene = self._load_rewritten_scene(meta, kept, folder, camera_file.name, fmt)
        inputs = self._scene_inputs(scene, None, "all", None, f"{video.name} with {camera_file.name}")
        inputs.description = f"{video.name} with {camera_file.name} ({len(entries)} frames)"
        return inputs

    @staticmethod
    def _load_rewritten_scene(meta: Any, frames: List[dict], folder: Path, name: str, fmt: str):
        """Write the camera file ``name`` into ``folder`` with only ``frames`` (whose ``file_path`` point
        at images in ``folder``) and read it as a scene of format ``fmt``."""
        from .scene import load_scene

        rewritten = dict(meta, frames=frames) if isinstance(meta, dict) else frames
        target = folder / name
        target.write_text(json.dumps(rewritten), encoding="utf-8")
        try:
            return load_scene(target, format=fmt)
        except Exception as err:  # noqa: BLE001
            raise SpaceError(f"Could not read the camera file {name!r}: {err}") from err

    @staticmethod
    def _camera_format(camera_file: Path, detect) -> str:
        try:
            _, fmt = detect(camera_file)
        except Exception as err:  # noqa: BLE001
            raise SpaceError(f"Could not recognise the camera file {camera_file.name!r}: {err}") from err
        return fmt

    def image_inputs(self, images: Any, camera_file: Any, num_views: Any, selection: str, stride: Any) -> _Inputs:
        """Images and a camera file (``transforms.json``, ``transforms_*.json`` or ``opencv_cameras.json``):
        each frame entry's ``file_path`` is matched to an uploaded image by file name (with or without
        its extension)."""
        from .scene import detect_scene_format

        paths = _upload_paths(images, "the images")
        camera_file = _upload_path(camera_file, "a camera file (transforms.json)")
        if len(paths) > self.limits.max_scene_frames:
            raise SpaceError(
                f"{len(paths)} images were uploaded; this Space reads at most {self.limits.max_scene_frames}."
            )
        meta = _read_json_upload(camera_file)
        entries = _frame_entries(meta, camera_file)
        fmt = self._camera_format(camera_file, detect_scene_format)
        if fmt == "fsm_jsonl":
            raise SpaceError(
                f"{camera_file.name!r} is an official FSM .jsonl file: choose 'Video + camera file' for it."
            )
        by_name = {p.name: p for p in paths}
        by_stem = {p.stem: p for p in paths}
        folder = self._request_dir("images-")
        (folder / "images").mkdir()
        kept, missing = [], []
        for entry in entries:
            wanted = Path(str(entry.get("file_path", "")).replace("\\", "/"))
            match = by_name.get(wanted.name) or by_stem.get(wanted.name) or by_stem.get(wanted.stem)
            if match is None:
                missing.append(str(wanted))
                continue
            local = folder / "images" / match.name
            if not local.exists():
                shutil.copy(match, local)
            kept.append(dict(entry, file_path=f"images/{match.name}"))
        if not kept:
            raise SpaceError(
                f"None of the {len(entries)} frames of {camera_file.name!r} matches an uploaded image: the file names "
                f"{missing[:3]} were expected, got {sorted(by_name)[:3]}."
            )
        scene = self._load_rewritten_scene(meta, kept, folder, camera_file.name, fmt)
        skipped = f", {len(missing)} frame(s) without an uploaded image skipped" if missing else ""
        description = f"{len(kept)} images with {camera_file.name}{skipped}"
        return self._scene_inputs(scene, num_views, selection, stride, description)

    # -- reconstruction --------------------------------------------------------------------------
    def reconstruct(
        self,
        model_source: str,
        model_name: Optional[str],
        scene_source: str,
        *,
        seed: Any = DEFAULT_EXAMPLE_SEED,
        example_frames: Any = 32,
        video: Any = None,
        camera_file: Any = None,
        images: Any = None,
        transforms: Any = None,
        num_views: Any = 8,
        frame_selection: str = "evenly",
        frame_stride: Any = 2,
        time_convention: str = "auto",
        progress: Optional[Progress] = None,
    ) -> Tuple[SceneState, List[Tuple[Any, str]], str]:
        """Load the model, read the scene's input views and build the spatial memory (once).

        Returns:
            ``(state, thumbnails, status)``: the :class:`SceneState` to render from, ``(PIL image,
            caption)`` per input view, and a Markdown status line.
        """
        from .camera_paths import focus_point

        say = progress or (lambda fraction, text: None)
        start = time.perf_counter()
        say(0.0, "Loading the model")
        key, pipe = self.load_pipeline(model_source, model_name)
        say(0.2, "Reading the scene")
        if scene_source == "example":
            inputs = self.example_inputs(pipe, seed, example_frames, num_views, frame_selection, frame_stride)
        elif scene_source == "video":
            inputs = self.video_inputs(video, camera_file, num_views, frame_selection, frame_stride)
        elif scene_source == "images":
            inputs = self.image_inputs(images, transforms, num_views, frame_selection, frame_stride)
        else:
            choices = [value for _, value in SCENE_SOURCES]
            raise SpaceError(f"The scene source must be one of {choices}, got {scene_source!r}.")
        convention = self._convention(pipe, inputs, time_convention)
        say(0.5, f"Reconstructing from {len(inputs.cameras)} input views")
        try:
            memory = pipe.reconstruct(inputs.images, inputs.cameras, inputs.times, time_convention=convention)
        except (ValueError, TypeError) as err:
            raise SpaceError(f"The pipeline refused the input views: {err}") from err
        say(0.9, "Preparing the viewer")
        focus = focus_point(inputs.cameras)
        up = -inputs.cameras.c2w[:, :3, 1].double().mean(0)
        up = up / up.norm().clamp_min(1e-12)
        reference = inputs.cameras.c2w[len(inputs.cameras) // 2, :3, 3].double()
        config = pipe.model.config
        state = SceneState(
            model_key=key,
            memory=memory,
            cameras=inputs.cameras,
            times=inputs.times.double().cpu(),
            time_convention=convention,
            use_time=bool(config.use_time),
            gaussian=memory.gaussians is not None,
            focus=focus,
            up=up,
            reference=reference,
            description=inputs.description,
        )
        thumbnails = [
            (_upscale(_to_pil(image), _THUMBNAIL_SIDE), f"t = {t:g}")
            for image, t in zip(inputs.images, state.times.tolist())
        ]
        height, width = memory.image_size
        low, high = state.time_range
        kind = f"{type(pipe.model).__name__}, {'4D' if state.use_time else '3D'}"
        timing = f"time {low:g} to {high:g} ({inputs.time_unit})" if state.use_time else "no time channel"
        status = (
            f"Reconstructed **{len(inputs.cameras)} input views** of {inputs.description} at {height}x{width} with "
            f"`{Path(key[1]).name if key[0] != 'hub' else key[1]}` ({kind}) in {time.perf_counter() - start:.1f} s; "
            f"{timing}. Move the sliders to render new views."
        )
        say(1.0, "Done")
        return state, thumbnails, status

    @staticmethod
    def _convention(pipe, inputs: _Inputs, choice: str) -> str:
        if choice not in TIME_CONVENTION_CHOICES:
            raise SpaceError(f"The time convention must be one of {list(TIME_CONVENTION_CHOICES)}, got {choice!r}.")
        if choice != "auto":
            return choice
        if inputs.forced_convention is not None:
            return inputs.forced_convention
        convention = pipe.config.time_convention
        integral = bool(((inputs.times - inputs.times.round()).abs() <= 1e-6).all())
        return "training" if (convention == "official_inference" and not integral) else convention

    # -- rendering ---------------------------------------------------------------------------------
    @staticmethod
    def _check_state(state: Any) -> SceneState:
        if not isinstance(state, SceneState):
            raise SpaceError(
                "No scene yet: press 'Reconstruct' first (a reconstruction lasts for this browser session)."
            )
        return state

    def orbit_camera(self, state: SceneState, azimuth: Any, elevation: Any, distance: Any):
        """The :class:`~fsm_hf.cameras.Cameras` (one view) of the orbit sliders.

        Azimuth (degrees, about the up axis) and elevation (degrees, towards the up axis) are relative
        to the reference input view, seen from the focus point; ``distance`` multiplies the reference
        view's distance to the focus. ``(0, 0, 1)`` puts the camera at the reference view's centre,
        looking at the focus. The intrinsics are the inputs' mean.
        """
        import torch

        from .camera_paths import look_at
        from .cameras import Cameras

        state = self._check_state(state)
        azimuth = math.radians(_as_float(azimuth, "The azimuth", -360.0, 360.0))
        elevation = _as_float(elevation, "The elevation", -180.0, 180.0)
        distance = _as_float(distance, "The distance", 0.01, 100.0)
        focus, up = state.focus.double(), state.up.double()
        offset = state.reference.double() - focus
        radius = float(offset.norm())
        if radius < 1e-9:  # the reference camera sits on the focus point: step back along its axis
            offset = -state.cameras.c2w[len(state.cameras) // 2, :3, 2].double()
            radius = 1.0
        along = float(offset @ up)
        horizontal = offset - along * up
        if float(horizontal.norm()) < 1e-9:  # looking straight along `up`: any horizontal start
            axis = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
            if abs(float(axis @ up)) > 0.9:
                axis = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
            horizontal = axis - float(axis @ up) * up
        e1 = horizontal / horizontal.norm()
        e2 = torch.linalg.cross(up, e1)
        base = math.degrees(math.atan2(along, float((offset - along * up).norm())))
        lifted = math.radians(max(-_MAX_ELEVATION_DEG, min(_MAX_ELEVATION_DEG, base + elevation)))
        direction = math.cos(lifted) * (math.cos(azimuth) * e1 + math.sin(azimuth) * e2) + math.sin(lifted) * up
        eye = focus + radius * distance * direction
        c2w = look_at(eye[None], focus, up)
        fxfycxcy = state.cameras.fxfycxcy.double().mean(0, keepdim=True)
        return Cameras(c2w.float(), fxfycxcy.float(), state.cameras.width, state.cameras.height)

    def _target_times(self, state: SceneState, times: Any) -> Optional[Any]:
        """Raw target times for the model (``None`` for 3D models); integer frames for the official convention."""
        import torch

        if not state.use_time:
            return None
        times = torch.as_tensor(times, dtype=torch.float64).flatten()
        return times.round() if state.time_convention == "official_inference" else times

    def _time_value(self, state: SceneState, value: Any) -> float:
        low, high = state.time_range
        if not state.use_time:
            return low
        if value is None:
            return 0.5 * (low + high)
        margin = 1e-6 * max(1.0, abs(high - low))
        number = _as_float(value, "The time")
        if number < low - margin or number > high + margin:
            raise SpaceError(f"The time must lie in the input views' range [{low:g}, {high:g}], got {number:g}.")
        return min(max(number, low), high)

    def render_view(
        self, state: Any, azimuth: Any = 0.0, elevation: Any = 0.0, distance: Any = 1.0, time_value: Any = None
    ):
        """Render one view of the reconstructed scene; returns a PIL image upscaled for display."""
        state = self._check_state(state)
        pipe = self._pipeline(state.model_key)
        cameras = self.orbit_camera(state, azimuth, elevation, distance)
        times = self._target_times(state, [self._time_value(state, time_value)])
        image = pipe.render(state.memory, cameras, times, output_type="pil").images[0]
        return _upscale(image)

    def render_video(
        self,
        state: Any,
        trajectory: str = "orbit",
        schedule: str = "sweep",
        num_frames: Any = 48,
        fps: Any = 12,
        azimuth: Any = 0.0,
        elevation: Any = 0.0,
        distance: Any = 1.0,
        time_value: Any = None,
        progress: Optional[Progress] = None,
    ) -> str:
        """Render a video along a camera path with a time schedule; returns the file path (mp4, or gif without ffmpeg).

        ``"current view"`` holds the slider camera still; ``"fixed"`` freezes time at the time slider.
        """
        from .camera_paths import bullet_time, interpolate_path, orbit_path, spiral_path, time_sweep
        from .video import export_to_video

        state = self._check_state(state)
        say = progress or (lambda fraction, text: None)
        num_frames = _as_int(num_frames, "The number of video frames", 2, self.limits.max_video_frames)
        fps = _as_float(fps, "The frame rate", 1.0, 60.0)
        if trajectory not in VIDEO_TRAJECTORIES:
            raise SpaceError(f"The trajectory must be one of {list(VIDEO_TRAJECTORIES)}, got {trajectory!r}.")
        if schedule not in VIDEO_SCHEDULES:
            raise SpaceError(f"The time schedule must be one of {list(VIDEO_SCHEDULES)}, got {schedule!r}.")
        if trajectory == "current view" and (schedule == "fixed" or not state.use_time):
            raise SpaceError(
                "A still camera at a fixed time is one image: choose the 'sweep' schedule or another trajectory."
            )
        if trajectory == "current view":
            cameras = self.orbit_camera(state, azimuth, elevation, distance).select([0] * num_frames)
        elif trajectory == "orbit":
            cameras = orbit_path(state.cameras, num_frames, center=state.focus, up=state.up)
        elif trajectory == "spiral":
            cameras = spiral_path(state.cameras, num_frames, focus=state.focus)
        else:
            cameras = interpolate_path(state.cameras, num_frames)
        if schedule == "fixed":
            times = bullet_time(state.times, num_frames, at=self._time_value(state, time_value))
        else:
            times = time_sweep(state.times, num_frames)
        say(0.1, f"Rendering {num_frames} frames")
        pipe = self._pipeline(state.model_key)
        frames = pipe.render(state.memory, cameras, self._target_times(state, times), output_type="pil").images
        say(0.8, "Encoding the video")
        frames = [_upscale(frame) for frame in frames]
        name = f"fsm-{trajectory.replace(' ', '-')}-{schedule}.mp4"
        path = export_to_video(frames, self._request_dir("video-out-") / name, fps=fps)
        say(1.0, "Done")
        return path

    def export_ply(self, state: Any, time_value: Any = None, full_4d: bool = False) -> str:
        """Write the Gaussians of a Gaussian (FSM-LRM) model as ``.ply``; returns the file path.

        ``full_4d=False``: a standard 3D Gaussian splat sliced at the time slider
        (:func:`fsm_hf.ply.export_ply`); ``True``: every 4D parameter (:func:`fsm_hf.ply.export_ply_4d`).
        Both are in the model's normalised scene frame.
        """
        import torch

        from .pipeline_fsm import FSMNormalization

        state = self._check_state(state)
        if not state.gaussian:
            raise SpaceError(
                ".ply export needs a Gaussian model (FSMForGaussianReconstruction, FSM-LRM); this scene was "
                "reconstructed by a pixel-space (LVSM) model, which has no Gaussians."
            )
        try:
            from .ply import export_ply, export_ply_4d
            import plyfile  # noqa: F401
        except ImportError:
            raise SpaceError(".ply export needs the plyfile package (pip install plyfile).") from None
        gaussians = {k: v.cpu() for k, v in state.memory.gaussians.items()}
        folder = self._request_dir("ply-")
        if full_4d:
            path = folder / "fsm-gaussians-4d.ply"
            export_ply_4d(path, gaussians)
            return str(path)
        value = self._time_value(state, time_value)
        tau = 0.0
        if state.use_time:
            normalization = FSMNormalization.from_dict(state.memory.normalization)
            tau = float(normalization.time.apply(self._target_times(state, torch.tensor([value])))[0])
        config = self._pipeline(state.model_key).model.config
        path = folder / f"fsm-gaussians-t{value:g}.ply"
        export_ply(
            path, gaussians, tau, scaling_modifier=config.scaling_modifier, prune_threshold=config.temporal_threshold
        )
        return str(path)

    def time_slider_settings(self, state: SceneState) -> Dict[str, Any]:
        """``minimum, maximum, value, step, interactive`` of the time slider for a scene."""
        low, high = state.time_range
        span = high - low
        if not state.use_time or span <= 0:
            return dict(minimum=low, maximum=low + 1.0, value=low, step=1.0, interactive=False)
        if state.time_convention == "official_inference":
            step = 1.0
        else:
            step = 10.0 ** math.floor(math.log10(span)) / 100.0
        middle = low + round(0.5 * span / step) * step
        return dict(minimum=low, maximum=high, value=min(max(middle, low), high), step=step, interactive=True)


# ----------------------------------------------------------------------------------------------
# The gradio app
# ----------------------------------------------------------------------------------------------
def _gradio():
    """Import gradio with its telemetry switched off (the variable must be set before the import)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import gradio as gr

    return gr


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn errors into ``gr.Error`` (the message shown to the user and sent to API clients)."""
    gr = _gradio()
    try:
        yield
    except gr.Error:
        raise
    except SpaceError as err:
        raise gr.Error(str(err)) from None
    except Exception as err:  # noqa: BLE001 - anything else is reported, logged and survived
        logger.exception("FSM Space request failed")
        raise gr.Error(f"{type(err).__name__}: {err}") from None


_INTRO = """\
# FSM: Fast Spatial Memory, 4D reconstruction and novel view-time synthesis

1. pick a **model** and a **scene**, and press **Reconstruct**: the input views are read *once* into a spatial memory;
2. move the **camera** (azimuth, elevation, distance around the scene's focus) and the **time** slider: each change
   renders one new view from that memory; or render a **video** along a camera path.

Camera files: official FSM `.jsonl` (with its video), nerfstudio / Blender `transforms.json`, `opencv_cameras.json`.
"""


def build_demo(space: Optional[FSMSpace] = None, **space_kwargs: Any):
    """The ``gr.Blocks`` app of an :class:`FSMSpace` (built from ``space_kwargs`` when not given).

    API endpoints (``gradio_client``): ``/reconstruct``, ``/render_view``, ``/render_video``, ``/export_ply``.
    """
    gr = _gradio()
    from .video import VIDEO_SUFFIXES

    space = space if space is not None else FSMSpace(**space_kwargs)
    limits = space.limits
    builtin_ok = space.builtin_available()

    with gr.Blocks(title="FSM: Fast Spatial Memory", analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        # The reconstructed scene of each browser session; dropped an hour after the reconstruction.
        state = gr.State(None, time_to_live=3600)
        gr.Markdown(_INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Accordion("1. Model", open=True):
                    model_source = gr.Radio(
                        choices=list(MODEL_SOURCES), value="builtin" if builtin_ok else "hub", label="Model"
                    )
                    model_name = gr.Textbox(
                        label="Folder or Hub id", placeholder="path/to/pipeline-folder or owner/name",
                        visible=not builtin_ok, elem_id="fsm-model-name",
                    )  # fmt: skip
                    gr.Markdown(space.builtin_status())
                with gr.Accordion("2. Scene", open=True):
                    scene_source = gr.Radio(choices=list(SCENE_SOURCES), value="example", label="Scene")
                    with gr.Group(visible=True) as example_group:
                        seed = gr.Number(
                            value=DEFAULT_EXAMPLE_SEED, precision=0, label="Example seed",
                            info=f"seeds >= {DEFAULT_EXAMPLE_SEED} were never seen by the built-in model",
                        )  # fmt: skip
                        example_frames = gr.Slider(
                            *limits.example_frames, value=32, step=1, label="Example frames"
                        )
                    with gr.Group(visible=False) as video_group:
                        video = gr.File(label="Video", file_types=list(VIDEO_SUFFIXES), type="filepath")
                        camera_file = gr.File(
                            label="Camera file (.jsonl, transforms.json, opencv_cameras.json)",
                            file_types=[".json", ".jsonl"], type="filepath",
                        )  # fmt: skip
                    with gr.Group(visible=False) as images_group:
                        images = gr.File(
                            label="Images", file_count="multiple", type="filepath",
                            file_types=[".png", ".jpg", ".jpeg", ".webp"],
                        )  # fmt: skip
                        transforms = gr.File(
                            label="Camera file (transforms.json, opencv_cameras.json)", file_types=[".json"],
                            type="filepath",
                        )  # fmt: skip
                    num_views = gr.Slider(
                        1, limits.max_input_views, value=8, step=1, label="Input views (evenly)", elem_id="fsm-views"
                    )
                    with gr.Row():
                        frame_selection = gr.Radio(list(FRAME_SELECTIONS), value="evenly", label="Frame selection")
                        frame_stride = gr.Number(value=2, precision=0, minimum=1, label="Stride ('every')")
                    with gr.Accordion("Advanced", open=False):
                        time_convention = gr.Dropdown(
                            list(TIME_CONVENTION_CHOICES), value="auto", label="Time convention",
                            info="auto: the model's, or 'training' (min-max over the inputs) for non-integer times",
                        )  # fmt: skip
                reconstruct_button = gr.Button("Reconstruct", variant="primary", elem_id="fsm-reconstruct")
                status = gr.Markdown("No scene yet.", elem_id="fsm-status")
                gallery = gr.Gallery(label="Input views", columns=4, height=260, elem_id="fsm-inputs")
            with gr.Column(scale=1):
                view = gr.Image(
                    label="Rendered view", type="pil", format="png", interactive=False, height=320, elem_id="fsm-view"
                )
                time_slider = gr.Slider(0, 1, value=0, step=0.01, label="Time", interactive=False, elem_id="fsm-time")
                azimuth = gr.Slider(-180, 180, value=0, step=1, label="Azimuth (degrees)", elem_id="fsm-azimuth")
                elevation = gr.Slider(-80, 80, value=0, step=1, label="Elevation (degrees)", elem_id="fsm-elevation")
                distance = gr.Slider(
                    0.2, 3.0, value=1.0, step=0.05, label="Distance (x the input view's)", elem_id="fsm-distance"
                )
                render_button = gr.Button("Render view", elem_id="fsm-render")
                with gr.Accordion("Video", open=False):
                    with gr.Row():
                        trajectory = gr.Dropdown(list(VIDEO_TRAJECTORIES), value="orbit", label="Camera path")
                        schedule = gr.Dropdown(
                            list(VIDEO_SCHEDULES), value="sweep", label="Time",
                            info="sweep: first to last input time; fixed: the time slider",
                        )  # fmt: skip
                    with gr.Row():
                        video_frames = gr.Slider(2, limits.max_video_frames, value=48, step=1, label="Frames")
                        fps = gr.Slider(1, 60, value=12, step=1, label="Frames per second")
                    video_button = gr.Button("Render video", elem_id="fsm-render-video")
                    video_out = gr.Video(label="Video", elem_id="fsm-video")
                with gr.Accordion("Gaussians (.ply)", open=False, visible=False) as ply_box:
                    gr.Markdown(
                        "Gaussian (FSM-LRM) models: the Gaussians at the time slider, in the model's normalised frame."
                    )
                    full_4d = gr.Checkbox(False, label="All 4D parameters (fsm-hf 4D .ply) instead of a 3D splat")
                    ply_button = gr.Button("Export .ply", elem_id="fsm-export-ply")
                    ply_file = gr.File(label=".ply file")

        # -- handlers ------------------------------------------------------------------------------
        def reconstruct(
            model_source, model_name, scene_source, seed, example_frames, video, camera_file, images, transforms,
            num_views, frame_selection, frame_stride, time_convention, progress=gr.Progress(),
        ):  # fmt: skip
            with _user_errors():
                scene, thumbnails, text = space.reconstruct(
                    model_source, model_name, scene_source, seed=seed, example_frames=example_frames, video=video,
                    camera_file=camera_file, images=images, transforms=transforms, num_views=num_views,
                    frame_selection=frame_selection, frame_stride=frame_stride, time_convention=time_convention,
                    progress=lambda fraction, desc: progress(fraction, desc=desc),
                )  # fmt: skip
                return scene, thumbnails, text, gr.Slider(**space.time_slider_settings(scene))

        def render_view(state, azimuth, elevation, distance, time):
            with _user_errors():
                return space.render_view(state, azimuth, elevation, distance, time)

        def render_video(
            state, trajectory, schedule, num_frames, fps, azimuth, elevation, distance, time, progress=gr.Progress()
        ):
            with _user_errors():
                return space.render_video(
                    state, trajectory, schedule, num_frames, fps, azimuth, elevation, distance, time,
                    progress=lambda fraction, desc: progress(fraction, desc=desc),
                )  # fmt: skip

        def export_ply(state, time, full_4d):
            with _user_errors():
                return space.export_ply(state, time, full_4d)

        def show_ply(state):
            return gr.Accordion(visible=isinstance(state, SceneState) and state.gaussian)

        def choose_model(source):
            return gr.Textbox(visible=source != "builtin")

        def choose_scene(source):
            return (gr.Group(visible=source == "example"), gr.Group(visible=source == "video"),
                    gr.Group(visible=source == "images"))  # fmt: skip

        private = dict(api_visibility="private", queue=False)
        model_source.change(choose_model, model_source, model_name, api_name="choose_model", **private)
        scene_source.change(
            choose_scene, scene_source, [example_group, video_group, images_group], api_name="choose_scene", **private
        )
        view_inputs = [state, azimuth, elevation, distance, time_slider]
        reconstruct_button.click(
            reconstruct,
            [model_source, model_name, scene_source, seed, example_frames, video, camera_file, images, transforms,
             num_views, frame_selection, frame_stride, time_convention],
            [state, gallery, status, time_slider],
            api_name="reconstruct",
            show_progress_on=status,
        ).success(render_view, view_inputs, view, api_name="render_after_reconstruct", api_visibility="private").then(
            show_ply, state, ply_box, api_name="show_ply", api_visibility="private"
        )  # fmt: skip
        render_button.click(render_view, view_inputs, view, api_name="render_view")
        for slider in (time_slider, azimuth, elevation, distance):
            slider.release(
                render_view, view_inputs, view, api_name=f"render_on_{slider.elem_id.split('-')[-1]}",
                api_visibility="private", trigger_mode="always_last",
            )  # fmt: skip
        video_button.click(
            render_video,
            [state, trajectory, schedule, video_frames, fps, azimuth, elevation, distance, time_slider],
            video_out,
            api_name="render_video",
        )
        ply_button.click(export_ply, [state, time_slider, full_4d], ply_file, api_name="export_ply")
    return demo


def launch(
    demo,
    *,
    host: Optional[str] = None,
    port: Optional[int] = None,
    limits: SpaceLimits = SpaceLimits(),
    prevent_thread_lock: bool = False,
    quiet: bool = False,
):
    """Queue and serve the app: one request at a time, a bounded queue, bounded uploads, no share link.

    ``host``/``port`` default to gradio's (``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``, else
    127.0.0.1:7860); a Space sets them. Returns what ``Blocks.launch`` returns.
    """
    _gradio()
    demo.queue(default_concurrency_limit=1, max_size=limits.queue_size)
    return demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        max_file_size=limits.max_file_size,
        prevent_thread_lock=prevent_thread_lock,
        show_error=True,
        quiet=quiet,
        ssr_mode=False,
        mcp_server=False,
        enable_monitoring=False,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python spaces/app.py [--host H] [--port P] [--builtin-model FOLDER] [--device D]``."""
    parser = argparse.ArgumentParser(prog="fsm-space", description="The fsm-hf Gradio Space (4D reconstruction).")
    parser.add_argument("--host", default=None, help="address to serve on (default: GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: GRADIO_SERVER_PORT or 7860)")
    parser.add_argument(
        "--builtin-model", default=None,
        help=f"FSMPipeline folder offered as the built-in model (default: ${BUILTIN_MODEL_ENV}, else the packaged one)",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--max-input-views", type=int, default=SpaceLimits.max_input_views, help="most input views per request"
    )
    args = parser.parse_args(argv)
    limits = SpaceLimits(max_input_views=args.max_input_views)
    logging.basicConfig(level=logging.INFO)
    space = FSMSpace(builtin_model=args.builtin_model, limits=limits, device=args.device)
    launch(build_demo(space), host=args.host, port=args.port, limits=limits)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
