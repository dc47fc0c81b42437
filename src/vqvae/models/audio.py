"""The audio VQ-VAE (section 4.3 of arXiv:1711.00937): raw waveform -> 1-D strided encoder (64x) ->
quantizer -> codes; a WaveNet decoder predicts every mu-law sample from the samples before it, the upsampled
codes and a learned speaker embedding. Decoding one speaker's codes with another speaker's id converts the
voice.

With ``decoder: spectral`` the codes and the speaker embedding are decoded instead to the log-magnitude
STFT (:class:`vqvae.nets.spectral.SpectralDecoder`), trained by L1 on log-magnitudes plus a multi-scale
log-mel L1, and turned into a waveform by Griffin-Lim: the encoder, the quantizer and the codes are the
same.

With ``use_codes: false`` the same WaveNet is trained without any codes: the baseline whose likelihood
shows how much information the codes carry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.config import AudioModelConfig
from vqvae.errors import VQVAEError
from vqvae.likelihoods import mu_law_decode, mu_law_encode
from vqvae.models.pretrained import Pretrained
from vqvae.nets.audio import AudioEncoder, CodeUpsampler, MelEncoder, time_jitter
from vqvae.nets.controls import SamplingControls
from vqvae.nets.spectral import SpectralDecoder
from vqvae.nets.wavenet import WaveNet
from vqvae.quantize import QuantizerLayer, build_quantizer
from vqvae.spectral import griffin_lim, log_magnitude, mel_filterbank, sharpen_harmonics, spectral_loss


@dataclass
class AudioVQVAEOutput:
    """Forward pass on waveforms (B, T): ``loss`` = ``recon_loss`` + ``vq_loss``; ``recon_loss`` the
    decoder's NLL in nats per sample (mu-law classes) for the WaveNet decoder, the spectral loss
    (``spectral_l1`` + ``mel_loss_weight`` * ``mel_loss``; both 0 for a WaveNet) for the spectral one;
    ``indices`` (B, T / hop) int64, the quantizer's flat codes (empty without codes); ``quantizer_parts`` the
    quantizer's named terms."""

    loss: Tensor
    recon_loss: Tensor
    vq_loss: Tensor
    commitment_loss: Tensor
    perplexity: Tensor
    indices: Tensor
    spectral_l1: Tensor
    mel_loss: Tensor
    quantizer_parts: dict[str, Tensor] = field(default_factory=dict)


# the multi-scale mel loss: (mel bands, frames pooled) -- finer in frequency, then coarser in both
MEL_SCALES = ((80, 1), (40, 2), (20, 4))


class AudioVQVAE(Pretrained, nn.Module):
    """Waveforms are float in [-1, 1], (B, T) with T a multiple of ``config.hop``; speakers (B,) int64.

    Args:
        config: the architecture; None takes the defaults of :class:`~vqvae.config.AudioModelConfig`.
        **overrides: fields of the config to replace (the result is validated).
    """

    checkpoint_kind = "audio"
    config_section = "audio"

    def __init__(self, config: AudioModelConfig | None = None, **overrides: Any):
        super().__init__()
        config = dataclasses.replace(config or AudioModelConfig(), **overrides)
        config.validate()
        self.config = c = config
        if c.use_codes:
            self.encoder: AudioEncoder | MelEncoder = (
                MelEncoder(c.sample_rate, c.n_fft, c.frame_hop, c.hop, c.encoder_mel_bands, c.hidden,
                           c.embedding_dim, c.encoder_norm, c.encoder_input_norm)
                if c.encoder_frontend == "mel"
                else AudioEncoder(c.hidden, c.embedding_dim, c.num_downsamples, c.encoder_norm))
            self.quantizer: QuantizerLayer | None = build_quantizer(c, dim=1)
            self.upsampler = CodeUpsampler(c.embedding_dim, c.local_channels, c.num_downsamples)
        else:
            self.encoder, self.quantizer, self.upsampler = None, None, None
        if c.decoder == "spectral":
            self.upsampler = None
            self.decoder: WaveNet | SpectralDecoder = SpectralDecoder(
                c.embedding_dim, c.spectral_channels, c.n_fft // 2 + 1, c.hop // c.frame_hop,
                c.spectral_layers, self.num_speakers)
            for i, (bands, _) in enumerate(MEL_SCALES):  # buffers: they follow the model's device
                self.register_buffer(f"mel_bank{i}", mel_filterbank(c.sample_rate, c.n_fft, bands),
                                     persistent=False)
        else:
            self.decoder = WaveNet(256, c.channels, c.skip_channels, c.dilations,
                                   local_channels=c.local_channels if c.use_codes else 0,
                                   num_globals=self.num_speakers)

    @property
    def spectral(self) -> bool:
        """Whether the decoder predicts spectra (``decoder: spectral``) rather than samples."""
        return self.config.decoder == "spectral"

    @property
    def num_speakers(self) -> int:
        """Speakers the decoder is conditioned on (0: none)."""
        return self.config.num_speakers if self.config.speaker_conditioning else 0

    # -- checks ---------------------------------------------------------------------------------------
    def _check_waves(self, x: Tensor) -> None:
        hop = self.config.hop
        if x.dim() != 2 or x.shape[1] < hop or x.shape[1] % hop:
            raise VQVAEError("expected waveforms of shape (B, T) with T a positive multiple of "
                             f"{hop} samples (one code), got {tuple(x.shape)}")

    def _speakers(self, speakers: Tensor | None, batch: int) -> Tensor | None:
        if not self.num_speakers:
            return None
        if speakers is None or speakers.shape != (batch,):
            raise VQVAEError("this model is conditioned on the speaker: "
                             f"pass speaker ids of shape ({batch},)")
        if batch and (int(speakers.min()) < 0 or int(speakers.max()) >= self.num_speakers):
            raise VQVAEError(f"speaker ids must lie in [0, {self.num_speakers}), got "
                             f"[{int(speakers.min())}, {int(speakers.max())}]")
        return speakers

    # -- the pipeline ---------------------------------------------------------------------------------
    def encode_continuous(self, x: Tensor) -> Tensor:
        """z_e: waveforms (B, T) -> (B, D, T / hop), from what training feeds the encoder: the mu-law values
        the WaveNet decoder models, the waveform itself for the spectral decoder.

        Args:
            x: (B, T) waveforms in [-1, 1], T a positive multiple of ``hop``.
        Returns:
            (B, D, T / hop) continuous latents.
        Raises:
            VQVAEError: the model has no codes, or waveforms of the wrong shape.
        """
        if self.encoder is None:
            raise VQVAEError("this model has no codes (audio.use_codes is false)")
        self._check_waves(x)
        return self.encoder((x if self.spectral else mu_law_decode(mu_law_encode(x)))[:, None])

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Waveforms (B, T) -> codes (B, T / hop): the codes a training forward pass finds for ``x``. Never
        updates the codebook.

        Args:
            x: (B, T) waveforms in [-1, 1], T a positive multiple of ``hop``.
        Returns:
            (B, T / hop) int64 codes.
        Raises:
            VQVAEError: the model has no codes, or waveforms of the wrong shape.
        """
        if self.quantizer is None:
            raise VQVAEError("this model has no codes (audio.use_codes is false)")
        with self.quantizer.frozen():
            return self.quantizer.flat_indices(self.quantizer(self.encode_continuous(x)).indices)

    def _code_vectors(self, indices: Tensor) -> Tensor:
        k = self.config.num_codes
        if indices.dim() != 2 or (indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= k)):
            raise VQVAEError(f"expected codes (B, L) in [0, {k}), got {tuple(indices.shape)}")
        return self.quantizer.lookup_codes(indices).transpose(1, 2)  # (B, D, L)

    def local_features(self, indices: Tensor) -> Tensor:
        """Codes (B, L) -> the WaveNet decoder's local conditioning (B, C, L * hop).

        Args:
            indices: (B, L) codes in [0, K).
        Returns:
            (B, C, L * hop) upsampled features.
        Raises:
            VQVAEError: a spectral decoder, or codes of the wrong shape or range.
        """
        if self.spectral:
            raise VQVAEError("a spectral decoder has no local features: use log_spectrum")
        return self.upsampler(self._code_vectors(indices))

    def log_spectrum(self, indices: Tensor, speakers: Tensor | None = None) -> Tensor:
        """Spectral decoder: codes (B, L) and speakers (B,) -> log-magnitudes.

        Args:
            indices: (B, L) codes in [0, K).
            speakers: (B,) speaker ids; required exactly when the model is conditioned on the speaker.
        Returns:
            (B, n_fft / 2 + 1, L * hop / frame_hop) log-magnitudes.
        Raises:
            VQVAEError: not a spectral decoder, or codes or speakers of the wrong shape or range.
        """
        if not self.spectral:
            raise VQVAEError("log_spectrum needs a spectral decoder (audio.decoder: spectral)")
        return self.decoder(self._code_vectors(indices), self._speakers(speakers, indices.shape[0]))

    def target_spectrum(self, x: Tensor) -> Tensor:
        """What the spectral decoder predicts for waveforms: their log-magnitude STFT.

        Args:
            x: (B, T) waveforms.
        Returns:
            (B, F, T / frame_hop) log-magnitudes, F = n_fft / 2 + 1.
        """
        return log_magnitude(x, self.config.n_fft, self.config.frame_hop)

    def spectral_losses(self, predicted: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(L1 of the log-magnitudes, multi-scale mel loss) of log-magnitudes (B, F, N), in float32.

        Args:
            predicted: (B, F, N) predicted log-magnitudes.
            target: (B, F, N) target log-magnitudes.
        Returns:
            ``(l1, mel_loss)``, two scalars.
        """
        banks = [getattr(self, f"mel_bank{i}") for i in range(len(MEL_SCALES))]
        with torch.autocast(predicted.device.type, enabled=False):
            return spectral_loss(predicted.float(), target.float(), banks, [p for _, p in MEL_SCALES])

    def forward(self, x: Tensor, speakers: Tensor | None = None) -> AudioVQVAEOutput:
        """Encode, quantise (with time jitter in training) and score the decoder on a batch.

        Args:
            x: (B, T) waveforms in [-1, 1], T a positive multiple of ``hop``.
            speakers: (B,) speaker ids; required exactly when the model is conditioned on the speaker.
        Returns:
            the :class:`AudioVQVAEOutput` with losses, perplexity and codes.
        Raises:
            VQVAEError: waveforms or speakers of the wrong shape or range.
        """
        self._check_waves(x)
        spk = self._speakers(speakers, x.shape[0])
        zero = x.new_zeros(())
        if self.quantizer is not None:
            q = self.quantizer(self.encode_continuous(x))
            z_q = time_jitter(q.quantized, self.config.jitter) if self.training else q.quantized
            vq_loss, commit, ppl, parts = q.loss, q.commitment_loss, q.perplexity, q.parts
            idx = self.quantizer.flat_indices(q.indices)
        else:
            z_q, vq_loss, commit, ppl, parts = None, zero, zero, zero, {}
            idx = torch.zeros(x.shape[0], 0, dtype=torch.long, device=x.device)
        if self.spectral:
            l1, mel = self.spectral_losses(self.decoder(z_q, spk), self.target_spectrum(x))
            recon = l1 + self.config.mel_loss_weight * mel
        else:
            target = mu_law_encode(x)  # (B, T) classes 0..255
            local = self.upsampler(z_q) if z_q is not None else None  # (B, C, T)
            # nats per sample
            recon, l1, mel = F.cross_entropy(self.decoder(target, local, spk), target), zero, zero
        return AudioVQVAEOutput(recon + vq_loss, recon, vq_loss, commit, ppl, idx, l1, mel, parts)

    @torch.no_grad()
    def nll(self, x: Tensor, speakers: Tensor | None = None, indices: Tensor | None = None) -> Tensor:
        """Decoder NLL in nats of every sample given the codes of ``x`` (or ``indices``) and the speaker.

        Args:
            x: (B, T) waveforms in [-1, 1], T a positive multiple of ``hop``.
            speakers: (B,) speaker ids; required exactly when the model is conditioned on the speaker.
            indices: (B, T / hop) codes to condition on; None encodes ``x`` (ignored without codes).
        Returns:
            (B, T) negative log-likelihoods in nats.
        Raises:
            VQVAEError: a spectral decoder, or inputs of the wrong shape or range.
        """
        if self.spectral:
            raise VQVAEError("a spectral decoder has no likelihood of the samples "
                             "(audio.decoder: spectral)")
        self._check_waves(x)
        spk = self._speakers(speakers, x.shape[0])
        target = mu_law_encode(x)
        local = None
        if self.quantizer is not None:
            local = self.local_features(self.encode(mu_law_decode(target)) if indices is None else indices)
        return self.decoder.nll(target, local, spk)

    @torch.no_grad()
    def decode_many(self, codes: list[Tensor], speakers: Tensor | None = None, *, temperature: float = 1.0,
                    generator: torch.Generator | None = None) -> list[Tensor]:
        """Decode code sequences of different lengths in one batch. Each sequence's local features are made
        alone (the upsampler never sees padding) and zero-padded; the WaveNet is causal, so nothing after a
        sequence's end reaches it. Sequences of equal length decode exactly as :meth:`decode_indices` of
        their stack does.

        Args:
            codes: code sequences, (L_i,) each.
            speakers: (len(codes),) speaker ids; required exactly when the model is conditioned on the
                speaker.
            temperature: sampling temperature of the WaveNet (> 0); unused by a spectral decoder.
            generator: random generator for sampling (or Griffin-Lim's initial phase); None: the global one.
        Returns:
            one waveform (L_i * hop,) in [-1, 1] per sequence; [] for no sequences.
        Raises:
            VQVAEError: a model without codes, or codes or speakers of the wrong shape or range.
        """
        if self.quantizer is None:
            raise VQVAEError("decode_many needs a model with codes (audio.use_codes: true)")
        if not codes:
            return []
        if self.spectral:
            return self._invert([self.log_spectrum(c[None],
                                                   None if speakers is None else speakers[i : i + 1])[0]
                                 for i, c in enumerate(codes)], generator)
        feats = [self.local_features(c[None])[0] for c in codes]
        longest = max(f.shape[1] for f in feats)
        local = torch.stack([F.pad(f, (0, longest - f.shape[1])) for f in feats])
        spk = self._speakers(speakers, len(codes))
        controls = SamplingControls(temperature)
        out = mu_law_decode(self.decoder.generate(len(codes), longest, local, spk, controls, generator))
        return [o[: f.shape[1]] for o, f in zip(out, feats)]

    @torch.no_grad()
    def decode_indices(self, indices: Tensor | None, speakers: Tensor | None = None, *,
                       length: int | None = None, temperature: float = 1.0,
                       generator: torch.Generator | None = None, naive: bool = False) -> Tensor:
        """Generate waveforms (B, L * hop) in [-1, 1] from codes (B, L) and speakers (B,), one sample at a
        time. A spectral decoder predicts every frame at once and inverts the spectrum by Griffin-Lim.

        Args:
            indices: (B, L) codes; None for a model without codes (``use_codes: false``).
            speakers: (B,) speaker ids; required exactly when the model is conditioned on the speaker.
            length: samples to generate, for a model without codes only.
            temperature: sampling temperature of the WaveNet (> 0); unused by a spectral decoder.
            generator: random generator for sampling (or Griffin-Lim's initial phase); None: the global one.
            naive: rerun the network per sample (for checking); unused by a spectral decoder.
        Returns:
            (B, L * hop) waveforms in [-1, 1]; (B, ``length``) without codes.
        Raises:
            VQVAEError: codes missing (or given to a model without codes), or bad shapes or ranges.
        """
        if self.spectral:
            if indices is None:
                raise VQVAEError("pass the codes to decode")
            return torch.stack(self._invert(list(self.log_spectrum(indices, speakers)), generator))
        if self.quantizer is not None:
            if indices is None:
                raise VQVAEError("pass the codes to decode")
            local = self.local_features(indices)
            batch, length = local.shape[0], local.shape[2]
        else:
            if length is None or indices is not None:
                raise VQVAEError("a model without codes generates from nothing: pass length=, not codes")
            local, batch = None, (1 if speakers is None else speakers.shape[0])
        spk = self._speakers(speakers, batch)
        gen = self.decoder.generate_naive if naive else self.decoder.generate
        return mu_law_decode(gen(batch, length, local, spk, SamplingControls(temperature), generator))

    def _invert(self, spectra: list[Tensor], generator: torch.Generator | None) -> list[Tensor]:
        """Log-magnitudes (F, N_i) each -> waveforms (N_i * frame_hop,) by one batched Griffin-Lim."""
        c = self.config
        longest = max(s.shape[1] for s in spectra)
        width = max(1, round(250 * c.n_fft / c.sample_rate))  # the envelope: the mean over 250 Hz
        # |X| ** power (B, F, N), silent (zero) beyond each spectrum's own frames
        mags = torch.stack([F.pad(sharpen_harmonics(s.float()[None], c.harmonic_contrast, width)[0]
                                  .mul(c.griffin_lim_power).exp(), (0, longest - s.shape[1]))
                            for s in spectra])
        lengths = [s.shape[1] for s in spectra]
        waves = griffin_lim(mags, c.n_fft, c.frame_hop, iterations=c.griffin_lim_iterations,
                            momentum=c.griffin_lim_momentum, lengths=lengths, generator=generator)
        return [w[: n * c.frame_hop].clamp(-1, 1) for w, n in zip(waves, lengths)]
