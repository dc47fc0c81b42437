"""Dataset loading (IDX, CIFAR-10 pickles, image folders), downloads against a local server, image grids."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqvae.data import ImageDataset, load_images
from vqvae.data.images import idx as idx_module
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


def test_pictures_pick_one_example_of_each_class_first_and_the_same_ones_every_time():
    from vqvae.data import pick_examples

    sorted_by_class = torch.arange(10).repeat_interleave(30)  # a class-sorted folder: 0s, then 1s, ...
    first = pick_examples(sorted_by_class, 16)
    assert sorted(sorted_by_class[first[:10]].tolist()) == list(range(10))  # every class in the first row
    assert sorted_by_class[first[:10]].tolist() == list(range(10))  # in class order
    assert len(set(first.tolist())) == 16 and torch.equal(first, pick_examples(sorted_by_class, 16))
    assert not torch.equal(first, pick_examples(sorted_by_class, 16, seed=1))
    uneven = torch.tensor([0, 0, 0, 0, 2])  # a class with one example is shown once, then round-robin
    assert sorted(pick_examples(uneven, 5).tolist()) == [0, 1, 2, 3, 4]
    assert pick_examples(uneven, 9).shape == (5,) and pick_examples(uneven, 0).shape == (0,)
    assert pick_examples(torch.zeros(0, dtype=torch.long), 4).shape == (0,)
