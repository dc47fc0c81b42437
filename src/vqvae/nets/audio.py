"""The paper's audio encoder (section 4.3 of arXiv:1711.00937) and the upsampler that feeds its codes to
the WaveNet decoder.

Encoder: ``num_downsamples`` strided 1-D convolutions (window 4, stride 2), each followed by a ReLU, then a
1x1 convolution to the code dimension: 6 of them compress the waveform 64x. Upsampler: as many transposed
convolutions (window 4, stride 2), so the codes come back at the sample rate as smooth features that vary
within each code's span, and the decoder knows where in a span it is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vqvae.spectral import mel_filterbank, stft


def _he_init(module: nn.Module) -> None:
    """He-normal weights and zero biases for every convolution of ``module``. PyTorch's default init shrinks
    the signal about 2.5x per ReLU layer while its biases do not shrink, so after six layers the encoder's
    output is a near-constant (it hardly varies over time on speech): the codes then carry
    nothing and the decoder learns to ignore them. With this init the output varies over time as much as it
    is large."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class AudioEncoder(nn.Module):
    """Waveform (B, 1, T) in [-1, 1], T a multiple of 2^n -> (B, D, T / 2^n).

    Args:
        hidden: channels of the strided convolutions.
        embedding_dim: D, channels of the output (the code dimension).
        num_downsamples: n, number of strided convolutions (each halves the length).
        norm: ``"instance"`` adds an instance norm over time to the output; ``"none"`` (default) adds none.
    """

    def __init__(self, hidden: int, embedding_dim: int, num_downsamples: int, norm: str = "none"):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for _ in range(num_downsamples):
            layers += [nn.Conv1d(c_in, hidden, 4, stride=2, padding=1), nn.ReLU()]
            c_in = hidden
        layers.append(nn.Conv1d(hidden, embedding_dim, 1))
        if norm == "instance":  # each channel: zero mean, unit variance over time
            layers.append(nn.InstanceNorm1d(embedding_dim, eps=1e-8))  # eps far below the early variance
        self.net = nn.Sequential(*layers)
        _he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        """Encode waveforms.

        Args:
            x: (B, 1, T) waveforms in [-1, 1].
        Returns:
            (B, D, T / 2^n) features.
        """
        return self.net(x)


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=1)
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.mix(torch.relu(self.conv(torch.relu(h))))


class MelEncoder(nn.Module):
    """Waveform (B, 1, T), T a multiple of ``hop`` -> (B, D, T / hop), through a fixed front end.

    The front end is the log-mel spectrum of the waveform (Hann window of ``n_fft``, one frame per
    ``frame_hop`` samples, ``bands`` mel bands, as :mod:`vqvae.spectral` computes it); then come a 3-wide
    convolution, log2(hop / frame_hop) strided convolutions (window 4, stride 2), two residual blocks and a
    1x1 convolution to the code dimension. Every layer runs at the frame rate, so the encoder does
    ~``frame_hop`` times less work than :class:`AudioEncoder` on the same audio.

    ``input_norm="utterance"`` normalises each mel band to zero mean and unit variance over the frames of
    the waveform that are not digital silence (zero padding): the recording's channel and the speaker's
    average spectral envelope are taken out before the encoder sees anything.

    Args:
        sample_rate: sampling rate of the waveforms in Hz (for the mel filterbank).
        n_fft: STFT window length in samples.
        frame_hop: samples per STFT frame.
        hop: samples per code, ``frame_hop`` times a power of two.
        bands: number of mel bands.
        hidden: channels of the convolutions.
        embedding_dim: D, channels of the output (the code dimension).
        norm: ``"instance"`` adds an instance norm over time to the output; ``"none"`` (default) adds none.
        input_norm: ``"utterance"`` normalises the log-mel input as above; ``"none"`` (default) leaves it.
    """

    def __init__(self, sample_rate: int, n_fft: int, frame_hop: int, hop: int, bands: int, hidden: int,
                 embedding_dim: int, norm: str = "none", input_norm: str = "none"):
        super().__init__()
        self.n_fft, self.frame_hop, self.input_norm = n_fft, frame_hop, input_norm
        self.register_buffer("bank", mel_filterbank(sample_rate, n_fft, bands), persistent=False)
        layers: list[nn.Module] = [nn.Conv1d(bands, hidden, 3, padding=1)]
        for _ in range((hop // frame_hop).bit_length() - 1):
            layers += [nn.ReLU(), nn.Conv1d(hidden, hidden, 4, stride=2, padding=1)]
        layers += [_Residual(hidden), _Residual(hidden), nn.ReLU(), nn.Conv1d(hidden, embedding_dim, 1)]
        if norm == "instance":
            layers.append(nn.InstanceNorm1d(embedding_dim, eps=1e-8))
        self.net = nn.Sequential(*layers)
        _he_init(self)

    def features(self, x: Tensor) -> Tensor:
        """Waveforms (B, T) -> the log-mel input of the convolutions (B, bands, T / frame_hop), in fp32.

        Args:
            x: (B, T) waveforms.
        Returns:
            (B, bands, T / frame_hop) float32 log-mel spectra (normalised under ``input_norm="utterance"``).
        """
        with torch.autocast(x.device.type, enabled=False):
            power = stft(x.float(), self.n_fft, self.frame_hop).abs().square()  # (B, F, N)
            logmel = torch.einsum("mf,bfn->bmn", self.bank, power).clamp_min(1e-8).log()  # (B, M, N)
            if self.input_norm == "utterance":
                # (B, 1, N): frames that are not zero padding
                live = (power.sum(1, keepdim=True) > 0).float()
                count = live.sum(2, keepdim=True).clamp_min(1)
                mean = (logmel * live).sum(2, keepdim=True) / count
                var = ((logmel - mean).square() * live).sum(2, keepdim=True) / count
                logmel = (logmel - mean) / (var + 1e-5).sqrt() * live
            return logmel

    def forward(self, x: Tensor) -> Tensor:
        """Encode waveforms.

        Args:
            x: (B, 1, T) waveforms, T a multiple of ``hop``.
        Returns:
            (B, D, T / hop) features.
        """
        return self.net(self.features(x[:, 0]))


class CodeUpsampler(nn.Module):
    """Quantised codes (B, D, L) -> features (B, C, L * 2^n) for the WaveNet's local conditioning.

    Args:
        embedding_dim: D, size of the code vectors.
        channels: C, channels of the output features.
        num_upsamples: n, number of transposed convolutions (each doubles the length).
    """

    def __init__(self, embedding_dim: int, channels: int, num_upsamples: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(embedding_dim, channels, 3, padding=1)]
        for _ in range(num_upsamples):
            layers += [nn.ReLU(), nn.ConvTranspose1d(channels, channels, 4, stride=2, padding=1)]
        self.net = nn.Sequential(*layers)
        _he_init(self)

    def forward(self, z: Tensor) -> Tensor:
        """Upsample code vectors.

        Args:
            z: (B, D, L) code vectors.
        Returns:
            (B, C, L * 2^n) conditioning features.
        """
        return self.net(z)


def time_jitter(z: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """(B, D, L) -> (B, D, L) where every step is, independently, its left neighbour with probability ``p``,
    its right neighbour with probability ``p`` and itself otherwise (Chorowski et al. 2019,
    arXiv:1901.08810); the first and last steps stay themselves on their open side. Gradients flow to the
    steps that were picked.

    Args:
        z: (B, D, L) code vectors.
        p: probability of each neighbour; 0 returns ``z`` unchanged.
        generator: random generator for the choices; None uses the global one.
    Returns:
        (B, D, L) jittered code vectors (``z`` itself when ``p`` is 0 or L < 2).
    """
    if p == 0 or z.shape[-1] < 2:
        return z
    b, _, length = z.shape
    u = torch.rand(b, length, generator=generator, device=z.device)
    shift = (u < p).long() * -1 + (u > 1 - p).long()  # -1: left, +1: right
    source = (torch.arange(length, device=z.device) + shift).clamp(0, length - 1)
    return z.gather(2, source[:, None, :].expand_as(z))
