"""Reading a user's scores, weights or mask from ``.npy``, ``.npz`` or ``.pt`` files.

Every problem becomes a :class:`CommandError` of one line that names the file.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from . import CommandError

_READ_ERRORS = (OSError, ValueError, EOFError, RuntimeError, KeyError, zipfile.BadZipFile, pickle.UnpicklingError)


def load(path: str, /, *, key: str | None = None) -> np.ndarray:
    """The array stored in ``path``: a ``.npy`` file, one array of a ``.npz`` file or a ``.pt`` tensor.

    ``key`` picks the array of a ``.npz`` file or of a ``.pt`` dict of tensors;
    without it the first one is taken.
    """
    file = Path(path)
    if not file.is_file():
        msg = f"{path}: no such file"
        raise CommandError(msg)
    suffix = file.suffix.lower()
    if suffix not in (".npy", ".npz", ".pt", ".pth"):
        msg = f"{path}: unsupported file type {suffix or '(none)'!r}; use .npy, .npz or .pt"
        raise CommandError(msg)
    if key is not None and suffix == ".npy":
        msg = f"{path}: --key selects an array of a .npz or .pt file, but this is a .npy file"
        raise CommandError(msg)
    try:
        if suffix == ".npy":
            with file.open("rb") as stream:
                if stream.read(6) != b"\x93NUMPY":
                    msg = f"{path}: not a NumPy .npy file (it lacks the .npy header)"
                    raise CommandError(msg)
            return np.asarray(np.load(file, allow_pickle=False))
        if suffix == ".npz":
            with np.load(file, allow_pickle=False) as data:
                return np.asarray(_pick(dict(data.items()), key, path))
        return _torch_file(file, key)
    except _READ_ERRORS as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        msg = f"{path}: cannot read it as a {suffix} file ({reason})"
        raise CommandError(msg) from None


def _pick(arrays: dict[str, Any], key: str | None, path: str, /) -> Any:
    if not arrays:
        msg = f"{path}: holds no arrays"
        raise CommandError(msg)
    if key is None:
        return next(iter(arrays.values()))
    if key not in arrays:
        msg = f"{path}: has no array {key!r}; it holds {', '.join(map(repr, arrays))}"
        raise CommandError(msg)
    return arrays[key]


def _torch_file(file: Path, key: str | None, /) -> np.ndarray:
    try:
        import torch
    except ImportError:
        msg = f"{file}: reading .pt files needs torch (pip install torch)"
        raise CommandError(msg) from None
    content = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(content, dict):
        content = _pick({k: v for k, v in content.items() if isinstance(v, torch.Tensor)}, key, str(file))
    elif key is not None:
        msg = f"{file}: --key selects a tensor of a saved dict, but the file holds one tensor"
        raise CommandError(msg)
    if not isinstance(content, torch.Tensor):
        msg = f"{file}: holds a {type(content).__name__}, not a tensor or a dict of tensors"
        raise CommandError(msg)
    if content.dtype == torch.bfloat16:  # NumPy has no bfloat16
        content = content.float()
    return np.asarray(content.detach().numpy())


def check_values(array: np.ndarray, path: str, /, *, kind: str) -> np.ndarray:
    """``array`` if it can be scores or weights ``(..., T, K)``, else a :class:`CommandError`."""
    if not np.issubdtype(array.dtype, np.floating):
        msg = f"{path}: {kind} must be real floating point, got dtype {array.dtype}"
        raise CommandError(msg)
    if array.ndim < 2:
        msg = f"{path}: {kind} must have shape (..., T, K), at least 2 dimensions, got shape {array.shape}"
        raise CommandError(msg)
    if array.size == 0:
        msg = f"{path}: {kind} are empty, shape {array.shape}"
        raise CommandError(msg)
    if np.isnan(array).all():
        msg = f"{path}: {kind} hold only NaN"
        raise CommandError(msg)
    return array


def check_mask(mask: np.ndarray, path: str, shape: tuple[int, ...], /) -> np.ndarray:
    """``mask`` if it is boolean or floating and broadcasts to ``shape``, else a :class:`CommandError`."""
    if not (mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.floating)):
        msg = f"{path}: the mask must be boolean (True = may attend) or floating (added), got dtype {mask.dtype}"
        raise CommandError(msg)
    try:
        fits = np.broadcast_shapes(mask.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        msg = f"{path}: a mask of shape {mask.shape} does not broadcast to the scores' shape {shape}"
        raise CommandError(msg)
    return mask
