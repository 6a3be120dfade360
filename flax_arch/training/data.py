"""The trainer's data: scikit-learn's digits, or your own arrays, shaped for a model.

With no data file the trainer uses scikit-learn's digits (1,797 greyscale 8 x 8 images of the
digits 0-9, shipped inside the scikit-learn package: nothing is downloaded), resized to what
the model takes. A data file holds your own arrays, already in the model's (channels-last)
layout: a ``.npy`` file with the inputs ``x`` alone (enough for the auto-encoders and DCGAN),
or a ``.npz`` file with ``x`` and, for classifiers, integer labels ``y``. Inputs are floats,
or ``uint8`` images scaled from [0, 255] to [0, 1].

>>> images, labels = digits()
>>> images.shape, labels.shape
((1797, 8, 8, 1), (1797,))
>>> fit_images(images[:2], Spec((28 * 28,), "NC")).shape
(2, 784)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

__all__ = ["LAYOUTS", "Spec", "DataError", "digits", "read_arrays", "fit_images", "check_inputs",
           "check_labels", "split", "epoch_order", "fingerprint", "axes"]

# axis names of each supported torch layout, in the Flax (channels-last) order
_AXES = {
    "NC": ("features",),
    "NCHW": ("height", "width", "channels"),
    "NCL": ("length", "channels"),
    "NLC": ("length", "channels"),
}
LAYOUTS = tuple(_AXES)  # the registry input layouts the trainer feeds


class DataError(ValueError):
    """Data that does not fit the model: names the shape, dtype or values expected."""


@dataclass(frozen=True)
class Spec:
    """The input one example must have: ``shape`` in the Flax (channels-last) layout,
    ``layout`` the registry's torch layout it comes from (``'NC'``, ``'NCHW'``, ``'NCL'``,
    ``'NLC'``)."""

    shape: tuple[int, ...]
    layout: str

    def __post_init__(self):
        if self.layout not in _AXES:
            raise DataError(f"no image data for inputs in layout {self.layout!r}; the trainer "
                            f"feeds layouts {list(LAYOUTS)}")
        if len(self.shape) != len(_AXES[self.layout]):
            raise DataError(f"a {self.layout} input needs {len(_AXES[self.layout])} axes after "
                            f"the batch axis, got {self.shape}")

    def describe(self) -> str:
        """``(N, 8, 8, 1) = (batch, height, width, channels)``."""
        dims = ", ".join(str(s) for s in self.shape)
        return f"(N, {dims}) = {axes(self.layout)}"


def axes(layout: str) -> str:
    """The channels-last axes of a torch ``layout``: ``'NCHW'`` -> ``(batch, height, width,
    channels)``."""
    return f"(batch, {', '.join(_AXES[layout])})"


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images (1797, 8, 8, 1) float32 in [0, 1], labels (1797,) int64."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32)[..., None], d.target.astype(np.int64)


def fingerprint(*arrays: np.ndarray) -> str:
    """A SHA-256 of the arrays' bytes, shapes and dtypes: the identity of a data set."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def read_arrays(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x, y)`` from a ``.npy`` file (``x`` only, ``y`` is None) or a ``.npz`` file with
    ``x`` and optionally ``y``. Pickled objects are refused."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    if path.suffix not in (".npy", ".npz"):
        raise DataError(f"data file {str(path)!r}: expected a .npy file (x) or a .npz file "
                        "(x and y)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"cannot read data file {str(path)!r}: {err}") from err
    if path.suffix == ".npy":
        return loaded, None
    with loaded:
        if "x" not in loaded.files:
            raise DataError(f"data file {str(path)!r} has arrays {loaded.files}; expected 'x' "
                            "(inputs) and, for a classifier, 'y' (integer labels)")
        return loaded["x"], loaded["y"] if "y" in loaded.files else None


def fit_images(images: np.ndarray, spec: Spec) -> np.ndarray:
    """Greyscale images (N, H, W, 1) in [0, 1] resized to ``spec``, float32, channels-last.

    ``NC``: a square image of ``features`` pixels, flattened row by row. ``NCHW``: resized to
    (height, width), the grey channel repeated over ``channels``. ``NCL``/``NLC``: a square
    image of ``length * channels`` pixels, flattened row by row and read in ``length`` steps of
    ``channels`` pixels (8 x 8 in steps of 8: row by row; in one step of 64: all at once).
    """
    if spec.layout == "NC":
        (features,) = spec.shape
        side = math.isqrt(features)
        if side * side != features:
            raise DataError(f"images cannot fill {features} features: a flat input needs a "
                            "square number of pixels (e.g. 64 = 8 x 8, 784 = 28 x 28)")
        return _resize(images, side, side).reshape(len(images), features)
    if spec.layout == "NCHW":
        height, width, channels = spec.shape
        return np.repeat(_resize(images, height, width), channels, axis=-1)
    length, channels = spec.shape
    side = math.isqrt(length * channels)
    if side * side != length * channels:
        raise DataError(f"images cannot fill {length} steps of {channels} features: a "
                        "sequence holds a square image of length * channels pixels")
    return _resize(images, side, side).reshape(len(images), length, channels)


def _resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    if images.shape[1:3] == (height, width):
        return images.astype(np.float32)
    out = jax.image.resize(images, (len(images), height, width, images.shape[-1]), "linear",
                           antialias=True)
    return np.clip(np.asarray(out, np.float32), 0.0, 1.0)


def check_inputs(x: np.ndarray, spec: Spec, *, unit_range: bool, what: str) -> np.ndarray:
    """``x`` as float32 after checking it against ``spec``; ``unit_range`` requires [0, 1]
    (``uint8`` images are scaled to it first)."""
    if x.ndim != len(spec.shape) + 1 or tuple(x.shape[1:]) != spec.shape:
        raise DataError(f"x has shape {tuple(x.shape)}; {what} expects x of shape "
                        f"{spec.describe()}, channels-last")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"x has dtype {x.dtype}; {what} expects floating-point inputs (or "
                        "uint8 images in [0, 255])")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DataError("x holds NaN or infinite values")
    if unit_range and (x.min() < 0.0 or x.max() > 1.0):
        raise DataError(f"x ranges over [{x.min():g}, {x.max():g}]; {what} expects values in "
                        "[0, 1] (or uint8 images in [0, 255])")
    return x


def check_labels(y: np.ndarray | None, n: int, num_classes: int, what: str) -> np.ndarray:
    """Integer labels ``y`` of shape (n,) in [0, num_classes), as int32."""
    if y is None:
        raise DataError(f"{what} is a classifier: the data file must be a .npz holding integer "
                        "labels 'y' of shape (N,) beside 'x'")
    if y.shape != (n,):
        raise DataError(f"y has shape {tuple(y.shape)}; expected ({n},), one label per example "
                        "of x")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"y has dtype {y.dtype}; expected integer class labels")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"y ranges over [{y.min()}, {y.max()}]; {what} has {num_classes} "
                        f"classes, labels must lie in [0, {num_classes})")
    return y.astype(np.int32)


def split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation of ``range(n)`` cut into (train, held-out) indices."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the ``n`` training examples in ``epoch``: a function of (seed, epoch)
    only, so a resumed run draws the same batches as an uninterrupted one."""
    return np.random.default_rng([seed, epoch]).permutation(n)
