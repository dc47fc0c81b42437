"""CIFAR-10, python version (``cifar-10-batches-py``), read without letting its pickles run code.

The batches are pickled dicts: ``b'data'`` is a uint8 array ``(N, 3072)`` whose rows hold 1024 red,
then 1024 green, then 1024 blue values, each plane a row-major 32 x 32 image; ``b'labels'`` is a list of
N ints; ``batches.meta`` holds ``b'label_names'``. Train = ``data_batch_1`` ... ``data_batch_5`` (every
``data_batch_<k>`` present, in order of k), test = ``test_batch``.

A pickle can call any importable function while it loads, so :class:`RestrictedUnpickler` resolves only
the handful of globals that a numpy array needs and refuses every other one.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from vqvae.data.images.idx import cache_root
from vqvae.errors import VQVAEError

__all__ = ["RestrictedUnpickler", "cifar_search_dirs", "is_cifar_dir", "load_cifar_dir", "safe_load_pickle"]

CIFAR_DIRNAME = "cifar-10-batches-py"


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a function or class outside the allowed set."""


def _latin1_encode(text: str, encoding: str) -> bytes:
    """What Python 3 pickles (protocol <= 2) call to rebuild ``bytes``, restricted to that one use."""
    if encoding != "latin1":
        raise _RefusedGlobal(f"it calls _codecs.encode with encoding {encoding!r}, which is not allowed")
    return text.encode("latin1")


def _new_dtype(obj: Any, align: bool = False, copy: bool = True) -> np.dtype:
    """``numpy.dtype`` as a pickle calls it, always as a new object: the pickle's BUILD step then sets the
    state of that copy, never of numpy's shared built-in dtype (``copy=False`` would hand the pickle
    ``np.dtype("u1")`` itself)."""
    return np.dtype(obj, bool(align), True)


# Taken from numpy's own pickling rather than imported by module path: numpy 2 moved them from
# numpy.core to numpy._core, and pickles written by either version name either path.
_RECONSTRUCT = np.array(0).__reduce__()[0]
_FROMBUFFER = np.array([0]).__reduce_ex__(5)[0]

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    # Protocol-5 pickles of arrays (Python 3.14's default protocol) go through _frombuffer instead.
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _new_dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays, dicts, lists, str, bytes and numbers, and nothing else.

    ``encoding="bytes"`` keeps the Python 2 ``str`` keys and values of the original CIFAR files as bytes.

    Args:
        file: the open binary file to unpickle.
    """

    def __init__(self, file: io.BufferedIOBase) -> None:
        super().__init__(file, encoding="bytes")

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a global the pickle names, if it is one of the allowed few.

        Args:
            module: the module the pickle names.
            name: the global's name in it.
        Returns:
            the allowed object (a numpy reconstructor, ``ndarray``, ``dtype``, or a latin-1 encoder).
        """
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"it references {module}.{name}, which is not allowed") from None


def safe_load_pickle(path: Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; any failure becomes a one-line VQVAEError.

    Args:
        path: the pickle file.
    Returns:
        the unpickled object.
    Raises:
        VQVAEError: the file is missing, unreadable, damaged, or names a global that is not allowed.
    """
    try:
        with open(path, "rb") as handle:
            return RestrictedUnpickler(handle).load()
    except FileNotFoundError:
        raise VQVAEError(f"{path} does not exist") from None
    except OSError as err:
        raise VQVAEError(f"cannot read {path}: {err.strerror or err}") from None
    except _RefusedGlobal as err:
        raise VQVAEError(f"refusing to load {path}: {err}") from None
    # What a damaged pickle raises: short read, bad opcode or memo key, wrong argument types or values, and
    # what numpy's array reconstructor raises on a mangled dtype (SystemError, RuntimeError).
    except (
        pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
        OverflowError, SystemError, RuntimeError,
    ) as err:
        raise VQVAEError(f"{path} is not a valid CIFAR-10 pickle ({type(err).__name__}: {err})") from None
    except MemoryError:  # numpy's ArrayMemoryError: a header declaring an array larger than memory
        raise VQVAEError(f"{path} is not a valid CIFAR-10 pickle: "
                         "it declares an array too large to allocate") from None


def _field(batch: Any, key: str, path: Path) -> Any:
    """``batch[key]``, accepting both the original bytes keys and str keys of re-pickled files."""
    if isinstance(batch, dict):
        for candidate in (key.encode(), key):
            if candidate in batch:
                return batch[candidate]
    raise VQVAEError(f"{path} is not a CIFAR-10 batch: no {key!r} entry")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 of one batch file."""
    batch = safe_load_pickle(path)
    data = _field(batch, "data", path)
    labels = _field(batch, "labels", path)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape[1:] == (3072,)):
        shape = getattr(data, "shape", type(data).__name__)
        raise VQVAEError(f"{path}: 'data' should be a uint8 array of shape (N, 3072), got {shape}")
    try:
        label_array = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise VQVAEError(f"{path}: 'labels' is not a list of integers") from None
    if len(label_array) != len(data):
        raise VQVAEError(f"{path} has {len(data)} images but {len(label_array)} labels")
    return data.reshape(-1, 3, 32, 32), label_array


def _train_batches(directory: Path) -> list[Path]:
    """``data_batch_<k>`` files in ``directory`` in numeric order of k."""
    numbered = [(re.fullmatch(r"data_batch_(\d+)", p.name), p) for p in directory.iterdir()]
    return [path for _, path in sorted((int(match.group(1)), path) for match, path in numbered if match)]


def is_cifar_dir(directory: Path) -> bool:
    """True if ``directory`` looks like ``cifar-10-batches-py`` (has ``data_batch_1`` or ``test_batch``).

    Args:
        directory: the directory to look at.
    Returns:
        whether it holds ``data_batch_1`` or ``test_batch``.
    """
    return (directory / "data_batch_1").is_file() or (directory / "test_batch").is_file()


def cifar_search_dirs() -> list[Path]:
    """Where ``"cifar10"`` is looked for, in order."""
    dirs = []
    if os.environ.get("VQVAE_DATA_DIR"):
        dirs.append(Path(os.environ["VQVAE_DATA_DIR"]) / CIFAR_DIRNAME)
    dirs.append(cache_root() / CIFAR_DIRNAME)
    return dirs


def load_cifar_dir(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images ``(N, 3, 32, 32)`` uint8, labels ``(N,)`` int64 and class names of one split.

    Args:
        directory: a ``cifar-10-batches-py`` directory.
        split: ``"train"`` (every ``data_batch_<k>``) or ``"test"`` (``test_batch``).
    Returns:
        ``(images, labels, classes)``.
    Raises:
        VQVAEError: a batch missing, unreadable or malformed, or labels outside the named classes.
    """
    paths = _train_batches(directory) if split == "train" else [directory / "test_batch"]
    if not paths or not paths[0].is_file():
        wanted = "data_batch_1" if split == "train" else "test_batch"
        raise VQVAEError(f"{directory} has no {wanted} for the {split} split of CIFAR-10")
    meta_path = directory / "batches.meta"
    names = _field(safe_load_pickle(meta_path), "label_names", meta_path)
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise VQVAEError(f"{meta_path}: 'label_names' should be a list of names")
    classes = [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]
    batches = [_read_batch(path) for path in paths]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise VQVAEError(
            f"{directory}: labels range over {labels.min()}..{labels.max()} "
            f"but batches.meta names {len(classes)} classes"
        )
    return images, labels, classes
