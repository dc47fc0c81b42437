"""IDX files (the MNIST format) and the two IDX datasets the project knows by name.

An IDX file is a 4-byte big-endian magic number, one 4-byte big-endian size per dimension, then the
values row-major. Images are ``0x00000803`` (unsigned bytes, 3 dimensions: N x H x W), labels
``0x00000801`` (unsigned bytes, N). Files may be gzip-compressed (``<name>.gz``) or raw (``<name>``).

Fashion-MNIST and MNIST are looked up in ``$VQVAE_DATA_DIR/<name>``, ``/usr/share/datasets/<name>``
(Debian's ``dataset-fashion-mnist`` installs there) and ``~/.cache/vqvae/<name>``, in that order; when
absent they are downloaded into the last one, checked against the SHA-256 constants below.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vqvae.errors import VQVAEError
from vqvae.fileio import atomic_write_bytes

__all__ = [
    "IDX_FILES",
    "IDX_DATASETS",
    "IdxSource",
    "cache_root",
    "fetch_idx_file",
    "find_idx_file",
    "is_idx_dir",
    "load_idx_dir",
    "load_idx_named",
    "read_idx",
    "short_path",
]

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

# File stems (without .gz) of the image and label file of each split.
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Debian's dataset packages install here; a module attribute so tests can point it elsewhere.
SYSTEM_DATASETS_DIR = Path("/usr/share/datasets")

DOWNLOAD_TIMEOUT_S = 10.0
# The largest archive (Fashion-MNIST train images) is 26 MB; a server sending far more is not the source.
_MAX_DOWNLOAD_BYTES = 64 << 20


@dataclass(frozen=True)
class IdxSource:
    """Where to find one IDX dataset and how to recognise a good copy.

    ``payload_sha256`` maps each file stem to the SHA-256 of its *decompressed* bytes. The hash is taken
    after gunzip because the same data ships in differently compressed archives: Debian's Fashion-MNIST
    ``.gz`` files are recompressed (their MD5s differ from the ones upstream publishes) yet decompress to
    the upstream IDX files.
    """

    title: str
    base_url: str
    payload_sha256: dict[str, str]
    classes: tuple[str, ...]
    how_to_get: str


IDX_DATASETS: dict[str, IdxSource] = {
    # Hashes computed from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1. They agree with
    # independent records of what the upstream archives (gzip MD5s 8d4fb7e6..., etc.) decompress to.
    "fashion-mnist": IdxSource(
        title="Fashion-MNIST",
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        payload_sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        classes=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        how_to_get="install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
        "or pass --data DIR containing the IDX files",
    ),
    # No copy on this machine to hash: these are the widely published SHA-256s of the decompressed
    # MNIST files (the archives themselves hash to 440fcabf..., 3552534a..., 8d422c7b..., f7ae60f9...).
    "mnist": IdxSource(
        title="MNIST",
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        payload_sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        classes=tuple(str(digit) for digit in range(10)),
        how_to_get="copy the four MNIST IDX files (train-images-idx3-ubyte.gz, ...) into "
        "~/.cache/vqvae/mnist or pass --data DIR containing them",
    ),
}


def cache_root() -> Path:
    """``~/.cache/vqvae``: where downloads go (resolved on every call so tests can move ``HOME``)."""
    return Path.home() / ".cache" / "vqvae"


def short_path(path: Path) -> str:
    """``path`` with the home directory shown as ``~``, to keep error lines short.

    Args:
        path: any path.
    Returns:
        its text, the home directory replaced by ``~``.
    """
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if text == home or text.startswith(home + os.sep) else text


def find_idx_file(directory: Path, stem: str) -> Path | None:
    """The raw file ``directory/stem`` if present (no decompression needed), else ``stem.gz``, else None.

    Args:
        directory: where to look.
        stem: the IDX file's name without ``.gz``.
    Returns:
        the file found, or None.
    """
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def is_idx_dir(directory: Path) -> bool:
    """True if ``directory`` holds at least one of the four standard IDX files.

    Args:
        directory: where to look.
    Returns:
        whether any of them is there (raw or ``.gz``).
    """
    return any(find_idx_file(directory, stem) for pair in IDX_FILES.values() for stem in pair)


def _read_bytes(path: Path) -> bytes:
    """The content of ``path``, gunzipped when its name ends in ``.gz``."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise VQVAEError(f"cannot read {path}: {err.strerror or err}") from None
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise VQVAEError(f"{path} is truncated (the gzip stream ends early): download it again") from None
    except (gzip.BadGzipFile, zlib.error) as err:
        raise VQVAEError(f"{path} is not a valid gzip file ({err})") from None


def _parse_idx(data: bytes, path: Path, magic: int) -> np.ndarray:
    """Validate the header of IDX ``data`` (read from ``path``) and return its values, shape as stored."""
    ndim = magic & 0xFF
    header_bytes = 4 + 4 * ndim
    if len(data) >= 4 and (found := int.from_bytes(data[:4], "big")) != magic:
        raise VQVAEError(f"{path} has IDX magic number 0x{found:08x}, expected 0x{magic:08x}")
    if len(data) < header_bytes:
        raise VQVAEError(f"{path} is truncated: {len(data)} bytes, less than its {header_bytes}-byte header")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header_bytes + math.prod(shape)
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        dims = "x".join(map(str, shape))
        raise VQVAEError(f"{path} is {state}: header {dims} needs {expected} bytes, file has {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_bytes).reshape(shape)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one IDX file (raw or ``.gz``) whose magic number must be ``magic``.

    Args:
        path: the IDX file; gunzipped when its name ends in ``.gz``.
        magic: the magic number expected (:data:`IMAGES_MAGIC` or :data:`LABELS_MAGIC`).
    Returns:
        a read-only uint8 array: ``(N, H, W)`` for images, ``(N,)`` for labels.
    Raises:
        VQVAEError: the file is unreadable, not valid gzip, has another magic number or the wrong size.
    """
    return _parse_idx(_read_bytes(path), path, magic)


def load_idx_dir(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 1, H, W)`` uint8 and labels ``(N,)`` int64 of ``split`` from IDX files in a directory.

    Args:
        directory: where the IDX files are (raw or ``.gz``).
        split: ``"train"`` or ``"test"``.
    Returns:
        ``(images, labels)``, both writable copies.
    Raises:
        VQVAEError: a file missing or invalid, or image and label counts that differ.
    """
    paths = []
    for stem in IDX_FILES[split]:
        found = find_idx_file(directory, stem)
        if found is None:
            raise VQVAEError(f"{directory} has no {stem} or {stem}.gz for the {split} split")
        paths.append(found)
    images = read_idx(paths[0], IMAGES_MAGIC)
    labels = read_idx(paths[1], LABELS_MAGIC)
    if len(images) != len(labels):
        raise VQVAEError(f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels")
    # Copies so that the tensors built from these own writable memory.
    return images[:, None].copy(), labels.astype(np.int64)


def _download(url: str, timeout: float) -> bytes:
    """The body of ``url``; raises OSError or http.client.HTTPException on any failure."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read(_MAX_DOWNLOAD_BYTES + 1)
    if len(body) > _MAX_DOWNLOAD_BYTES:
        raise OSError(f"{url} sent more than {_MAX_DOWNLOAD_BYTES} bytes")
    return body


def fetch_idx_file(url: str, dest: Path, payload_sha256: str,
                   timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Download the gzip archive at ``url`` to ``dest`` if its decompressed content has ``payload_sha256``.

    Nothing is written unless the check passes, and then atomically
    (:func:`vqvae.fileio.atomic_write_bytes`), so an interrupted or bad download never leaves a file at
    ``dest``. OSError or http.client.HTTPException comes through when the server cannot be reached.

    Args:
        url: the ``.gz`` archive to download (at most 64 MiB).
        dest: the file to write.
        payload_sha256: the SHA-256 (hex) the decompressed content must have.
        timeout: seconds to wait for the server.
    Raises:
        VQVAEError: what arrived is not valid gzip or not the expected file.
    """
    body = _download(url, timeout)
    try:
        digest = hashlib.sha256(gzip.decompress(body)).hexdigest()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise VQVAEError(f"download of {url} is not a valid gzip file ({err})") from None
    if digest != payload_sha256:
        raise VQVAEError(
            f"download of {url} failed its checksum: content SHA-256 {digest}, expected {payload_sha256}"
        )
    atomic_write_bytes(dest, body)


def _describe(err: Exception) -> str:
    """A short reason for a failed download: "HTTP 404 Not Found", "[Errno 111] Connection refused"."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    return str(getattr(err, "reason", err))


def _search_dirs(name: str) -> list[Path]:
    """Directories that may hold the IDX dataset ``name``, in the order they are tried."""
    dirs = []
    if os.environ.get("VQVAE_DATA_DIR"):
        dirs.append(Path(os.environ["VQVAE_DATA_DIR"]) / name)
    dirs += [SYSTEM_DATASETS_DIR / name, cache_root() / name]
    return dirs


def load_idx_named(
    name: str, split: str, *, download: bool = True
) -> tuple[np.ndarray, np.ndarray, IdxSource]:
    """Images ``(N, 1, 28, 28)`` uint8, labels ``(N,)`` int64 and the source of a known IDX dataset.

    Args:
        name: a key of :data:`IDX_DATASETS` (``"fashion-mnist"`` or ``"mnist"``).
        split: ``"train"`` or ``"test"``.
        download: fetch the files into ``~/.cache/vqvae/<name>`` when no copy is found.
    Returns:
        ``(images, labels, source)``.
    Raises:
        VQVAEError: no copy found and the download disabled or failed, or invalid files.
    """
    source = IDX_DATASETS[name]
    stems = IDX_FILES[split]
    dirs = _search_dirs(name)
    for directory in dirs:
        if all(find_idx_file(directory, stem) for stem in stems):
            return (*load_idx_dir(directory, split), source)
    where = ", ".join(short_path(d) for d in dirs[:-1]) + f" or {short_path(dirs[-1])}"
    if not download:
        raise VQVAEError(f"{source.title} not found in {where} (download disabled): {source.how_to_get}")
    target = dirs[-1]
    for stem in stems:
        if find_idx_file(target, stem) is None:
            url = source.base_url + stem + ".gz"
            try:
                fetch_idx_file(url, target / f"{stem}.gz", source.payload_sha256[stem])
            except (OSError, http.client.HTTPException) as err:
                raise VQVAEError(
                    f"{source.title} not found in {where} and download failed "
                    f"({url}: {_describe(err)}): {source.how_to_get}"
                ) from None
    return (*load_idx_dir(target, split), source)
