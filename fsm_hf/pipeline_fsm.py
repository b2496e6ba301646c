"""`FSMPipeline`: novel view-time synthesis from posed frames, as a diffusers pipeline.

The pipeline turns user-facing inputs (images in any common form, :class:`~fsm_hf.cameras.Cameras`
in OpenCV/pixel conventions, timestamps in any unit, or a scene file) into the model's conventions
(DESIGN §2), reconstructs a spatial memory from the input views once, and renders any number of
target views from it.

Pose and time normalisation are fitted on the **input views only** (the official code also looks
at the targets): a memory is built before its targets are known. Both transforms are stored in
``FSMMemory.normalization`` and applied unchanged to every later target, so renders from a saved
memory equal renders from the joint call.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from tqdm.auto import tqdm

from .cameras import Cameras
from .memory import FSMMemory
from .modeling_fsm import FSMPreTrainedModel
from .normalization import (
    TIME_CONVENTIONS,
    PoseNormalization,
    TimeNormalization,
    normalize_poses,
    resize_and_center_crop,
    resize_and_center_crop_cameras,
)
from .scene import Scene, load_scene, select_frames
from .validation import check_int
from .video import VIDEO_SUFFIXES, read_video

__all__ = ["FSMNormalization", "FSMPipeline", "FSMPipelineOutput", "resolve_device"]

#: Library name written for the model component in ``model_index.json``.
COMPONENT_LIBRARY = "fsm_hf"
#: ``FSMPipeline.from_pretrained("builtin")`` loads the model shipped inside the package.
BUILTIN_MODEL_ALIAS = "builtin"
OUTPUT_TYPES = ("pil", "np", "pt")
#: How :meth:`FSMPipeline.select_input_views` picks the input frames of a scene.
FRAME_SELECTIONS = ("evenly", "every", "all")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_SCENE_SUFFIXES = (".jsonl", ".json")

ImageInput = Union[str, os.PathLike, torch.Tensor, np.ndarray, Sequence[Any]]
CameraInput = Union[Cameras, Scene, str, os.PathLike]



# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------
@dataclass
class FSMNormalization:
    """The transforms from the user's world and time units to the model's, fitted on the input views.

    Attributes:
        pose: world -> normalised scene frame (:class:`~fsm_hf.normalization.PoseNormalization`);
            ``pose.invert(c2w)`` maps normalised poses back to the user's world.
        time: raw timestamps -> ``tau`` in ``[-1, 1]``, or ``None`` for models without a time channel.
    """

    pose: PoseNormalization
    time: Optional[TimeNormalization] = None

    def to_dict(self) -> Dict[str, torch.Tensor]:
        """Tensors only, the form stored in :attr:`FSMMemory.normalization`."""
        return {**self.pose.to_dict(), **(self.time.to_dict() if self.time is not None else {})}

    @classmethod
    def from_dict(cls, data: Dict[str, torch.Tensor]) -> "FSMNormalization":
        """Inverse of :meth:`to_dict`."""
        time = TimeNormalization.from_dict(data) if "time_convention" in data else None
        return cls(PoseNormalization.from_dict(data), time)


@dataclass
class FSMPipelineOutput(BaseOutput):
    """Output of :class:`FSMPipeline` (``__call__`` and ``render``).

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            The ``T`` rendered target views: a list of PIL images (``output_type="pil"``), float32
            ``[T, H, W, 3]`` in ``[0, 1]`` (``"np"``) or float32 ``[T, 3, H, W]`` in ``[0, 1]`` (``"pt"``).
        gaussians (`dict[str, torch.Tensor]`, *optional*):
            The 4D Gaussians of Gaussian-head models, in the **normalised** scene frame (map them back
            with ``normalization.pose``); ``None`` for pixel (LVSM) models.
        memory (`FSMMemory`):
            The spatial memory of the input views; render more views from it with
            :meth:`FSMPipeline.render` or save it with :meth:`FSMMemory.save`.
        normalization (`FSMNormalization`):
            The pose/time transforms fitted on the inputs (map results back with ``pose.invert``).
    """

    images: Union[List[Any], np.ndarray, torch.Tensor]
    gaussians: Optional[Dict[str, torch.Tensor]] = None
    memory: Optional[FSMMemory] = None
    normalization: Optional[FSMNormalization] = None


@dataclass
class _PreparedInputs:
    """Inputs in model conventions (one scene): images ``[1, V, 3, h, w]``, intrinsics ``[1, V, 4]``,
    normalised ``c2w`` ``[1, V, 4, 4]``, ``tau`` ``[1, V]`` (``None`` without a time channel); and the
    resized inputs' world cameras and raw times (to re-render the inputs)."""

    images: torch.Tensor
    fxfycxcy: torch.Tensor
    c2w: torch.Tensor
    times: Optional[torch.Tensor]
    normalization: FSMNormalization
    cameras: Cameras
    raw_times: torch.Tensor


# ----------------------------------------------------------------------------------------------
# Input helpers
# ----------------------------------------------------------------------------------------------
def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is available, else ``"cpu"``; any other device unchanged."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _describe(value: Any) -> str:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"{type(value).__name__} of shape {list(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)} item(s)"
    return type(value).__name__


def _image_to_chw(image: Any, index: int) -> torch.Tensor:
    """One image (PIL, ``[H, W, 3]`` array, ``[3, H, W]`` tensor, or an image file) -> float ``[3, H, W]``."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if path.suffix.lower() not in _IMAGE_SUFFIXES:
            raise ValueError(f"Image {index}: unsupported file {str(path)!r}; expected one of {_IMAGE_SUFFIXES}.")
        if not path.is_file():
            raise FileNotFoundError(f"Image {index}: file not found: {path}")
        with Image.open(path) as img:
            image = np.asarray(img.convert("RGB"))
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"Image {index}: expected a numpy array [H, W, 3], got shape {list(image.shape)}.")
        tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)  # PIL arrays are read-only
    elif isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"Image {index}: expected a tensor [3, H, W], got shape {list(image.shape)}.")
        tensor = image
    else:
        raise TypeError(f"Image {index}: expected a PIL image, numpy array, tensor or image path, got {_describe(image)}.")
    return tensor


def _to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> ``/255``; floats must already lie in ``[0, 1]``."""
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise TypeError(f"Images must be uint8 or float in [0, 1], got dtype {images.dtype}.")
    images = images.float()
    finite = torch.isfinite(images).flatten(1).all(dim=1)  # [N]
    if not finite.all():
        bad = (~finite).nonzero().flatten().tolist()
        raise ValueError(f"Images must be finite; got NaN or inf in image(s) {bad[:10]}{'...' if len(bad) > 10 else ''}.")
    if images.numel() and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
        raise ValueError(
            f"Float images must lie in [0, 1], got values in [{images.min().item():.3g}, {images.max().item():.3g}]."
        )
    return images.clamp(0.0, 1.0)


def load_images(images: ImageInput) -> torch.Tensor:
    """Any supported image input -> float32 ``[N, 3, H, W]`` in ``[0, 1]`` (on the input's device).

    Accepts a video file (:data:`~fsm_hf.video.VIDEO_SUFFIXES`, every frame), a tensor
    ``[N, 3, H, W]`` or ``[N, H, W, 3]``, a numpy array ``[N, H, W, 3]``, or a list of PIL images,
    ``[H, W, 3]`` arrays, ``[3, H, W]`` tensors or image files. uint8 values are divided by 255;
    float values must lie in ``[0, 1]``.
    """
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise ValueError(
                f"Unsupported file {str(path)!r} for `images`: expected a video ({', '.join(VIDEO_SUFFIXES)}); "
                "pass scene files as `cameras` and single images in a list."
            )
        images = torch.from_numpy(read_video(path)).permute(0, 3, 1, 2)  # [N, H, W, 3] -> [N, 3, H, W]
    elif isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"A numpy image batch must be [N, H, W, 3], got shape {list(images.shape)}.")
        images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    elif isinstance(images, torch.Tensor):
        if images.ndim != 4 or 3 not in (images.shape[1], images.shape[-1]):
            raise ValueError(f"An image tensor must be [N, 3, H, W] or [N, H, W, 3], got shape {list(images.shape)}.")
        if images.shape[1] != 3:
            images = images.permute(0, 3, 1, 2)  # [N, H, W, 3] -> [N, 3, H, W]
    elif isinstance(images, (list, tuple)):
        chw = [_image_to_chw(image, i) for i, image in enumerate(images)]
        sizes = sorted({tuple(t.shape[-2:]) for t in chw})
        if len(sizes) > 1:
            raise ValueError(f"All input images must share one size (H, W); got {sizes}.")
        dtypes = {t.dtype for t in chw}
        if len(dtypes) > 1:
            raise ValueError(f"All input images must share one dtype; got {sorted(map(str, dtypes))}.")
        images = torch.stack(chw) if chw else torch.zeros(0, 3, 1, 1)
    else:
        raise TypeError(
            "`images` must be a list of PIL images / arrays / tensors, a numpy array [N, H, W, 3], a tensor "
            f"[N, 3, H, W] or a video path; got {_describe(images)}."
        )
    if images.shape[0] == 0:
        raise ValueError("Expected at least one input image, got 0.")
    return _to_unit_float(images)


def _as_times(times: Any, name: str) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(np.asarray(times.cpu() if isinstance(times, torch.Tensor) else times, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a sequence of numbers, got {_describe(times)} ({err}).") from None
    if tensor.ndim > 1:
        raise ValueError(f"{name} must be one timestamp per view ([N]), got shape {list(tensor.shape)}.")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} must be finite; got NaN or inf.")
    return tensor.flatten()


# ----------------------------------------------------------------------------------------------
# Pipeline
# ----------------------------------------------------------------------------------------------
class FSMPipeline(DiffusionPipeline):
    r"""
    Fast Spatial Memory: 4D reconstruction and novel view-time synthesis from posed frames.

    This pipeline inherits from [`~diffusers.DiffusionPipeline`] (saving, loading, ``.to(device, dtype)``,
    ``push_to_hub``, progress-bar configuration).

    Conventions of the user-facing API (converted to the model's, DESIGN §2):

    * images: anything :func:`load_images` accepts, in ``[0, 1]`` (or uint8);
    * cameras: :class:`~fsm_hf.cameras.Cameras` (OpenCV ``c2w``, pixel ``fxfycxcy`` of the images'
      size; build them from other conventions with ``Cameras.from_arrays``), a
      :class:`~fsm_hf.scene.Scene`, or a scene file/folder (:func:`~fsm_hf.scene.load_scene`);
    * times: one timestamp per view. With ``time_convention="official_inference"`` they are integer
      frame indices (``t = frame_idx % max_frames``); with ``"training"`` any unit (min-max rescaled
      over the input views).

    Args:
        model ([`FSMForNovelViewSynthesis`]):
            The FSM model.
        resolution (`int` or `(height, width)`, *optional*):
            Default processing resolution; defaults to the model's ``image_size``. Multiples of the
            patch size.
        num_input_views (`int`, *optional*, defaults to 32):
            Default number of input views taken (evenly) from a scene, as in official inference.
        time_convention (`str`, *optional*, defaults to `"official_inference"`):
            ``"official_inference"`` or ``"training"`` (see above).
        max_frames (`int`, *optional*):
            Size of the integer time grid; defaults to the model's ``max_frames``.

    Example:

    ```py
    >>> from fsm_hf import FSMPipeline, load_scene
    >>> from fsm_hf.camera_paths import make_trajectory
    >>> from fsm_hf.video import export_to_video

    >>> pipe = FSMPipeline.from_pretrained("path/or/hub-id")          # a folder with model_index.json
    >>> inputs = pipe.select_input_views(load_scene("clip.jsonl"))    # 32 posed, timed frames
    >>> memory = pipe.reconstruct(None, inputs)                       # read the inputs once
    >>> cams, times = make_trajectory(inputs.cameras, inputs.times, 60, "spiral", "fixed")
    >>> frames = pipe.render(memory, cams, times.round()).images      # bullet time, 60 PIL images
    >>> export_to_video(frames, "spiral.mp4", fps=24)
    ```
    """

    model_cpu_offload_seq = "model"
    _optional_components: List[str] = []

    def __init__(
        self,
        model: FSMPreTrainedModel,
        resolution: Optional[Union[int, Sequence[int]]] = None,
        num_input_views: int = 32,
        time_convention: str = "official_inference",
        max_frames: Optional[int] = None,
        max_views_per_batch: Optional[int] = None,
    ):
        super().__init__()
        if not isinstance(model, FSMPreTrainedModel):
            raise TypeError(f"`model` must be an FSM model (FSMPreTrainedModel), got {type(model).__name__}.")
        self.register_modules(model=model)
        height, width = self._check_resolution(model.config.image_size if resolution is None else resolution, model)
        num_input_views = check_int(num_input_views, "num_input_views")
        if max_views_per_batch is not None:
            max_views_per_batch = check_int(max_views_per_batch, "max_views_per_batch")
        if time_convention not in TIME_CONVENTIONS:
            raise ValueError(f"time_convention must be one of {list(TIME_CONVENTIONS)}, got {time_convention!r}.")
        max_frames = model.config.max_frames if max_frames is None else max_frames
        max_frames = check_int(max_frames, "max_frames", minimum=2)
        self.register_to_config(
            resolution=[height, width],
            num_input_views=num_input_views,
            time_convention=time_convention,
            max_frames=max_frames,
            max_views_per_batch=max_views_per_batch,
        )
        self._record_component_library()

    # -- loading and saving ------------------------------------------------------------------------
    def _record_component_library(self) -> None:
        """Record the model as ``["fsm_hf", "<class>"]`` (diffusers would write the module path)."""
        self.register_to_config(model=(COMPONENT_LIBRARY, type(self.model).__name__))

    def save_pretrained(self, save_directory: Union[str, os.PathLike], **kwargs) -> None:
        """Write ``model_index.json`` (pipeline settings, component ``["fsm_hf", class]``) and ``model/``.

        Keyword arguments are those of :meth:`diffusers.DiffusionPipeline.save_pretrained`
        (``safe_serialization``, ``max_shard_size``, ``push_to_hub``, ...).
        """
        self._record_component_library()
        super().save_pretrained(save_directory, **kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: Optional[str] = None,
        private: bool = False,
        token: Optional[Union[str, bool]] = None,
        create_pr: bool = False,
        revision: Optional[str] = None,
        max_shard_size: str = "5GB",
        **card_kwargs: Any,
    ) -> str:
        """Save the pipeline (safetensors) and upload it with a generated model card as README.md.

        ``card_kwargs`` (``provenance``, ``eval_results``, ``base_model``, ``datasets``, ``license``,
        ``training_config``) go to :func:`fsm_hf.model_card.generate_model_card`. Returns the commit URL.
        """
        import tempfile

        from .hub import push_folder

        with tempfile.TemporaryDirectory(prefix="fsm-push-") as folder:
            self.save_pretrained(folder, safe_serialization=True, max_shard_size=max_shard_size)
            return push_folder(folder, repo_id, token=token, private=private, revision=revision,
                               commit_message=commit_message, create_pr=create_pr, **card_kwargs)  # fmt: skip

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: Union[str, os.PathLike],
        *,
        revision: Optional[str] = None,
        cache_dir: Optional[Union[str, os.PathLike]] = None,
        local_files_only: Optional[bool] = None,
        token: Optional[Union[str, bool]] = None,
        torch_dtype: Optional[torch.dtype] = None,
        **kwargs,
    ) -> "FSMPipeline":
        """Load a pipeline folder (``model_index.json`` + ``model/``) from disk or the Hub.

        Args:
            pretrained_model_name_or_path: a local folder, a Hub repository id (downloaded with
                ``huggingface_hub.snapshot_download``, cached), or ``"builtin"``: the small model shipped
                inside the package (the one ``fsm demo`` runs; no download).
            revision, cache_dir, local_files_only, token: passed to ``snapshot_download``.
            torch_dtype: dtype of the model weights (default: as stored). With ``torch.bfloat16`` or
                ``torch.float16`` the pipeline runs the model under autocast to that dtype: geometry,
                the fast-weight learning rates and the fast weights themselves stay fp32.
            **kwargs: pipeline settings (``resolution``, ``num_input_views``, ``time_convention``,
                ``max_frames``, ``max_views_per_batch``) override ``model_index.json``; anything else goes to the model's
                ``from_pretrained`` (loading options such as ``device_map``, or config field overrides
                such as ``newton_schulz_dtype="float32"``).

        The component is resolved inside the ``fsm_hf`` package only (``model_index.json`` names
        ``["fsm_hf", "FSMForNovelViewSynthesis"]``); no other module named by a repository is imported.
        """
        folder = cls._resolve_folder(pretrained_model_name_or_path, revision, cache_dir, local_files_only, token)
        index_path = folder / cls.config_name
        if not index_path.is_file():
            raise FileNotFoundError(f"{folder} is not an FSMPipeline folder: no {cls.config_name} in it.")
        index = json.loads(index_path.read_text(encoding="utf-8"))
        entry = index.get("model")
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2):
            raise ValueError(f"{index_path}: expected a component entry \"model\": [library, class], got {entry!r}.")
        library, class_name = entry
        if library != COMPONENT_LIBRARY and not str(library).startswith(COMPONENT_LIBRARY + "."):
            raise ValueError(
                f"{index_path}: the model component must come from {COMPONENT_LIBRARY!r}, got {library!r}."
            )
        import fsm_hf

        model_class = getattr(fsm_hf, class_name, None)
        if not (isinstance(model_class, type) and issubclass(model_class, FSMPreTrainedModel)):
            raise ValueError(f"{index_path}: {class_name!r} is not an FSM model class of fsm_hf.")
        settings = ("resolution", "num_input_views", "time_convention", "max_frames", "max_views_per_batch")
        pipe_kwargs = {k: index[k] for k in settings if k in index}
        pipe_kwargs.update({k: kwargs.pop(k) for k in settings if k in kwargs})
        model_kwargs = dict(kwargs)
        if torch_dtype is not None:
            model_kwargs["dtype"] = torch_dtype
        model = model_class.from_pretrained(folder / "model", **model_kwargs)
        model.eval()
        pipe = cls(model=model, **pipe_kwargs)
        pipe.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        return pipe

    @staticmethod
    def _resolve_folder(name_or_path, revision, cache_dir, local_files_only, token) -> Path:
        path = Path(name_or_path)
        if path.is_dir():
            return path
        name = str(name_or_path)
        if name == BUILTIN_MODEL_ALIAS:
            from .demo import builtin_model_path

            return builtin_model_path()
        looks_local = path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1
        if looks_local or path.exists():
            raise FileNotFoundError(f"Pipeline folder not found: {name} (expected a folder or a Hub id 'owner/name').")
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                name,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=bool(local_files_only),
                token=token,
            )
        )

    # -- checks --------------------------------------------------------------------------------------
    @staticmethod
    def _check_resolution(resolution: Any, model: FSMPreTrainedModel) -> Tuple[int, int]:
        """``int`` or ``(height, width)`` -> ``(height, width)``, multiples of the patch size."""
        if isinstance(resolution, (int, np.integer)) and not isinstance(resolution, bool):
            size = (int(resolution), int(resolution))
        elif (
            isinstance(resolution, (list, tuple))
            and len(resolution) == 2
            and all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) for r in resolution)
        ):
            size = (int(resolution[0]), int(resolution[1]))
        else:
            raise ValueError(f"resolution must be an int or (height, width) of ints, got {resolution!r}.")
        p = model.config.patch_size
        if min(size) <= 0 or size[0] % p or size[1] % p:
            raise ValueError(
                f"resolution must be positive multiples of the patch size {p}; got {size[0]}x{size[1]} (HxW)."
            )
        return size

    def progress_bar(self, iterable=None, total=None, desc=None, leave=True):
        """tqdm progress bar honouring :meth:`set_progress_bar_config`."""
        config = dict(getattr(self, "_progress_bar_config", {}) or {})
        config.setdefault("desc", desc)
        config.setdefault("leave", leave)
        return tqdm(iterable, total=total, **config) if iterable is not None else tqdm(total=total, **config)

    def select_input_views(
        self,
        scene: Union[Scene, str, os.PathLike],
        num_input_views: Optional[int] = None,
        *,
        frame_selection: str = "evenly",
        frame_stride: Optional[int] = None,
    ) -> Scene:
        """The input views the pipeline takes from a scene (of any length).

        ``frame_selection``: ``"evenly"`` takes ``num_input_views`` frames spread evenly (first and last
        included; ``None`` means the config's ``num_input_views``, capped at the scene's length);
        ``"every"`` takes every ``frame_stride``-th frame; ``"all"`` takes every frame. Long selections
        are read memory-bounded when ``max_views_per_batch`` is set.
        """
        if not isinstance(scene, Scene):
            scene = load_scene(scene)
        if frame_selection == "all":
            return scene
        if frame_selection == "every":
            frame_stride = check_int(frame_stride, "frame_stride (with frame_selection='every')")
            return scene.select(select_frames(len(scene), "every", k=frame_stride))
        if frame_selection not in FRAME_SELECTIONS:
            raise ValueError(f"frame_selection must be one of {list(FRAME_SELECTIONS)}, got {frame_selection!r}.")
        if num_input_views is None:
            n = min(self.config.num_input_views, len(scene))
        else:
            n = check_int(num_input_views, "num_input_views (for this scene)", maximum=len(scene))
        return scene.select(select_frames(len(scene), "evenly", n=n))

    def _resolve_inputs(
        self, images: Optional[ImageInput], cameras: CameraInput, times: Any, num_input_views: Optional[int],
        frame_selection: str = "evenly", frame_stride: Optional[int] = None,
    ) -> Tuple[torch.Tensor, Cameras, torch.Tensor]:  # fmt: skip
        """Validate and load the inputs: images ``[N, 3, H, W]``, their cameras, raw times ``[N]``."""
        if frame_selection not in FRAME_SELECTIONS:
            raise ValueError(f"frame_selection must be one of {list(FRAME_SELECTIONS)}, got {frame_selection!r}.")
        if images is not None and (num_input_views is not None or frame_selection != "evenly" or frame_stride is not None):
            raise ValueError(
                "num_input_views, frame_selection and frame_stride choose frames of a scene given as `cameras` "
                "with images=None; with explicit `images` every image is read (pass the subset you want)."
            )
        if isinstance(cameras, (str, os.PathLike)):
            cameras = load_scene(cameras)
        if isinstance(cameras, Scene):
            scene = cameras
            if images is None:
                scene = self.select_input_views(scene, num_input_views, frame_selection=frame_selection, frame_stride=frame_stride)
                images = scene.load_images()
            if times is None:
                times = scene.times if scene.times is not None else torch.zeros(len(scene))
            cameras = scene.cameras
        elif not isinstance(cameras, Cameras):
            raise TypeError(f"`cameras` must be a Cameras, a Scene or a scene file path; got {_describe(cameras)}.")
        if images is None:
            raise ValueError("`images` is required unless `cameras` is a scene (whose images are then used).")
        images = load_images(images)
        n = images.shape[0]
        if len(cameras) != n:
            raise ValueError(f"Expected one camera per input image: got {n} image(s) and {len(cameras)} camera(s).")
        if (cameras.height, cameras.width) != tuple(images.shape[-2:]):
            raise ValueError(
                f"The cameras describe {cameras.height}x{cameras.width} (HxW) images but the images are "
                f"{images.shape[-2]}x{images.shape[-1]}; rescale the intrinsics with Cameras.scaled()."
            )
        times = torch.arange(n, dtype=torch.float64) if times is None else _as_times(times, "times")
        if times.numel() != n:
            raise ValueError(f"Expected one time per input image: got {n} image(s) and {times.numel()} time(s).")
        return images, cameras, times

    # -- the two halves --------------------------------------------------------------------------------
    def _prepare(
        self,
        images: ImageInput,
        cameras: CameraInput,
        times: Any,
        resolution: Optional[Union[int, Sequence[int]]],
        num_input_views: Optional[int],
        time_convention: Optional[str],
        frame_selection: str = "evenly",
        frame_stride: Optional[int] = None,
    ) -> _PreparedInputs:
        # 1. Check settings first (cheap), then load and validate the inputs.
        height, width = self._check_resolution(self.config.resolution if resolution is None else resolution, self.model)
        time_convention = self.config.time_convention if time_convention is None else time_convention
        if time_convention not in TIME_CONVENTIONS:
            raise ValueError(f"time_convention must be one of {list(TIME_CONVENTIONS)}, got {time_convention!r}.")
        images, cameras, times = self._resolve_inputs(
            images, cameras, times, num_input_views, frame_selection, frame_stride
        )  # [V, 3, H, W]

        # 2. Resize to cover the processing resolution and crop the centre; intrinsics follow.
        images, cameras = resize_and_center_crop(images, cameras, height, width)  # [V, 3, h, w]

        # 3. Pose and time normalisation, fitted on the input views only.
        pose = normalize_poses(cameras.c2w)
        time = None
        if self.model.config.use_time:
            time = TimeNormalization.fit(times, time_convention, self.config.max_frames)
            message = time.range_warning(times, "input times")
            if message:
                warnings.warn(message, stacklevel=4)
        normalization = FSMNormalization(pose, time)
        device = self._execution_device
        return _PreparedInputs(
            images=images[None].to(device),  # [1, V, 3, h, w]
            fxfycxcy=cameras.fxfycxcy[None].to(device),  # [1, V, 4]
            c2w=pose.apply(cameras.c2w)[None].to(device),  # [1, V, 4, 4]
            times=None if time is None else time.apply(times)[None].to(device),  # [1, V]
            normalization=normalization,
            cameras=cameras,
            raw_times=times,
        )

    def _reconstruct(self, inputs: _PreparedInputs, max_views_per_batch: Optional[int] = None) -> FSMMemory:
        if max_views_per_batch is None:
            max_views_per_batch = self.config.max_views_per_batch
        else:
            max_views_per_batch = check_int(max_views_per_batch, "max_views_per_batch")
        bar = self.progress_bar(total=None, desc="reconstruct")

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            with self._weights_autocast():
                memory = self.model.reconstruct(
                    inputs.images, inputs.fxfycxcy, inputs.c2w, inputs.times,
                    max_views_per_batch=max_views_per_batch, progress=advance,
                )  # fmt: skip
        finally:
            bar.close()
        memory.normalization = inputs.normalization.to_dict()
        memory.metadata.update(
            pipeline=type(self).__name__,
            num_input_views=int(inputs.images.shape[1]),
            time_convention=None if inputs.normalization.time is None else inputs.normalization.time.convention,
        )
        return memory

    def _weights_autocast(self):
        """Autocast to the weights' dtype when they are half precision (``torch_dtype=torch.bfloat16``,
        ``pipe.to(torch.float16)``): the model keeps its geometry, learning rates and fast-weight
        updates in fp32, so its products then meet operands of both dtypes. A no-op for fp32/fp64."""
        dtype = self.model.dtype
        if dtype not in (torch.float16, torch.bfloat16):
            return contextlib.nullcontext()
        return torch.autocast(device_type=self._execution_device.type, dtype=dtype)

    def _check_targets(self, target_cameras: Any, target_times: Any) -> Optional[torch.Tensor]:
        """Validate the targets; returns the raw target times ``[T]`` (``None`` for 3D models)."""
        if not isinstance(target_cameras, Cameras):
            raise TypeError(f"`target_cameras` must be a Cameras, got {_describe(target_cameras)}.")
        if not self.model.config.use_time:
            return None
        num_targets = len(target_cameras)
        if target_times is None:
            raise ValueError(f"This is a 4D model: `target_times` ([T] = [{num_targets}] timestamps) is required.")
        raw = _as_times(target_times, "target_times")
        if raw.numel() != num_targets:
            raise ValueError(f"Expected one time per target camera: got {num_targets} camera(s) and {raw.numel()} time(s).")
        return raw

    @torch.no_grad()
    def reconstruct(
        self,
        images: Optional[ImageInput],
        cameras: CameraInput,
        times: Any = None,
        *,
        resolution: Optional[Union[int, Sequence[int]]] = None,
        num_input_views: Optional[int] = None,
        time_convention: Optional[str] = None,
        frame_selection: str = "evenly",
        frame_stride: Optional[int] = None,
        max_views_per_batch: Optional[int] = None,
    ) -> FSMMemory:
        """Read the input views once and return the spatial memory.

        Args:
            images: the input views (see :func:`load_images`), or ``None`` when ``cameras`` is a scene.
            cameras: :class:`Cameras` of the images, a :class:`Scene` or a scene file/folder. For a scene
                without ``images``, ``num_input_views`` views are taken evenly from it.
            times: ``[N]`` timestamps (see the class docstring). ``None``: the scene's times, else
                frame indices ``0..N-1``.
            resolution, num_input_views, time_convention: ``None`` means the pipeline config's value.
            frame_selection, frame_stride: which frames of a scene to read (see :meth:`select_input_views`).
            max_views_per_batch: bounds peak memory for long sequences (results do not depend on it);
                ``None`` means the pipeline config's value.

        Returns:
            :class:`FSMMemory` with ``normalization`` (the fitted transforms, tensors) and ``metadata``.
        """
        inputs = self._prepare(images, cameras, times, resolution, num_input_views, time_convention, frame_selection, frame_stride)
        return self._reconstruct(inputs, max_views_per_batch)

    @torch.no_grad()
    def render(
        self,
        memory: FSMMemory,
        target_cameras: Cameras,
        target_times: Any = None,
        *,
        batch_size: int = 8,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> Union[FSMPipelineOutput, Tuple]:
        """Render target views from a memory (no input view is read again).

        Args:
            memory: from :meth:`reconstruct` (or :meth:`FSMMemory.load`); it must come from this
                pipeline's model and carry its normalisation.
            target_cameras: :class:`Cameras` in the inputs' world; any image size (resized and
                centre-cropped to the memory's resolution like the inputs).
            target_times: ``[T]`` timestamps in the inputs' units (required for 4D models).
            batch_size: target views per model call.
            output_type: ``"pil"``, ``"np"`` or ``"pt"``.
            return_dict: return :class:`FSMPipelineOutput` (else a tuple
                ``(images, gaussians, memory, normalization)``).
        """
        # 1. Check inputs before doing any work.
        self._check_output_args(output_type, batch_size)
        if not isinstance(memory, FSMMemory):
            raise TypeError(f"`memory` must be an FSMMemory, got {_describe(memory)}.")
        memory.check_compatible(self.model.config.memory_signature)  # before any work (model.render checks it too)
        if memory.batch_size != 1:
            raise ValueError(f"FSMPipeline renders one scene at a time; this memory holds {memory.batch_size}.")
        if not memory.normalization or "normalized_from_world" not in memory.normalization:
            raise ValueError(
                "This memory carries no pose normalisation (it was built by the model directly, not by "
                "FSMPipeline.reconstruct); call model.render with normalised cameras instead."
            )
        raw_times = self._check_targets(target_cameras, target_times)
        normalization = FSMNormalization.from_dict(memory.normalization)
        num_targets = len(target_cameras)
        tau = None
        if raw_times is not None:
            if normalization.time is None:
                raise ValueError("This memory has no time normalisation but the model has a time channel.")
            tau = normalization.time.apply(raw_times)  # [T]
            message = normalization.time.range_warning(raw_times, "target times")
            if message:
                warnings.warn(message, stacklevel=3)

        # 2. Target cameras at the memory's resolution, in the normalised frame.
        height, width = memory.image_size
        cameras = resize_and_center_crop_cameras(target_cameras, height, width)
        device = self._execution_device
        # the fast weights' dtype as reconstruct makes them (fp32, or fp64 for an fp64 model), whatever
        # the memory was cast to since
        memory = memory.to(device, dtype=torch.promote_types(self.model.dtype, torch.float32))
        fxfycxcy = cameras.fxfycxcy.to(device)  # [T, 4]
        c2w = normalization.pose.apply(cameras.c2w).to(device)  # [T, 4, 4]
        tau = None if tau is None else tau.to(device)  # [T]

        # 3. Render in batches of target views.
        chunks = []
        with self.progress_bar(total=num_targets, desc="Rendering views") as bar:
            for start in range(0, num_targets, batch_size):
                sl = slice(start, start + batch_size)
                with self._weights_autocast():
                    rendered = self.model.render(
                        memory, fxfycxcy[None, sl], c2w[None, sl], None if tau is None else tau[None, sl]
                    )  # [1, t, 3, h, w]
                chunks.append(rendered[0].float())
                bar.update(chunks[-1].shape[0])
        images = torch.cat(chunks).clamp(0.0, 1.0)  # [T, 3, h, w]

        # 4. Postprocess.
        images = self._postprocess(images, output_type)
        if not return_dict:
            return (images, memory.gaussians, memory, normalization)
        return FSMPipelineOutput(images=images, gaussians=memory.gaussians, memory=memory, normalization=normalization)

    @staticmethod
    def _check_output_args(output_type: str, batch_size: int) -> None:
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {list(OUTPUT_TYPES)}, got {output_type!r}.")
        check_int(batch_size, "batch_size")

    @staticmethod
    def _postprocess(images: torch.Tensor, output_type: str):
        """float ``[T, 3, H, W]`` in [0, 1] -> the requested output type."""
        if output_type == "pt":
            return images
        array = images.permute(0, 2, 3, 1).cpu().numpy()  # [T, H, W, 3]
        if output_type == "np":
            return array
        return DiffusionPipeline.numpy_to_pil(array)

    @torch.no_grad()
    def __call__(
        self,
        images: Optional[ImageInput],
        cameras: CameraInput,
        times: Any = None,
        target_cameras: Optional[Cameras] = None,
        target_times: Any = None,
        *,
        resolution: Optional[Union[int, Sequence[int]]] = None,
        num_input_views: Optional[int] = None,
        time_convention: Optional[str] = None,
        frame_selection: str = "evenly",
        frame_stride: Optional[int] = None,
        max_views_per_batch: Optional[int] = None,
        batch_size: int = 8,
        output_type: str = "pil",
        return_dict: bool = True,
        generator: Optional[torch.Generator] = None,
    ) -> Union[FSMPipelineOutput, Tuple]:
        """Reconstruct the input views and render the target views.

        Args:
            images: input views (see :func:`load_images`), or ``None`` when ``cameras`` is a scene.
            cameras: their :class:`Cameras` (OpenCV ``c2w``, pixel intrinsics), a :class:`Scene`, or a
                scene file/folder.
            times: ``[N]`` input timestamps (``None``: the scene's times, else frames ``0..N-1``).
            target_cameras: the views to render (same world as ``cameras``); ``None`` re-renders the
                input views.
            target_times: ``[T]`` timestamps of the targets, in the inputs' units; required for 4D
                models unless ``target_cameras`` is ``None`` (then the input times are used).
            resolution: processing resolution, ``int`` or ``(height, width)``, multiples of the patch
                size (``None``: the pipeline config's).
            num_input_views: views taken evenly from a scene (``None``: the config's, capped at the
                scene's length).
            time_convention: ``"official_inference"`` or ``"training"`` (``None``: the config's).
            frame_selection, frame_stride: which frames of a scene to read: ``"evenly"`` (with
                ``num_input_views``), ``"every"`` (every ``frame_stride``-th frame) or ``"all"``.
            max_views_per_batch: read the inputs this many views at a time, so that long sequences fit in
                memory (``None``: the config's; results do not depend on it).
            batch_size: target views rendered per model call.
            output_type: ``"pil"``, ``"np"`` or ``"pt"`` (see :class:`FSMPipelineOutput`).
            return_dict: return :class:`FSMPipelineOutput` instead of a tuple
                ``(images, gaussians, memory, normalization)``.
            generator: accepted for API compatibility; FSM is deterministic and draws no random numbers.

        Returns:
            :class:`FSMPipelineOutput`.
        """
        # 1. Check the arguments that need no loading.
        self._check_output_args(output_type, batch_size)
        if target_cameras is not None:
            self._check_targets(target_cameras, target_times)
        elif target_times is not None:
            raise ValueError(
                "target_times were given without target_cameras; without target cameras the input views are "
                "re-rendered at their own times."
            )

        # 2. Load, resize/crop and normalise the input views (normalisation fitted on them only).
        inputs = self._prepare(images, cameras, times, resolution, num_input_views, time_convention, frame_selection, frame_stride)
        if target_cameras is None:  # re-render the inputs
            target_cameras, target_times = inputs.cameras, inputs.raw_times

        # 3. Read the input views into the spatial memory.
        memory = self._reconstruct(inputs, max_views_per_batch)

        # 4. Render the targets in batches and postprocess.
        return self.render(
            memory, target_cameras, target_times, batch_size=batch_size, output_type=output_type, return_dict=return_dict
        )
