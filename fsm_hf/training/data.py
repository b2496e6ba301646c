"""Training data: scene sources mixed with ratios, and the official per-sample view sampling.

A training sample is built from one scene, entirely determined by ``(seed, sample index)`` so
that runs are reproducible under any number of workers or processes and resume exactly:

1. the scene: sources are mixed like the official ``RepeatedConcatDataset``: every scene of a
   source counts ``ratio`` times, and a sample draws one of those virtual slots uniformly;
2. the views (official ``NVSDataset`` / ``NVSVideoDataset``): a window of ``window_size``
   consecutive frames starting at a random frame, ``num_input_views + num_target_views``
   distinct frames drawn from it at random; the first ``num_input_views`` are the inputs,
   sorted by time (``sort_by_time``), the others the targets (unsorted); for procedural scenes,
   ``novel_target_views`` of the targets are instead rendered at new cameras and times (times
   between the inputs', half of the cameras off the captured path), like the held-out views
   ``fsm demo`` scores; with ``novel_view_pool_size`` they are drawn from a pool rendered once
   per scene instead of rendered per sample;
3. images resized to cover ``image_size`` and centre-cropped, intrinsics adjusted
   (:func:`fsm_hf.normalization.resize_and_center_crop`);
4. poses normalised (:func:`fsm_hf.normalization.normalize_poses`) and times rescaled in the
   "training" convention (:class:`fsm_hf.normalization.TimeNormalization`), both fitted on all
   sampled views as the official loader does (``normalize_from="all"``) or on the inputs only.

Each sample is a dict of tensors: ``input_images [V, 3, H, W]``, ``input_fxfycxcy [V, 4]``,
``input_c2w [V, 4, 4]``, ``input_times [V]`` and the same for ``target_*`` (``T`` views).
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset, Sampler

if TYPE_CHECKING:
    from ..synthetic import SyntheticViews

__all__ = [
    "DataSource", "parse_data_spec", "resolve_scenes", "FSMTrainingDataset", "ShardedSequentialSampler",
    "draw_from_novel_view_pool",
]  # fmt: skip

SYNTHETIC = "synthetic"
DEFAULT_SYNTHETIC_SCENES = 8


@dataclass(frozen=True)
class DataSource:
    """One entry of a data spec: a path (or ``"synthetic"``), its repeat ratio, and for the
    procedural generator the number of scenes."""

    path: str
    ratio: int = 1
    num_scenes: Optional[int] = None

    @property
    def is_synthetic(self) -> bool:
        return self.path == SYNTHETIC


def _positive(text: str, what: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"Data spec {spec!r}: {what} must be a positive integer, got {text!r}.") from None
    if value < 1:
        raise ValueError(f"Data spec {spec!r}: {what} must be a positive integer, got {value}.")
    return value


def parse_data_spec(spec: Union[str, Sequence[str]]) -> List[DataSource]:
    """``"path:2,other:1,synthetic:16"`` (or a list of such entries) -> :class:`DataSource` s.

    Each entry is ``PATH[:RATIO]``, or ``synthetic[:NUM_SCENES[:RATIO]]``. A trailing ``:N`` is a
    ratio only when ``N`` is an integer, so paths that contain ``:`` otherwise still work.
    """
    entries: List[str] = []
    for part in [spec] if isinstance(spec, str) else list(spec):
        entries += [e.strip() for e in str(part).split(",") if e.strip()]
    if not entries:
        raise ValueError(f"Empty data spec {spec!r}: expected e.g. 'scene.jsonl:2,folder:1' or 'synthetic:8'.")
    sources = []
    for entry in entries:
        head, *rest = entry.split(":")
        if head == SYNTHETIC:
            if len(rest) > 2:
                raise ValueError(f"Data spec {entry!r}: expected synthetic[:NUM_SCENES[:RATIO]].")
            num = _positive(rest[0], "the number of synthetic scenes", entry) if rest else DEFAULT_SYNTHETIC_SCENES
            ratio = _positive(rest[1], "the ratio", entry) if len(rest) == 2 else 1
            sources.append(DataSource(SYNTHETIC, ratio, num))
            continue
        path, ratio = entry, 1
        if ":" in entry:
            maybe_path, maybe_ratio = entry.rsplit(":", 1)
            if maybe_ratio.strip().lstrip("-").isdigit():
                path, ratio = maybe_path, _positive(maybe_ratio, "the ratio", entry)
        sources.append(DataSource(path, ratio))
    return sources


def resolve_scenes(path: Union[str, Path]) -> List[Path]:
    """The scene files a path stands for: itself when it is a scene (file or folder), else every
    scene file or scene folder directly inside it (sorted by name)."""
    from ..scene import detect_scene_format

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Data path not found: {path}")
    try:
        detect_scene_format(path)
        return [path]
    except (ValueError, FileNotFoundError):
        if path.is_file():
            raise
    found = []
    for child in sorted(path.iterdir()):
        try:
            detect_scene_format(child)
        except (ValueError, FileNotFoundError, OSError):
            continue
        found.append(child)
    if not found:
        raise ValueError(
            f"{path} is neither a scene nor a folder of scenes (official .jsonl + video, transforms.json, "
            "opencv_cameras.json)."
        )
    return found


class _SceneEntry:
    """A lazily opened scene: a file path, or a procedural scene seed."""

    def __init__(self, path: Optional[Path] = None, synthetic_seed: Optional[int] = None, frames: int = 64, size: int = 32):
        self.path, self.synthetic_seed, self.frames, self.size = path, synthetic_seed, frames, size
        self._scene = None
        self._synthetic = None

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else f"synthetic_{self.synthetic_seed}"

    def scene(self):
        if self._scene is None:
            if self.path is not None:
                from ..scene import load_scene

                self._scene = load_scene(self.path)
            else:
                self._scene = self.synthetic().to_scene()
        return self._scene

    def synthetic(self):
        """The procedural scene itself (renders any camera at any time); only for seed entries."""
        if self._synthetic is None:
            from ..synthetic import generate_scene

            self._synthetic = generate_scene(self.synthetic_seed, self.frames, self.size, self.size)
        return self._synthetic

    @property
    def is_synthetic(self) -> bool:
        return self.path is None

    def num_frames(self) -> int:
        if self.is_synthetic:
            return self.frames
        return len(self.scene())


def _check_target_input_views(target_input_views: int, num_input_views: int, num_target_views: int) -> None:
    limit = min(num_input_views, num_target_views)
    if not 0 <= target_input_views <= limit:
        raise ValueError(
            f"target_input_views must be in [0, min(num_input_views, num_target_views)] = [0, {limit}], "
            f"got {target_input_views}."
        )


def _check_novel_target_views(novel_target_views: int, target_input_views: int, num_target_views: int) -> None:
    limit = num_target_views - target_input_views
    if not 0 <= novel_target_views <= limit:
        raise ValueError(
            f"novel_target_views must be in [0, num_target_views - target_input_views] = [0, {limit}], "
            f"got {novel_target_views}."
        )


def sample_view_indices(
    num_frames: int,
    num_input_views: int,
    num_target_views: int,
    window_size: int,
    rng: random.Random,
    sort_by_time: bool = True,
    target_input_views: int = 0,
) -> Tuple[List[int], List[int]]:
    """The official training sampler: a random window, random distinct views in it.

    Returns ``(inputs, targets)`` frame positions: inputs sorted (when ``sort_by_time``), targets
    the remaining drawn frames in draw order; disjoint, all inside one window. With
    ``target_input_views = k > 0`` (LVSM's ``target_has_input``), the last ``k`` targets repeat
    ``k`` randomly chosen inputs instead, so only ``num_input_views + num_target_views - k``
    distinct frames are drawn.
    """
    _check_target_input_views(target_input_views, num_input_views, num_target_views)
    total = num_input_views + num_target_views - target_input_views
    window = min(window_size, num_frames)
    if total > window:
        raise ValueError(f"Cannot draw {total} distinct views from a window of {window} frames.")
    start = rng.randint(0, num_frames - window)
    chosen = rng.sample(range(start, start + window), total)
    inputs, targets = chosen[:num_input_views], chosen[num_input_views:]
    if target_input_views:
        targets = targets + rng.sample(inputs, target_input_views)
    return (sorted(inputs) if sort_by_time else inputs), targets


class FSMTrainingDataset(Dataset):
    """Samples of posed, timed input and target views (see the module docstring).

    ``dataset[i]`` depends only on ``(seed, i)``; ``len(dataset)`` is the number of virtual scene
    slots (sum over sources of ``ratio * num_scenes``), but any non-negative index is valid, so a
    sampler can stream indices for as many steps as training needs.

    Args:
        sources: :class:`DataSource` s (see :func:`parse_data_spec`).
        image_size: square training resolution.
        num_input_views, num_target_views, window_size, sort_by_time, target_input_views: the view
            sampling (:func:`sample_view_indices`).
        max_frames: integer time grid of the training time convention.
        use_time: whether the model reads time (static models get zeros).
        normalize_from: ``"all"`` (official) or ``"inputs"``.
        seed: base seed.
        synthetic_frames: frames of each procedural scene.
        cache_images: keep resized frames in memory (per worker process).
        novel_target_views: for procedural scenes, how many targets are rendered new views
            (:meth:`fsm_hf.synthetic.SyntheticScene.held_out_views`: times strictly between the
            inputs', half of the cameras moved off the captured path) instead of captured frames;
            other sources always use captured frames.
        novel_view_pool_size: when > 0, each procedural scene renders this many new views once
            (held-out views of its whole clip: times between consecutive frames, half of the
            cameras off the path) and every sample draws its ``novel_target_views`` from the pool
            views that lie where ``held_out_views`` would put them (a gap between consecutive input
            times, drawn uniformly, at a fraction in ``HELD_OUT_GAP_FRACTIONS`` of it); a sample
            whose inputs leave too few such pool views renders its own. Rendering dominates the
            data time of procedural samples: a pool of 96 at 64x64 makes it ~5x cheaper, for
            ``96 * 3 * S * S * 4`` bytes per scene (kept per worker process). 0 (default) renders
            every sample's own views.
    """

    def __init__(
        self,
        sources: Sequence[DataSource],
        image_size: int,
        num_input_views: int,
        num_target_views: int,
        window_size: int = 256,
        max_frames: int = 256,
        sort_by_time: bool = True,
        use_time: bool = True,
        normalize_from: str = "all",
        seed: int = 0,
        synthetic_frames: int = 64,
        cache_images: bool = False,
        target_input_views: int = 0,
        novel_target_views: int = 0,
        novel_view_pool_size: int = 0,
    ):
        self.image_size = int(image_size)
        self.num_input_views, self.num_target_views = int(num_input_views), int(num_target_views)
        self.window_size, self.max_frames = int(window_size), int(max_frames)
        self.sort_by_time, self.use_time = sort_by_time, use_time
        self.normalize_from, self.seed = normalize_from, int(seed)
        self.cache_images = cache_images
        self.target_input_views = int(target_input_views)
        _check_target_input_views(self.target_input_views, self.num_input_views, self.num_target_views)
        self.novel_target_views = int(novel_target_views)
        _check_novel_target_views(self.novel_target_views, self.target_input_views, self.num_target_views)
        if isinstance(novel_view_pool_size, bool) or not isinstance(novel_view_pool_size, int) or novel_view_pool_size < 0:
            raise ValueError(f"novel_view_pool_size must be an integer >= 0, got {novel_view_pool_size!r}.")
        self.novel_view_pool_size = novel_view_pool_size
        self._cache: Dict[Tuple[int, int], torch.Tensor] = {}
        self._novel_view_pools: Dict[int, "SyntheticViews"] = {}
        num_views = self.num_input_views + self.num_target_views - self.target_input_views
        self.entries: List[_SceneEntry] = []
        slots: List[int] = []  # entry index per virtual slot
        for source_id, source in enumerate(sources):
            if source.is_synthetic:
                new = [
                    _SceneEntry(synthetic_seed=self.seed * 1000 + 100 * source_id + k, frames=synthetic_frames, size=self.image_size)
                    for k in range(source.num_scenes)
                ]  # fmt: skip
            else:
                new = [_SceneEntry(path=p) for p in resolve_scenes(source.path)]
            kept = []
            for entry in new:
                frames = entry.num_frames()
                if frames < num_views:
                    warnings.warn(f"Skipping scene {entry.name}: {frames} frames < {num_views} views per sample.")
                    continue
                kept.append(entry)
            if not kept:
                raise ValueError(
                    f"Data source {source.path!r} has no scene with at least {num_views} frames "
                    f"(num_input_views + num_target_views)."
                )
            for entry in kept:
                slots += [len(self.entries)] * source.ratio
                self.entries.append(entry)
        self._slots = slots

    def __len__(self) -> int:
        return len(self._slots)

    def sample_plan(self, index: int) -> Tuple[int, List[int], List[int]]:
        """``(scene entry, input frame positions, target frame positions)`` of sample ``index``."""
        rng = random.Random(f"fsm-train/{self.seed}/{int(index)}")
        entry_id = self._slots[rng.randrange(len(self._slots))]
        inputs, targets = sample_view_indices(
            self.entries[entry_id].num_frames(), self.num_input_views, self.num_captured_targets(entry_id),
            self.window_size, rng, self.sort_by_time, self.target_input_views,
        )  # fmt: skip
        return entry_id, inputs, targets

    def num_captured_targets(self, entry_id: int) -> int:
        """Targets of a sample of scene ``entry_id`` that are captured frames (the rest are rendered new views)."""
        novel = self.novel_target_views if self.entries[entry_id].is_synthetic else 0
        return self.num_target_views - novel

    def _images(self, entry_id: int, scene, positions: List[int]):
        """Resized images ``[n, 3, S, S]`` and their cameras."""
        from ..normalization import resize_and_center_crop, resize_and_center_crop_cameras

        size = self.image_size
        cameras = resize_and_center_crop_cameras(scene.cameras.select(positions), size, size)
        missing = [p for p in dict.fromkeys(positions) if (entry_id, p) not in self._cache]
        loaded = {}
        if missing:
            raw = scene.load_images(missing)  # [m, 3, H, W]
            resized, _ = resize_and_center_crop(raw, scene.cameras.select(missing), size, size)
            loaded = {p: img for p, img in zip(missing, resized)}
            if self.cache_images:
                self._cache.update({(entry_id, p): img for p, img in loaded.items()})
        images = torch.stack([loaded[p] if p in loaded else self._cache[(entry_id, p)] for p in positions])
        return images, cameras

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        from ..normalization import TimeNormalization, normalize_poses

        entry_id, inputs, targets = self.sample_plan(index)
        scene = self.entries[entry_id].scene()
        positions = inputs + targets
        images, cameras = self._images(entry_id, scene, positions)  # [V+T', 3, S, S]
        c2w, fxfycxcy = cameras.c2w, cameras.fxfycxcy
        raw_times = scene.times[positions] if scene.times is not None else None
        num_novel = self.num_target_views - len(targets)
        if num_novel:  # procedural scene: new target views at in-between times
            novel = self._novel_views(entry_id, raw_times[: len(inputs)], num_novel, int(index))
            images = torch.cat([images, novel.images])
            c2w, fxfycxcy = torch.cat([c2w, novel.c2w.to(c2w.dtype)]), torch.cat([fxfycxcy, novel.fxfycxcy.to(fxfycxcy.dtype)])
            raw_times = torch.cat([raw_times, novel.times.to(raw_times.dtype)])
        v = len(inputs)
        fit = slice(None) if self.normalize_from == "all" else slice(0, v)
        c2w = normalize_poses(c2w[fit]).apply(c2w).float()  # [V+T, 4, 4]
        if self.use_time and raw_times is not None:
            times = TimeNormalization.fit(raw_times[fit], "training", self.max_frames).apply(raw_times)  # [V+T]
        else:
            times = torch.zeros(len(c2w))
        fxfycxcy = fxfycxcy.float()
        return {
            "input_images": images[:v], "input_fxfycxcy": fxfycxcy[:v], "input_c2w": c2w[:v], "input_times": times[:v],
            "target_images": images[v:], "target_fxfycxcy": fxfycxcy[v:], "target_c2w": c2w[v:], "target_times": times[v:],
        }  # fmt: skip


    def _novel_views(self, entry_id: int, input_times: torch.Tensor, count: int, index: int):
        """``count`` new views of procedural scene ``entry_id`` between ``input_times`` (sorted by time)."""
        synthetic = self.entries[entry_id].synthetic()
        if self.novel_view_pool_size:
            pool = self._novel_view_pools.get(entry_id)
            if pool is None:  # seed -1: sample indices, the per-sample seeds, are >= 0
                pool = synthetic.held_out_views(synthetic.frame_times(), self.novel_view_pool_size, seed=-1)
                self._novel_view_pools[entry_id] = pool
            rng = random.Random(f"fsm-novel/{self.seed}/{index}")
            chosen = draw_from_novel_view_pool(pool.times, input_times, count, rng)
            if chosen is not None:
                return pool[chosen]
        return synthetic.held_out_views(input_times, count, seed=index)


def draw_from_novel_view_pool(
    pool_times: torch.Tensor, input_times: torch.Tensor, count: int, rng: random.Random
) -> Optional[List[int]]:
    """Pool positions of ``count`` distinct views placed as ``held_out_views`` places new views.

    Each view takes a gap between consecutive distinct ``input_times`` uniformly at random among
    the gaps that still have a pool view at a fraction in ``HELD_OUT_GAP_FRACTIONS`` of it, then
    one of those views uniformly. Returns the positions sorted by time, or ``None`` when the pool
    has fewer than ``count`` such views.

    Args:
        pool_times: ``[P]`` times of the pool's views.
        input_times: ``[V]`` input times (at least two distinct values).
    """
    from ..synthetic import HELD_OUT_GAP_FRACTIONS

    low, high = HELD_OUT_GAP_FRACTIONS
    times = pool_times.tolist()
    unique = torch.unique(input_times.double()).tolist()  # sorted
    candidates = [
        [i for i, t in enumerate(times) if a + low * (b - a) <= t <= a + high * (b - a)] for a, b in zip(unique, unique[1:])
    ]  # fmt: skip
    chosen: List[int] = []
    for _ in range(count):
        open_gaps = [c for c in candidates if c]
        if not open_gaps:
            return None
        gap = open_gaps[rng.randrange(len(open_gaps))]
        chosen.append(gap.pop(rng.randrange(len(gap))))
    return sorted(chosen, key=lambda i: times[i])


class ShardedSequentialSampler(Sampler):
    """Global sample indices ``start, start + 1, ...`` split over processes.

    Process ``rank`` of ``world_size`` takes ``start + k * world_size + rank`` for ``k = 0, 1, ...``,
    so the data a run sees depends only on the seed and the global position, and resuming at
    optimiser step ``s`` is ``start = s * batch_size * grad_accum_steps * world_size``.
    """

    def __init__(self, start: int = 0, rank: int = 0, world_size: int = 1, length: Optional[int] = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}.")
        self.start, self.rank, self.world_size, self.length = int(start), int(rank), int(world_size), length

    def __iter__(self) -> Iterator[int]:
        k = 0
        while self.length is None or k < self.length:
            yield self.start + k * self.world_size + self.rank
            k += 1

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("ShardedSequentialSampler is infinite (length=None).")
        return self.length
