"""The audio prior of the VQ-VAE paper: a WaveNet over the code sequence (K-way softmax at every step),
optionally conditioned on the speaker and on what the utterance says (its class, e.g. the digit). It is the
decoder's WaveNet with codes for samples and no local conditioning, so it shares the queue-cached generator."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.config import AudioPriorConfig
from vqvae.errors import VQVAEError
from vqvae.models.pretrained import Pretrained
from vqvae.nets.wavenet import WaveNet


class WaveNetPrior(Pretrained, nn.Module):
    """Codes (B, L) int64 [+ speakers (B,)] [+ classes (B,)] -> logits (B, K, L); step l predicts code l from codes
    < l. Speaker and class (what the utterance says) each have learned embeddings that add up in every layer."""

    checkpoint_kind = "audio_prior"
    config_section = "wavenet_prior"

    def __init__(self, config: AudioPriorConfig | None = None, **overrides):
        super().__init__()
        config = dataclasses.replace(config or AudioPriorConfig(), **overrides)
        if not config.speaker_conditioning:
            config = dataclasses.replace(config, num_speakers=0)
        if not config.class_conditioning:
            config = dataclasses.replace(config, num_classes=0)
        config.validate()
        self.config = c = config
        self.net = WaveNet(c.num_embeddings, c.channels, c.skip_channels, c.dilations,
                           num_globals=c.num_speakers + c.num_classes)

    def _globals(self, speakers: Tensor | None, classes: Tensor | None) -> Tensor | None:
        """The WaveNet's global ids: speakers in [0, S), classes after them in [S, S + C) (what the model has)."""
        s, k = self.config.num_speakers, self.config.num_classes
        if k and classes is None:
            raise VQVAEError(f"this prior is conditioned on the utterance's class: pass classes in [0, {k})")
        if k and classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= k):
            raise VQVAEError(f"classes must lie in [0, {k}), got [{int(classes.min())}, {int(classes.max())}]")
        if s and k:
            return torch.stack([speakers, classes + s], 1) if speakers is not None else None
        return speakers if s else (classes if k else None)

    def forward(self, codes: Tensor, speakers: Tensor | None = None, classes: Tensor | None = None) -> Tensor:
        return self.net(codes, None, self._globals(speakers, classes))

    def nll(self, codes: Tensor, speakers: Tensor | None = None, lengths: Tensor | None = None,
            classes: Tensor | None = None) -> Tensor:
        """NLL in nats of every code (B, L); steps at or beyond ``lengths[b]`` (padding) count 0."""
        nll = F.cross_entropy(self(codes, speakers, classes), codes, reduction="none")
        if lengths is not None:
            nll = nll * (torch.arange(codes.shape[1], device=codes.device)[None] < lengths[:, None])
        return nll

    @torch.no_grad()
    def sample(self, batch: int, length: int, speakers: Tensor | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None, classes: Tensor | None = None) -> Tensor:
        """(batch, length) codes, drawn one step at a time from cached activations."""
        return self.net.generate(batch, length, None, self._globals(speakers, classes), temperature, generator)
