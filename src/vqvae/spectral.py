"""Spectra of waveforms, written with torch alone: the STFT and log-magnitude that the spectral decoder
predicts, mel filterbanks, the spectral losses it is trained with, and Griffin-Lim (Griffin & Lim 1984; with
the momentum of Perraudin et al. 2013, "A fast Griffin-Lim algorithm") that turns a magnitude back into a
waveform.

Conventions, shared by all of them: a Hann window of ``n_fft`` samples every ``hop`` samples, frames centred
on sample ``l * hop`` with zeros (not a reflection) beyond both ends, and ``T / hop`` frames for a waveform of
``T`` samples (the frame centred on sample ``T`` is left out), so that one frame belongs to each ``hop``
samples: at 8 kHz with n_fft 512 and hop 64, one frame per code of a 64x encoder.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["griffin_lim", "log_magnitude", "mel_filterbank", "sharpen_harmonics", "spectral_convergence",
           "spectral_loss", "stft"]

LOG_FLOOR = 1e-5  # magnitudes below it (about -100 dB of a full-scale sine's bin) are all silence


def stft(x: Tensor, n_fft: int, hop: int) -> Tensor:
    """Waveforms (B, T) -> complex STFT (B, n_fft // 2 + 1, T // hop): Hann window, frames centred on
    multiples of ``hop``, zero padding at both ends.

    Args:
        x: waveforms (B, T), floating point.
        n_fft: window length in samples.
        hop: samples between frames.
    Returns:
        The complex STFT (B, n_fft // 2 + 1, T // hop).
    """
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, n_fft, hop, window=window, center=True, pad_mode="constant", return_complex=True)
    return spec[..., : x.shape[-1] // hop]


def log_magnitude(x: Tensor, n_fft: int, hop: int) -> Tensor:
    """Waveforms (B, T) -> natural log of the STFT magnitude (B, n_fft // 2 + 1, T // hop), floored at
    ``LOG_FLOOR``. Computed in fp32 whatever the autocast.

    Args:
        x: waveforms (B, T).
        n_fft: window length in samples.
        hop: samples between frames.
    Returns:
        float32 log-magnitudes (B, n_fft // 2 + 1, T // hop), at least ``log(LOG_FLOOR)``.
    """
    with torch.autocast(x.device.type, enabled=False):
        return stft(x.float(), n_fft, hop).abs().clamp_min(LOG_FLOOR).log()


def sharpen_harmonics(log_mag: Tensor, contrast: float, width: int) -> Tensor:
    """Log-magnitudes (B, F, N) whose detail across frequency is multiplied by ``contrast``: each bin's
    distance from the envelope, the mean of the ``width`` bins around it (edges repeated), grows ``contrast``
    times, then the power within every ``width`` bins is put back to what it was. Harmonics stand further
    out of the valleys between them while the spectral envelope (as a mel filter hears it) stays; 1 changes
    nothing.

    Args:
        log_mag: natural-log magnitudes (B, F, N): F frequency bins, N frames.
        contrast: factor on each bin's distance from the envelope (1: ``log_mag`` returned as it is).
        width: bins in the moving average that gives the envelope.
    Returns:
        The sharpened log-magnitudes (B, F, N).
    """
    if contrast == 1:
        return log_mag
    b, f, n = log_mag.shape
    rows = log_mag.transpose(1, 2).reshape(b * n, 1, f)  # (B * N, 1, F)
    half = width // 2

    def smooth(v: Tensor) -> Tensor:
        return F.avg_pool1d(F.pad(v, (half, width - 1 - half), mode="replicate"), width, 1)

    envelope = smooth(rows)
    sharpened = envelope + contrast * (rows - envelope)
    # the same power within every band of ``width`` bins as before (what a mel filter hears)
    sharpened = sharpened - 0.5 * (smooth((2 * sharpened).exp()).log() - smooth((2 * rows).exp()).log())
    return sharpened.reshape(b, n, f).transpose(1, 2)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 50.0) -> Tensor:
    """Triangular filters on the mel scale (HTK formula 2595 log10(1 + f / 700)): (n_mels, n_fft // 2 + 1).

    Args:
        sample_rate: in Hz; the filters reach up to ``sample_rate / 2``.
        n_fft: the STFT's window length, which sets the n_fft // 2 + 1 linear frequency bins.
        n_mels: the number of filters.
        f_min: lower edge of the first filter, in Hz.
    Returns:
        float32 filter weights (n_mels, n_fft // 2 + 1).
    """
    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(f_min), mel(sample_rate / 2), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return torch.from_numpy(fb).float()


def spectral_loss(predicted: Tensor, target: Tensor, mel_banks: list[Tensor], pools: list[int],
                  mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Log-magnitudes (B, F, N), predicted and true -> (L1 of the log-magnitudes, multi-scale mel loss).

    The mel loss is the mean over scales of the L1 distance between log-mel spectra, scale ``i`` pooling the
    power of ``pools[i]`` neighbouring frames (a window that many hops longer) through ``mel_banks[i]``
    (n_mels_i, F): coarse scales weigh the spectral envelope, fine ones the harmonics. ``mask`` (B, N) marks
    the frames that count (zero-padded crops); both losses are means over the frames it keeps.

    Args:
        predicted: the predicted natural-log magnitudes (B, F, N).
        target: the true natural-log magnitudes (B, F, N).
        mel_banks: one mel filterbank (n_mels_i, F) per scale.
        pools: frames pooled at each scale, one per bank.
        mask: (B, N), 1 for the frames that count, 0 for padding; None (default): every frame counts.
    Returns:
        (L1 of the log-magnitudes, multi-scale mel loss), two scalars.
    """
    if mask is None:
        mask = predicted.new_ones(predicted.shape[0], predicted.shape[2])
    mask = mask.to(predicted.dtype)
    l1 = ((predicted - target).abs().mean(1) * mask).sum() / mask.sum().clamp_min(1)
    mels = []
    for bank, pool in zip(mel_banks, pools):
        # (B, N / pool) fraction of real frames
        kept = F.avg_pool1d(mask[:, None], pool, pool, ceil_mode=True)[:, 0]
        logs = []
        for s in (predicted, target):
            power = F.avg_pool1d((2 * s).exp(), pool, pool, ceil_mode=True)  # (B, F, N / pool)
            logs.append(torch.einsum("mf,bfn->bmn", bank, power).clamp_min(LOG_FLOOR ** 2).log())
        w = (kept > 0).to(predicted.dtype)
        mels.append(((logs[0] - logs[1]).abs().mean(1) * w).sum() / w.sum().clamp_min(1))
    return l1, torch.stack(mels).mean()


def spectral_convergence(magnitude: Tensor, x: Tensor, n_fft: int, hop: int) -> Tensor:
    """How far the STFT magnitude of waveforms ``x`` (B, T) is from ``magnitude`` (B, F, T // hop), per
    waveform: || |STFT(x)| - magnitude ||_F / || magnitude ||_F (0: consistent).

    Args:
        magnitude: STFT magnitudes (B, n_fft // 2 + 1, T // hop).
        x: waveforms (B, T).
        n_fft: window length in samples.
        hop: samples between frames.
    Returns:
        (B,) relative Frobenius distances.
    """
    diff = stft(x, n_fft, hop).abs() - magnitude
    return diff.flatten(1).norm(dim=1) / magnitude.flatten(1).norm(dim=1).clamp_min(1e-12)


def griffin_lim(magnitude: Tensor, n_fft: int, hop: int, *, iterations: int = 60, momentum: float = 0.99,
                lengths: Tensor | list[int] | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """A waveform whose STFT magnitude is near ``magnitude`` (B, F, N) -> (B, N * hop).

    Alternates between the magnitude given and the phase of the STFT of the current waveform, ``iterations``
    times, with the fast Griffin-Lim's extrapolation ``momentum`` (0: the original algorithm); the phase
    starts uniform at random from ``generator``, drawn one waveform after the other for its own frames.
    ``lengths`` (B,) are the frames of each waveform in a zero-padded batch: samples beyond
    ``lengths[i] * hop`` are kept at zero, so each waveform comes out as it would alone.
    ``n_fft // (2 hop)`` silent frames follow every waveform inside the algorithm, whose overlap-add
    normalisation then is the same alone and in a batch.

    Args:
        magnitude: STFT magnitudes (B, n_fft // 2 + 1, N).
        n_fft: window length in samples.
        hop: samples between frames.
        iterations: Griffin-Lim iterations (0: the random phase alone).
        momentum: the fast Griffin-Lim's momentum, in [0, 1).
        lengths: (B,) frames of each waveform; None (default): all N.
        generator: the random source of the initial phase (None: torch's global one).
    Returns:
        float32 waveforms (B, N * hop), zero beyond each ``lengths[i] * hop``.
    """
    b, f, n = magnitude.shape
    if f != n_fft // 2 + 1:
        raise ValueError(f"magnitude has {f} frequency bins, n_fft {n_fft} needs {n_fft // 2 + 1}")
    if iterations < 0 or not 0 <= momentum < 1:
        raise ValueError(f"iterations must be >= 0 and momentum in [0, 1), got {iterations} and {momentum}")
    magnitude = magnitude.float()
    lengths = torch.full((b,), n) if lengths is None else torch.as_tensor(lengths)
    tail = -(-n_fft // (2 * hop))
    frames = n + tail
    mag = F.pad(magnitude, (0, tail))  # (B, F, N + tail)
    window = torch.hann_window(n_fft, device=mag.device)
    samples = torch.arange(frames * hop, device=mag.device)
    keep = (samples[None] < lengths.to(mag.device)[:, None] * hop).float()  # (B, T + tail * hop)

    def to_wave(spec: Tensor) -> Tensor:
        return torch.istft(spec, n_fft, hop, window=window, center=True, length=frames * hop) * keep

    def to_spec(x: Tensor) -> Tensor:
        return torch.stft(x, n_fft, hop, window=window, center=True, pad_mode="constant",
                          return_complex=True)[..., :frames]

    phase = torch.stack([F.pad(torch.rand(f, int(m) + tail, generator=generator), (0, n - int(m)))
                         for m in lengths]).to(mag.device)  # each waveform's own, as alone
    angles = torch.polar(torch.ones_like(mag), 2 * np.pi * phase)
    previous = torch.zeros_like(angles)
    for _ in range(iterations):
        rebuilt = to_spec(to_wave(mag * angles))
        accelerated = rebuilt - (momentum / (1 + momentum)) * previous
        angles = accelerated / accelerated.abs().clamp_min(1e-16)
        previous = rebuilt
    return to_wave(mag * angles)[:, : n * hop]
