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

from pathlib import Path

import numpy as np
from PIL import Image

from vqvae.errors import VQVAEError

__all__ = ["IMAGE_SUFFIXES", "TEST_EVERY", "load_image_folder"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif"})
TEST_EVERY = 10


def _visible_dirs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _class_files(class_root: Path) -> tuple[list[str], list[list[Path]]]:
    """Class names and, per class, its sorted image files."""
    class_dirs = _visible_dirs(class_root)
    if not class_dirs:
        return [class_root.name], [_image_files(class_root)]
    return [d.name for d in class_dirs], [_image_files(d) for d in class_dirs]


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


def load_image_folder(
    root: Path, split: str, *, image_size: int | None = None, channels: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images ``(N, C, H, W)`` uint8, labels ``(N,)`` int64 and class names of one split of ``root``.

    ``channels`` 1 converts to grayscale, 3 or None to RGB. See the module docstring for the layout.
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
    first = _open_image(samples[0][0], mode, image_size)
    images = np.empty((len(samples), *first.shape), dtype=np.uint8)
    images[0] = first
    for index, (path, _) in enumerate(samples[1:], start=1):
        pixels = _open_image(path, mode, image_size)
        if pixels.shape != first.shape:
            raise VQVAEError(
                f"images in {class_root} differ in size ({samples[0][0].relative_to(class_root)} is "
                f"{first.shape[1]}x{first.shape[0]}, {path.relative_to(class_root)} is "
                f"{pixels.shape[1]}x{pixels.shape[0]}): pass an image size to resize and centre-crop them"
            )
        images[index] = pixels
    images = images[:, None] if mode == "L" else images.transpose(0, 3, 1, 2)
    labels = np.array([label for _, label in samples], dtype=np.int64)
    return np.ascontiguousarray(images), labels, classes
