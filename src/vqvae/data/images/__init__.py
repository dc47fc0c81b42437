"""Image datasets as uint8 tensors, and saving image grids.

:func:`load_images` takes a dataset name (``"fashion-mnist"``, ``"mnist"``, ``"cifar10"``) or a path
to a directory of IDX files, of CIFAR-10 python batches, or of images in class sub-folders (see
:mod:`vqvae.data.images.idx`, :mod:`vqvae.data.images.cifar`,
:mod:`vqvae.data.images.folder` for where each is looked
for and how it is read). Everything the user can get wrong raises a one-line :class:`VQVAEError`.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from vqvae.config import ImageModelConfig
from vqvae.data.images.cifar import cifar_search_dirs, is_cifar_dir, load_cifar_dir
from vqvae.data.images.folder import ImageFiles, image_folder_files
from vqvae.data.images.idx import IDX_DATASETS, is_idx_dir, load_idx_dir, load_idx_named, short_path
from vqvae.data.loader import iter_batches, rows
from vqvae.errors import VQVAEError
from vqvae.fileio import atomic_write_bytes

__all__ = ["ImageDataset", "image_grid", "load_images", "load_images_for", "save_image_grid", "to_float",
           "to_uint8"]

SPLITS = ("train", "test")


@dataclass
class ImageDataset:
    """One split of a dataset.

    ``images`` is uint8 ``(N, C, H, W)`` with C in {1, 3}: a tensor in memory (IDX, CIFAR-10), or for an image
    folder an :class:`~vqvae.data.images.folder.ImageFiles` that reads the images it is indexed with from disk
    (``images[i]``, ``images[a:b]``, ``images[indices]``, ``images.shape`` work on both). ``labels`` int64
    ``(N,)`` indexes ``classes``; ``name`` says where it came from, e.g. ``"fashion-mnist/train"``.
    """

    images: torch.Tensor | ImageFiles
    labels: torch.Tensor
    classes: list[str]
    name: str

    def __len__(self) -> int:
        return self.images.shape[0]

    def batches(self, starts: Iterable[int], batch_size: int, n: int, num_workers: int = 0,
                labels: bool = False) -> Iterator[tuple[torch.Tensor, ...]]:
        """(images,) -- or (images, labels) -- of the batches of ``batch_size`` starting at each of ``starts``
        among the first ``n`` examples, in order.

        Args:
            starts: the first example index of every batch.
            batch_size: examples per batch (the last may be shorter).
            n: number of examples to draw from (no index reaches it).
            num_workers: DataLoader workers that read the batches; 0 (default) reads them here.
            labels: also return each batch's labels.
        Returns:
            an iterator over ``(images,)`` or ``(images, labels)`` tuples: uint8 (B, C, H, W), int64 (B,).
        """
        arrays = (self.images, self.labels) if labels else (self.images,)
        return iter_batches(partial(rows, arrays), starts, batch_size, n, num_workers)

    def fingerprint(self) -> str:
        """SHA-256 of the pixels (of the files' paths, sizes and times for a folder) and labels: what cached
        codes are keyed by."""
        h = hashlib.sha256()
        h.update(str(tuple(self.images.shape)).encode())
        if isinstance(self.images, ImageFiles):
            self.images.digest(h)
        else:
            h.update(self.images.contiguous().numpy().tobytes())
        h.update(self.labels.numpy().astype(np.int64).tobytes())
        return h.hexdigest()


def _check_native(images: np.ndarray, origin: str, image_size: int | None, channels: int | None) -> None:
    """Refuse a requested size or channel count that a fixed-format dataset does not have."""
    _, native_channels, height, width = images.shape
    if channels is not None and channels != native_channels:
        raise VQVAEError(
            f"{origin} has {native_channels} channel(s) per image, but {channels} were requested"
        )
    if image_size is not None and (height, width) != (image_size, image_size):
        raise VQVAEError(
            f"{origin} images are {height}x{width}, but image size {image_size} was requested "
            "(IDX and CIFAR-10 data is not resized)"
        )


def _load_cifar_named(split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    dirs = cifar_search_dirs()
    for directory in dirs:
        if is_cifar_dir(directory):
            return load_cifar_dir(directory, split)
    raise VQVAEError(
        f"CIFAR-10 not found in {' or '.join(map(short_path, dirs))}: download cifar-10-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html and extract it into ~/.cache/vqvae "
        "(or $VQVAE_DATA_DIR), or pass --data DIR"
    )


def load_images(
    spec: str,
    split: str = "train",
    *,
    image_size: int | None = None,
    channels: int | None = None,
    download: bool = True,
) -> ImageDataset:
    """One split of a dataset: IDX and CIFAR-10 data read into memory, an image folder read on demand.

    Args:
        spec: ``"fashion-mnist"``, ``"mnist"``, ``"cifar10"`` or a directory (the names win: write
            ``./mnist`` for a directory called mnist).
        split: ``"train"`` or ``"test"``.
        image_size: resizes image folders (shorter side, then centre crop); must equal the native size of
            IDX and CIFAR-10 data (None: native).
        channels: 1 or 3; converts image folders (None: RGB), must be the native count of IDX and CIFAR-10.
        download: let Fashion-MNIST and MNIST be fetched into ``~/.cache/vqvae`` when not found.
    Returns:
        the :class:`ImageDataset`: images uint8 ``(N, C, H, W)`` and labels int64 ``(N,)``.
    Raises:
        VQVAEError: an unknown split or dataset, bad options, unreadable data, or data of another size.
    """
    if split not in SPLITS:
        raise VQVAEError(f"unknown split {split!r}: expected 'train' or 'test'")
    if channels not in (None, 1, 3):
        raise VQVAEError(f"channels must be 1 or 3, got {channels}")
    if image_size is not None and image_size < 1:
        raise VQVAEError(f"image size must be a positive number of pixels, got {image_size}")

    if spec in IDX_DATASETS:
        images, labels, source = load_idx_named(spec, split, download=download)
        classes, origin = list(source.classes), source.title
    elif spec == "cifar10":
        (images, labels, classes), origin = _load_cifar_named(split), "CIFAR-10"
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise VQVAEError(
                f"unknown dataset {spec!r}: not one of {', '.join([*IDX_DATASETS, 'cifar10'])} "
                "and no such directory"
            )
        if not path.is_dir():
            raise VQVAEError(f"{path} is a file; pass the directory that holds the dataset")
        origin = str(path)
        if is_idx_dir(path):
            images, labels = load_idx_dir(path, split)
            # A copy of a known dataset in a folder of its own name keeps that dataset's class names.
            known = IDX_DATASETS.get(path.resolve().name)
            top = int(labels.max(initial=-1)) + 1
            classes = list(known.classes) if known else [str(label) for label in range(top)]
        elif is_cifar_dir(path):
            images, labels, classes = load_cifar_dir(path, split)
        else:
            files, labels, classes = image_folder_files(path, split, image_size=image_size, channels=channels)
            return ImageDataset(files, torch.from_numpy(labels), classes, f"{path.resolve().name}/{split}")
        spec = path.resolve().name
    _check_native(images, origin, image_size, channels)
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), classes, f"{spec}/{split}")


def load_images_for(config: ImageModelConfig, spec: str, split: str) -> ImageDataset:
    """``split`` of ``spec`` at the image size and channel count of a VQ-VAE with ``config``; refused with a
    one-line error when the data cannot have that size.

    Args:
        config: the VQ-VAE's architecture (its ``image_size`` and ``in_channels``).
        spec: the dataset, as :func:`load_images` takes it.
        split: ``"train"`` or ``"test"``.
    Returns:
        the :class:`ImageDataset`, its images (N, in_channels, image_size, image_size).
    Raises:
        VQVAEError: the data cannot be loaded, or not at the model's size.
    """
    data = load_images(spec, split, image_size=config.image_size, channels=config.in_channels)
    _, c, h, w = tuple(data.images.shape)
    want = (config.in_channels, config.image_size, config.image_size)
    if (c, h, w) != want:
        raise VQVAEError(
            f"{data.name} images are {c}x{h}x{w} but the model expects {want[0]}x{want[1]}x{want[2]}:"
            f" set model.in_channels={c} model.image_size={h}, or use a recipe made for this data"
        )
    return data


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape) -> float32 in [0, 1].

    Args:
        images_uint8: uint8 tensor of any shape.
    Returns:
        a float32 tensor of the same shape, divided by 255.
    """
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images, got {images_uint8.dtype}")
    return images_uint8.to(torch.float32).div_(255.0)


def to_uint8(images_float: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] (any shape) -> uint8, rounded to nearest and clamped to [0, 255].

    Args:
        images_float: floating-point tensor of any shape.
    Returns:
        a uint8 tensor of the same shape.
    """
    if not images_float.is_floating_point():
        raise TypeError(f"to_uint8 expects floating-point images, got {images_float.dtype}")
    return (images_float.detach().float() * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def image_grid(images: torch.Tensor, nrow: int, padding: int = 2,
               row_names: list[str] | None = None) -> np.ndarray:
    """``images`` ``(N, C, H, W)`` (C in {1, 3}; float in [0, 1] or uint8) as one grid of pixels, ``nrow``
    to a row, ``cols * (W + padding) + padding`` wide and ``rows * (H + padding) + padding`` high; with
    ``row_names``, each row's name is written in a margin on its left.

    Args:
        images: (N, C, H, W) images, N >= 1, C in {1, 3}; float in [0, 1] or uint8.
        nrow: images per row (fewer if N is smaller), >= 1.
        padding: black pixels between and around the images, >= 0.
        row_names: the name of each row (as many as rows, or fewer: the rest unnamed); None: no margin.
    Returns:
        (height, width) uint8 pixels for grayscale images, (height, width, 3) for colour ones.
    Raises:
        VQVAEError: an empty batch or one of the wrong shape, or a bad ``nrow`` or ``padding``.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise VQVAEError("image grids need a non-empty (N, 1 or 3, H, W) batch, "
                         f"got {list(images.shape)}")
    if nrow < 1 or padding < 0:
        raise VQVAEError(f"image grids need nrow >= 1 and padding >= 0, got {nrow} and {padding}")
    pixels = (images if images.dtype == torch.uint8 else to_uint8(images)).detach().cpu().numpy()
    count, channels, height, width = pixels.shape
    cols = min(nrow, count)
    rows = math.ceil(count / cols)
    grid = np.zeros(
        (channels, rows * (height + padding) + padding, cols * (width + padding) + padding), dtype=np.uint8
    )
    for index in range(count):
        top = padding + (index // cols) * (height + padding)
        left = padding + (index % cols) * (width + padding)
        grid[:, top:top + height, left:left + width] = pixels[index]
    grid = grid[0] if channels == 1 else grid.transpose(1, 2, 0)
    return grid if row_names is None else _name_rows(grid, row_names[:rows], height + padding, padding)


def _name_rows(grid: np.ndarray, names: list[str], pitch: int, padding: int) -> np.ndarray:
    """``grid`` with a black margin on its left holding each row's name, in white, level with its row."""
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    margin = 6 + max((math.ceil(measure.textlength(n, font=font)) for n in names), default=0)
    image = Image.fromarray(grid)
    canvas = Image.new(image.mode, (grid.shape[1] + margin, grid.shape[0]))
    canvas.paste(image, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    white = 255 if grid.ndim == 2 else (255, 255, 255)
    for row, name in enumerate(names):
        middle = padding + row * pitch + (pitch - padding) / 2
        draw.text((3, middle), name, fill=white, font=font, anchor="lm")
    return np.asarray(canvas)


def save_image_grid(images: torch.Tensor, path: str | os.PathLike[str], nrow: int, padding: int = 2,
                    row_names: list[str] | None = None) -> None:
    """Write :func:`image_grid` of ``images`` as a PNG file, atomically (a temporary file in the target
    directory, then ``os.replace``; missing parent directories are created).

    Args:
        images: (N, C, H, W) images, N >= 1, C in {1, 3}; float in [0, 1] or uint8.
        path: the PNG file to write.
        nrow: images per row (fewer if N is smaller), >= 1.
        padding: black pixels between and around the images, >= 0.
        row_names: the name of each row, written on its left; None: none.
    Raises:
        VQVAEError: an empty batch or one of the wrong shape, or a bad ``nrow`` or ``padding``.
    """
    encoded = io.BytesIO()
    Image.fromarray(image_grid(images, nrow, padding, row_names)).save(encoded, format="PNG")
    atomic_write_bytes(path, encoded.getvalue())
