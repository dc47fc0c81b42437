"""The audio judges: log-mel statistics and course, the speaker and content classifiers, the pitch tracker."""

from pathlib import Path

import numpy as np
import pytest
import torch

from vqvae.data.audio import load_speech


@pytest.mark.slow
def test_log_mel_stats_find_a_tone_and_the_classifier_separates_voices(tmp_path):
    from vqvae.judges.audio import SpeakerClassifier
    from vqvae.judges.features import log_mel_stats
    from vqvae.spectral import mel_filterbank

    fb = mel_filterbank(16000, 512, 40)
    assert fb.shape == (40, 257) and bool((fb.sum(1) > 0).all())
    peaks = fb.argmax(1)
    assert bool((peaks[1:] >= peaks[:-1]).all())  # filters march up in frequency
    t = np.arange(16000) / 16000
    low, high = (log_mel_stats(np.sin(2 * np.pi * f * t) * 0.5, 16000)[:40] for f in (300.0, 3000.0))
    assert int(low.argmax()) < int(high.argmax())  # a higher tone lands in a higher band
    from vqvae.data.audio.synthesis import synthesize_corpus

    synthesize_corpus(tmp_path, num_sentences=30, per_speaker=10, num_speakers=3, progress=False)
    train, test = load_speech(tmp_path, "train"), load_speech(tmp_path, "test")
    clf = SpeakerClassifier(16000, len(train.speakers)).fit(train.waves, train.labels)
    assert clf.predict(test.waves).tolist() == test.labels  # three distinct espeak-ng voices
    # generated audio is never silent: the judge must hear the voice through faint noise (30 dB SNR)
    noise = np.random.default_rng(0)
    noisy = [w + 0.03 * float(w.std()) * noise.standard_normal(len(w)).astype(np.float32) for w in test.waves]
    assert clf.predict(noisy).tolist() == test.labels
    # what fills the pauses, digital silence or faint noise, does not change the description of a voice
    voice = np.sin(2 * np.pi * 200.0 * t).astype(np.float32) * 0.3
    silent = np.concatenate([voice, np.zeros(16000, np.float32)])
    hiss = np.concatenate([voice, 1e-4 * noise.standard_normal(16000).astype(np.float32)])
    assert torch.allclose(log_mel_stats(silent, 16000), log_mel_stats(hiss, 16000), atol=1e-3)
    # the pitch judge: each voice keeps its own pitch from utterance to utterance, and the voices differ
    from vqvae.judges.features import pitch_hz

    def median_pitch(data, s):
        return float(np.median([pitch_hz(w, 16000)[0] for w, label in zip(data.waves, data.labels)
                                if label == s]))

    for s in range(3):
        assert median_pitch(test, s) == pytest.approx(median_pitch(train, s), rel=0.1)
    ref = sorted(median_pitch(train, s) for s in range(3))
    assert ref[2] > 1.5 * ref[1], ref  # a female voice among two male ones (us_m1 and gb_m3 are both ~86 Hz)
    assert all(pitch_hz(w, 16000)[1] > 0.5 for w in test.waves)  # speech is mostly voiced


def test_pitch_of_harmonic_tones_and_of_noise():
    from vqvae.judges.features import pitch_hz

    t = np.arange(16000) / 16000
    for f0 in (65.0, 110.0, 233.0, 390.0, 480.0):
        tone = 0.2 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 9))
        f, voiced = pitch_hz(tone, 16000)
        assert f == pytest.approx(f0, rel=0.005) and voiced == 1.0  # not an octave off
        assert pitch_hz(tone[::2], 8000)[0] == pytest.approx(f0, rel=0.005)
    # a tone whose fundamental is missing still has its period (as a listener hears it)
    assert pitch_hz(0.2 * sum(np.sin(2 * np.pi * k * 150.0 * t) for k in (2, 3, 4)), 16000)[0] == \
        pytest.approx(150.0, rel=0.005)
    noise = np.random.default_rng(0).standard_normal(16000) * 0.1
    assert np.isnan(pitch_hz(noise, 16000)[0]) and pitch_hz(noise, 16000)[1] == 0.0
    # coloured noise under a syllable-like envelope (what an undertrained decoder makes) has a few frames that
    # look periodic, but far fewer than speech (>= 80% in the corpus): no pitch
    spectrum = np.fft.rfft(np.random.default_rng(1).standard_normal(32000))
    freqs = np.fft.rfftfreq(32000, 1 / 16000)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * np.arange(32000) / 16000) ** 2
    for cutoff in (150.0, 200.0, 300.0, 400.0):
        rumble = np.fft.irfft(np.where(freqs <= cutoff, spectrum, 0), 32000) * envelope
        f, voiced = pitch_hz(rumble, 16000)
        assert np.isnan(f) and voiced < 0.4, (cutoff, f, voiced)
    brown = np.fft.irfft(spectrum / np.maximum(freqs, 1.0), 32000) * envelope
    assert np.isnan(pitch_hz(brown, 16000)[0])
    assert np.isnan(pitch_hz(np.zeros(16000), 16000)[0])  # silence
    assert np.isnan(pitch_hz(np.zeros(100), 16000)[0])  # shorter than one frame


def test_log_mel_course_invariants():
    from vqvae.judges.features import log_mel_course

    rng = np.random.default_rng(0)
    t = np.arange(4000) / 8000
    # a rising chirp
    word = (np.sin(2 * np.pi * (300 + 900 * t) * t) * np.hanning(len(t)) * 0.3).astype(np.float32)
    f = log_mel_course(word, 8000)
    assert f.shape == (320,) and float(f.max()) <= 0.0  # 32 bands x 10 stretches, relative to the loudest bin
    assert torch.allclose(log_mel_course(2.5 * word, 8000), f, atol=1e-4)  # loudness does not count
    for before in (2400, 3000):  # nor the silence around the word (aligned with the frames or not)
        padded = np.concatenate([np.zeros(before, np.float32), word, np.zeros(5000, np.float32)])
        assert float((log_mel_course(padded, 8000) - f).abs().mean()) < 0.05
    falling = word[::-1].copy()
    # but the course of the spectrum does
    assert float((log_mel_course(falling, 8000) - f).abs().mean()) > 0.3
    hiss = padded + 1e-4 * rng.standard_normal(len(padded)).astype(np.float32)
    assert float((log_mel_course(hiss, 8000) - log_mel_course(padded, 8000)).abs().mean()) < 0.05


FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd-digits0-4"


@pytest.mark.skipif(not FSDD.is_dir(), reason="../shared/data/fsdd-digits0-4 is not beside the project")
def test_the_judges_recognise_real_recordings(tmp_path):
    """The content judge (which digit) and the speaker judge, trained on FSDD's train takes, on its 150 real
    test takes: the issue asks >= 95% of the content judge (measured: 100% and 98.7%)."""
    from vqvae.data.audio.fsdd import arrange_fsdd
    from vqvae.judges.audio import ContentClassifier, SpeakerClassifier

    arrange_fsdd(tmp_path / "fsdd", FSDD)
    train, test = (load_speech(tmp_path / "fsdd", s, 8000, in_memory=True) for s in ("train", "test"))
    content = ContentClassifier(8000, len(train.class_names)).fit(train.waves, train.classes)
    assert float((content.predict(test.waves) == torch.tensor(test.classes)).double().mean()) >= 0.95
    speaker = SpeakerClassifier(8000, len(train.speakers)).fit(train.waves, train.labels)
    assert float((speaker.predict(test.waves) == torch.tensor(test.labels)).double().mean()) >= 0.95
    with pytest.raises(Exception, match="content classifier is not trained yet"):
        ContentClassifier(8000, 5).predict(test.waves[:1])
