"""The audio prior of the VQ-VAE paper: a WaveNet over the code sequence (K-way softmax at every step),
optionally conditioned on the speaker and on what the utterance says (its class, e.g. the digit). It is the
decoder's WaveNet with codes for samples and no local conditioning, so it shares the queue-cached
generator."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.config import AudioPriorConfig
from vqvae.errors import VQVAEError
from vqvae.models.pretrained import Pretrained
from vqvae.nets.controls import SamplingControls, drop_classes, sampling_controls
from vqvae.nets.wavenet import WaveNet


class WaveNetPrior(Pretrained, nn.Module):
    """Codes (B, L) int64 [+ speakers (B,)] [+ classes (B,)] -> logits (B, K, L); step l predicts code l
    from codes < l. Speaker and class (what the utterance says) each have learned embeddings that add up in
    every layer.

    Args:
        config: the architecture; None takes the defaults of :class:`~vqvae.config.AudioPriorConfig`.
        **overrides: fields of the config to replace (without speaker or class conditioning the
            number of speakers or classes is set to 0; the result is validated).
    """

    checkpoint_kind = "audio_prior"
    config_section = "wavenet_prior"

    def __init__(self, config: AudioPriorConfig | None = None, **overrides):
        super().__init__()
        config = dataclasses.replace(config or AudioPriorConfig(), **overrides)
        if not config.speaker_conditioning:
            config = dataclasses.replace(config, num_speakers=0)
        if not config.class_conditioning or not config.num_classes:
            config = dataclasses.replace(config, num_classes=0, class_dropout=0.0)
        config.validate()
        self.config = c = config
        self.net = WaveNet(c.num_embeddings, c.channels, c.skip_channels, c.dilations,
                           num_globals=c.num_speakers + self.num_class_ids)

    @property
    def num_class_ids(self) -> int:
        """The class ids the prior knows: its classes, and "no class" (id C) when it was trained with class
        dropout."""
        return self.config.num_classes + (1 if self.config.class_dropout > 0 else 0)

    def _globals(self, speakers: Tensor | None, classes: Tensor | None) -> Tensor | None:
        """The WaveNet's global ids: speakers in [0, S), classes after them in [S, S + C) (and "no class" at
        S + C, for a prior trained with class dropout)."""
        s, k, n = self.config.num_speakers, self.config.num_classes, self.num_class_ids
        if k and classes is None:
            raise VQVAEError("this prior is conditioned on the utterance's class: "
                             f"pass classes in [0, {k})")
        if k and classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= n):
            raise VQVAEError(f"classes must lie in [0, {n}), "
                             f"got [{int(classes.min())}, {int(classes.max())}]")
        if s and k:
            return torch.stack([speakers, classes + s], 1) if speakers is not None else None
        return speakers if s else (classes if k else None)

    def drop_classes(self, classes: Tensor | None) -> Tensor | None:
        """What training feeds the prior: each class replaced by "no class" (id C) with probability
        ``class_dropout`` (:func:`~vqvae.nets.controls.drop_classes`); None stays None.

        Args:
            classes: (B,) class ids, or None.
        Returns:
            (B,) class ids, some of them C; or None.
        """
        return drop_classes(classes, self.config.class_dropout, self.config.num_classes)

    def forward(self, codes: Tensor, speakers: Tensor | None = None, classes: Tensor | None = None) -> Tensor:
        """Logits of every code given the codes before it.

        Args:
            codes: (B, L) int64 codes in [0, K).
            speakers: (B,) speaker ids; required exactly when the prior is conditioned on the speaker.
            classes: (B,) class ids; required exactly when the prior is conditioned on the class.
        Returns:
            (B, K, L) logits.
        Raises:
            VQVAEError: codes, speakers or classes of the wrong shape, type or range.
        """
        return self.net(codes, None, self._globals(speakers, classes))

    def nll(self, codes: Tensor, speakers: Tensor | None = None, lengths: Tensor | None = None,
            classes: Tensor | None = None) -> Tensor:
        """NLL in nats of every code (B, L); steps at or beyond ``lengths[b]`` (padding) count 0.

        Args:
            codes: (B, L) int64 codes in [0, K).
            speakers: (B,) speaker ids, as in :meth:`forward`.
            lengths: (B,) number of real codes in each row; None: every step counts.
            classes: (B,) class ids, as in :meth:`forward`.
        Returns:
            (B, L) negative log-likelihoods in nats.
        Raises:
            VQVAEError: codes, speakers or classes of the wrong shape, type or range.
        """
        nll = F.cross_entropy(self(codes, speakers, classes), codes, reduction="none")
        if lengths is not None:
            nll = nll * (torch.arange(codes.shape[1], device=codes.device)[None] < lengths[:, None])
        return nll

    @torch.no_grad()
    def sample(self, batch: int, length: int, speakers: Tensor | None = None,
               controls: SamplingControls | None = None, generator: torch.Generator | None = None,
               classes: Tensor | None = None) -> Tensor:
        """(batch, length) codes, drawn one step at a time from cached activations.

        Args:
            batch: number of sequences (>= 1).
            length: codes per sequence (>= 0).
            speakers: (batch,) speaker ids; required exactly when the prior is conditioned on the speaker.
            controls: temperature, top-k, top-p, guidance (on the class: needs a prior trained with
                class dropout); None: the model's own distribution.
            generator: random generator for the draws; None: the global one.
            classes: (batch,) class ids; required exactly when the prior is conditioned on the class.
        Returns:
            (batch, length) int64 codes.
        Raises:
            VQVAEError: a bad batch or length, bad speakers or classes, or guidance for a prior without
                "no class".
        """
        controls = sampling_controls(controls)
        if controls.guided:
            if not self.config.class_dropout:
                raise VQVAEError("guidance needs a class-conditional prior trained with "
                                 "wavenet_prior.class_dropout > 0; this one was not")
            if classes is None:
                raise VQVAEError("guidance is on the class: pass the classes to sample")
            null = torch.full_like(classes, self.config.num_classes)
            speakers = None if speakers is None else speakers.repeat(2)
            classes = torch.cat([classes, null])
        return self.net.generate(batch, length, None, self._globals(speakers, classes), controls, generator)
