"""Image folders (class sub-folders, resizing, splits, unreadable files) and image grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqvae.data import load_images, save_image_grid, to_float, to_uint8
from vqvae.errors import VQVAEError


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


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
    assert ds.images[:].unique().tolist() == [76]  # ITU-R 601-2 luma: 299/1000 * 255
    gray_png = tmp_path / "y" / "gray.png"
    save_png(gray_png, np.full((4, 4), 200, dtype=np.uint8))
    rgb = load_images(str(tmp_path))
    assert rgb.images.shape == (2, 3, 4, 4) and rgb.images[1].unique().tolist() == [200]


def test_folder_gif_first_frame(tmp_path):
    (tmp_path / "g").mkdir()
    frames = [Image.new("L", (4, 4), 10), Image.new("L", (4, 4), 240)]
    frames[0].save(tmp_path / "g" / "anim.gif", save_all=True, append_images=frames[1:])
    ds = load_images(str(tmp_path), channels=1)
    assert ds.images[:].unique().tolist() == [10]


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
    assert torch.equal(again.images[:], train.images[:])


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
    images = load_images(str(tmp_path)).images  # read on demand: the second image is refused when it is read
    with pytest.raises(VQVAEError, match=r"differ in size \(a/1\.png is 3x3, a/2\.png is 5x4\).*image size"):
        images[:]


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
    images = load_images(str(tmp_path)).images  # read on demand: the bad file is refused when it is read
    assert images[0].shape == (3, 8, 8)
    with pytest.raises(VQVAEError, match=r"cannot read image .*zbad\.png"):
        images[1]


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
