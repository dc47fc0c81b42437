"""What the audio judges hear in a waveform: the statistics of its log-mel spectrum (who speaks), the course
of its log-mel spectrum over the utterance (what is said), and its pitch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vqvae.spectral import mel_filterbank

__all__ = ["log_mel_course", "log_mel_stats", "pitch_hz"]


def log_mel_stats(wave: np.ndarray | Tensor, sample_rate: int, n_mels: int = 40,
                  floor_db: float = 30.0) -> Tensor:
    """A fixed-size description of a voice: mean and standard deviation over time of the log-mel spectrum
    (25 ms windows every 10 ms). Only what is heard counts: frames more than ``floor_db`` below the loudest
    frame are dropped and every mel energy is floored at ``floor_db`` below the loudest one; else the
    near-silence (the log of digital silence is hugely negative) dominates and a judge trained on clean
    recordings misses voices under the faint noise generated audio always has (docs/audio.md).

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

    Args:
        wave: waveform (T,), a NumPy array or tensor (read as float32); zero-padded to one window if shorter.
        sample_rate: its sample rate in Hz.
        n_mels: number of mel bands.
        segments: number of equal stretches of time the trimmed utterance is averaged over.
        floor_db: floor of every energy below the loudest bin, dB.
        trim_db: frames quieter than this below the loudest frame are trimmed from both ends, dB.
    Returns:
        (n_mels * segments,): log energies relative to the loudest bin (<= 0), band by band.
    """
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
