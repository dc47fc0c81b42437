import numpy as np
import pytest
import torch

from vqvae.data import ImageDataset
from vqvae.judges.image import ImageClassifier, predict, train_classifier
from vqvae.metrics import frechet_distance


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3)) * [1.0, 2.0, 0.5] + [1.0, 0.0, -1.0]
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    b = rng.normal(size=(20000, 3)) * [3.0, 1.0, 0.5] + [0.0, 0.0, 1.0]
    # independent axes: ||mu_a - mu_b||^2 + sum (sigma_a - sigma_b)^2 = (1 + 0 + 4) + (4 + 1 + 0) = 10
    assert frechet_distance(a, b) == pytest.approx(10.0, rel=0.03)


@pytest.mark.slow
def test_classifier_learns_real_images_and_round_trips(small_fmnist, tmp_path):
    from vqvae.data import load_images, to_float

    train = load_images(str(small_fmnist), "train")
    test = load_images(str(small_fmnist), "test")
    model = train_classifier(train, epochs=8, max_seconds=60)
    preds, feats = predict(model, to_float(test.images))
    assert feats.shape == (len(test), 128)
    assert (preds == test.labels).float().mean() > 0.6  # 512 training images, 10 classes (chance: 0.1)
    model.save_pretrained(tmp_path / "clf")
    again = ImageClassifier.from_pretrained(tmp_path / "clf")
    assert torch.equal(predict(again, to_float(test.images[:5]))[0], preds[:5])


def test_empty_training_set_is_refused():
    empty = ImageDataset(torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.long),
                         ["a"], "x")
    with pytest.raises(ValueError, match="no images"):
        train_classifier(empty)
