"""WAV files: reading PCM 8/16/24/32-bit (mono or stereo, channels averaged) to float32 in [-1, 1], writing
16-bit mono, band-limited resampling, and one utterance as the audio models take it."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vqvae.errors import VQVAEError
from vqvae.fileio import atomic_write_bytes

__all__ = ["read_utterance", "read_wav", "resample", "resampled_length", "wav_frames", "whole_codes",
           "write_wav"]


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(mono float32 waveform in [-1, 1], sample rate) of a PCM WAV file.

    Args:
        path: the WAV file (PCM, 8, 16, 24 or 32 bits per sample; channels are averaged).
    Returns:
        ``(waveform, rate)``: (T,) float32 in [-1, 1] and the sample rate in Hz.
    Raises:
        VQVAEError: the file cannot be read as a PCM WAV file, or holds no samples.
    """
    path = Path(path)
    with _open_wav(path) as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
        raw = raw[: len(raw) // (width * channels) * width * channels] if width else raw  # whole frames only
    if width == 1:  # 8-bit WAV is unsigned
        data = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width == 2:
        data = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        data = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / (1 << 23)
    elif width == 4:
        data = np.frombuffer(raw, "<i4").astype(np.float32) / 2**31
    else:
        raise VQVAEError(f"{path}: unsupported sample width {width} bytes")
    usable = len(data) // channels * channels
    data = data[:usable].reshape(-1, channels).mean(1)
    if len(data) == 0:
        raise VQVAEError(f"{path} holds no audio samples")
    return data.astype(np.float32), rate


def write_wav(path: str | Path, waveform: np.ndarray | Tensor, rate: int) -> None:
    """16-bit mono PCM WAV, written atomically.

    Args:
        path: the file to write.
        waveform: (T,) samples in [-1, 1] (clipped), an array or a tensor.
        rate: sample rate in Hz.
    """
    x = np.asarray(waveform.detach().cpu() if isinstance(waveform, Tensor) else waveform, dtype=np.float64)
    pcm = np.clip((x * 32768).round(), -32768, 32767).astype("<i2")  # the inverse of read_wav's / 32768
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.tobytes())
    atomic_write_bytes(path, buf.getvalue())


def wav_frames(path: str | Path) -> tuple[int, int]:
    """(frames, sample rate) of a WAV file, from its header alone.

    Args:
        path: the WAV file.
    Returns:
        ``(frames, rate)``: the number of frames and the sample rate in Hz.
    Raises:
        VQVAEError: the header cannot be read or is not valid.
    """
    with _open_wav(path) as w:
        return w.getnframes(), w.getframerate()


@contextmanager
def _open_wav(path: str | Path) -> Iterator[wave.Wave_read]:
    """The open WAV file, its header checked; whatever goes wrong reading it (an untrusted header, a file cut
    short) is one line naming the file."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getframerate() < 1:
                raise VQVAEError(f"cannot read WAV file {path}: its header says the sample rate is "
                                 f"{w.getframerate()} Hz")
            if w.getnchannels() < 1:
                raise VQVAEError(f"cannot read WAV file {path}: its header says it has "
                                 f"{w.getnchannels()} channels")
            yield w
    except VQVAEError:
        raise
    except Exception as exc:  # noqa: BLE001 -- an untrusted header: whatever the wave module trips on
        raise VQVAEError(f"cannot read WAV file {path}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """Why a WAV file could not be read, never empty (a file cut short raises a bare EOFError)."""
    if isinstance(exc, EOFError):
        return "the file ends inside its header (truncated)"
    if isinstance(exc, wave.Error) and str(exc).startswith("unknown format: "):
        code = str(exc).split(": ", 1)[1]
        names = {"3": "an IEEE-float WAV", "6": "an A-law WAV", "7": "a mu-law WAV"}
        what = names.get(code, f"a WAV of format {code}")
        return (f"it is {what}; integer PCM WAVs are read (8, 16, 24 or 32 bits): convert it, e.g. "
                f"sox IN.wav -b 16 OUT.wav")
    if isinstance(exc, (wave.Error, OSError)) and str(exc):
        return str(exc)
    return f"not a valid WAV file ({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})"


def resampled_length(n: int, rate_in: int, rate_out: int) -> int:
    """Samples that :func:`resample` makes of ``n`` samples.

    Args:
        n: number of input samples.
        rate_in: input sample rate in Hz.
        rate_out: output sample rate in Hz.
    Returns:
        the number of output samples (``n`` when the rates are equal or ``n`` is 0, else at least 1).
    """
    return n if rate_in == rate_out or n == 0 else max(1, int(round(n * rate_out / rate_in)))


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling by the FFT (the spectrum is cut or zero-padded at the new Nyquist frequency).

    Args:
        x: (T,) waveform.
        rate_in: its sample rate in Hz.
        rate_out: the sample rate wanted, in Hz.
    Returns:
        (resampled_length(T, rate_in, rate_out),) float32 waveform.
    """
    if rate_in == rate_out or len(x) == 0:
        return x.astype(np.float32)
    n_out = resampled_length(len(x), rate_in, rate_out)
    spec = np.fft.rfft(x.astype(np.float64))
    keep = n_out // 2 + 1
    out_spec = np.zeros(keep, dtype=np.complex128)
    m = min(keep, len(spec))
    out_spec[:m] = spec[:m]
    if n_out % 2 == 0 and m == keep and len(spec) > keep - 1:  # the new Nyquist bin is real
        out_spec[keep - 1] = out_spec[keep - 1].real
    return (np.fft.irfft(out_spec, n_out) * (n_out / len(x))).astype(np.float32)


def read_utterance(path: str | Path, sample_rate: int, hop: int, max_seconds: float | None = None) -> Tensor:
    """One WAV file as the models take it: mono, resampled to ``sample_rate``, at most ``max_seconds`` long,
    cut to a whole number of codes (``hop`` samples each) -> (T,) float32.

    Args:
        path: the WAV file.
        sample_rate: the model's sample rate in Hz.
        hop: samples per code.
        max_seconds: keep at most this many seconds (> 0); None keeps the whole file.
    Returns:
        (T,) float32 waveform, T a positive multiple of ``hop``.
    Raises:
        VQVAEError: an unreadable file, ``max_seconds`` <= 0, or less audio than one code.
    """
    x, rate = read_wav(path)
    x = resample(x, rate, sample_rate)
    if max_seconds is not None and not max_seconds > 0:
        raise VQVAEError(f"--seconds must be > 0, got {max_seconds}")
    limit = None if max_seconds is None else int(max_seconds * sample_rate)
    y = whole_codes(x, hop, limit)
    if len(y) == 0:
        raise VQVAEError(f"{path} is shorter than one code: {len(x[:limit])} samples at {sample_rate} Hz, "
                         f"the model needs at least {hop}")
    return y


def whole_codes(x: np.ndarray, hop: int, max_samples: int | None = None) -> Tensor:
    """The first ``max_samples`` samples of ``x`` (all of them: None), cut to a whole number of codes.

    Args:
        x: (T,) a waveform.
        hop: samples per code.
        max_samples: keep at most this many samples; None keeps them all.
    Returns:
        (T',) a contiguous tensor of ``x``'s samples, T' a multiple of ``hop`` (0 when ``x`` holds less than
        one code).
    """
    x = x[:max_samples]
    return torch.from_numpy(np.ascontiguousarray(x[: len(x) // hop * hop]))
