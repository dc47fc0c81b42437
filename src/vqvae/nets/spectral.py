"""The spectral decoder of the audio VQ-VAE: quantised codes and a speaker embedding -> the log-magnitude
STFT of the waveform, one frame per ``frame_hop`` samples (:mod:`vqvae.spectral`). It works in frames, not
samples, so a training step does ~``frame_hop`` times less work than a WaveNet's on the same audio; the
waveform comes back by Griffin-Lim (:func:`vqvae.spectral.griffin_lim`).

Codes (B, D, L) -> a 3-wide convolution -> a transposed convolution to ``upsample`` frames per code (none
at one frame per code) -> ``layers`` residual blocks (dilated 3-wide convolution, GELU, 1x1 convolution;
dilations 1, 2, 4, 8 in turn), the speaker's embedding added before every block -> a 1x1 convolution to
n_fft / 2 + 1 bins. Not causal: every frame sees the codes around it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SpectralDecoder"]


class _Block(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.mix = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.mix.weight)  # every block starts as the identity
        nn.init.zeros_(self.mix.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.mix(F.gelu(self.conv(F.gelu(h))))


class SpectralDecoder(nn.Module):
    """(B, D, L) codes' vectors and (B,) speaker ids -> (B, bins, L * upsample) log-magnitudes.

    Args:
        embedding_dim: D, size of the code vectors.
        channels: width of the residual blocks.
        bins: frequency bins of the output (n_fft / 2 + 1).
        upsample: frames per code (1: no transposed convolution).
        layers: number of residual blocks.
        num_speakers: size of the speaker embedding table; 0 for no speaker conditioning.
    """

    def __init__(self, embedding_dim: int, channels: int, bins: int, upsample: int, layers: int,
                 num_speakers: int):
        super().__init__()
        self.inp = nn.Conv1d(embedding_dim, channels, 3, padding=1)
        # window 2u, stride u: each frame is made from the two codes nearest it
        self.up = (nn.ConvTranspose1d(channels, channels, 2 * upsample, stride=upsample,
                                      padding=upsample // 2)
                   if upsample > 1 else None)
        self.upsample = upsample
        self.speaker = nn.Embedding(num_speakers, channels) if num_speakers else None
        self.blocks = nn.ModuleList(_Block(channels, 2 ** (i % 4)) for i in range(layers))
        self.out = nn.Conv1d(channels, bins, 1)

    def forward(self, z: Tensor, speakers: Tensor | None = None) -> Tensor:
        """Decode code vectors into log-magnitude frames.

        Args:
            z: (B, D, L) code vectors.
            speakers: (B,) speaker ids; None when the decoder has no speaker embedding.
        Returns:
            (B, bins, L * upsample) log-magnitudes.
        """
        h = self.inp(z)  # (B, C, L)
        if self.up is not None:
            h = self.up(F.gelu(h))[..., : z.shape[-1] * self.upsample]  # (B, C, L * u)
        s = self.speaker(speakers)[:, :, None] if self.speaker is not None else 0.0  # (B, C, 1)
        for block in self.blocks:
            h = block(h + s)
        return self.out(F.gelu(h))  # (B, bins, L * u)
