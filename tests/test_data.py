"""Dataset loading (IDX, CIFAR-10 pickles, image folders), downloads against a local server, image grids."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import os
import pickle
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqvae.data import ImageDataset, load_images, save_image_grid, to_float, to_uint8
from vqvae.data.images import idx as idx_module
from vqvae.data.images.cifar import safe_load_pickle
from vqvae.data.images.idx import IDX_FILES, fetch_idx_file
from vqvae.errors import VQVAEError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION = idx_module.IDX_DATASETS["fashion-mnist"]


# ---- helpers -------------------------------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file for a uint8 array, written independently of the loader: magic, big-endian dims, data."""
    magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_split(directory: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for stem, array in zip(IDX_FILES[split], (images, labels)):
        data = idx_bytes(array)
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)


def random_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 5, 4), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# ---- IDX -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    train_x, train_y = random_split(7, 0)
    test_x, test_y = random_split(3, 1)
    write_idx_split(tmp_path, "train", train_x, train_y, gz)
    write_idx_split(tmp_path, "test", test_x, test_y, gz)
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        ds = load_images(str(tmp_path), split)
        assert isinstance(ds, ImageDataset) and len(ds) == len(x)
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(x), 1, 5, 4)
        assert ds.labels.dtype == torch.int64
        np.testing.assert_array_equal(ds.images[:, 0].numpy(), x)
        np.testing.assert_array_equal(ds.labels.numpy(), y)
        assert ds.name == f"{tmp_path.name}/{split}"
        assert ds.classes == [str(c) for c in range(int(y.max()) + 1)]


def test_idx_truncated_raw_file_names_file_and_sizes(tmp_path):
    write_idx_split(tmp_path, "train", *random_split(7, 0), gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    expected = 16 + 7 * 5 * 4
    pattern = rf"train-images-idx3-ubyte is truncated: .* needs {expected} bytes, file has {expected - 10}$"
    with pytest.raises(VQVAEError, match=pattern):
        load_images(str(tmp_path))


def test_idx_truncated_gzip_names_file(tmp_path):
    write_idx_split(tmp_path, "train", *random_split(7, 0), gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(VQVAEError, match=r"train-labels-idx1-ubyte\.gz is truncated"):
        load_images(str(tmp_path))


def test_idx_not_gzip(tmp_path):
    write_idx_split(tmp_path, "train", *random_split(7, 0), gz=True)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"this is not gzip data at all")
    with pytest.raises(VQVAEError, match=r"train-images-idx3-ubyte\.gz is not a valid gzip file"):
        load_images(str(tmp_path))


def test_idx_bad_magic(tmp_path):
    x, y = random_split(7, 0)
    write_idx_split(tmp_path, "train", x, y, gz=False)
    # A labels file where the images file should be.
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(y))
    with pytest.raises(VQVAEError, match=r"idx3-ubyte has IDX magic number 0x00000801, expected 0x00000803"):
        load_images(str(tmp_path))


def test_idx_trailing_bytes(tmp_path):
    write_idx_split(tmp_path, "train", *random_split(7, 0), gz=False)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(VQVAEError, match=r"train-labels-idx1-ubyte is longer than its header says"):
        load_images(str(tmp_path))


def test_idx_count_mismatch(tmp_path):
    x, y = random_split(7, 0)
    write_idx_split(tmp_path, "train", x, y[:6], gz=False)
    with pytest.raises(VQVAEError, match=r"has 7 images but .*train-labels-idx1-ubyte has 6 labels"):
        load_images(str(tmp_path))


def test_idx_missing_split_file(tmp_path):
    write_idx_split(tmp_path, "train", *random_split(7, 0), gz=False)
    with pytest.raises(VQVAEError, match=r"no t10k-images-idx3-ubyte or t10k-images-idx3-ubyte\.gz"):
        load_images(str(tmp_path), "test")


def test_idx_refuses_other_size_or_channels(tmp_path):
    write_idx_split(tmp_path, "train", *random_split(7, 0), gz=False)
    with pytest.raises(VQVAEError, match=r"1 channel\(s\) per image, but 3 were requested"):
        load_images(str(tmp_path), channels=3)
    with pytest.raises(VQVAEError, match=r"images are 5x4, but image size 5 was requested"):
        load_images(str(tmp_path), image_size=5)


def test_named_dataset_from_env_dir(tmp_path, monkeypatch):
    x, y = random_split(4, 2)
    write_idx_split(tmp_path / "fashion-mnist", "test", x, y, gz=True)
    monkeypatch.setenv("VQVAE_DATA_DIR", str(tmp_path))
    ds = load_images("fashion-mnist", "test", download=False)
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), x)
    assert ds.name == "fashion-mnist/test"
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"


def test_bad_arguments(tmp_path):
    with pytest.raises(VQVAEError, match=r"unknown split 'validation'"):
        load_images("fashion-mnist", "validation")
    with pytest.raises(VQVAEError, match=r"unknown dataset 'imagenet'"):
        load_images("imagenet")
    with pytest.raises(VQVAEError, match=r"channels must be 1 or 3"):
        load_images(str(tmp_path), channels=2)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(VQVAEError, match=r"file\.txt is a file"):
        load_images(str(tmp_path / "file.txt"))


# ---- the real Fashion-MNIST (Debian's dataset-fashion-mnist) -------------------------------------------
def test_real_fashion_mnist():
    if not all((DEBIAN_FASHION / f"{stem}.gz").is_file() for pair in IDX_FILES.values() for stem in pair):
        pytest.skip(f"Fashion-MNIST is not installed in {DEBIAN_FASHION}")
    expected = idx_module.IDX_DATASETS["fashion-mnist"].payload_sha256
    for pair in IDX_FILES.values():
        for stem in pair:
            payload = gzip.decompress((DEBIAN_FASHION / f"{stem}.gz").read_bytes())
            assert hashlib.sha256(payload).hexdigest() == expected[stem], stem
    for split, n in (("train", 60000), ("test", 10000)):
        ds = load_images("fashion-mnist", split, download=False, image_size=28, channels=1)
        assert ds.images.shape == (n, 1, 28, 28) and ds.images.dtype == torch.uint8
        assert ds.labels.shape == (n,) and ds.labels.dtype == torch.int64
        assert int(ds.labels.min()) == 0 and int(ds.labels.max()) == 9
        assert torch.bincount(ds.labels).tolist() == [n // 10] * 10
        assert len(ds.classes) == 10


# ---- downloads, against a server on 127.0.0.1 ---------------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's parameter name
        pass


@pytest.fixture
def file_server(tmp_path):
    """(directory served, base URL) of an HTTP server on 127.0.0.1 for the duration of one test."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    """Point the cache (~/.cache/vqvae) and the system dataset directory into tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("VQVAE_DATA_DIR", raising=False)
    monkeypatch.setattr(idx_module, "SYSTEM_DATASETS_DIR", tmp_path / "no-system-datasets")
    return home


def serve_split(root: Path, split: str, images: np.ndarray, labels: np.ndarray) -> dict[str, str]:
    """Serve gzipped IDX files of one split; return their payload SHA-256s."""
    digests = {}
    for stem, array in zip(IDX_FILES[split], (images, labels)):
        data = idx_bytes(array)
        (root / f"{stem}.gz").write_bytes(gzip.compress(data))
        digests[stem] = hashlib.sha256(data).hexdigest()
    return digests


def test_fetch_good_file(tmp_path, file_server):
    root, url = file_server
    x, y = random_split(3, 0)
    digests = serve_split(root, "train", x, y)
    dest = tmp_path / "cache" / "train-images-idx3-ubyte.gz"
    fetch_idx_file(url + dest.name, dest, digests["train-images-idx3-ubyte"], timeout=5)
    assert dest.read_bytes() == (root / dest.name).read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path, file_server):
    root, url = file_server
    x, y = random_split(3, 0)
    digests = serve_split(root, "train", x, y)
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x[:, ::-1])))
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(VQVAEError, match=r"train-images-idx3-ubyte\.gz failed its checksum"):
        fetch_idx_file(url + "train-images-idx3-ubyte.gz", cache / "train-images-idx3-ubyte.gz",
                       digests["train-images-idx3-ubyte"], timeout=5)
    assert list(cache.iterdir()) == []


def test_named_download_end_to_end(file_server, isolated_home, monkeypatch):
    root, url = file_server
    x, y = random_split(6, 3)
    digests = serve_split(root, "train", x, y)
    source = dataclasses.replace(idx_module.IDX_DATASETS["mnist"], base_url=url, payload_sha256=digests)
    monkeypatch.setitem(idx_module.IDX_DATASETS, "mnist", source)
    ds = load_images("mnist", "train")
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), x)
    np.testing.assert_array_equal(ds.labels.numpy(), y)
    assert ds.classes == [str(d) for d in range(10)] and ds.name == "mnist/train"
    cached = isolated_home / ".cache" / "vqvae" / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(f"{stem}.gz" for stem in IDX_FILES["train"])
    # Second load comes from the cache, with the server gone.
    for served in root.iterdir():
        served.unlink()
    np.testing.assert_array_equal(load_images("mnist", "train").images[:, 0].numpy(), x)


def test_named_download_corrupt_leaves_no_file(file_server, isolated_home, monkeypatch):
    root, url = file_server
    x, y = random_split(6, 3)
    digests = serve_split(root, "train", x, y)
    digests["train-images-idx3-ubyte"] = "0" * 64
    source = dataclasses.replace(FASHION, base_url=url, payload_sha256=digests)
    monkeypatch.setitem(idx_module.IDX_DATASETS, "fashion-mnist", source)
    with pytest.raises(VQVAEError, match=r"failed its checksum"):
        load_images("fashion-mnist")
    cached = isolated_home / ".cache" / "vqvae" / "fashion-mnist"
    assert not cached.exists() or list(cached.iterdir()) == []


def test_named_download_unreachable_says_how_to_get_data(isolated_home, monkeypatch):
    with socket.socket() as sock:  # a port that nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = dataclasses.replace(FASHION, base_url=f"http://127.0.0.1:{port}/")
    monkeypatch.setitem(idx_module.IDX_DATASETS, "fashion-mnist", source)
    with pytest.raises(VQVAEError) as info:
        load_images("fashion-mnist")
    message = str(info.value)
    assert "\n" not in message
    assert "Fashion-MNIST not found in" in message and "~/.cache/vqvae/fashion-mnist" in message
    assert "download failed" in message and "apt-get install dataset-fashion-mnist" in message
    with pytest.raises(VQVAEError, match=r"download disabled"):
        load_images("fashion-mnist", download=False)


def test_named_download_http_404(file_server, isolated_home, monkeypatch):
    _, url = file_server
    source = dataclasses.replace(idx_module.IDX_DATASETS["mnist"], base_url=url)
    monkeypatch.setitem(idx_module.IDX_DATASETS, "mnist", source)
    with pytest.raises(VQVAEError, match=r"MNIST not found .* download failed .*HTTP 404"):
        load_images("mnist")


# ---- CIFAR-10 -----------------------------------------------------------------------------------------
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
def stripes(width: int, height: int) -> np.ndarray:
    """RGB image: left quarter red, middle half green, right quarter blue."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, : width // 4, 0] = 255
    image[:, width // 4: 3 * width // 4, 1] = 255
    image[:, 3 * width // 4:, 2] = 255
    return image


def test_folder_classes_resize_and_crop(tmp_path):
    save_png(tmp_path / "cats" / "a.png", stripes(16, 8))      # shorter side already 8: crop only
    save_png(tmp_path / "dogs" / "b.jpg", stripes(64, 32))     # 2x too big: resize, then crop
    save_png(tmp_path / "dogs" / "c.bmp", stripes(8, 16).transpose(1, 0, 2).copy())  # portrait
    (tmp_path / "dogs" / "notes.txt").write_text("ignored")
    ds = load_images(str(tmp_path), "train", image_size=8)
    assert ds.classes == ["cats", "dogs"] and ds.labels.tolist() == [0, 1, 1]
    assert ds.images.shape == (3, 3, 8, 8) and ds.images.dtype == torch.uint8
    # The centre 8 columns of the wide images are the green half.
    assert ds.images[0].tolist() == [[[0] * 8] * 8, [[255] * 8] * 8, [[0] * 8] * 8]
    assert (ds.images[1, 1].int() > 200).all() and (ds.images[1, 0].int() < 60).all()
    assert ds.name == f"{tmp_path.name}/train"


def test_folder_grayscale(tmp_path):
    red = np.zeros((4, 4, 3), dtype=np.uint8)
    red[..., 0] = 255
    save_png(tmp_path / "x" / "red.png", red)
    ds = load_images(str(tmp_path), channels=1)
    assert ds.images.shape == (1, 1, 4, 4)
    assert ds.images.unique().tolist() == [76]  # ITU-R 601-2 luma: 299/1000 * 255
    gray_png = tmp_path / "y" / "gray.png"
    save_png(gray_png, np.full((4, 4), 200, dtype=np.uint8))
    rgb = load_images(str(tmp_path))
    assert rgb.images.shape == (2, 3, 4, 4) and rgb.images[1].unique().tolist() == [200]


def test_folder_gif_first_frame(tmp_path):
    (tmp_path / "g").mkdir()
    frames = [Image.new("L", (4, 4), 10), Image.new("L", (4, 4), 240)]
    frames[0].save(tmp_path / "g" / "anim.gif", save_all=True, append_images=frames[1:])
    ds = load_images(str(tmp_path), channels=1)
    assert ds.images.unique().tolist() == [10]


def test_folder_deterministic_split(tmp_path):
    for cls, count in (("a", 25), ("b", 9)):
        for i in range(count):
            save_png(tmp_path / cls / f"{i:03d}.png", np.full((2, 2), i, dtype=np.uint8))
    train = load_images(str(tmp_path), "train", channels=1)
    test = load_images(str(tmp_path), "test", channels=1)
    assert test.images[:, 0, 0, 0].tolist() == [9, 19] and test.labels.tolist() == [0, 0]
    assert len(train) == 23 + 9 and train.labels.tolist() == [0] * 23 + [1] * 9
    assert 9 not in train.images[:23, 0, 0, 0].tolist()
    again = load_images(str(tmp_path), "train", channels=1)
    assert torch.equal(again.images, train.images)


def test_folder_train_test_subfolders(tmp_path):
    save_png(tmp_path / "train" / "a" / "1.png", np.full((3, 3), 1, dtype=np.uint8))
    save_png(tmp_path / "train" / "b" / "2.png", np.full((3, 3), 2, dtype=np.uint8))
    save_png(tmp_path / "test" / "a" / "3.png", np.full((3, 3), 3, dtype=np.uint8))
    train = load_images(str(tmp_path), "train", channels=1)
    test = load_images(str(tmp_path), "test", channels=1)
    assert train.classes == ["a", "b"] and train.images[:, 0, 0, 0].tolist() == [1, 2]
    assert test.images[:, 0, 0, 0].tolist() == [3] and test.labels.tolist() == [0]


def test_folder_without_class_subfolders_is_one_class(tmp_path):
    save_png(tmp_path / "pics" / "1.png", np.zeros((3, 3), dtype=np.uint8))
    ds = load_images(str(tmp_path / "pics"))
    assert ds.classes == ["pics"] and ds.labels.tolist() == [0]


def test_folder_too_small_for_test_split(tmp_path):
    save_png(tmp_path / "a" / "1.png", np.zeros((3, 3), dtype=np.uint8))
    with pytest.raises(VQVAEError, match=r"has no test images: .*every 10th image"):
        load_images(str(tmp_path), "test")


def test_folder_sizes_differ_without_image_size(tmp_path):
    save_png(tmp_path / "a" / "1.png", np.zeros((3, 3), dtype=np.uint8))
    save_png(tmp_path / "a" / "2.png", np.zeros((4, 5), dtype=np.uint8))
    with pytest.raises(VQVAEError, match=r"differ in size \(a/1\.png is 3x3, a/2\.png is 5x4\).*image size"):
        load_images(str(tmp_path))


def test_folder_empty(tmp_path):
    with pytest.raises(VQVAEError, match=r"no images .* in .*"):
        load_images(str(tmp_path))
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "readme.txt").write_text("no images here")
    with pytest.raises(VQVAEError, match=rf"no images .* in {tmp_path}"):
        load_images(str(tmp_path))


@pytest.mark.parametrize("content", [b"definitely not a png", "truncated"])
def test_folder_unreadable_image(tmp_path, content):
    save_png(tmp_path / "a" / "good.png", np.zeros((8, 8), dtype=np.uint8))
    bad = tmp_path / "a" / "zbad.png"
    if content == "truncated":
        save_png(bad, np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
        bad.write_bytes(bad.read_bytes()[:200])
    else:
        bad.write_bytes(content)
    with pytest.raises(VQVAEError, match=r"cannot read image .*zbad\.png"):
        load_images(str(tmp_path))


# ---- conversions and grids ----------------------------------------------------------------------------
def test_to_float_to_uint8():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    f = to_float(x)
    assert f.dtype == torch.float32 and float(f.min()) == 0.0 and float(f.max()) == 1.0
    assert torch.equal(to_uint8(f), x)
    assert to_uint8(torch.tensor([-0.5, 0.5 / 255 + 1e-4, 0.499, 1.7])).tolist() == [0, 1, 127, 255]
    with pytest.raises(TypeError):
        to_float(f)
    with pytest.raises(TypeError):
        to_uint8(x)


def test_save_image_grid_gray(tmp_path):
    images = torch.zeros(5, 1, 4, 6)
    images[4] = 1.0
    path = tmp_path / "out" / "grid.png"
    save_image_grid(images, path, nrow=3, padding=2)
    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == "L"
        assert png.size == (3 * (6 + 2) + 2, 2 * (4 + 2) + 2)
        pixels = np.asarray(png)
    # Image 4 sits in row 1, column 1.
    top, left = 2 + 1 * (4 + 2), 2 + 1 * (6 + 2)
    assert (pixels[top:top + 4, left:left + 6] == 255).all()
    assert pixels.sum() == 255 * 4 * 6
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]


def test_save_image_grid_rgb_uint8_fewer_than_nrow(tmp_path):
    images = torch.zeros(2, 3, 5, 5, dtype=torch.uint8)
    images[1, 2] = 200
    path = tmp_path / "grid.png"
    save_image_grid(images, path, nrow=8, padding=1)
    with Image.open(path) as png:
        assert png.mode == "RGB" and png.size == (2 * 6 + 1, 7)
        assert np.asarray(png)[1, 7].tolist() == [0, 0, 200]
    with pytest.raises(VQVAEError):
        save_image_grid(torch.zeros(2, 2, 5, 5), path, nrow=2)


def test_split_folders_share_one_class_list(tmp_path):
    from PIL import Image

    from vqvae.data import load_images

    for split, names in (("train", ["cat", "dog"]), ("test", ["dog"])):
        for name in names:
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("L", (8, 8), 100).save(tmp_path / split / name / "a.png")
    train, test = load_images(str(tmp_path), "train"), load_images(str(tmp_path), "test")
    assert train.classes == test.classes == ["cat", "dog"]
    assert test.labels.tolist() == [1]  # "dog" keeps label 1 although test/ has no "cat"
