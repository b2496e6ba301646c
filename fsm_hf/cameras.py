"""Pinhole cameras with explicit conventions.

:class:`Cameras` holds the intrinsics and extrinsics of ``N`` views in one canonical form, the
form the model consumes (DESIGN §2):

* ``c2w``: ``[N, 4, 4]`` camera-to-world matrices, **OpenCV** camera axes (x right, y down,
  z forward), rigid (orthonormal rotation with determinant +1, last row ``[0, 0, 0, 1]``);
* ``fxfycxcy``: ``[N, 4]`` focal lengths and principal point in **pixels** of a
  ``height x width`` image. Pixel ``(x, y)`` covers ``[x, x + 1) x [y, y + 1)``, so its centre is
  at ``x + 0.5`` (the ray through it uses ``(x + 0.5 - cx) / fx``).

Everything else (OpenGL axes, world-to-camera poses, ``3 x 3`` K matrices, intrinsics given as
fractions of the image size) is converted once, in :meth:`Cameras.from_arrays`, and validated
there so that bad input fails early with a message naming what was expected and what was given.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import torch

from .validation import view_positions

__all__ = ["Cameras", "OPENGL_TO_OPENCV"]

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence]

#: Right-multiplying an OpenGL camera-to-world matrix by this flips the camera's y and z axes
#: (OpenGL: x right, y up, z backward -> OpenCV: x right, y down, z forward). It is its own inverse.
OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))

_CONVENTIONS = ("opencv", "opengl")
_POSE_TYPES = ("c2w", "w2c")
_INTRINSICS_TYPES = ("pixels", "normalized")

#: Default tolerance of the rigidity check (``|R^T R - I|`` and ``|det R - 1|``, elementwise max).
#: Loose enough for poses stored as float32 or printed with ~6 digits, tight enough to reject
#: scaled or sheared matrices.
DEFAULT_ROTATION_ATOL = 1e-3


def _to_tensor(value: Any, name: str) -> torch.Tensor:
    """numpy / torch / nested lists -> float64 CPU tensor (validation happens in float64)."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    else:
        try:
            tensor = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"{name} must be a numpy array, a torch tensor or a nested list of numbers; "
                f"got {type(value).__name__} ({err})."
            ) from None
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {tensor.dtype}.")
    return tensor.to(device="cpu", dtype=torch.float64)


def _check_finite(tensor: torch.Tensor, name: str) -> None:
    if not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).reshape(tensor.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
        more = "..." if len(bad) > 10 else ""
        raise ValueError(f"{name} must be finite; got NaN or inf in view(s) {bad[:10]}{more}.")


def _check_size(value: Any, name: str) -> int:
    is_integral = isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not is_integral:
        raise TypeError(f"{name} must be a positive integer number of pixels, got {value!r}.")
    value = int(value)
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer number of pixels, got {value}.")
    return value


def _check_rigid(c2w: torch.Tensor, atol: float, name: str) -> None:
    """``c2w`` is ``[N, 4, 4]`` float64 and finite."""
    bottom = c2w[:, 3, :]
    expected = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=c2w.dtype)
    bottom_err = (bottom - expected).abs().amax(dim=1)
    bad = (bottom_err > atol).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"{name}: the last row of each 4x4 pose must be [0, 0, 0, 1]; view {bad[0]} has "
            f"{[round(v, 6) for v in bottom[bad[0]].tolist()]}."
        )
    rot = c2w[:, :3, :3]
    eye = torch.eye(3, dtype=c2w.dtype)
    ortho_err = (rot.transpose(1, 2) @ rot - eye).abs().amax(dim=(1, 2))
    det = torch.linalg.det(rot)
    bad = ((ortho_err > atol) | ((det - 1.0).abs() > atol)).nonzero().flatten().tolist()
    if bad:
        i = bad[0]
        raise ValueError(
            f"{name}: expected rigid poses (rotation block orthonormal with determinant +1, within "
            f"atol={atol}); view {i} has max |R^T R - I| = {ortho_err[i].item():.3g} and det R = "
            f"{det[i].item():.6g} ({len(bad)} bad view(s) in total). Scaled, sheared or reflected "
            f"matrices are not camera poses."
        )


def _invert_poses(matrices: torch.Tensor) -> torch.Tensor:
    """Inverse of ``[..., 4, 4]`` poses (a general inverse, so nearly-rigid inputs round-trip exactly)."""
    return torch.linalg.inv(matrices)


class Cameras:
    """Intrinsics and extrinsics of ``N`` pinhole views in the model's canonical conventions.

    Args:
        c2w: ``[N, 4, 4]`` OpenCV camera-to-world matrices (x right, y down, z forward).
        fxfycxcy: ``[N, 4]`` ``fx, fy, cx, cy`` in pixels of the ``height x width`` image.
        width, height: image size in pixels (positive integers, shared by all views).
        validate: check shapes, finiteness, rigidity and positive focal lengths (default ``True``).
            ``validate=False`` stores the given tensors as they are (trusted internal use only).
        rotation_atol: tolerance of the rigidity check.

    Tensors are stored as ``float32`` (use :meth:`to` for another dtype or device). For any other
    convention use :meth:`from_arrays`.

    Example::

        >>> cams = Cameras.from_arrays(w2c, K, width=512, height=512, pose_type="w2c")
        >>> cams.c2w.shape, cams.fxfycxcy.shape
        (torch.Size([N, 4, 4]), torch.Size([N, 4]))
    """

    def __init__(
        self,
        c2w: ArrayLike,
        fxfycxcy: ArrayLike,
        width: int,
        height: int,
        *,
        validate: bool = True,
        rotation_atol: float = DEFAULT_ROTATION_ATOL,
    ):
        if validate:
            width = _check_size(width, "width")
            height = _check_size(height, "height")
            c2w64 = _to_tensor(c2w, "c2w")
            intr64 = _to_tensor(fxfycxcy, "fxfycxcy")
            if c2w64.ndim != 3 or c2w64.shape[1:] != (4, 4):
                raise ValueError(f"c2w must have shape [N, 4, 4], got {list(c2w64.shape)}.")
            if intr64.ndim != 2 or intr64.shape[1] != 4:
                raise ValueError(f"fxfycxcy must have shape [N, 4] (fx, fy, cx, cy), got {list(intr64.shape)}.")
            if c2w64.shape[0] == 0:
                raise ValueError("Cameras needs at least one view, got an empty c2w ([0, 4, 4]).")
            if intr64.shape[0] != c2w64.shape[0]:
                raise ValueError(
                    f"c2w and fxfycxcy must describe the same number of views: c2w has "
                    f"{c2w64.shape[0]}, fxfycxcy has {intr64.shape[0]}."
                )
            _check_finite(c2w64, "c2w")
            _check_finite(intr64, "fxfycxcy")
            _check_rigid(c2w64, rotation_atol, "c2w")
            focal = intr64[:, :2]
            if (focal <= 0).any():
                i = int((focal <= 0).any(dim=1).nonzero()[0])
                raise ValueError(
                    f"Focal lengths must be positive pixels; view {i} has fx={intr64[i, 0].item():.6g}, "
                    f"fy={intr64[i, 1].item():.6g}."
                )
            device = c2w.device if isinstance(c2w, torch.Tensor) else None
            c2w = c2w64.to(device=device, dtype=torch.float32)
            fxfycxcy = intr64.to(device=device, dtype=torch.float32)
        self.c2w: torch.Tensor = c2w
        self.fxfycxcy: torch.Tensor = fxfycxcy
        self.width: int = int(width)
        self.height: int = int(height)

    # -- construction from user conventions ------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        extrinsics: ArrayLike,
        intrinsics: ArrayLike,
        width: int,
        height: int,
        convention: str = "opencv",
        pose_type: str = "c2w",
        intrinsics_type: str = "pixels",
        rotation_atol: float = DEFAULT_ROTATION_ATOL,
    ) -> "Cameras":
        """Build canonical cameras from poses and intrinsics in any common convention.

        Args:
            extrinsics: ``[N, 4, 4]`` or ``[N, 3, 4]`` poses (a single ``[4, 4]`` / ``[3, 4]`` is one view).
            intrinsics: ``[N, 4]`` ``fx, fy, cx, cy`` or ``[N, 3, 3]`` K matrices; a single ``[4]`` or
                ``[3, 3]`` is shared by all views.
            width, height: image size in pixels.
            convention: camera axes of ``extrinsics``: ``"opencv"`` (x right, y down, z forward) or
                ``"opengl"`` (x right, y up, z backward; nerfstudio / Blender / instant-ngp).
            pose_type: ``"c2w"`` (camera-to-world) or ``"w2c"`` (world-to-camera, a.k.a. view matrix).
            intrinsics_type: ``"pixels"`` or ``"normalized"`` (``fx, cx`` as fractions of ``width``,
                ``fy, cy`` as fractions of ``height``).
            rotation_atol: tolerance of the rigidity check.

        Returns:
            :class:`Cameras` with OpenCV ``c2w`` and pixel ``fxfycxcy``.
        """
        if convention not in _CONVENTIONS:
            raise ValueError(f"convention must be one of {_CONVENTIONS}, got {convention!r}.")
        if pose_type not in _POSE_TYPES:
            raise ValueError(f"pose_type must be one of {_POSE_TYPES}, got {pose_type!r}.")
        if intrinsics_type not in _INTRINSICS_TYPES:
            raise ValueError(f"intrinsics_type must be one of {_INTRINSICS_TYPES}, got {intrinsics_type!r}.")
        width = _check_size(width, "width")
        height = _check_size(height, "height")
        device = extrinsics.device if isinstance(extrinsics, torch.Tensor) else None

        ext = _to_tensor(extrinsics, "extrinsics")
        if ext.ndim == 2:
            ext = ext[None]
        if ext.ndim != 3 or ext.shape[1:] not in ((4, 4), (3, 4)):
            raise ValueError(
                f"extrinsics must have shape [N, 4, 4] or [N, 3, 4] (or one [4, 4] / [3, 4]), got "
                f"{list(_to_tensor(extrinsics, 'extrinsics').shape)}."
            )
        n = ext.shape[0]
        if n == 0:
            raise ValueError("extrinsics is empty (0 views); Cameras needs at least one view.")
        _check_finite(ext, "extrinsics")
        if ext.shape[1] == 3:
            bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=ext.dtype).expand(n, 1, 4)
            ext = torch.cat([ext, bottom], dim=1)
        # Rigidity is checked on what was given, so the message refers to the user's matrices.
        _check_rigid(ext, rotation_atol, "extrinsics")

        c2w = _invert_poses(ext) if pose_type == "w2c" else ext
        if convention == "opengl":
            c2w = c2w @ OPENGL_TO_OPENCV

        intr = _to_tensor(intrinsics, "intrinsics")
        given_shape = list(intr.shape)
        if intr.ndim == 1 or (intr.ndim == 2 and intr.shape == (3, 3)):
            intr = intr[None]
        if intr.ndim == 3 and intr.shape[1:] == (3, 3):
            if intr.shape[0] > 0:
                _check_finite(intr, "intrinsics")
                expected_row = torch.tensor([0.0, 0.0, 1.0], dtype=intr.dtype)
                if ((intr[:, 2, :] - expected_row).abs() > 1e-6).any() or (intr[:, 1, 0].abs() > 1e-6).any():
                    raise ValueError(
                        "intrinsics given as K matrices must look like [[fx, s, cx], [0, fy, cy], [0, 0, 1]]; "
                        f"got {intr[0].tolist()} for the first view."
                    )
                if (intr[:, 0, 1].abs() > 1e-6).any():
                    warnings.warn("The K matrices have a non-zero skew K[0, 1]; it is ignored.", stacklevel=2)
            intr = torch.stack([intr[:, 0, 0], intr[:, 1, 1], intr[:, 0, 2], intr[:, 1, 2]], dim=-1)
        elif not (intr.ndim == 2 and intr.shape[1] == 4):
            raise ValueError(
                f"intrinsics must have shape [N, 4] (fx, fy, cx, cy) or [N, 3, 3] (K), or one [4] / [3, 3] "
                f"shared by all views; got {given_shape}."
            )
        if intr.shape[0] == 0:
            raise ValueError("intrinsics is empty (0 views); Cameras needs at least one view.")
        if intr.shape[0] == 1 and n > 1:
            intr = intr.expand(n, 4)
        if intr.shape[0] != n:
            raise ValueError(
                f"extrinsics and intrinsics must describe the same number of views (or one intrinsics "
                f"shared by all): extrinsics has {n}, intrinsics has {intr.shape[0]}."
            )
        if intrinsics_type == "normalized":
            intr = intr * torch.tensor([width, height, width, height], dtype=intr.dtype)
        cams = cls(c2w, intr.contiguous(), width, height, rotation_atol=rotation_atol)
        return cams.to(device=device) if device is not None else cams

    @classmethod
    def from_fov(
        cls,
        c2w: ArrayLike,
        fov_x: float,
        width: int,
        height: int,
        fov_y: Optional[float] = None,
        convention: str = "opencv",
    ) -> "Cameras":
        """Cameras with the principal point at the image centre and horizontal field of view ``fov_x``
        (radians; ``fov_y`` defaults to square pixels), e.g. Blender's ``camera_angle_x``."""
        width = _check_size(width, "width")
        height = _check_size(height, "height")
        if not (0 < fov_x < np.pi):
            raise ValueError(f"fov_x must be in (0, pi) radians, got {fov_x!r}.")
        fx = 0.5 * width / np.tan(0.5 * fov_x)
        if fov_y is None:
            fy = fx
        elif not (0 < fov_y < np.pi):
            raise ValueError(f"fov_y must be in (0, pi) radians, got {fov_y!r}.")
        else:
            fy = 0.5 * height / np.tan(0.5 * fov_y)
        return cls.from_arrays(c2w, [fx, fy, width / 2.0, height / 2.0], width, height, convention=convention)

    # -- container protocol ----------------------------------------------------------------------
    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, indices: Union[int, slice, Sequence[int], torch.Tensor]) -> "Cameras":
        return self.select(indices)

    def select(self, indices: Union[int, slice, Sequence[int], torch.Tensor]) -> "Cameras":
        """A subset of the views: an int (which keeps the view dimension: ``cams[3]`` has one view),
        a slice, integer positions (negative from the end) or a boolean mask over the views."""
        idx = torch.as_tensor(view_positions(indices, len(self)), dtype=torch.long)
        if idx.numel() == 0:
            raise IndexError("Cannot select zero views from Cameras.")
        idx = idx.to(self.c2w.device)
        return Cameras(self.c2w[idx], self.fxfycxcy[idx], self.width, self.height, validate=False)

    @staticmethod
    def cat(cameras: Iterable["Cameras"]) -> "Cameras":
        """Concatenate views of cameras that share one image size."""
        cameras = list(cameras)
        if not cameras:
            raise ValueError("Cameras.cat needs at least one Cameras object, got none.")
        sizes = {(c.height, c.width) for c in cameras}
        if len(sizes) != 1:
            raise ValueError(f"Cameras.cat needs one image size (height, width) for all views, got {sorted(sizes)}.")
        return Cameras(
            torch.cat([c.c2w for c in cameras]),
            torch.cat([c.fxfycxcy for c in cameras]),
            cameras[0].width,
            cameras[0].height,
            validate=False,
        )

    def to(self, device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None) -> "Cameras":
        """Move (and optionally cast) the tensors; returns a new object."""
        return Cameras(
            self.c2w.to(device=device, dtype=dtype),
            self.fxfycxcy.to(device=device, dtype=dtype),
            self.width,
            self.height,
            validate=False,
        )

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    @property
    def dtype(self) -> torch.dtype:
        return self.c2w.dtype

    # -- derived quantities ----------------------------------------------------------------------
    @property
    def w2c(self) -> torch.Tensor:
        """``[N, 4, 4]`` OpenCV world-to-camera matrices."""
        return _invert_poses(self.c2w.double()).to(self.dtype)

    @property
    def K(self) -> torch.Tensor:  # noqa: N802 - the standard name
        """``[N, 3, 3]`` pixel intrinsic matrices ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``."""
        fx, fy, cx, cy = self.fxfycxcy.unbind(-1)
        zero, one = torch.zeros_like(fx), torch.ones_like(fx)
        return torch.stack(
            [torch.stack([fx, zero, cx], -1), torch.stack([zero, fy, cy], -1), torch.stack([zero, zero, one], -1)],
            dim=-2,
        )

    @property
    def centers(self) -> torch.Tensor:
        """``[N, 3]`` camera centres in world coordinates."""
        return self.c2w[:, :3, 3]

    @property
    def normalized_fxfycxcy(self) -> torch.Tensor:
        """``[N, 4]`` intrinsics as fractions of the image size (``fx/W, fy/H, cx/W, cy/H``)."""
        scale = torch.tensor([self.width, self.height, self.width, self.height], dtype=self.dtype, device=self.device)
        return self.fxfycxcy / scale

    def to_opengl_c2w(self) -> torch.Tensor:
        """``[N, 4, 4]`` camera-to-world matrices with OpenGL camera axes (x right, y up, z backward)."""
        return self.c2w @ OPENGL_TO_OPENCV.to(device=self.device, dtype=self.dtype)

    # -- image-space edits (used by preprocessing) -----------------------------------------------
    def scaled(self, height: int, width: int) -> "Cameras":
        """The cameras of the same images resized (whole frame, no crop) to ``height x width``.

        ``fx, cx`` scale by ``width / self.width`` and ``fy, cy`` by ``height / self.height``: pixel
        edges map onto pixel edges, as in a resize with ``align_corners=False`` (PIL, torch
        ``interpolate``), so ``cx = W/2`` stays at the centre.
        """
        height, width = _check_size(height, "height"), _check_size(width, "width")
        factor = torch.tensor(
            [width / self.width, height / self.height, width / self.width, height / self.height],
            dtype=torch.float64,
        )
        intr = (self.fxfycxcy.double() * factor.to(self.device)).to(self.dtype)
        return Cameras(self.c2w.clone(), intr, width, height, validate=False)

    def cropped(self, top: int, left: int, height: int, width: int) -> "Cameras":
        """The cameras of the ``height x width`` window starting at pixel ``(top, left)``.

        The window must lie inside the image. Focal lengths are unchanged; ``cx -= left``, ``cy -= top``.
        """
        height, width = _check_size(height, "height"), _check_size(width, "width")
        top, left = int(top), int(left)
        if top < 0 or left < 0 or top + height > self.height or left + width > self.width:
            raise ValueError(
                f"Crop window (top={top}, left={left}, height={height}, width={width}) must lie inside the "
                f"{self.height}x{self.width} image."
            )
        shift = torch.tensor([0.0, 0.0, left, top], dtype=self.dtype, device=self.device)
        return Cameras(self.c2w.clone(), self.fxfycxcy - shift, width, height, validate=False)

    def __repr__(self) -> str:
        return (
            f"Cameras(num_views={len(self)}, height={self.height}, width={self.width}, "
            f"dtype={self.dtype}, device={self.device})"
        )
