"""Speech corpora: WAV files in speaker folders, split into train and test, and fixed-length training crops.

A corpus is a directory with one sub-folder per speaker holding ``*.wav`` files (PCM 8/16/24/32-bit, any
sample rate, mono or stereo: channels are averaged, then resampled to the configured rate). Utterances are
split into train and test by a seeded shuffle of each speaker's files, so every speaker is in both splits.
An optional ``utterances.tsv`` at the corpus root (columns ``file``, ``class``, ``split``; ``file`` as
``speaker/name.wav``) gives every utterance a class (what is said, e.g. the digit) and, where its ``split``
column is filled, a fixed split instead of the shuffle.
Waveforms are float32 in [-1, 1]; the models see them as 256 mu-law classes
(:func:`vqvae.likelihoods.mu_law_encode`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vqvae.data.audio.wav import read_wav, resample, resampled_length, wav_frames
from vqvae.errors import VQVAEError
from vqvae.fileio import atomic_write_bytes, hash_file_stamps

__all__ = ["UTTERANCES", "SpeechDataset", "WaveFiles", "corpus_speakers", "crop_starts", "crops",
           "load_speech", "random_crops", "read_utterances", "split_files", "write_utterances"]

UTTERANCES = "utterances.tsv"  # optional, at a corpus's root: every file's class and split
_COLUMNS = ("file", "class", "split")

# -- corpora --------------------------------------------------------------------------------------
class WaveFiles(Sequence):
    """The utterances of a split, read from their files (and resampled) when indexed, never all at once:
    ``files[i]`` is float32 ``(T_i,)`` at ``sample_rate``. ``lengths`` (samples at ``sample_rate``) come from
    the WAV headers, so crops can be planned without reading a file. Paths are one numpy byte array, which
    worker processes forked from this one share instead of copying.

    Args:
        paths: the WAV files, in order.
        sample_rate: the rate every utterance is resampled to, in Hz.
    Raises:
        VQVAEError: a file whose header cannot be read, or that holds no samples.
    """

    def __init__(self, paths: list[str], sample_rate: int):
        self.paths = np.array([str(p).encode() for p in paths], dtype=np.bytes_)
        self.sample_rate = sample_rate
        lengths = []
        for path in paths:
            frames, rate = wav_frames(path)
            if frames == 0:
                raise VQVAEError(f"{path} holds no audio samples")
            lengths.append(resampled_length(frames, rate, sample_rate))
        self.lengths = np.array(lengths, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return [self[i] for i in range(len(self))[key]]
        x, rate = read_wav(self.paths[key].decode())
        return resample(x, rate, self.sample_rate)

    def digest(self, h) -> None:
        """Feed what identifies these utterances (paths, sizes, modification times) to hash ``h``.

        Args:
            h: a ``hashlib`` hash object, updated in place.
        """
        hash_file_stamps(h, self.paths)


@dataclass
class SpeechDataset:
    """One split of a corpus: ``waves[i]`` float32 (T_i,) at ``sample_rate``, spoken by
    ``speakers[labels[i]]``; ``paths[i]`` is its file. ``waves`` is a list in memory or a :class:`WaveFiles`
    that reads each utterance when it is indexed (what :func:`load_speech` gives). Where the corpus has
    classes (``utterances.tsv``), utterance i says ``class_names[classes[i]]``; ``classes`` is empty when it
    has none."""

    waves: Sequence[np.ndarray]
    labels: list[int]
    speakers: list[str]
    paths: list[str]
    sample_rate: int
    name: str
    classes: list[int] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.waves)

    @property
    def lengths(self) -> np.ndarray:
        """Samples of each utterance, (N,) int64 (without reading a file)."""
        if isinstance(self.waves, WaveFiles):
            return self.waves.lengths
        return np.array([len(w) for w in self.waves], dtype=np.int64)

    @property
    def seconds(self) -> float:
        return float(self.lengths.sum()) / self.sample_rate

    def fingerprint(self) -> str:
        """SHA-256 of the rate, the samples (for files: their paths, sizes and times) and the speaker labels:
        what cached codes are keyed by."""
        h = hashlib.sha256(f"{self.sample_rate}:{len(self)}".encode())
        h.update(np.asarray(self.labels, dtype=np.int64).tobytes())
        if self.classes:
            h.update(("|".join(self.class_names) + "|").encode()
                     + np.asarray(self.classes, dtype=np.int64).tobytes())
        if isinstance(self.waves, WaveFiles):
            self.waves.digest(h)
        else:
            for w in self.waves:
                h.update(np.ascontiguousarray(w).tobytes())
        return h.hexdigest()


def corpus_speakers(root: str | Path) -> list[str]:
    """Sorted names of the speaker sub-folders that hold at least one .wav file.

    Args:
        root: the corpus directory.
    Returns:
        the speaker names, sorted.
    Raises:
        VQVAEError: ``root`` is not a directory, or has no speaker sub-folder with a .wav file.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise VQVAEError(f"speech corpus not found: {root} (make one with `vqvae data speech --out {root}`)")
    speakers = sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("*.wav")))
    if not speakers:
        raise VQVAEError(f"{root} has no speaker sub-folders with .wav files")
    return speakers


def write_utterances(path: str | Path, rows: Sequence[tuple[str, str, str]]) -> None:
    """Write ``utterances.tsv``: one (file as ``speaker/name.wav``, class, split) row per utterance.

    Args:
        path: the file to write (atomically), with a header line.
        rows: ``(file, class, split)`` of every utterance.
    """
    lines = ["\t".join(_COLUMNS)] + ["\t".join(row) for row in rows]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def read_utterances(root: str | Path) -> dict[str, tuple[str, str]]:
    """``speaker/name.wav`` -> (class, split) from the corpus's ``utterances.tsv`` ({} when it has none); a
    class or split may be empty, a split is ``train``, ``test`` or empty.

    Args:
        root: the corpus directory.
    Returns:
        the table of every row's file -> ``(class, split)``.
    Raises:
        VQVAEError: a missing header or a malformed row.
    """
    path = Path(root).expanduser() / UTTERANCES
    if not path.exists():
        return {}
    lines = path.read_text().splitlines()
    if not lines or tuple(lines[0].split("\t")) != _COLUMNS:
        raise VQVAEError(f"{path}: the first line must be the header {chr(9).join(_COLUMNS)!r} "
                         "(tab-separated)")
    table = {}
    for n, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != 3 or cells[2] not in ("train", "test", ""):
            raise VQVAEError(f"{path}, line {n}: expected file, class and split (train, test or empty), "
                             f"got {line!r}")
        table[cells[0]] = (cells[1], cells[2])
    return table


def split_files(root: str | Path, split: str, test_fraction: float = 0.1, seed: int = 0,
                table: dict[str, tuple[str, str]] | None = None) -> list[tuple[Path, int]]:
    """(file, speaker index) of ``split``: the split ``utterances.tsv`` gives each file, where it gives one to
    every file; otherwise each speaker's files are shuffled with ``seed`` and the first ``test_fraction`` of
    them (at least one, when the speaker has two or more) are the test split.

    Args:
        root: the corpus directory.
        split: ``train`` or ``test``.
        test_fraction: share of each speaker's files in the test split (without fixed splits).
        seed: seed of the shuffle of each speaker's files.
        table: the corpus's :func:`read_utterances`, when the caller has read it already; None reads it.
    Returns:
        ``(file, speaker index)`` of every utterance of the split, speaker by speaker.
    Raises:
        VQVAEError: an unknown split, a bad corpus, or an ``utterances.tsv`` that misses files or splits.
    """
    if split not in ("train", "test"):
        raise VQVAEError(f"unknown split {split!r}: expected 'train' or 'test'")
    table = read_utterances(root) if table is None else table
    fixed = bool(table) and all(s for _, s in table.values())
    if table and not fixed and any(s for _, s in table.values()):
        raise VQVAEError(f"{Path(root) / UTTERANCES} gives a split to some files only: "
                         "fill every split or none")
    out = []
    for label, speaker in enumerate(corpus_speakers(root)):
        files = sorted((Path(root).expanduser() / speaker).glob("*.wav"))
        missing = [f"{speaker}/{f.name}" for f in files if table and f"{speaker}/{f.name}" not in table]
        if missing:
            raise VQVAEError(f"{Path(root) / UTTERANCES} has no row for {missing[0]} "
                             f"({len(missing)} files missing)")
        if fixed:
            out.extend((f, label) for f in files if table[f"{speaker}/{f.name}"][1] == split)
            continue
        order = np.random.default_rng(seed).permutation(len(files))
        n_test = min(len(files) - 1, max(1, round(len(files) * test_fraction))) if len(files) > 1 else 0
        chosen = order[:n_test] if split == "test" else order[n_test:]
        out.extend((files[i], label) for i in sorted(chosen))
    return out


def load_speech(root: str | Path, split: str, sample_rate: int = 16000, *, test_fraction: float = 0.1,
                seed: int = 0, in_memory: bool = False) -> SpeechDataset:
    """One split of a speaker-folder corpus, resampled to ``sample_rate`` (mono): its utterances are read
    from disk when used (:class:`WaveFiles`), or all at once with ``in_memory``.

    Args:
        root: the corpus directory.
        split: ``train`` or ``test``.
        sample_rate: the rate every utterance is resampled to, in Hz.
        test_fraction: share of each speaker's files in the test split (as :func:`split_files`).
        seed: seed of the split's shuffle.
        in_memory: read every utterance now instead of when used.
    Returns:
        the :class:`SpeechDataset` of the split, named ``<corpus>/<split>``.
    Raises:
        VQVAEError: a bad sample rate, corpus, split or file.
    """
    if sample_rate < 1:
        raise VQVAEError(f"sample rate must be positive, got {sample_rate}")
    speakers = corpus_speakers(root)
    table = read_utterances(root)
    files = split_files(root, split, test_fraction, seed, table)
    paths, labels = [str(path) for path, _ in files], [label for _, label in files]
    waves = WaveFiles(paths, sample_rate)
    names = sorted({c for c, _ in table.values() if c})
    index = {c: i for i, c in enumerate(names)}  # an utterance without a class: -1
    classes = ([index.get(table[f"{speakers[s]}/{Path(p).name}"][0], -1) for p, s in zip(paths, labels)]
               if names else [])
    return SpeechDataset(list(waves) if in_memory else waves, labels, speakers, paths, sample_rate,
                         f"{Path(root).expanduser().resolve().name}/{split}", classes, names)


def crop_starts(lengths: Sequence[int], length: int, generator: torch.Generator | None = None) -> list[int]:
    """Where a random crop of ``length`` items starts in each sequence of ``lengths`` items (0 when it is
    shorter).

    Args:
        lengths: the length of every sequence.
        length: the crop's length.
        generator: where the starts are drawn from; None: torch's global generator.
    Returns:
        the start of every crop.
    """
    return [int(torch.randint(max(1, int(n) - length + 1), (1,), generator=generator)) for n in lengths]


def crops(data: SpeechDataset, length: int, indices: list[int], starts: list[int]) -> tuple[Tensor, Tensor]:
    """The crops of ``length`` samples of utterances ``indices`` starting at ``starts`` (zero-padded at the
    end when the utterance is shorter).

    Args:
        data: the split to crop from.
        length: samples per crop.
        indices: the utterances to crop.
        starts: where each crop starts, one per index.
    Returns:
        ``(waveforms, speakers)``: (len(indices), length) float32 and (len(indices),) int64 speaker labels.
    """
    out = torch.zeros(len(indices), length)
    for row, (i, start) in enumerate(zip(indices, starts)):
        piece = torch.from_numpy(np.ascontiguousarray(data.waves[i][start : start + length]))
        out[row, : len(piece)] = piece
    return out, torch.tensor([data.labels[i] for i in indices], dtype=torch.long)


def random_crops(data: SpeechDataset, length: int, indices: list[int],
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """A random crop of ``length`` samples from each utterance ``indices[i]`` (:func:`crop_starts` with
    ``generator``, then :func:`crops`).

    Args:
        data: the split to crop from.
        length: samples per crop.
        indices: the utterances to crop.
        generator: where the starts are drawn from; None: torch's global generator.
    Returns:
        ``(waveforms, speakers)``, as :func:`crops`.
    Raises:
        VQVAEError: the split has no utterances.
    """
    if len(data) == 0:
        raise VQVAEError(f"{data.name} has no utterances")
    lengths = data.lengths
    return crops(data, length, indices, crop_starts([lengths[i] for i in indices], length, generator))
