"""CIFAR-10 python batches: channel order, batches, where they are looked for, and the restricted unpickler
that refuses every global but the ones a CIFAR batch needs."""

from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from vqvae.data import load_images
from vqvae.data.images.cifar import safe_load_pickle
from vqvae.errors import VQVAEError


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) HWC images -> (N, 3072) rows in CIFAR's layout, built element by element."""
    rows = np.empty((len(images), 3072), dtype=np.uint8)
    for c in range(3):
        for r in range(32):
            for col in range(32):
                rows[:, c * 1024 + r * 32 + col] = images[:, r, col, c]
    return rows


def write_cifar(directory: Path, batches: dict[str, tuple[np.ndarray, list[int]]], protocol: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, (rows, labels) in batches.items():
        with open(directory / name, "wb") as handle:
            pickle.dump({b"batch_label": name.encode(), b"data": rows, b"labels": labels}, handle, protocol)
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}
    with open(directory / "batches.meta", "wb") as handle:
        pickle.dump(meta, handle, protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_channel_order_and_batches(tmp_path, protocol):
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    hwc[0] = 0
    hwc[0, 1, 2] = (11, 22, 33)  # row 1, column 2 of image 0: R, G, B
    rows = cifar_rows(hwc)
    write_cifar(
        tmp_path,
        {
            "data_batch_1": (rows[:2], [3, 1]),
            "data_batch_2": (rows[2:4], [4, 1]),
            "test_batch": (rows[4:], [9]),
        },
        protocol,
    )
    train = load_images(str(tmp_path), "train")
    assert train.images.shape == (4, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.images[0, :, 1, 2].tolist() == [11, 22, 33]
    assert int(train.images[0].sum()) == 66
    np.testing.assert_array_equal(train.images.numpy(), hwc[:4].transpose(0, 3, 1, 2))
    assert train.labels.tolist() == [3, 1, 4, 1]
    assert train.classes == [f"class{i}" for i in range(10)]
    test = load_images(str(tmp_path), "test")
    np.testing.assert_array_equal(test.images.numpy(), hwc[4:].transpose(0, 3, 1, 2))
    assert test.labels.tolist() == [9]
    with pytest.raises(VQVAEError, match=r"3 channel\(s\) per image, but 1 were requested"):
        load_images(str(tmp_path), channels=1)


def test_cifar_named_from_env(tmp_path, monkeypatch):
    rows = cifar_rows(np.zeros((2, 32, 32, 3), dtype=np.uint8))
    write_cifar(tmp_path / "cifar-10-batches-py", {"test_batch": (rows, [0, 5])}, 4)
    monkeypatch.setenv("VQVAE_DATA_DIR", str(tmp_path))
    ds = load_images("cifar10", "test")
    assert ds.images.shape == (2, 3, 32, 32) and ds.name == "cifar10/test"
    with pytest.raises(VQVAEError, match=r"no data_batch_1 for the train split"):
        load_images("cifar10", "train")


def test_cifar_not_found(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("VQVAE_DATA_DIR", raising=False)
    with pytest.raises(VQVAEError, match=r"CIFAR-10 not found in ~/\.cache/vqvae/cifar-10-batches-py: "):
        load_images("cifar10")


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    write_cifar(tmp_path, {"test_batch": (cifar_rows(np.zeros((1, 32, 32, 3), np.uint8)), [0])}, 4)
    with open(tmp_path / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": _RunsCommand(f"touch {marker}"), b"labels": [0]}, handle)
    with pytest.raises(VQVAEError, match=r"refusing to load .*data_batch_1: it references posix\.system"):
        load_images(str(tmp_path), "train")
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps(eval),  # noqa: S307 - only pickled by reference, never called
    pickle.dumps(functools.partial(print, "x")),
    b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x06\x00\x00\x00rot_13\x86R.",
])
def test_other_globals_are_refused(tmp_path, payload):
    path = tmp_path / "batch"
    path.write_bytes(payload)
    with pytest.raises(VQVAEError, match=r"refusing to load"):
        safe_load_pickle(path)


def test_corrupt_pickle(tmp_path):
    write_cifar(tmp_path, {"test_batch": (cifar_rows(np.zeros((1, 32, 32, 3), np.uint8)), [0])}, 4)
    path = tmp_path / "test_batch"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(VQVAEError, match=r"test_batch is not a valid CIFAR-10 pickle"):
        load_images(str(tmp_path), "test")


# ---- image folders ------------------------------------------------------------------------------------


def test_a_pickled_dtype_is_always_a_new_object(tmp_path):
    raw = bytearray(pickle.dumps(np.dtype("u1"), protocol=2))
    raw[raw.index(b"\x89\x88\x87") + 1] = 0x89  # dtype("u1", False, False): numpy's own shared instance
    (tmp_path / "d.pkl").write_bytes(bytes(raw))
    loaded = safe_load_pickle(tmp_path / "d.pkl")
    assert loaded == np.dtype("u1") and loaded is not np.dtype("u1")  # its state is set on a copy
