"""Speech corpora: WAV files in speaker folders, split into train and test, and fixed-length training crops.

A corpus is a directory with one sub-folder per speaker holding ``*.wav`` files (PCM 8/16/24/32-bit, any
sample rate, mono or stereo: channels are averaged, then resampled to the configured rate). Utterances are
split into train and test by a seeded shuffle of each speaker's files, so every speaker is in both splits.
Waveforms are float32 in [-1, 1]; the models see them as 256 mu-law classes
(:func:`vqvae.likelihoods.mu_law_encode`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vqvae.data.audio.wav import read_wav, resample
from vqvae.errors import VQVAEError

__all__ = ["SpeechDataset", "corpus_speakers", "load_speech", "random_crops", "split_files"]

# -- corpora --------------------------------------------------------------------------------------
@dataclass
class SpeechDataset:
    """One split of a corpus in memory: ``waves[i]`` float32 (T_i,) at ``sample_rate``, spoken by
    ``speakers[labels[i]]``; ``paths[i]`` is its file."""

    waves: list[np.ndarray]
    labels: list[int]
    speakers: list[str]
    paths: list[str]
    sample_rate: int
    name: str

    def __len__(self) -> int:
        return len(self.waves)

    @property
    def seconds(self) -> float:
        return sum(len(w) for w in self.waves) / self.sample_rate

    def fingerprint(self) -> str:
        """SHA-256 of the rate, the samples and the speaker labels: what cached codes are keyed by."""
        h = hashlib.sha256(f"{self.sample_rate}:{len(self)}".encode())
        for w, label in zip(self.waves, self.labels):
            h.update(np.int64(label).tobytes())
            h.update(np.ascontiguousarray(w).tobytes())
        return h.hexdigest()


def corpus_speakers(root: str | Path) -> list[str]:
    """Sorted names of the speaker sub-folders that hold at least one .wav file."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise VQVAEError(f"speech corpus not found: {root} (make one with `vqvae data speech --out {root}`)")
    speakers = sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("*.wav")))
    if not speakers:
        raise VQVAEError(f"{root} has no speaker sub-folders with .wav files")
    return speakers


def split_files(root: str | Path, split: str, test_fraction: float = 0.1, seed: int = 0) -> list[tuple[Path, int]]:
    """(file, speaker index) of ``split``: each speaker's files are shuffled with ``seed`` and the first
    ``test_fraction`` of them (at least one, when the speaker has two or more) are the test split."""
    if split not in ("train", "test"):
        raise VQVAEError(f"unknown split {split!r}: expected 'train' or 'test'")
    out = []
    for label, speaker in enumerate(corpus_speakers(root)):
        files = sorted((Path(root).expanduser() / speaker).glob("*.wav"))
        order = np.random.default_rng(seed).permutation(len(files))
        n_test = min(len(files) - 1, max(1, round(len(files) * test_fraction))) if len(files) > 1 else 0
        chosen = order[:n_test] if split == "test" else order[n_test:]
        out.extend((files[i], label) for i in sorted(chosen))
    return out


def load_speech(root: str | Path, split: str, sample_rate: int = 16000, *, test_fraction: float = 0.1,
                seed: int = 0) -> SpeechDataset:
    """Read one split of a speaker-folder corpus, resampled to ``sample_rate`` (mono)."""
    if sample_rate < 1:
        raise VQVAEError(f"sample rate must be positive, got {sample_rate}")
    speakers = corpus_speakers(root)
    waves, labels, paths = [], [], []
    for path, label in split_files(root, split, test_fraction, seed):
        x, rate = read_wav(path)
        waves.append(resample(x, rate, sample_rate))
        labels.append(label)
        paths.append(str(path))
    return SpeechDataset(waves, labels, speakers, paths, sample_rate, f"{Path(root).expanduser().resolve().name}/{split}")


def random_crops(data: SpeechDataset, length: int, indices: list[int],
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """A random crop of ``length`` samples from each utterance ``indices[i]`` (zero-padded at the end when the
    utterance is shorter): (waveforms (len(indices), length) float32, speaker labels (len(indices),)). Offsets
    come from ``generator`` (default: torch's global generator, which a resumed run restores)."""
    if len(data) == 0:
        raise VQVAEError(f"{data.name} has no utterances")
    out = torch.zeros(len(indices), length)
    for row, i in enumerate(indices):
        w = data.waves[i]
        start = int(torch.randint(max(1, len(w) - length + 1), (1,), generator=generator))
        piece = torch.from_numpy(w[start : start + length])
        out[row, : len(piece)] = piece
    return out, torch.tensor([data.labels[i] for i in indices], dtype=torch.long)
