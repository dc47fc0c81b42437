"""An independent judge of generated images: a small CNN classifier trained on real data, whose
penultimate-layer features give a Fréchet distance between sets of images (as FID does with Inception).

Used to score samples of the prior (:func:`vqvae.judges.samples.score_image_samples`): the fraction of
class-conditional samples recognised as the requested class, and the Fréchet distance of sample features to
test-image features, next to those of held-out real images and of their reconstructions.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.data import ImageDataset, load_images, to_float
from vqvae.devices import model_device, resolve_device
from vqvae.errors import VQVAEError
from vqvae.fileio import atomic_write_json, check_out_dir
from vqvae.metrics import frechet_distance
from vqvae.models import Pretrained

__all__ = ["ImageClassifier", "ImageClassifierConfig", "accuracy", "judge", "precision_recall", "predict",
           "train_classifier", "train_classifier_run"]


@dataclass
class ImageClassifierConfig:
    in_channels: int = 1  # 1 or 3
    num_classes: int = 10
    image_size: int = 28  # side of the square images, >= 4

    def validate(self) -> None:
        for name, low in (("in_channels", 1), ("num_classes", 1), ("image_size", 4)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise VQVAEError(f"classifier {name} must be an integer >= {low}, got {value!r}")


class ImageClassifier(Pretrained, nn.Module):
    """(B, C, 28, 28)-ish images in [0, 1] -> logits (B, num_classes); ``features`` -> (B, 128).

    Args:
        config: the architecture (default: :class:`ImageClassifierConfig`'s defaults).
        **overrides: fields of the config to replace (``in_channels``, ``num_classes``, ``image_size``).
    """

    checkpoint_kind = "classifier"
    config_section = "model"

    def __init__(self, config: ImageClassifierConfig | None = None, **overrides: int):
        super().__init__()
        self.config = c = dataclasses.replace(config or ImageClassifierConfig(), **overrides)
        c.validate()
        self.body = nn.Sequential(
            nn.Conv2d(c.in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (c.image_size // 4) ** 2, 128), nn.ReLU(),
        )
        self.out = nn.Linear(128, c.num_classes)

    @classmethod
    def config_from_dict(cls, values: dict[str, Any]) -> ImageClassifierConfig:
        """The architecture from the ``model`` section of a classifier's config.json.

        Args:
            values: the ``model`` section of config.json.
        Returns:
            the validated :class:`ImageClassifierConfig`.
        Raises:
            VQVAEError: an unknown key or a field out of range.
        """
        try:
            config = ImageClassifierConfig(**values)
        except TypeError as exc:
            raise VQVAEError(f"config.json and weights do not make a classifier ({exc})") from None
        config.validate()
        return config

    def features(self, x: Tensor) -> Tensor:
        """The penultimate layer, which the Fréchet distance compares.

        Args:
            x: (B, C, H, W) images in [0, 1].
        Returns:
            (B, 128) features.
        """
        return self.body(x - 0.5)

    def forward(self, x: Tensor) -> Tensor:
        """Classify images.

        Args:
            x: (B, C, H, W) images in [0, 1].
        Returns:
            (B, num_classes) logits.
        """
        return self.out(self.features(x))


def train_classifier(train: ImageDataset, *, max_seconds: float = 60.0, epochs: int = 3,
                     batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                     device: str | torch.device | None = "cpu") -> ImageClassifier:
    """Adam on cross-entropy for ``epochs`` epochs or ``max_seconds``, whichever ends first, on ``device``.

    Args:
        train: the labelled images to train on (refused when empty).
        max_seconds: wall-time limit of the training, seconds.
        epochs: passes over ``train``, each in a new random order.
        batch_size: images per step.
        lr: Adam's learning rate.
        seed: seed of the initial weights and the order of the images.
        device: where to train (``auto``: see :func:`vqvae.devices.resolve_device`).
    Returns:
        the trained classifier, in eval mode on ``device``.
    """
    if len(train) == 0:
        raise VQVAEError(f"{train.name} has no images to train a classifier on")
    torch.manual_seed(seed)
    _, c, h, _ = train.images.shape
    dev = resolve_device(device)
    model = ImageClassifier(in_channels=c, num_classes=len(train.classes), image_size=h).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(train), generator=gen).split(batch_size):
            loss = F.cross_entropy(model(to_float(train.images[idx].to(dev))), train.labels[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if time.perf_counter() - start > max_seconds:
                return model.eval()
    return model.eval()


@torch.no_grad()
def predict(model: ImageClassifier, images: Tensor, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """Images (N, C, H, W) float in [0, 1] -> (predicted classes (N,), features (N, 128)).

    Args:
        model: the classifier (put in eval mode).
        images: (N, C, H, W) float images in [0, 1], on any device.
        batch_size: images per forward pass.
    Returns:
        (predicted classes (N,), features (N, 128)), on the CPU.
    """
    model.eval()
    preds, feats, dev = [], [], model_device(model)
    for chunk in images.split(batch_size):
        f = model.features(chunk.to(dev))
        preds.append(model.out(f).argmax(1).cpu())
        feats.append(f.cpu())
    return torch.cat(preds), torch.cat(feats)


def accuracy(model: ImageClassifier, data: ImageDataset) -> float:
    """Fraction of ``data`` classified correctly (refused when empty).

    Args:
        model: the classifier.
        data: the labelled images.
    Returns:
        the accuracy, 0..1.
    """
    if len(data) == 0:
        raise VQVAEError(f"{data.name} has no images to measure accuracy on")
    preds, _ = predict(model, to_float(data.images[:]))
    return float((preds == data.labels).double().mean())


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, arXiv:1904.06991): each set's manifold is the
    union of balls around its points, each ball reaching the point's k-th nearest neighbour in its own set.
    Precision: the fraction of ``fake`` inside the real manifold (fidelity); recall: the fraction of ``real``
    inside the fake manifold (diversity). Both grow with the sets' sizes: compare sets of equal size.

    Args:
        real: (N, F) features of real images, N > k.
        fake: (M, F) features of generated (or other) images, M > k.
        k: the neighbour that sets each ball's radius (3 as in the paper).
    Returns:
        ``(precision, recall)``, each in [0, 1].
    """
    if len(real) <= k or len(fake) <= k:
        raise VQVAEError(f"precision and recall with k={k} need more than {k} images in each set, "
                         f"got {len(real)} and {len(fake)}")
    real, fake = real.double(), fake.double()
    block = 1024  # rows of distances at a time: memory O(block * N), not O(N^2)

    def radii(x: Tensor) -> Tensor:  # each point is its own nearest neighbour, at distance 0
        return torch.cat([torch.cdist(part, x).kthvalue(k + 1, dim=1).values for part in x.split(block)])

    def inside(x: Tensor, centres: Tensor, r: Tensor) -> Tensor:  # (len(x),): within some ball
        return torch.cat([(torch.cdist(part, centres) <= r[None]).any(1) for part in x.split(block)])

    precision = inside(fake, real, radii(real)).double().mean()
    recall = inside(real, fake, radii(fake)).double().mean()
    return float(precision), float(recall)


def judge(model: ImageClassifier, target: Tensor, sets: dict[str, tuple[Tensor, Tensor | None]],
          classes: list[str]) -> dict[str, dict]:
    """Score image sets with the classifier: the Fréchet distance between each set's classifier features and
    the target's, precision and recall (:func:`precision_recall`) against as many target images as the set
    has and, with labels, the fraction classified as its label (overall and per class). Compare sets of
    equal size: the distance of a finite sample is biased upwards, more for small N, and recall grows with N.

    Args:
        model: the classifier.
        target: (M, C, H, W) real images in [0, 1].
        sets: ``name: (images (N, C, H, W) in [0, 1], labels (N,) or None)``.
        classes: the class names, indexed by label.
    Returns:
        name -> ``num_images``, ``frechet_distance``, ``precision``, ``recall`` (None for sets of 3 images or
        fewer) and, with labels, ``recognised`` and ``recognised_per_class`` (class name -> fraction).
    """
    _, target_feats = predict(model, target)
    out: dict[str, dict] = {}
    for name, (images, labels) in sets.items():
        preds, feats = predict(model, images)
        # precision and recall need more than k = 3 images a set (None below that)
        precision, recall = (precision_recall(target_feats[: len(images)], feats)
                             if min(len(images), len(target_feats)) > 3 else (None, None))
        row: dict = {"num_images": len(images), "frechet_distance": frechet_distance(feats, target_feats),
                     "precision": precision, "recall": recall}
        if labels is not None:
            hit = (preds == labels).double()
            row["recognised"] = float(hit.mean())
            row["recognised_per_class"] = {classes[c]: float(hit[labels == c].mean())
                                           for c in labels.unique().tolist()}
        out[name] = row
    return out


def train_classifier_run(out: str | Path, *, data: str = "fashion-mnist", epochs: int = 4,
                         max_seconds: float = 600.0, seed: int = 0, overwrite: bool = False,
                         device: str | None = "auto") -> dict[str, Any]:
    """``vqvae train-classifier``: train the judge on the train split of ``data`` into ``out`` (config.json,
    model.safetensors, eval.json).

    Args:
        out: the run directory to write (refused when it exists and is not empty, unless ``overwrite``).
        data: ``fashion-mnist``, ``mnist``, ``cifar10`` or a path (recorded absolute).
        epochs: passes over the train split.
        max_seconds: wall-time limit of the training, seconds.
        seed: seed of the training.
        overwrite: write into ``out`` even when it is not empty.
        device: where to train (``auto``: see :func:`vqvae.devices.resolve_device`).
    Returns:
        the metrics of eval.json: ``split``, ``test_accuracy``, ``train_seconds``, ``epochs``, ``seed``.
    """
    out = check_out_dir(out, overwrite, is_file="--out {out} is a file, not a directory",
                        not_empty="{out} already exists and is not empty: pass --overwrite to replace it")
    train, test = load_images(data, "train"), load_images(data, "test")
    start = time.perf_counter()
    model = train_classifier(train, epochs=epochs, max_seconds=max_seconds, seed=seed, device=device)
    seconds = round(time.perf_counter() - start, 1)
    metrics = {"split": test.name, "test_accuracy": accuracy(model, test), "train_seconds": seconds,
               "epochs": epochs, "seed": seed}
    # a path is recorded absolute, for use from anywhere
    named = data in ("fashion-mnist", "mnist", "cifar10")
    spec = data if named else str(Path(data).expanduser().resolve())
    model.save_pretrained(out, extra={"data": spec, "classes": train.classes, **metrics})
    atomic_write_json(out / "eval.json", metrics)
    return metrics
