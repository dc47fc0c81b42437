"""Feeding the training loop (vqvae.data.loader): data read from files by DataLoader workers gives the batches
that data held in memory gives, for images and for speech crops; a resumed feed continues exactly where the
batches consumed (not those prefetched) stopped; a worker's error is one line; a run that streams an image
folder through workers trains exactly like one that reads it in the training process, resumed mid-epoch
included."""

import json
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from vqvae.data import load_images
from vqvae.data.audio import load_speech, random_crops, write_wav
from vqvae.data.images.folder import ImageFiles
from vqvae.data.loader import Batches, Feed, batch_generator, iter_batches, rows
from vqvae.errors import VQVAEError
from vqvae.recipes import load_recipe


def export_folder(root, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    """Grayscale images (N, H, W) as root/<class>/<index>.png."""
    for i, (image, label) in enumerate(zip(images, labels)):
        path = root / classes[label] / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """60 random 8x8 grayscale images in 3 classes: (the folder, its train split in memory)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 8, 8), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 20)
    root = tmp_path_factory.mktemp("folder")
    export_folder(root, images, labels, ["a", "b", "c"])
    train = [i for i in range(60) if (i % 20 + 1) % 10]  # every 10th image of a class is a test image
    return root, torch.from_numpy(images[train][:, None].copy())


def take(feed: Feed, k: int) -> list:
    return [feed.next() for _ in range(k)]


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(all(torch.equal(x, y) for x, y in zip(p, q)) for p, q in zip(a, b))


def shard(indices: torch.Tensor, number: int) -> torch.Tensor:
    return indices


def test_a_folder_is_read_on_demand_and_matches_the_images(folder):
    root, memory = folder
    files = load_images(str(root), "train", channels=1).images
    assert isinstance(files, ImageFiles) and tuple(files.shape) == tuple(memory.shape)
    assert torch.equal(files[:], memory) and torch.equal(files[[5, 0, 5]], memory[[5, 0, 5]])
    assert torch.equal(files[torch.tensor([3, 1])], memory[[3, 1]]) and torch.equal(files[7], memory[7])
    assert files[:, 0, 2, 3].tolist() == memory[:, 0, 2, 3].tolist()


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_and_in_memory_give_the_same_batches(folder, workers):
    root, memory = folder
    files = load_images(str(root), "train", channels=1).images
    expected = take(Feed(Batches(len(memory), 16, seed=3), shard, partial(rows, (memory,))), 12)  # 4 epochs
    got = take(Feed(Batches(len(files), 16, seed=3), shard, partial(rows, (files,)), num_workers=workers), 12)
    assert same(expected, got)


@pytest.mark.parametrize("k", [2, 3, 7])  # 3: at an epoch boundary (54 images, batches of 16)
def test_a_resumed_streaming_feed_continues_exactly(folder, k):
    root, _ = folder
    files = load_images(str(root), "train", channels=1).images
    fetch = partial(rows, (files,))
    whole = take(Feed(Batches(len(files), 16, seed=5), shard, fetch, num_workers=2), k + 6)
    first = Feed(Batches(len(files), 16, seed=5), shard, fetch, num_workers=2)
    assert same(take(first, k), whole[:k])
    saved = first.batches.state()  # the workers have prefetched beyond batch k; the state is that of batch k
    first.close()
    resumed = Batches(len(files), 16, seed=123)
    resumed.restore(saved)
    assert same(take(Feed(resumed, shard, fetch, num_workers=2), 6), whole[k:])


def test_a_worker_error_is_one_line(folder, tmp_path):
    image = np.zeros((8, 8), dtype=np.uint8)
    for name in ("0.png", "1.png"):
        Image.fromarray(image).save(tmp_path / name)
    (tmp_path / "1.png").write_bytes(b"not a png")  # listed, then refused when a worker reads it
    files = load_images(str(tmp_path), "train", channels=1, image_size=8).images
    feed = Feed(Batches(2, 2, seed=0), shard, partial(rows, (files,)), num_workers=1)
    with pytest.raises(VQVAEError) as err:
        feed.next()
    assert str(err.value).startswith("cannot read image") and "1.png" in str(err.value)
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)
    with pytest.raises(VQVAEError, match="^cannot read image"):
        list(iter_batches(partial(rows, (files,)), [0], 2, 2, num_workers=1))


def test_iter_batches_gives_the_same_batches_with_and_without_workers(folder):
    root, memory = folder
    files = load_images(str(root), "train", channels=1).images
    starts = range(0, len(files), 10)
    here = list(iter_batches(partial(rows, (files,)), starts, 10, len(files)))
    there = list(iter_batches(partial(rows, (files,)), starts, 10, len(files), num_workers=2))
    assert same(here, there) and torch.equal(torch.cat([b[0] for b in there]), memory)


def test_speech_files_have_their_header_lengths_and_the_in_memory_crops(tmp_path):
    t = np.arange(2205) / 22050  # 0.1 s at 22.05 kHz, resampled to 16 kHz when read
    for speaker, f0 in (("s1", 150.0), ("s2", 300.0)):
        for i in range(3):
            write_wav(tmp_path / speaker / f"{i}.wav", 0.3 * np.sin(2 * np.pi * f0 * (i + 1) * t), 22050)
    files = load_speech(tmp_path, "train", 16000)
    memory = load_speech(tmp_path, "train", 16000, in_memory=True)
    assert isinstance(memory.waves, list) and not isinstance(files.waves, list)
    assert files.lengths.tolist() == [len(w) for w in memory.waves] == [1600] * 4
    assert all(np.array_equal(a, b) for a, b in zip(files.waves, memory.waves))
    assert files.fingerprint() == load_speech(tmp_path, "train", 16000).fingerprint()
    for number in (1, 2):
        a = random_crops(files, 1000, [0, 3, 1], batch_generator(0, number))
        b = random_crops(memory, 1000, [0, 3, 1], batch_generator(0, number))
        assert all(torch.equal(x, y) for x, y in zip(a, b))


# -- whole runs ---------------------------------------------------------------------------------------------
TINY = ["model.hidden=8", "model.res_hidden=4", "model.num_res_layers=1", "model.embedding_dim=4",
        "model.num_embeddings=8", "model.image_size=8", "train.batch_size=16", "train.warmup_steps=1",
        "train.eval_batches=1", "train.log_every=1",
        # constant: a run cut short and resumed has the learning rates of an uninterrupted one
        "train.schedule=constant"]


def train_folder(root, out, steps: int, workers: int, resume: bool = False) -> dict[str, torch.Tensor]:
    from vqvae.train import train_image_and_evaluate
    from vqvae.train.loop import resume_recipe

    overrides = [f"train.steps={steps}", f"train.num_workers={workers}"]
    recipe = resume_recipe(out, overrides) if resume else load_recipe(
        "fashion_mnist", [*TINY, *overrides, f"train.data={root}", "model.in_channels=1"])
    train_image_and_evaluate(recipe, out, progress=False, resume=resume, device="cpu")
    from safetensors.torch import load_file

    return load_file(out / "model.safetensors")


@pytest.mark.slow
def test_a_streamed_run_trains_like_an_in_process_one_and_resumes_mid_epoch(folder, tmp_path):
    root, _ = folder
    here = train_folder(root, tmp_path / "here", 5, workers=0)
    workers = train_folder(root, tmp_path / "workers", 5, workers=2)
    assert here.keys() == workers.keys() and all(torch.equal(here[k], workers[k]) for k in here)
    train_folder(root, tmp_path / "resumed", 2, workers=2)  # 54 images, batches of 16: stops mid-epoch
    resumed = train_folder(root, tmp_path / "resumed", 5, workers=2, resume=True)
    assert all(torch.equal(here[k], resumed[k]) for k in here)
    assert json.loads((tmp_path / "resumed" / "eval.json").read_text())["step"] == 5
