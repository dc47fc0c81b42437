"""The audio prior of the VQ-VAE paper: a WaveNet over the code sequence (K-way softmax at every step),
optionally conditioned on the speaker. It is the decoder's WaveNet with codes for samples and no local
conditioning, so it shares the queue-cached generator."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.config import AudioPriorConfig
from vqvae.models.pretrained import Pretrained
from vqvae.nets.wavenet import WaveNet


class WaveNetPrior(Pretrained, nn.Module):
    """Codes (B, L) int64 [+ speakers (B,)] -> logits (B, K, L); step l predicts code l from codes < l."""

    checkpoint_kind = "audio_prior"
    config_section = "wavenet_prior"

    def __init__(self, config: AudioPriorConfig | None = None, **overrides):
        super().__init__()
        config = dataclasses.replace(config or AudioPriorConfig(), **overrides)
        if not config.speaker_conditioning:
            config = dataclasses.replace(config, num_speakers=0)
        config.validate()
        self.config = c = config
        self.net = WaveNet(c.num_embeddings, c.channels, c.skip_channels, c.dilations, num_globals=c.num_speakers)

    def _speakers(self, speakers: Tensor | None) -> Tensor | None:
        return speakers if self.config.num_speakers else None

    def forward(self, codes: Tensor, speakers: Tensor | None = None) -> Tensor:
        return self.net(codes, None, self._speakers(speakers))

    def nll(self, codes: Tensor, speakers: Tensor | None = None, lengths: Tensor | None = None) -> Tensor:
        """NLL in nats of every code (B, L); steps at or beyond ``lengths[b]`` (padding) count 0."""
        nll = F.cross_entropy(self(codes, speakers), codes, reduction="none")
        if lengths is not None:
            nll = nll * (torch.arange(codes.shape[1], device=codes.device)[None] < lengths[:, None])
        return nll

    @torch.no_grad()
    def sample(self, batch: int, length: int, speakers: Tensor | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """(batch, length) codes, drawn one step at a time from cached activations."""
        return self.net.generate(batch, length, None, self._speakers(speakers), temperature, generator)
