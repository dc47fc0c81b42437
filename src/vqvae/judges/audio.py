"""Independent judges of generated audio: a speaker classifier (logistic regression on log-mel statistics), a
content classifier (what is said: logistic regression on the log-mel spectrum's course), the pitch tracker of
:mod:`vqvae.judges.features`, and
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
from vqvae.judges.features import log_mel_course, log_mel_stats, pitch_hz

__all__ = ["ContentClassifier", "SpeakerClassifier", "SpeechJudges", "intelligibility", "judge_conversion",
           "write_conversion_verdicts", "write_verdicts"]


class LogisticClassifier:
    """Multinomial logistic regression on standardised log-mel features (``_features``), trained with Adam.

    Args:
        sample_rate: sample rate in Hz of the waveforms it judges.
        num_classes: number of classes it tells apart.
    """

    what = "classifier"

    def __init__(self, sample_rate: int, num_classes: int):
        self.sample_rate, self.num_classes = sample_rate, num_classes
        self.mean = self.std = self.linear = None

    def _features(self, waves) -> Tensor:
        raise NotImplementedError

    @torch.enable_grad()  # also when called from inside an evaluation under no_grad
    def fit(self, waves, labels, steps: int = 300, seed: int = 0):
        """Train on the whole set at once: features standardised by their train statistics, Adam (lr 0.05) on
        cross-entropy plus 1e-3 times the squared weights.

        Args:
            waves: the N inputs of ``_features`` (waveforms for the audio judges).
            labels: their classes (N,), integers in [0, num_classes).
            steps: number of Adam steps.
            seed: seed of torch's global generator, for the initial weights.
        Returns:
            self, trained.
        """
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
        """The most likely class of each input; refused before :meth:`fit`.

        Args:
            waves: the N inputs of ``_features`` (waveforms for the audio judges).
        Returns:
            (N,) int64 class indices.
        """
        if self.mean is None:
            raise VQVAEError(f"the {self.what} is not trained yet")
        return self.linear((self._features(waves) - self.mean) / self.std).argmax(1)


class SpeakerClassifier(LogisticClassifier):
    """Who speaks: logistic regression on :func:`log_mel_stats` (the spectrum's statistics, not its course).

    Args: as :class:`LogisticClassifier` (``num_classes``: the speakers).
    """

    what = "speaker classifier"

    def _features(self, waves) -> Tensor:
        return torch.stack([log_mel_stats(w, self.sample_rate) for w in waves])


class ContentClassifier(LogisticClassifier):
    """What is said (e.g. which digit): logistic regression on :func:`log_mel_course`, the course of the
    spectrum over the utterance (its accuracy on FSDD, clean and under noise: docs/audio.md).

    Args: as :class:`LogisticClassifier` (``num_classes``: the classes of the corpus).
    """

    what = "content classifier"

    def _features(self, waves) -> Tensor:
        return torch.stack([log_mel_course(w, self.sample_rate) for w in waves])


def intelligibility(references: list[Tensor], degraded: list[Tensor],
                    sample_rate: int) -> dict[str, float | None]:
    """Judges that do not listen through log-mel features: STOI (Taal et al. 2011, ``pystoi``) and narrow-band
    PESQ (ITU-T P.862, ``pesq``) of ``degraded[i]`` against ``references[i]``, over the concatenation of all
    of them in their order: STOI needs 30 frames (384 ms) of speech and a single short take has fewer. PESQ is
    computed at 8 kHz (the waveforms are resampled when the rate differs).

    Args:
        references: the clean waveforms (T_i,).
        degraded: the waveforms to judge, each at least as long as its reference (cut to its length).
        sample_rate: their sample rate in Hz.
    Returns:
        ``{"stoi": float, "pesq_nb": float, or None where PESQ finds no utterance to score}``.
    Raises:
        VQVAEError: a degraded waveform is shorter than its reference.
    """
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
    train utterances.

    Args:
        train: the corpus split whose utterances are measured.
        speakers: the speaker indices (labels of ``train``) to measure.
        per_speaker: most utterances measured per speaker (the first ones).
    Returns:
        speaker index -> median pitch in Hz (nan when none of their utterances has a pitch).
    """
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
        """Fractions of conversions heard as the target / the source / saying the input's class / voiced with
        a pitch nearer the target's (over the pairs the pitch can tell apart), and of reconstructions heard as
        their speaker / saying their class / voiced / within 10% of the input's own pitch (over the inputs
        that have one); STOI and PESQ of the reconstructions against their inputs.

        Args:
            inputs: the real utterances (T_i,).
            converted: ``inputs[i]`` decoded as speaker ``targets[i]``.
            rebuilt: ``inputs[i]`` decoded as its own speaker ``sources[i]``.
            sources: the speaker index of each input.
            targets: the speaker index each input is converted to.
            classes: the class each input says (None: not judged).
        Returns:
            metric name -> value, with the classifiers' test accuracies and the pitches of the speakers
            involved.
        """
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
        """Generated utterances judged: the fractions heard as the speaker asked for, as saying the class
        asked for, and voiced.

        Args:
            waves: the generated utterances (T_i,).
            speakers: the speaker index each was asked for.
            classes: the class each was asked for (None: not judged).
        Returns:
            metric name -> value, with the classifiers' test accuracies.
        """
        m = {**self.accuracy, "samples": len(waves),
             "samples_recognised_as_speaker": _rate(self.speaker.predict(waves), speakers)}
        if self.content is not None and classes is not None:
            m["samples_recognised_as_class"] = _rate(self.content.predict(waves), classes)
        m["samples_voiced"] = _voiced([pitch_hz(w, self.rate)[0] for w in waves])
        return m

    def verdicts(self, waves: list[Tensor]) -> list[dict[str, Any]]:
        """What the judges hear in each utterance -- written beside WAV files as ``verdicts.json`` for a
        person (and a report).

        Args:
            waves: the utterances (T_i,).
        Returns:
            one dict per utterance: ``speaker`` (name), ``class`` (where the corpus has classes) and
            ``pitch_hz`` (None: unvoiced).
        """
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
    """``verdicts.json``: file name -> what the judges heard in it, with what it should be heard as under
    ``"expected"``; the three lists must be equally long.

    Args:
        path: the JSON file to write (atomically).
        names: the WAV files' names.
        verdicts: what the judges heard in each (:meth:`SpeechJudges.verdicts`).
        expected: what each should be heard as (the speaker and class of an input; of a conversion or a
        sample,
            the speaker and class asked for; of a reconstruction, its input's speaker, class and pitch).
    """
    if not len(names) == len(verdicts) == len(expected):
        raise ValueError(f"{len(names)} files, {len(verdicts)} verdicts, {len(expected)} expectations")
    atomic_write_json(path, {n: {**v, "expected": e} for n, v, e in zip(names, verdicts, expected)})


def write_conversion_verdicts(wav_dir: Path, judges: SpeechJudges, names: list[str], waves: list[Tensor],
                               expected: list[dict[str, Any]]) -> None:
    """``verdicts.json`` of the files :func:`vqvae.reconstruct.write_conversions` wrote: what the judges hear
    in each beside what it should be heard as (a reconstruction should keep the pitch heard in its input).

    Args:
        wav_dir: the folder of the WAV files; ``verdicts.json`` is written there.
        judges: the judges that listen.
        names: the files' names (``NNN_SOURCE_input.wav``, ``..._reconstructed.wav``, ``..._as_TARGET.wav``).
        waves: their waveforms, in the same order.
        expected: the source speaker and the class said of each; the target speaker for a conversion.
    """
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

    Args:
        train: the split the judges are trained on.
        test: the split the judges' test accuracies are measured on.
        converted: the conversions (input ``i`` decoded as ``targets[i]``).
        rebuilt: the reconstructions (input ``i`` decoded as ``sources[i]``).
        sources: the speaker index of each input.
        targets: the speaker index each input is converted to.
        seed: seed of the judges' training.
        inputs: the real inputs (None: the reconstructions stand in for them).
        classes: the class each input says (None: not judged).
    Returns:
        the metrics of :meth:`SpeechJudges.conversion`.
    """
    return SpeechJudges(train, test, seed=seed).conversion(rebuilt if inputs is None else inputs, converted,
                                                           rebuilt, sources, targets, classes)
