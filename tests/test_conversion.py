"""Speaker conversion: the judge (a speaker classifier and the pitch) on synthetic "speakers" whose answers
are known -- harmonic tones at clearly different pitches -- and the conversion evaluation that feeds it."""

import json
import re

import numpy as np
import pytest
import torch

from vqvae.config import AudioModelConfig
from vqvae.data.audio import SpeechDataset, read_wav, write_wav
from vqvae.errors import VQVAEError
from vqvae.evaluate import evaluate_conversion
from vqvae.judges.audio import judge_conversion
from vqvae.models import AudioVQVAE

RATE = 8000
# each synthetic speaker: a fundamental and a timbre (how fast the harmonics fall off)
VOICES = {"low": (100.0, 0.8), "mid": (200.0, 0.6), "high": (300.0, 0.45)}


def tone(f0: float, timbre: float, rng: np.random.Generator, seconds: float = 1.0) -> np.ndarray:
    """A harmonic tone (five harmonics, amplitude timbre^h, random phases) at ``f0`` with slight variation in
    pitch and loudness, as different utterances of one voice."""
    t = np.arange(int(seconds * RATE)) / RATE
    f = f0 * (1 + rng.uniform(-0.02, 0.02))
    x = sum(timbre**h * np.sin(2 * np.pi * h * f * t + rng.uniform(0, 2 * np.pi)) for h in range(1, 6))
    x = x / np.abs(x).max() * rng.uniform(0.3, 0.6) + 1e-3 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def corpus(voices: dict[str, tuple[float, float]], per_speaker: int, seed: int, name: str) -> SpeechDataset:
    rng = np.random.default_rng(seed)
    speakers = sorted(voices)
    waves, labels, paths = [], [], []
    for label, s in enumerate(speakers):
        for i in range(per_speaker):
            waves.append(tone(*voices[s], rng))
            labels.append(label)
            paths.append(f"{s}/{name}{i}.wav")
    return SpeechDataset(waves, labels, speakers, paths, RATE, name)


@pytest.fixture(scope="module")
def data():
    return corpus(VOICES, 5, seed=0, name="train"), corpus(VOICES, 2, seed=1, name="test")


def voice_of(test: SpeechDataset, label: int, rng: np.random.Generator) -> np.ndarray:
    return tone(*VOICES[test.speakers[label]], rng)


# speakers in sorted order: high=0 (300 Hz), low=1 (100 Hz), mid=2 (200 Hz)
SOURCES, TARGETS = [0, 1, 2, 1], [1, 2, 0, 0]


@pytest.mark.slow
def test_conversions_that_sound_like_their_target(data):
    train, test = data
    rng = np.random.default_rng(2)
    converted = [torch.from_numpy(voice_of(test, t, rng)) for t in TARGETS]
    rebuilt = [torch.from_numpy(voice_of(test, s, rng)) for s in SOURCES]
    m = judge_conversion(train, test, converted, rebuilt, SOURCES, TARGETS)
    assert m["pairs"] == 4 and m["speaker_classifier_test_accuracy"] == 1
    assert m["converted_recognised_as_target"] == 1 and m["converted_recognised_as_source"] == 0
    assert m["reconstructions_recognised_as_source"] == 1
    assert m["pitch_pairs"] == 4  # every pair of these voices differs by far more than 10%
    assert m["converted_pitch_nearer_target"] == 1 and m["converted_pitch_nearer_source"] == 0
    assert m["reconstructions_pitch_nearer_source"] == 1
    assert m["converted_voiced"] == 1
    # the reference pitches are the voices' fundamentals (within their 2% variation)
    assert set(m["speaker_median_pitch_hz"]) == {"high", "low", "mid"}
    for s, f in m["speaker_median_pitch_hz"].items():
        assert f == pytest.approx(VOICES[s][0], rel=0.03)


@pytest.mark.slow
def test_conversions_that_kept_the_source_voice(data):
    train, test = data
    rng = np.random.default_rng(3)
    same = [torch.from_numpy(voice_of(test, s, rng)) for s in SOURCES]
    m = judge_conversion(train, test, same, same, SOURCES, TARGETS)
    assert m["converted_recognised_as_target"] == 0 and m["converted_recognised_as_source"] == 1
    assert m["reconstructions_recognised_as_source"] == 1
    assert m["converted_pitch_nearer_target"] == 0 and m["converted_pitch_nearer_source"] == 1
    assert m["converted_voiced"] == 1


@pytest.mark.slow
def test_noise_has_no_pitch(data):
    train, test = data
    rng = np.random.default_rng(4)
    noise = [torch.from_numpy((0.3 * rng.standard_normal(RATE)).astype(np.float32)) for _ in SOURCES]
    rebuilt = [torch.from_numpy(voice_of(test, s, rng)) for s in SOURCES]
    m = judge_conversion(train, test, noise, rebuilt, SOURCES, TARGETS)
    assert m["converted_voiced"] == 0
    assert m["pitch_pairs"] == 4  # pairs are chosen by the reference pitches, not by the output
    assert m["converted_pitch_nearer_target"] == 0 and m["converted_pitch_nearer_source"] == 0
    assert m["reconstructions_pitch_nearer_source"] == 1
    assert m["reconstructions_recognised_as_source"] == 1


@pytest.mark.slow
def test_only_pairs_whose_pitches_differ_by_five_percent_or_more_are_judged_by_pitch():
    # "a" and "b" differ by 2.5% in pitch (told apart by their timbre only), "c" is an octave above "a"
    voices = {"a": (120.0, 0.85), "b": (123.0, 0.3), "c": (240.0, 0.6)}
    train, test = corpus(voices, 5, seed=5, name="train"), corpus(voices, 2, seed=6, name="test")
    rng = np.random.default_rng(7)
    sources, targets = [0, 1, 0, 2], [1, 0, 2, 1]  # only (a, c) and (c, b) differ by 5% or more
    converted = [torch.from_numpy(tone(*voices["abc"[t]], rng)) for t in targets]
    rebuilt = [torch.from_numpy(tone(*voices["abc"[s]], rng)) for s in sources]
    m = judge_conversion(train, test, converted, rebuilt, sources, targets)
    ref = m["speaker_median_pitch_hz"]
    assert abs(np.log(ref["a"] / ref["b"])) < np.log(1.05) < abs(np.log(ref["a"] / ref["c"]))
    assert m["pitch_pairs"] == 2
    assert m["converted_pitch_nearer_target"] == 1  # over the two judged pairs
    # their own inputs
    assert m["reconstructions_voiced"] == 1 and m["reconstructions_pitch_within_10pct"] == 1
    octave = [torch.from_numpy(tone(2 * voices["abc"[s]][0], voices["abc"[s]][1], rng)) for s in sources]
    m = judge_conversion(train, test, converted, octave, sources, targets, inputs=rebuilt)
    assert m["reconstructions_voiced"] == 1 and m["reconstructions_pitch_within_10pct"] == 0  # an octave off
    assert "converted_recognised_as_class" not in m  # a corpus without classes has no content judge
    m = judge_conversion(train, test, converted[:2], rebuilt[:2], sources[:2], targets[:2])
    assert m["pitch_pairs"] == 0
    assert m["converted_pitch_nearer_target"] is None and m["converted_pitch_nearer_source"] is None
    assert m["reconstructions_pitch_nearer_source"] is None


# -- evaluate_conversion -------------------------------------------------------------------------------------
TINY = dict(num_speakers=3, num_downsamples=2, channels=8, skip_channels=8, local_channels=8, hidden=8,
            embedding_dim=4, num_embeddings=8, max_dilation=4, dilation_cycles=1, sample_rate=RATE)


@pytest.mark.slow
def test_evaluate_conversion_writes_and_judges_every_pair(data, tmp_path):
    train, test = data
    torch.manual_seed(0)
    model = AudioVQVAE(AudioModelConfig(**TINY))
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    m = evaluate_conversion(model, train, test, pairs=3, seconds=0.1, wav_dir=wavs)
    assert m["pairs"] == 3 and m["seconds_each"] == 0.1
    assert 0 <= m["converted_recognised_as_target"] <= 1 and m["speaker_classifier_test_accuracy"] == 1
    names = sorted(p.name for p in wavs.glob("*.wav"))
    assert len(names) == 9
    verdicts = json.loads((wavs / "verdicts.json").read_text())  # what the judges heard in each file
    assert sorted(verdicts) == names
    assert all(set(v) == {"speaker", "pitch_hz", "expected"} for v in verdicts.values())
    for n in range(3):
        own = [x for x in names if x.startswith(f"{n:02d}_")]
        assert len(own) == 3, own
        (inp,) = [x for x in own if x.endswith("_input.wav")]
        source = re.fullmatch(rf"{n:02d}_(\w+?)_input\.wav", inp)[1]
        assert f"{n:02d}_{source}_reconstructed.wav" in own
        (conv,) = [x for x in own if "_as_" in x]
        target = re.fullmatch(rf"{n:02d}_{source}_as_(\w+)\.wav", conv)[1]
        assert source in test.speakers and target in test.speakers and target != source
        # beside what the judges heard: whom each file should sound like
        # (a reconstruction: its input's pitch too)
        assert verdicts[inp]["expected"] == {"speaker": source}
        assert verdicts[conv]["expected"] == {"speaker": target}
        assert verdicts[f"{n:02d}_{source}_reconstructed.wav"]["expected"] == {
            "speaker": source, "pitch_hz": verdicts[inp]["pitch_hz"]}
        # the input is the first 0.1 s of a test utterance of the source speaker
        x, rate = read_wav(wavs / f"{n:02d}_{source}_input.wav")
        assert rate == RATE and len(x) == 800
        label = test.speakers.index(source)
        own_waves = [w for w, s in zip(test.waves, test.labels) if s == label]
        assert any(np.abs(w[:800] - x).max() <= 1 / 32768 for w in own_waves)
        for kind in ("reconstructed", f"as_{target}"):
            y, _ = read_wav(wavs / f"{n:02d}_{source}_{kind}.wav")
            assert len(y) == 800 and np.abs(y).max() <= 1
    # written again into the same folder (--overwrite): the previous run's files go, the user's own stay
    write_wav(wavs / "mine.wav", np.zeros(80), RATE)
    (wavs / "old_notes.wav").write_text("not listed in verdicts.json")
    evaluate_conversion(model, train, test, pairs=2, seed=1, seconds=0.1, wav_dir=wavs)
    verdicts = json.loads((wavs / "verdicts.json").read_text())
    assert len(verdicts) == 6 and sorted(p.name for p in wavs.glob("*.wav")) == sorted(
        [*verdicts, "mine.wav", "old_notes.wav"])


def test_evaluate_conversion_needs_speakers(data):
    train, test = data
    for changes in (dict(speaker_conditioning=False), dict(num_speakers=1), dict(use_codes=False)):
        model = AudioVQVAE(AudioModelConfig(**{**TINY, **changes}))
        with pytest.raises(VQVAEError, match="speaker conversion needs"):
            evaluate_conversion(model, train, test, pairs=1, seconds=0.1)
