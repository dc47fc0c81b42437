"""Independent judges of generated audio: a speaker classifier (logistic regression on log-mel statistics), a
content classifier (what is said: logistic regression on the log-mel spectrum's course), a pitch tracker, and
:class:`SpeechJudges`, which trains them on a corpus and scores conversions, reconstructions and prior
samples. Generating the audio is not judging: see :func:`vqvae.evaluate.evaluate_conversion`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.data.audio import SpeechDataset
from vqvae.errors import VQVAEError
from vqvae.fileio import atomic_write_json
from vqvae.spectral import mel_filterbank

__all__ = ["ContentClassifier", "SpeakerClassifier", "SpeechJudges", "intelligibility", "judge_conversion",
           "log_mel_course", "log_mel_stats", "mel_filterbank", "pitch_hz", "write_conversion_verdicts",
           "write_verdicts"]


def log_mel_stats(wave: np.ndarray | Tensor, sample_rate: int, n_mels: int = 40,
                  floor_db: float = 30.0) -> Tensor:
    """A fixed-size description of a voice: mean and standard deviation over time of the log-mel spectrum
    (25 ms windows every 10 ms). Only what is heard counts: frames more than ``floor_db`` below the loudest
    frame are dropped and every mel energy is floored at ``floor_db`` below the loudest one; else the
    near-silence (the log of digital silence is hugely negative) dominates and a judge trained on clean
    recordings misses voices under the faint noise generated audio always has (espeak-ng corpus, white noise
    at 30 dB SNR: 35% recognised instead of 97.5%).

    Args:
        wave: waveform (T,), a NumPy array or tensor; zero-padded to one window if shorter.
        sample_rate: its sample rate in Hz.
        n_mels: number of mel bands.
        floor_db: the floor below the loudest frame and the loudest mel energy, dB.
    Returns:
        (2 * n_mels,): the mean of each band's log energy over time, then its standard deviation.
    """
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    n_fft = 1 << int(np.ceil(np.log2(0.025 * sample_rate)))
    hop = max(1, int(0.010 * sample_rate))
    if len(x) < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - len(x)))
    # power spectrogram (F, frames)
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs().pow(2)
    mel = mel_filterbank(sample_rate, n_fft, n_mels) @ spec  # (n_mels, frames)
    floor = 10.0 ** (-floor_db / 10.0)
    energy = mel.sum(0)
    mel = mel[:, energy >= energy.max() * floor]  # the loudest frame always stays
    logmel = torch.log(mel + mel.max() * floor + 1e-12)
    return torch.cat([logmel.mean(1), logmel.std(1, unbiased=False)])


def log_mel_course(wave: np.ndarray | Tensor, sample_rate: int, n_mels: int = 32, segments: int = 10,
                   floor_db: float = 30.0, trim_db: float = 20.0) -> Tensor:
    """How the spectrum moves through an utterance, whatever its length: the log-mel spectrum (32 ms windows
    every 10 ms) from the first to the last frame within ``trim_db`` of the loudest one, averaged over
    ``segments`` equal stretches of time, relative to its loudest bin. Energies are floored at ``floor_db``
    below the loudest bin, as in :func:`log_mel_stats`, so faint noise around the word changes little.

    Args: ``wave`` (T,) and ``sample_rate`` (Hz), ``n_mels`` (bands), ``segments``, ``floor_db``, ``trim_db``.
    Returns: (n_mels * segments,) log energies relative to the loudest bin, band by band."""
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    n_fft = 1 << int(np.ceil(np.log2(0.032 * sample_rate)))
    if len(x) < n_fft:
        x = F.pad(x, (0, n_fft - len(x)))
    spec = torch.stft(x, n_fft, max(1, int(0.010 * sample_rate)), window=torch.hann_window(n_fft),
                      return_complex=True).abs().pow(2)
    mel = mel_filterbank(sample_rate, n_fft, n_mels) @ spec  # (n_mels, frames)
    floor = 10.0 ** (-floor_db / 10.0)
    energy = mel.sum(0)
    loud = torch.nonzero(energy >= energy.max() * 10.0 ** (-trim_db / 10.0)).flatten()
    mel = mel[:, int(loud[0]) : int(loud[-1]) + 1]
    logmel = torch.log(mel + mel.max() * floor + 1e-12)
    return F.adaptive_avg_pool1d((logmel - logmel.max())[None], segments)[0].flatten()


def pitch_hz(wave: np.ndarray | Tensor, sample_rate: int, f_min: float = 60.0, f_max: float = 500.0,
             voicing: float = 0.5, min_voiced: float = 0.5) -> tuple[float, float]:
    """The median fundamental frequency of the voiced frames and the fraction of loud frames that are voiced.

    Autocorrelation pitch tracking: Hann windows three periods of ``f_min`` long (50 ms) every 10 ms; frames
    within 20 dB of the loudest one are candidates; a frame is voiced when its normalised autocorrelation
    peaks at >= ``voicing`` for a lag of one period in ``[1 / f_max, 1 / f_min]``. The shortest lag within 90%
    of the best one wins, so a periodic frame is not taken an octave down. The pitch is ``nan`` when fewer
    than ``min_voiced`` of the candidate frames are voiced: speech is mostly voiced, while noise under a
    syllable-like envelope has a minority of frames that look periodic (measured in docs/audio.md).

    Args:
        wave: waveform (T,), a NumPy array or tensor.
        sample_rate: its sample rate in Hz.
        f_min: lowest pitch sought, Hz (sets the window length).
        f_max: highest pitch sought, Hz.
        voicing: least normalised autocorrelation peak of a voiced frame, 0..1.
        min_voiced: least fraction of the candidate frames voiced for a pitch.
    Returns:
        (pitch in Hz, nan when unvoiced, too short or silent; fraction of the candidate frames voiced).
    """
    x = torch.as_tensor(np.asarray(wave, dtype=np.float64))
    frame, hop = int(np.ceil(3 * sample_rate / f_min)), int(0.010 * sample_rate)
    lo, hi = max(2, int(sample_rate / f_max)), int(np.ceil(sample_rate / f_min))
    if len(x) < frame or hi + 2 >= frame:
        return float("nan"), 0.0
    frames = x.unfold(0, frame, hop)
    window = torch.hann_window(frame, dtype=x.dtype)
    frames = (frames - frames.mean(1, keepdim=True)) * window
    power = frames.pow(2).mean(1)
    if not bool(power.max() > 0):
        return float("nan"), 0.0
    loud = power >= power.max() * 0.01

    def autocorrelation(v: Tensor) -> Tensor:
        return torch.fft.irfft(torch.fft.rfft(v, 2 * frame).abs().pow(2), 2 * frame)[..., : hi + 2]

    # divided by the window's own autocorrelation (Boersma 1993), so a periodic frame peaks near 1 at every
    # multiple of its period instead of fading with the taper
    ac = autocorrelation(frames[loud]) / autocorrelation(window)
    ac = ac / ac[:, :1].clamp_min(1e-30)
    mid = ac[:, lo : hi + 1]
    peak = (mid >= ac[:, lo - 1 : hi]) & (mid >= ac[:, lo + 1 : hi + 2])  # local maxima
    best = (mid * peak).max(1).values
    first = (peak & (mid >= 0.9 * best[:, None])).double().argmax(1)  # shortest lag near the best peak
    voiced = best >= voicing
    fraction = float(voiced.double().mean())
    if fraction < min_voiced or not bool(voiced.any()):
        return float("nan"), fraction
    rows = torch.arange(len(mid))
    lag = (lo + first).double()
    # a parabola through the peak and its neighbours places it between samples
    a, b, c = ac[rows, lo + first - 1], ac[rows, lo + first], ac[rows, lo + first + 1]
    denom = a - 2 * b + c
    lag = lag + torch.where(denom < 0, 0.5 * (a - c) / denom.where(denom < 0, torch.ones_like(denom)), 0.0)
    f0 = sample_rate / lag[voiced]
    return float(f0.median()), fraction


class LogisticClassifier:
    """Multinomial logistic regression on standardised log-mel features (``_features``), trained with Adam.

    Args: ``sample_rate`` (Hz, of the waveforms it judges) and ``num_classes`` (how many it tells apart)."""

    what = "classifier"

    def __init__(self, sample_rate: int, num_classes: int):
        self.sample_rate, self.num_classes = sample_rate, num_classes
        self.mean = self.std = self.linear = None

    def _features(self, waves) -> Tensor:
        raise NotImplementedError

    @torch.enable_grad()  # also when called from inside an evaluation under no_grad
    def fit(self, waves, labels, steps: int = 300, seed: int = 0):
        """Full-batch Adam (lr 0.05) on cross-entropy plus 1e-3 times the squared weights, features
        standardised by their train statistics.

        Args: ``waves`` (the N inputs of ``_features``: waveforms for the audio judges), ``labels`` (N
        classes), ``steps`` (of Adam), ``seed`` (of torch's global generator, for the initial weights).
        Returns: self, trained."""
        torch.manual_seed(seed)
        f = self._features(waves)
        self.mean, self.std = f.mean(0), f.std(0) + 1e-6
        f = (f - self.mean) / self.std
        y = torch.as_tensor(labels, dtype=torch.long)
        self.linear = nn.Linear(f.shape[1], self.num_classes)
        opt = torch.optim.Adam(self.linear.parameters(), lr=0.05)
        for _ in range(steps):
            loss = F.cross_entropy(self.linear(f), y) + 1e-3 * self.linear.weight.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return self

    @torch.no_grad()
    def predict(self, waves) -> Tensor:
        """The most likely class of each of the N ``waves`` (inputs of ``_features``): (N,) int64; refused
        before :meth:`fit`."""
        if self.mean is None:
            raise VQVAEError(f"the {self.what} is not trained yet")
        return self.linear((self._features(waves) - self.mean) / self.std).argmax(1)


class SpeakerClassifier(LogisticClassifier):
    """Who speaks: logistic regression on :func:`log_mel_stats` (the spectrum's statistics, not its course).
    Args: as :class:`LogisticClassifier`."""

    what = "speaker classifier"

    def _features(self, waves) -> Tensor:
        return torch.stack([log_mel_stats(w, self.sample_rate) for w in waves])


class ContentClassifier(LogisticClassifier):
    """What is said (e.g. which digit): logistic regression on :func:`log_mel_course`, the course of the
    spectrum over the utterance (on the Free Spoken Digit Dataset: 100% of the real test takes).
    Args: as :class:`LogisticClassifier`."""

    what = "content classifier"

    def _features(self, waves) -> Tensor:
        return torch.stack([log_mel_course(w, self.sample_rate) for w in waves])


def intelligibility(references: list[Tensor], degraded: list[Tensor],
                    sample_rate: int) -> dict[str, float | None]:
    """Judges that do not listen through log-mel features: STOI (Taal et al. 2011, ``pystoi``) and
    narrow-band PESQ (ITU-T P.862, ``pesq``) of ``degraded[i]`` against ``references[i]``, over the
    concatenation of all of them in their order: STOI needs 30 frames (384 ms) of speech and a single short
    take has fewer. PESQ is computed at 8 kHz (the waveforms are resampled when the rate differs).

    Args: ``references`` and ``degraded`` (T_i,), each degraded one cut to its reference (refused when
    shorter), at ``sample_rate`` Hz.
    Returns: ``{"stoi": float, "pesq_nb": float or None where PESQ finds no utterance to score}``."""
    from pesq import pesq
    from pystoi import stoi

    from vqvae.data.audio import resample

    ref = np.concatenate([np.asarray(r, dtype=np.float64) for r in references])
    deg = np.concatenate([np.asarray(d, dtype=np.float64)[: len(r)] for r, d in zip(references, degraded)])
    if len(ref) != len(deg):
        raise VQVAEError("each degraded waveform must be at least as long as its reference")
    out = {"stoi": float(stoi(ref, deg, sample_rate, extended=False))}
    if sample_rate != 8000:
        ref, deg = (resample(v.astype(np.float32), sample_rate, 8000).astype(np.float64) for v in (ref, deg))
    try:
        out["pesq_nb"] = float(pesq(8000, ref, deg, "nb"))
    except Exception:  # noqa: BLE001 -- pesq raises its own errors when it finds no speech in the reference
        out["pesq_nb"] = None
    return out


def speaker_pitches(train: SpeechDataset, speakers: list[int], per_speaker: int = 20) -> dict[int, float]:
    """Each speaker's reference pitch: the median of :func:`pitch_hz` over (up to ``per_speaker`` of) their
    ``train`` utterances: speaker index (of ``speakers``) -> Hz, nan when none has a pitch."""
    reference = {}
    for s in speakers:
        own = [w for w, label in zip(train.waves, train.labels) if label == s][:per_speaker]
        f0 = [f for f in (pitch_hz(w, train.sample_rate)[0] for w in own) if not np.isnan(f)]
        reference[s] = float(np.median(f0)) if f0 else float("nan")
    return reference


class SpeechJudges:
    """The independent judges of generated speech, trained once on a corpus's ``train`` split and scored on
    its real ``test`` utterances: who speaks (:class:`SpeakerClassifier`), what is said
    (:class:`ContentClassifier`, where the corpus has classes) and the pitch (:func:`pitch_hz`; each
    speaker's reference is the median over up to 20 of their train utterances).

    Args:
        train: the split the judges are trained on and the reference pitches measured on.
        test: the split whose real utterances give the classifiers' test accuracies.
        seed: seed of the classifiers' training.
        pitch_margin: pitch judges only pairs of speakers whose references differ by at least this (5%).
    """

    def __init__(self, train: SpeechDataset, test: SpeechDataset, *, seed: int = 0,
                 pitch_margin: float = 0.05):
        self.rate, self.speakers, self.pitch_margin = train.sample_rate, train.speakers, pitch_margin
        self.class_names = list(train.class_names or [])
        # read once: a corpus read from disk (WaveFiles) would otherwise be read again by every judge
        train = dataclasses.replace(train, waves=list(train.waves))
        test_waves = list(test.waves)
        self.speaker = SpeakerClassifier(self.rate, len(train.speakers)).fit(train.waves, train.labels,
                                                                             seed=seed)
        self.accuracy = {"speaker_classifier_test_accuracy": _rate(self.speaker.predict(test_waves),
                                                                   test.labels)}
        self.content = None
        if train.class_names and test.class_names == train.class_names:
            self.content = ContentClassifier(self.rate, len(train.class_names)).fit(train.waves,
                                                                                    train.classes, seed=seed)
            self.accuracy["content_classifier_test_accuracy"] = _rate(self.content.predict(test_waves),
                                                                      test.classes)
        self.reference = speaker_pitches(train, list(range(len(train.speakers))))

    def _distinct(self, a: int, b: int) -> bool:
        return bool(abs(np.log(self.reference[a] / self.reference[b])) >= np.log1p(self.pitch_margin))

    def _nearer(self, f0: float, to: int, other: int) -> bool:  # False for nan (no pitch)
        return bool(abs(np.log(f0 / self.reference[to])) < abs(np.log(f0 / self.reference[other])))

    def conversion(self, inputs: list[Tensor], converted: list[Tensor], rebuilt: list[Tensor],
                   sources: list[int], targets: list[int],
                   classes: list[int] | None = None) -> dict[str, Any]:
        """``converted[i]``: ``inputs[i]`` (speaker ``sources[i]``, saying ``classes[i]``) decoded as
        ``targets[i]``; ``rebuilt[i]``: the same decoded as its own speaker. Fractions of conversions heard as
        the target / the source / saying the input's class / voiced with a pitch nearer the target's (over the
        pairs the pitch can tell apart), and of reconstructions heard as their speaker / saying their class /
        voiced / within 10% of the input's own pitch (over the inputs that have one); STOI and PESQ of the
        reconstructions. ``classes`` None: what is said is not judged."""
        conv_f0 = [pitch_hz(w, self.rate)[0] for w in converted]  # nan: no pitch
        rec_f0 = [pitch_hz(w, self.rate)[0] for w in rebuilt]
        in_f0 = [pitch_hz(w, self.rate)[0] for w in inputs]
        conv_who, rec_who = self.speaker.predict(converted), self.speaker.predict(rebuilt)
        pairs = [i for i, (a, b) in enumerate(zip(sources, targets)) if self._distinct(a, b)]
        pitched = [i for i, f in enumerate(in_f0) if not np.isnan(f)]

        def over(idx, hit) -> float | None:
            return sum(bool(hit(i)) for i in idx) / len(idx) if idx else None

        m = {**self.accuracy, "pairs": len(converted),
             "converted_recognised_as_target": _rate(conv_who, targets),
             "converted_recognised_as_source": _rate(conv_who, sources),
             "reconstructions_recognised_as_source": _rate(rec_who, sources),
             "pitch_pairs": len(pairs),
             "converted_pitch_nearer_target": over(pairs, lambda i: self._nearer(conv_f0[i], targets[i],
                                                                                sources[i])),
             "converted_pitch_nearer_source": over(pairs, lambda i: self._nearer(conv_f0[i], sources[i],
                                                                                targets[i])),
             "reconstructions_pitch_nearer_source": over(pairs, lambda i: self._nearer(rec_f0[i], sources[i],
                                                                                      targets[i])),
             "converted_voiced": _voiced(conv_f0), "reconstructions_voiced": _voiced(rec_f0),
             "reconstructions_pitch_within_10pct": over(pitched,
                                                        lambda i: abs(rec_f0[i] / in_f0[i] - 1) <= 0.1)}
        if self.content is not None and classes is not None:
            m["converted_recognised_as_class"] = _rate(self.content.predict(converted), classes)
            m["reconstructions_recognised_as_class"] = _rate(self.content.predict(rebuilt), classes)
        m.update({f"reconstructions_{k}": v for k, v in intelligibility(inputs, rebuilt, self.rate).items()})
        m["speaker_median_pitch_hz"] = {self.speakers[s]: None if np.isnan(f) else round(f, 1)
                                        for s, f in self.reference.items()
                                        if s in set(sources) | set(targets)}
        return m

    def samples(self, waves: list[Tensor], speakers: list[int],
                classes: list[int] | None = None) -> dict[str, Any]:
        """Generated utterances ``waves[i]`` asked for speaker ``speakers[i]`` (and class ``classes[i]``;
        None: not judged): the fractions heard as that speaker, as saying that class, and voiced, with the
        classifiers' test accuracies."""
        m = {**self.accuracy, "samples": len(waves),
             "samples_recognised_as_speaker": _rate(self.speaker.predict(waves), speakers)}
        if self.content is not None and classes is not None:
            m["samples_recognised_as_class"] = _rate(self.content.predict(waves), classes)
        m["samples_voiced"] = _voiced([pitch_hz(w, self.rate)[0] for w in waves])
        return m

    def verdicts(self, waves: list[Tensor]) -> list[dict[str, Any]]:
        """What the judges hear in each of ``waves``: the speaker, the class (where the corpus has classes)
        and the pitch in Hz (None: unvoiced), one dict each -- written beside WAV files as ``verdicts.json``
        for a person (and a report)."""
        who = self.speaker.predict(waves).tolist()
        said = self.content.predict(waves).tolist() if self.content is not None else [None] * len(waves)
        out = []
        for w, s, c in zip(waves, who, said):
            f0 = pitch_hz(w, self.rate)[0]
            v = {"speaker": self.speakers[s], "pitch_hz": None if np.isnan(f0) else round(float(f0), 1)}
            if c is not None:
                v["class"] = self.class_names[c]
            out.append(v)
        return out


def write_verdicts(path: str | Path, names: list[str], verdicts: list[dict[str, Any]],
                   expected: list[dict[str, Any]]) -> None:
    """``verdicts.json`` at ``path``: each of ``names`` -> what the judges heard in it (``verdicts``), with
    what it should be heard as under ``"expected"`` (the speaker and class of an input; of a conversion or a
    sample, the speaker and class asked for; of a reconstruction, its input's speaker, class and pitch)."""
    if not len(names) == len(verdicts) == len(expected):
        raise ValueError(f"{len(names)} files, {len(verdicts)} verdicts, {len(expected)} expectations")
    atomic_write_json(path, {n: {**v, "expected": e} for n, v, e in zip(names, verdicts, expected)})


def write_conversion_verdicts(wav_dir: Path, judges: SpeechJudges, names: list[str], waves: list[Tensor],
                               expected: list[dict[str, Any]]) -> None:
    """``wav_dir/verdicts.json`` of the files :func:`vqvae.reconstruct.write_conversions` wrote (``names``,
    ``waves`` and ``expected``, as it returns them): what the ``judges`` hear in each beside what it should be
    heard as (the source speaker and the digit said; the target speaker for a conversion; the pitch heard in
    the input for a reconstruction)."""
    heard = judges.verdicts(waves)
    expected = [dict(e) for e in expected]
    for name, e in zip(names, expected):  # a reconstruction should keep the pitch heard in its input
        if name.endswith("_reconstructed.wav"):
            e["pitch_hz"] = heard[names.index(name.replace("_reconstructed.wav", "_input.wav"))]["pitch_hz"]
    write_verdicts(wav_dir / "verdicts.json", names, heard, expected)


def _rate(predicted: Tensor, truth) -> float:
    return float((predicted == torch.as_tensor(truth)).double().mean())


def _voiced(f0s: list[float]) -> float:
    return float(np.mean([not np.isnan(f) for f in f0s]))


def judge_conversion(train: SpeechDataset, test: SpeechDataset, converted: list[Tensor],
                     rebuilt: list[Tensor], sources: list[int], targets: list[int], *, seed: int = 0,
                     inputs: list[Tensor] | None = None, classes: list[int] | None = None) -> dict[str, Any]:
    """:meth:`SpeechJudges.conversion` with judges trained on ``train``.

    Args: ``train``, ``test`` and ``seed`` as :class:`SpeechJudges`; ``converted``, ``rebuilt``, ``sources``,
    ``targets``, ``inputs`` and ``classes`` as :meth:`SpeechJudges.conversion` (``inputs`` None: the
    reconstructions stand in for the inputs).
    Returns: the metrics of :meth:`SpeechJudges.conversion`."""
    return SpeechJudges(train, test, seed=seed).conversion(rebuilt if inputs is None else inputs, converted,
                                                           rebuilt, sources, targets, classes)
