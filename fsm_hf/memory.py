"""The spatial memory: what ``reconstruct`` returns and ``render`` consumes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from modeling.lacet import FastWeights

_FORMAT = "fsm-memory"
_FORMAT_VERSION = 1
#: Signature fields added after memories were first saved, with the value older memories had.
_SIGNATURE_DEFAULTS = {"cross_view_mixer": "lacet"}


@dataclass
class FSMMemory:
    """A reconstructed scene: the per-layer fast weights of a model after reading the input views.

    Attributes:
        fast_weights: one :class:`~modeling.FastWeights` per layer, each tensor ``[B * H, ...]``.
        batch_size: ``B``.
        image_size: ``(H, W)`` of the views the memory was built from (targets render at this size).
        patch_size: the model's patch size.
        config_signature: the model fields the memory depends on; rendering with a model whose
            signature differs is an error.
        normalization: the pose/time normalisation computed from the input views (set by the
            pipeline; ``None`` when the model was called with already-normalised inputs). A dict of
            tensors, e.g. ``{"world_from_normalized": [B, 4, 4], "scale": [B], "time_offset": [B],
            "time_scale": [B]}``.
        gaussians: for Gaussian models, the decoded 4D Gaussians (dict of tensors), else ``None``.
    """

    fast_weights: List[FastWeights]
    batch_size: int
    image_size: Tuple[int, int]
    patch_size: int
    config_signature: Dict[str, Any]
    normalization: Optional[Dict[str, torch.Tensor]] = None
    gaussians: Optional[Dict[str, torch.Tensor]] = None
    metadata: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return len(self.fast_weights)

    def to(self, device=None, dtype=None) -> "FSMMemory":
        """Move every tensor to ``device``; ``dtype`` casts the fast weights and Gaussians (the
        normalisation transforms keep their dtype: they are geometry, not model state)."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else None)

        return FSMMemory(
            fast_weights=[fw.map(move) for fw in self.fast_weights],
            batch_size=self.batch_size,
            image_size=self.image_size,
            patch_size=self.patch_size,
            config_signature=self.config_signature,
            normalization={k: v.to(device=device) for k, v in self.normalization.items()} if self.normalization else None,
            gaussians={k: move(v) for k, v in self.gaussians.items()} if self.gaussians else None,
            metadata=dict(self.metadata),
        )

    def check_compatible(self, config_signature: Dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the differing fields when the memory belongs to another model."""
        stored = {**_SIGNATURE_DEFAULTS, **self.config_signature}
        diffs = {k: (stored.get(k), v) for k, v in config_signature.items() if stored.get(k) != v}
        if diffs:
            detail = ", ".join(f"{k}: memory={a!r} model={b!r}" for k, (a, b) in diffs.items())
            raise ValueError(f"This memory was built by a different model configuration ({detail}).")

    # -- serialisation ---------------------------------------------------------------------------
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the memory to one ``.safetensors`` file (tensors + JSON metadata in the header)."""
        from safetensors.torch import save_file

        tensors: Dict[str, torch.Tensor] = {}
        for i, fw in enumerate(self.fast_weights):
            for name, t in zip(("w0", "w1", "w2"), fw):
                tensors[f"fast_weights.{i}.{name}"] = t.detach().contiguous().cpu()
        for group, values in (("normalization", self.normalization), ("gaussians", self.gaussians)):
            for k, v in (values or {}).items():
                tensors[f"{group}.{k}"] = v.detach().contiguous().cpu()
        header = {
            "format": _FORMAT,
            "format_version": str(_FORMAT_VERSION),
            "batch_size": str(self.batch_size),
            "image_size": json.dumps(list(self.image_size)),
            "patch_size": str(self.patch_size),
            "num_layers": str(self.num_layers),
            "config_signature": json.dumps(self.config_signature, sort_keys=True),
            "metadata": json.dumps(self.metadata, sort_keys=True),
        }
        save_file(tensors, os.fspath(path), metadata=header)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu") -> "FSMMemory":
        """Read a memory written by :meth:`save`."""
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="pt", device=str(device)) as f:
            header = f.metadata() or {}
            if header.get("format") != _FORMAT:
                raise ValueError(f"{path} is not an FSM memory file (header format={header.get('format')!r}).")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        num_layers = int(header["num_layers"])
        fast_weights = [
            FastWeights(*(tensors[f"fast_weights.{i}.{n}"] for n in ("w0", "w1", "w2"))) for i in range(num_layers)
        ]

        def group(prefix):
            items = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            return items or None

        return cls(
            fast_weights=fast_weights,
            batch_size=int(header["batch_size"]),
            image_size=tuple(json.loads(header["image_size"])),
            patch_size=int(header["patch_size"]),
            config_signature=json.loads(header["config_signature"]),
            normalization=group("normalization"),
            gaussians=group("gaussians"),
            metadata=json.loads(header.get("metadata", "{}")),
        )
