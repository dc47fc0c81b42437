"""A folder of image files, one sub-folder per class (``root/<class>/<image>``).

* Classes are the sub-folder names in alphabetical order (label = index). A folder with images but no
  sub-folders is one class named after the folder.
* Splits: if ``root`` has both ``train/`` and ``test/`` sub-folders, each is such a class folder.
  Otherwise the split is made here, deterministically: within each class, in sorted file-name order,
  every 10th image (the 10th, 20th, ...) is a test image and the others are training images.
* Files ending in .png, .jpg, .jpeg, .bmp or .gif (any case) are read with Pillow, GIFs by their first
  frame; other files are ignored. Hidden files and folders (leading ``.``) are skipped.
* With ``image_size``, the shorter side is resized to it and the centre cropped to a square; without,
  all images must already have the same size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqvae.errors import VQVAEError
from vqvae.fileio import hash_file_stamps

__all__ = ["IMAGE_SUFFIXES", "TEST_EVERY", "ImageFiles", "image_folder_files", "load_image_folder"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif"})
TEST_EVERY = 10


def _visible_dirs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(directory: Path, prefix: str = "") -> list[str]:
    """Sorted ``prefix + name`` of the image files in ``directory`` (strings: an ImageNet class folder lists
    fast and small)."""
    with os.scandir(directory) as entries:
        names = [e.name for e in entries if not e.name.startswith(".") and e.is_file()
                 and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES]
    return [prefix + name for name in sorted(names)]


def _class_files(class_root: Path) -> tuple[list[str], list[list[str]]]:
    """Class names and, per class, its sorted image files (paths relative to ``class_root``)."""
    class_dirs = _visible_dirs(class_root)
    if not class_dirs:
        return [class_root.name], [_image_files(class_root)]
    return [d.name for d in class_dirs], [_image_files(d, f"{d.name}/") for d in class_dirs]


def _open_image(path: Path, mode: str, image_size: int | None) -> np.ndarray:
    """One image as uint8 ``(H, W)`` for mode "L" or ``(H, W, 3)`` for "RGB", resized and cropped if asked."""
    try:
        with Image.open(path) as source:
            image = source.convert(mode)
    # What Pillow raises for unknown formats, truncated or corrupt data and decompression bombs.
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise VQVAEError(f"cannot read image {path}: {err}") from None
    if image_size is not None:
        width, height = image.size
        scale = image_size / min(width, height)
        # max(..., image_size) guards against rounding the longer side below the crop size.
        new_w, new_h = max(round(width * scale), image_size), max(round(height * scale), image_size)
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left, top = (new_w - image_size) // 2, (new_h - image_size) // 2
        image = image.crop((left, top, left + image_size, top + image_size))
    return np.asarray(image)


class ImageFiles:
    """The images of one split of a folder, read from disk when indexed, never all at once: ``files[i]`` is
    uint8 ``(C, H, W)``; ``files[indices]`` (a slice, a list or a tensor of indices) is ``(B, C, H, W)``.
    ``shape`` is ``(N, C, H, W)``, from the first image (or ``image_size``). The paths are kept in one
    numpy byte array, so worker processes forked from this one share it instead of copying it page by page.

    Args:
        class_root: the folder the paths are relative to.
        paths: the image files, relative to ``class_root``, at least one.
        mode: Pillow mode to convert to, ``"L"`` (1 channel) or ``"RGB"`` (3).
        image_size: resize the shorter side to this and centre-crop a square; None keeps each size.
    Raises:
        VQVAEError: the first image cannot be read.
    """

    dtype, ndim = torch.uint8, 4

    def __init__(self, class_root: Path, paths: list[str], mode: str, image_size: int | None):
        self.root, self.mode, self.image_size = class_root, mode, image_size
        self.paths = np.array([p.encode() for p in paths], dtype=np.bytes_)
        first = self._read(0)
        self.shape = (len(paths),
                      *((first.shape[2], *first.shape[:2]) if first.ndim == 3 else (1, *first.shape)))

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, i: int) -> np.ndarray:
        return _open_image(self.root / self.paths[i].decode(), self.mode, self.image_size)

    def _image(self, i: int) -> np.ndarray:
        pixels = self._read(i)
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        if pixels.shape != self.shape[1:]:
            first, this = self.paths[0].decode(), self.paths[i].decode()
            raise VQVAEError(
                f"images in {self.root} differ in size ({first} is {self.shape[3]}x{self.shape[2]}, "
                f"{this} is {pixels.shape[2]}x{pixels.shape[1]}): "
                "pass an image size to resize and centre-crop them"
            )
        return pixels

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, tuple):  # images first, then the rest of the key on the tensor they make
            images = self[key[0]]
            return images[key[1:] if images.ndim == 3 else (slice(None), *key[1:])]
        if isinstance(key, (int, np.integer)) or (isinstance(key, torch.Tensor) and key.ndim == 0):
            return torch.from_numpy(np.array(self._image(int(key))))
        indices = range(len(self))[key] if isinstance(key, slice) else [int(i) for i in key]
        out = np.empty((len(indices), *self.shape[1:]), dtype=np.uint8)
        for row, i in enumerate(indices):
            out[row] = self._image(i)
        return torch.from_numpy(out)

    def digest(self, h) -> None:
        """Feed what identifies these images (paths, sizes, modification times, mode, size) to hash ``h``.

        Args:
            h: a ``hashlib`` hash object, updated in place.
        """
        h.update(f"{self.root}|{self.mode}|{self.image_size}|{self.shape}".encode())
        hash_file_stamps(h, self.paths, self.root)


def image_folder_files(
    root: Path, split: str, *, image_size: int | None = None, channels: int | None = None
) -> tuple[ImageFiles, np.ndarray, list[str]]:
    """The images (:class:`ImageFiles`, read when indexed), labels ``(N,)`` int64 and class names of one
    split of ``root``. See the module docstring for the layout.

    Args:
        root: the image folder.
        split: ``"train"`` or ``"test"``.
        image_size: resize the shorter side to this and centre-crop a square; None keeps each size.
        channels: 1 converts to grayscale, 3 or None to RGB.
    Returns:
        ``(images, labels, classes)``.
    Raises:
        VQVAEError: no images, none in the split, or the first image unreadable.
    """
    has_splits = {"train", "test"} <= {d.name for d in _visible_dirs(root)}
    class_root = root / split if has_splits else root
    classes, files = _class_files(class_root)
    if has_splits:
        # One class list for both splits (their union), so a label means the same class in each.
        names = sorted({d.name for s in ("train", "test") for d in _visible_dirs(root / s)})
        if names:
            by_name = dict(zip(classes, files))
            classes, files = names, [by_name.get(n, []) for n in names]
    if not any(files):
        raise VQVAEError(
            f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {class_root} or its class sub-folders"
        )
    if not has_splits:
        keep_test = split == "test"
        files = [[p for i, p in enumerate(fs) if ((i + 1) % TEST_EVERY == 0) == keep_test] for fs in files]
    samples = [(path, label) for label, fs in enumerate(files) for path in fs]
    if not samples:
        raise VQVAEError(
            f"{root} has no {split} images: with no train/ and test/ sub-folders every {TEST_EVERY}th "
            f"image of each class is a test image, and no class has {TEST_EVERY}"
        )
    mode = "L" if channels == 1 else "RGB"
    images = ImageFiles(class_root, [path for path, _ in samples], mode, image_size)
    return images, np.array([label for _, label in samples], dtype=np.int64), classes


def load_image_folder(
    root: Path, split: str, *, image_size: int | None = None, channels: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Like :func:`image_folder_files`, with every image read into one ``(N, C, H, W)`` uint8 array.

    Args:
        root: the image folder.
        split: ``"train"`` or ``"test"``.
        image_size: resize the shorter side to this and centre-crop a square; None keeps each size.
        channels: 1 converts to grayscale, 3 or None to RGB.
    Returns:
        ``(images, labels, classes)``: uint8 ``(N, C, H, W)``, int64 ``(N,)`` and the class names.
    Raises:
        VQVAEError: no images, an unreadable image, or images of different sizes without ``image_size``.
    """
    images, labels, classes = image_folder_files(root, split, image_size=image_size, channels=channels)
    return images[:].numpy(), labels, classes
