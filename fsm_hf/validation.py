"""Checks of user-given counts and view indices, shared by the pipeline, cameras, scenes and paths."""

from __future__ import annotations

import numbers
from typing import Any, List, Optional

import numpy as np
import torch


def check_int(value: Any, name: str, minimum: int = 1, maximum: Optional[int] = None) -> int:
    """``value`` as a Python ``int`` in ``[minimum, maximum]``.

    Python and numpy integers (and one-element integer tensors) are accepted; ``bool``, floats and
    anything else raise ``ValueError`` naming ``name``, the expected range and what was given.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if maximum is not None:
        expected = f"an integer in [{minimum}, {maximum}]"
    else:
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be {expected}, got {value!r}.")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {expected}, got {value}.")
    return value


def view_positions(indices: Any, length: int, what: str = "views") -> List[int]:
    """Positions in ``[0, length)`` from an int, a slice, a sequence of ints or a boolean mask.

    Negative integers count from the end. A boolean mask (list, numpy array or tensor) must have
    ``length`` entries and selects where it is true. Floats are refused rather than truncated.
    """
    if isinstance(indices, slice):
        return list(range(length))[indices]
    if isinstance(indices, (numbers.Integral, np.integer)) and not isinstance(indices, (bool, np.bool_)):
        indices = [indices]
    array = indices.detach().cpu().numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices)
    if array.dtype == np.bool_:
        if array.ndim != 1 or array.shape[0] != length:
            raise IndexError(f"A boolean mask over {length} {what} must have shape [{length}], got {list(array.shape)}.")
        return np.flatnonzero(array).tolist()
    array = array.reshape(-1)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise IndexError(f"{what.capitalize()} must be selected by integer positions or a boolean mask, got dtype {array.dtype}.")
    positions = [int(i) for i in array]
    bad = [i for i in positions if not -length <= i < length]
    if bad:
        raise IndexError(f"Indices {bad[:10]} out of range for {length} {what}.")
    return [i % length for i in positions]
