"""Property-based fuzzing of the readers of outside files (IDX, WAV, CIFAR pickles, .npz) and of the quantizer
API: whatever the bytes or the tensor, the result is a correct load or a VQVAEError / ValueError -- never
another exception (an IndexError, a ZeroDivisionError, a MemoryError, a pickle executing code ...)."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from vqvae.data.audio import read_wav
from vqvae.data.images.cifar import _read_batch
from vqvae.data.images.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from vqvae.errors import VQVAEError
from vqvae.fileio import read_npz
from vqvae.quantize import VectorQuantizer, VectorQuantizerEMA

# hypothesis is optional: the module is skipped without it, so its imports must follow importorskip (E402)
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


_DIR = tempfile.TemporaryDirectory(prefix="vqvae-fuzz-")  # one directory, removed when the module is unloaded


def _file(data: bytes, name: str) -> Path:
    """``data`` as the file ``name`` (the same path for every example of a test: rewritten each time)."""
    path = Path(_DIR.name) / name
    path.write_bytes(data)
    return path


def _mutated(base: bytes):
    """``base`` with bytes flipped, cut short or extended: near-valid files, where readers break."""
    return st.one_of(
        st.binary(max_size=300),
        st.integers(0, len(base)).map(lambda n: base[:n]),
        st.tuples(st.integers(0, max(len(base) - 1, 0)), st.integers(0, 255)).map(
            lambda t: base[: t[0]] + bytes([t[1]]) + base[t[0] + 1:]),
        st.binary(max_size=64).map(lambda tail: base + tail),
    )


def _idx(magic: int, shape: tuple[int, ...]) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{len(shape)}I", *shape) + bytes(int(np.prod(shape)))


@FUZZ
@given(data=_mutated(_idx(IMAGES_MAGIC, (3, 4, 4))), gz=st.booleans())
def test_idx_reader(data, gz):
    path = _file(gzip.compress(data) if gz else data, "x-images-idx3-ubyte" + (".gz" if gz else ""))
    try:
        a = read_idx(path, IMAGES_MAGIC)
        assert a.ndim == 3 and a.dtype == np.uint8
    except VQVAEError:
        pass


@FUZZ
@given(data=_mutated(_idx(LABELS_MAGIC, (5,))))
def test_idx_labels_reader(data):
    try:
        assert read_idx(_file(data, "l-labels-idx1-ubyte"), LABELS_MAGIC).ndim == 1
    except VQVAEError:
        pass


def _wav(width: int = 2, channels: int = 1, rate: int = 8000, frames: int = 20) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(width * channels * frames))
    return buf.getvalue()


@FUZZ
@given(data=st.one_of(_mutated(_wav()), _mutated(_wav(width=3, channels=2)), _mutated(_wav(width=1))))
def test_wav_reader(data):
    try:
        x, rate = read_wav(_file(data, "x.wav"))
        assert x.dtype == np.float32 and x.ndim == 1 and len(x) > 0 and rate > 0
        assert np.all(np.abs(x) <= 1.0)
    except VQVAEError:
        pass


def _cifar() -> bytes:
    return pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=2)


@FUZZ
@given(data=st.one_of(_mutated(_cifar()), _mutated(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8),
                                                                  b"labels": [3]}, protocol=5))))
def test_cifar_reader(data):
    try:
        images, labels = _read_batch(_file(data, "data_batch_1"))
        assert images.shape[1:] == (3, 32, 32) and len(images) == len(labels)
    except VQVAEError:
        pass


def _npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, test_indices=np.zeros((2, 3, 3), np.int64), labels=np.arange(2))
    return buf.getvalue()


@FUZZ
@given(data=_mutated(_npz()))
def test_npz_reader(data):
    try:
        arrays = read_npz(_file(data, "codes.npz"), "codes file")
        assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
    except VQVAEError:
        pass


_values = st.sampled_from([0.0, 1.0, -3.5, 1e30, -1e30, float("nan"), float("inf"), float("-inf")])


@FUZZ
@given(cls=st.sampled_from([VectorQuantizer, VectorQuantizerEMA]), training=st.booleans(),
       shape=st.lists(st.integers(0, 4), min_size=0, max_size=4), dim=st.integers(1, 4),
       fill=_values, dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.int64]),
       kwargs=st.fixed_dictionaries({}, optional={"commitment_cost": _values, "decay": _values,
                                                  "epsilon": _values, "restart_threshold": _values}))
def test_quantizer_api(cls, training, shape, dim, fill, dtype, kwargs):
    if cls is VectorQuantizer:
        kwargs.pop("decay", None), kwargs.pop("epsilon", None)
    try:
        q = cls(dim, 5, **kwargs)
    except ValueError:
        return
    q.train(training)
    if dtype.is_floating_point:
        x = torch.randn(*shape, dim).to(dtype)
    else:
        x = torch.ones(*shape, dim, dtype=dtype)
    if x.numel() and dtype.is_floating_point:
        x.view(-1)[0] = fill
    try:
        out = q(x)
    except ValueError:
        return
    assert out.quantized.shape == x.shape and out.indices.shape == x.shape[:-1]
    assert torch.isfinite(q.codebook).all()  # a bad input never poisons the codebook
