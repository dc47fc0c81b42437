"""Judges of the codes themselves: probes that tell an utterance's speaker (or what it says) from its code
sequence alone. A bottleneck that holds the words and not the voice has a speaker probe near chance and a
content probe well above it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from vqvae.data.audio import SpeechDataset
from vqvae.devices import model_device
from vqvae.judges.audio import LogisticClassifier

if TYPE_CHECKING:
    from vqvae.models import AudioVQVAE

__all__ = ["CodeProbe", "code_features", "probe_codes"]


def code_features(codes: list[np.ndarray | Tensor], num_embeddings: int,
                  bigram_buckets: int = 1024, unigram_buckets: int = 4096) -> Tensor:
    """What an utterance's codes say when their order within the utterance is forgotten: the frequency of
    every code (K, or K hashed into ``unigram_buckets`` when there are more) and of every pair of successive
    codes, hashed into ``bigram_buckets``. A voice that speaks through its own codes (or its own code
    transitions) shows in these counts.

    Args:
        codes: one code sequence per utterance (any shape, flattened), integers in [0, K).
        num_embeddings: K, the number of codes.
        bigram_buckets: number of buckets of the pairs of successive codes (hashed beyond K^2 of them).
        unigram_buckets: the most code frequencies kept apart (a residual stack's K^Q codes are hashed).
    Returns:
        (len(codes), min(K, unigram_buckets) + bigram_buckets) float32: code frequencies, then pair
        frequencies (zeros when empty).
    """
    k, u = num_embeddings, min(num_embeddings, unigram_buckets)
    out = torch.zeros(len(codes), u + bigram_buckets, dtype=torch.float64)
    for row, c in enumerate(codes):
        c = torch.as_tensor(np.asarray(c), dtype=torch.long).flatten()
        if len(c) == 0:
            continue
        hashed = c if u == k else _mix(c) % u
        out[row, :u] = torch.bincount(hashed, minlength=u)[:u].double() / len(c)
        if len(c) > 1:
            pairs = c[:-1] * k + c[1:]  # every pair its own bucket where they fit, else hashed
            pairs = pairs if k * k <= bigram_buckets else _mix(pairs) % bigram_buckets
            out[row, u:] = torch.bincount(pairs, minlength=bigram_buckets).double() / (len(c) - 1)
    return out.float()


def _mix(x: Tensor) -> Tensor:
    """A hash of non-negative int64 values whose every bit reaches the low bits (splitmix64's finaliser on
    the low 62 bits): its residues spread a residual stack's codes, the first level in the high bits."""
    x = x & ((1 << 62) - 1)
    for shift, mult in ((31, 0x7FB5D329728EA185), (27, 0x01A3B1C5D7E9F1B3)):
        x = (x ^ (x >> shift)) * mult  # wraps around modulo 2^64
    return (x ^ (x >> 33)) & ((1 << 62) - 1)


class CodeProbe(LogisticClassifier):
    """A probe of the codes: logistic regression on :func:`code_features` of an utterance's code sequence,
    trained to tell its speaker (or what it says) from the codes alone. Trained on the train split's codes and
    scored on the test split's, it measures how much of the speaker the bottleneck lets through: near chance
    means the decoder gets the voice from its speaker embedding and nowhere else. ``fit`` and ``predict`` take
    code sequences in place of waveforms.

    Args:
        num_embeddings: K, size of the codebook.
        num_classes: number of classes it tells apart (speakers, or what is said).
    """

    what = "code probe"

    def __init__(self, num_embeddings: int, num_classes: int):
        super().__init__(0, num_classes)
        self.num_embeddings = num_embeddings

    def _features(self, codes) -> Tensor:
        return code_features(codes, self.num_embeddings)


@torch.no_grad()
def probe_codes(model: AudioVQVAE, train: SpeechDataset, test: SpeechDataset,
                seed: int = 0) -> dict[str, Any]:
    """The speaker probe (and, where the corpus has classes, the content probe) on the codes: a
    :class:`CodeProbe` trained on the codes of every ``train`` utterance, its accuracy on those of every
    ``test`` utterance, beside chance (the most frequent speaker's / class's share of the test split).
    Utterances shorter than one code are left out.

    Args:
        model: the audio VQ-VAE whose codes are probed.
        train: the split the probes are trained on.
        test: the split the probes are scored on.
        seed: seed of the probes' training.
    Returns:
        ``speaker_probe_accuracy``, ``speaker_probe_chance`` and, with classes, ``content_probe_accuracy``,
        ``content_probe_chance``.
    """
    dev, hop = model_device(model), model.config.hop

    def codes_of(data: SpeechDataset) -> list[np.ndarray]:
        return [model.encode(torch.from_numpy(np.ascontiguousarray(w[: len(w) // hop * hop]))[None]
                             .to(dev))[0].cpu().numpy() for w in data.waves if len(w) >= hop]

    def kept(data: SpeechDataset, values: list[int]) -> list[int]:
        return [v for w, v in zip(data.waves, values) if len(w) >= hop]

    train_codes, test_codes = codes_of(train), codes_of(test)
    out: dict[str, Any] = {}
    for name, values in (("speaker", "labels"), ("content", "classes")):
        y_train, y_test = kept(train, getattr(train, values)), kept(test, getattr(test, values))
        if name == "content" and (not train.class_names or test.class_names != train.class_names
                                  or min(y_train + y_test, default=-1) < 0):
            continue
        count = len(train.speakers) if name == "speaker" else len(train.class_names)
        probe = CodeProbe(model.config.num_codes, count).fit(train_codes, y_train, seed=seed)
        out[f"{name}_probe_accuracy"] = float((probe.predict(test_codes) == torch.tensor(y_test))
                                              .double().mean())
        out[f"{name}_probe_chance"] = float(np.bincount(y_test).max() / len(y_test))
    return out
