"""A multi-speaker speech corpus made on the spot with espeak-ng, so the audio pipeline needs no download.

``synthesize_corpus(out)`` writes ``out/<speaker>/<speaker>_NNN.wav`` (16-bit mono at 16 kHz) and
``out/sentences.tsv``. The sentences come from a small grammar drawn with a fixed seed (hundreds of distinct
ones); every speaker is an espeak-ng voice variant with its own pitch and speed, and reads its own seeded
selection of the sentences. The same arguments always give the same corpus (for one espeak-ng version).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from vqvae.data.audio.wav import read_wav, resample, write_wav
from vqvae.errors import VQVAEError
from vqvae.fileio import atomic_write_bytes

__all__ = ["SPEAKERS", "sentences", "synthesize_corpus"]

# name, espeak-ng voice (language + variant), pitch 0-99, words per minute
SPEAKERS = [
    ("us_m1", "en-us+m1", 40, 150),
    ("us_f2", "en-us+f2", 62, 160),
    ("gb_m3", "en-gb+m3", 32, 140),
    ("gb_f4", "en-gb+f4", 72, 170),
    ("scot_m5", "en-gb-scotland+m5", 48, 155),
    ("carib_f1", "en-029+f1", 55, 150),
    ("rp_m7", "en-gb-x-rp+m7", 25, 165),
    ("us_f5", "en-us+f5", 85, 145),
]

_SUBJECTS = ["the old farmer", "a young doctor", "my neighbour", "the tall sailor", "our teacher",
             "the baker", "a quiet student", "the captain", "her brother", "the small child", "a busy lawyer",
             "the painter"]
_VERBS = ["found", "carried", "painted", "opened", "sold", "watched", "cleaned", "borrowed", "repaired",
          "described", "forgot", "wanted"]
_OBJECTS = ["a red bicycle", "the wooden door", "seven green apples", "an empty bottle", "the heavy box",
            "a strange letter", "the broken clock", "two silver coins", "a warm blanket", "the yellow kite",
            "an old map", "the blue umbrella"]
_PLACES = ["near the river", "in the morning", "before dinner", "at the station", "behind the church",
           "during the storm", "on a cold evening", "by the harbour", "after the meeting", "in the garden"]
_ENDINGS = ["", "and smiled", "without a word", "for the third time", "very slowly", "with great care"]


def sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct sentences drawn from the grammar with ``seed``.

    Args:
        count: number of sentences.
        seed: seed of the draws.
    Returns:
        the sentences, each capitalised and ending with a full stop.
    Raises:
        VQVAEError: ``count`` is more than the grammar can make.
    """
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen: set[str] = set()
    limit = len(_SUBJECTS) * len(_VERBS) * len(_OBJECTS) * len(_PLACES) * len(_ENDINGS)
    if count > limit:
        raise VQVAEError(f"the grammar makes at most {limit} distinct sentences, asked for {count}")
    while len(out) < count:
        words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_PLACES),
                 rng.choice(_ENDINGS)]
        text = " ".join(w for w in words if w)
        text = text[0].upper() + text[1:] + "."
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def _trim(x: np.ndarray, rate: int, threshold: float = 1e-3, margin: float = 0.05) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > threshold)
    if len(loud) == 0:
        return x
    pad = int(margin * rate)
    return x[max(0, loud[0] - pad) : loud[-1] + pad + 1]


def synthesize_corpus(out: str | Path, *, num_sentences: int = 300, per_speaker: int = 100,
                      num_speakers: int = len(SPEAKERS), sample_rate: int = 16000, seed: int = 0,
                      overwrite: bool = False, progress: bool = True) -> dict:
    """Write the corpus into ``out`` and return a summary (speakers, utterances, hours).

    Args:
        out: the corpus directory (new or empty unless ``overwrite``).
        num_sentences: distinct sentences drawn from the grammar.
        per_speaker: sentences each speaker reads, 1..``num_sentences``.
        num_speakers: how many of :data:`SPEAKERS` speak, from the first.
        sample_rate: the WAV files' sample rate in Hz.
        seed: seed of the sentences and of each speaker's selection.
        overwrite: write into ``out`` even if it is not empty.
        progress: show a progress bar.
    Returns:
        a summary: ``out``, ``speakers``, ``utterances``, ``distinct_sentences``, ``hours``, ``sample_rate``.
    Raises:
        VQVAEError: no espeak-ng, bad counts, a non-empty ``out``, or espeak-ng failing.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise VQVAEError("espeak-ng not found: install Debian's espeak-ng (`apt-get install espeak-ng`; "
                         "`make demo-audio` does it when run as root)")
    if not 1 <= num_speakers <= len(SPEAKERS):
        raise VQVAEError(f"num_speakers must be in 1..{len(SPEAKERS)}, got {num_speakers}")
    if not 1 <= per_speaker <= num_sentences:
        raise VQVAEError(f"per_speaker must be in 1..num_sentences ({num_sentences}), got {per_speaker}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise VQVAEError(f"{out} already exists and is not empty: pass --overwrite to replace it")
    texts = sentences(num_sentences, seed)
    rng = np.random.default_rng(seed + 1)
    rows = ["file\tspeaker\ttext"]
    seconds = 0.0
    from tqdm import tqdm

    bar = tqdm(total=num_speakers * per_speaker, desc="espeak-ng", unit="utt", disable=not progress)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_wav = Path(tmp) / "utt.wav"
        for name, voice, pitch, speed in SPEAKERS[:num_speakers]:
            for n, i in enumerate(sorted(rng.choice(num_sentences, per_speaker, replace=False))):
                cmd = [exe, "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(tmp_wav), texts[i]]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise VQVAEError(f"espeak-ng failed for voice {voice}: "
                                     f"{done.stderr.strip().splitlines()[:1]}")
                x, rate = read_wav(tmp_wav)
                x = _trim(resample(x, rate, sample_rate), sample_rate)
                rel = f"{name}/{name}_{n:03d}.wav"
                write_wav(out / rel, x, sample_rate)
                rows.append(f"{rel}\t{name}\t{texts[i]}")
                seconds += len(x) / sample_rate
                bar.update()
    bar.close()
    atomic_write_bytes(out / "sentences.tsv", ("\n".join(rows) + "\n").encode())
    return {"out": str(out), "speakers": [s[0] for s in SPEAKERS[:num_speakers]], "utterances": len(rows) - 1,
            "distinct_sentences": num_sentences, "hours": seconds / 3600, "sample_rate": sample_rate}
