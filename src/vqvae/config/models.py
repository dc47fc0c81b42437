"""The autoencoders' architectures: the quantizer fields they share (:class:`QuantizerConfig`), the
image VQ-VAE (:class:`ImageModelConfig`) and the audio VQ-VAE (:class:`AudioModelConfig`, a
:class:`WaveNetStack`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from vqvae.errors import VQVAEError

QUANTIZERS = ("ema", "vq", "rvq", "fsq", "lfq")
MAX_CODES = 1 << 20


@dataclass(kw_only=True)
class QuantizerConfig:
    """The vector-quantisation fields every autoencoder shares (``model.*`` for images, ``audio.*`` for
    audio), validated here once and turned into a layer by :func:`vqvae.quantize.build_quantizer`."""

    embedding_dim: int = 64  # D, size of a code vector
    num_embeddings: int = 512  # K, number of codes
    quantizer: str = "ema"  # ema (VectorQuantizerEMA), vq (VectorQuantizer), rvq (ResidualVQ), fsq, lfq
    commitment_cost: float = 0.25  # beta
    decay: float = 0.99  # EMA decay (ema, rvq)
    epsilon: float = 1e-5  # EMA Laplace smoothing (ema, rvq)
    kmeans_init: bool = False  # k-means codebook init on encoder outputs (train.kmeans_batches) at the start
    restart_threshold: float = 0.0  # re-seed codes used fewer times per step than this (0: never)
    # options of the codebook layers (ema, vq, and the levels of rvq)
    codebook_dim: int = 0  # size of a code vector, with learned projections in and out; 0: D / heads
    cosine: bool = False  # l2-normalised inputs and codes
    rotation_trick: bool = False  # gradients by the rotation trick instead of straight-through
    heads: int = 1  # pieces per vector, each with its own index (ema, vq)
    separate_codebook_per_head: bool = False  # a codebook per head (ema, vq)
    sample_codebook_temp: float = 0.0  # > 0: draw codes in training at this temperature
    # rvq: K codes at each of num_quantizers levels, learned by EMA (residual_ema) or by gradient
    num_quantizers: int = 1
    residual_ema: bool = True
    quantize_dropout: bool = False  # train with a random number of levels
    fsq_levels: list[int] = dataclasses.field(default_factory=lambda: [8, 8, 8])  # fsq: levels per channel
    # lfq: 2^B = num_embeddings codes
    entropy_loss_weight: float = 0.1
    diversity_gamma: float = 1.0

    @property
    def num_codes(self) -> int:
        """How many values the code of one position takes (the prior's vocabulary)."""
        k = self.num_embeddings
        codes = {"rvq": k**self.num_quantizers, "fsq": math.prod(self.fsq_levels), "lfq": k}
        return codes.get(self.quantizer, k**self.heads)

    def validate_quantizer(self, section: str) -> None:
        """Refuse (VQVAEError) the first quantizer field out of range.

        Args:
            section: the recipe section the fields sit in, for the message (``model`` or ``audio``).
        """
        def check(name: str, ok: bool, expected: str) -> None:
            check_field(ok, f"{section}.{name}", getattr(self, name), expected)
        k, q = self.num_embeddings, self.quantizer
        check("quantizer", q in QUANTIZERS, " or ".join(QUANTIZERS))
        for name in ("embedding_dim", "num_embeddings", "heads", "num_quantizers"):
            check(name, getattr(self, name) >= 1, ">= 1")
        check("num_quantizers", self.num_quantizers <= 20, "<= 20")
        check("heads", self.heads <= 20 and bool(self.codebook_dim or self.embedding_dim % self.heads == 0),
              f"<= 20 and a divisor of embedding_dim {self.embedding_dim} (or set codebook_dim)")
        check("codebook_dim", self.codebook_dim >= 0, ">= 0")
        check("sample_codebook_temp", self.sample_codebook_temp >= 0, ">= 0")
        check("fsq_levels", bool(self.fsq_levels) and all(v >= 2 for v in self.fsq_levels), "integers >= 2")
        check("num_embeddings", q != "lfq" or (k >= 2 and k & (k - 1) == 0), "a power of two >= 2 (lfq)")
        for name in ("entropy_loss_weight", "diversity_gamma"):
            check(name, getattr(self, name) >= 0, ">= 0")
        # an option the layer would not use is refused, not ignored
        codebook = {"heads": 1, "codebook_dim": 0, "rotation_trick": False, "cosine": False,
                    "sample_codebook_temp": 0.0}
        residual = {"num_quantizers": 1, "quantize_dropout": False}
        allowed = {"ema": codebook, "vq": codebook, "rvq": {"cosine", "sample_codebook_temp", *residual}}
        for name, off in {**codebook, **residual}.items():
            check(name, name in allowed.get(q, ()) or getattr(self, name) == off,
                  f"{str(off).lower()} with quantizer {q}")
        # named by the field that sets the count: num_embeddings (or fsq_levels), with heads or levels
        counted = "fsq_levels" if q == "fsq" else "num_embeddings"
        check(counted, self.num_codes <= MAX_CODES, f"at most 2^20 codes per position with quantizer {q} "
              f"(they are counted and modelled; this gives {self.num_codes})")
        check("kmeans_init", not (self.kmeans_init and q in ("fsq", "lfq")), f"false with quantizer {q}")
        check_field(self.commitment_cost >= 0, f"{section}.commitment_cost", self.commitment_cost, ">= 0")
        check_field(0 <= self.decay < 1, f"{section}.decay", self.decay, "in [0, 1)")
        check_field(self.epsilon > 0, f"{section}.epsilon", self.epsilon, "> 0")
        check_field(self.restart_threshold >= 0, f"{section}.restart_threshold", self.restart_threshold,
                    ">= 0")


@dataclass(kw_only=True)
class ImageModelConfig(QuantizerConfig):
    """Architecture of the image VQ-VAE (what ``from_pretrained`` needs to rebuild it); the quantizer's fields
    are those of :class:`QuantizerConfig`."""

    in_channels: int = 1  # 1 for grayscale, 3 for RGB
    image_size: int = 28  # side of the (square) training images, in pixels
    hidden: int = 128  # channels of the conv nets at the latent resolution
    res_hidden: int = 32  # channels inside each residual block
    num_res_layers: int = 2  # residual blocks in the encoder and in the decoder
    # "mse"; "mse_in_range" (no penalty for overshooting 0 / 1 where the pixel is 0 / 1); or "logistic":
    # a discretized logistic likelihood of the 8-bit pixels, so log p(x|z) and bits/dim are real
    recon_loss: str = "mse"
    downsample: int = 4  # latent grid = image / downsample (a power of two)
    latents_per_position: int = 1  # G codes (one codebook) per grid position: the paper's CIFAR-10 has 8x8x10

    def validate(self) -> None:
        self.validate_quantizer("model")
        check_field(self.in_channels in (1, 3), "model.in_channels", self.in_channels, "1 or 3")
        check_field(self.image_size >= 4, "model.image_size", self.image_size, ">= 4")
        for name in ("hidden", "res_hidden"):
            check_field(getattr(self, name) >= 1, f"model.{name}", getattr(self, name), ">= 1")
        check_field(self.num_res_layers >= 0, "model.num_res_layers", self.num_res_layers, ">= 0")
        d = self.downsample
        check_field(d >= 2 and d & (d - 1) == 0, "model.downsample", d, "a power of two >= 2")
        check_field(self.latents_per_position >= 1, "model.latents_per_position", self.latents_per_position,
                    ">= 1")
        check_field(self.recon_loss in ("mse", "mse_in_range", "logistic"), "model.recon_loss",
                    self.recon_loss, '"mse", "mse_in_range" or "logistic"')

    @property
    def latent_size(self) -> int:
        """Side of the latent grid: ceil(image_size / downsample) (images are padded to a multiple)."""
        return -(-self.image_size // self.downsample)



class WaveNetStack:
    """What the configs of a WaveNet share (the audio VQ-VAE's decoder, the audio prior): their fields
    ``max_dilation`` (a power of two) and ``dilation_cycles`` give the layers' dilations, 1, 2, 4, ...,
    ``max_dilation``, repeated ``dilation_cycles`` times. Each config declares the two fields with its own
    defaults."""

    max_dilation: int
    dilation_cycles: int

    @property
    def dilations(self) -> list[int]:
        """One entry per layer: ``dilation_cycles * (log2(max_dilation) + 1)`` dilations."""
        return [2**i for i in range(self.max_dilation.bit_length())] * self.dilation_cycles

    def validate_dilations(self, section: str) -> None:
        """Refuse (VQVAEError) a ``max_dilation`` that is not a power of two or fewer than one cycle.

        Args:
            section: the recipe section the fields sit in, for the message (``audio`` or ``wavenet_prior``).
        """
        d = self.max_dilation
        check_field(d >= 1 and d & (d - 1) == 0, f"{section}.max_dilation", d, "a power of two")
        check_field(self.dilation_cycles >= 1, f"{section}.dilation_cycles", self.dilation_cycles, ">= 1")


@dataclass(kw_only=True)
class AudioModelConfig(QuantizerConfig, WaveNetStack):
    """Architecture of the audio VQ-VAE: a 1-D strided encoder, the quantizer (:class:`QuantizerConfig`'s
    fields), and a decoder from codes and speaker to sound: a WaveNet over mu-law samples conditioned on the
    upsampled codes (local) and on the speaker (global), as in the paper, or a spectral decoder (codes +
    speaker -> log-magnitude STFT frames, inverted by Griffin-Lim) that learns in far fewer steps."""

    sample_rate: int = 16000  # Hz; every waveform is resampled to it
    num_downsamples: int = 6  # strided convs (window 4, stride 2): one code per 2^6 = 64 samples
    hidden: int = 64  # encoder channels
    # "instance": each encoder output channel normalised to zero mean, unit variance over time (per utterance
    # or crop), so it cannot collapse to a constant that the codebook then follows; "none" as in the paper
    encoder_norm: str = "none"
    # what the encoder reads the waveform through: "conv", strided convolutions over the samples as in the
    # paper, or "mel", a fixed log-mel STFT (n_fft, frame_hop below) then convolutions at the frame rate
    encoder_frontend: str = "conv"
    encoder_mel_bands: int = 80  # encoder_frontend mel: mel bands of its input
    # encoder_frontend mel: "utterance" normalises each band over the utterance's frames (the recording's
    # channel and the speaker's average envelope taken out); "none" keeps the log-mel as it is
    encoder_input_norm: str = "none"
    # training only: each code replaced by its left and by its right neighbour with this probability each
    # (time jitter, Chorowski et al. 2019, arXiv:1901.08810): no fine timing (pitch pulses) in the codes; 0 as
    # in the paper
    jitter: float = 0.0
    use_codes: bool = True  # false: no encoder, a plain WaveNet (the baseline showing what the codes carry)
    speaker_conditioning: bool = True  # a learned speaker embedding in every WaveNet layer
    num_speakers: int = 0  # filled in from the corpus by `vqvae audio train`
    local_channels: int = 64  # width of the upsampled code features
    channels: int = 64  # WaveNet residual channels
    skip_channels: int = 128  # WaveNet skip channels
    max_dilation: int = 512  # dilations 1, 2, 4, ..., max_dilation ...
    dilation_cycles: int = 2  # ... repeated this many times
    decoder: str = "wavenet"  # "wavenet" (the paper's, fields above) or "spectral" (the fields below)
    n_fft: int = 512  # spectral: STFT window (n_fft / 2 + 1 linear frequency bins)
    frame_hop: int = 64  # spectral: samples per STFT frame; divides the code hop (2^num_downsamples)
    spectral_channels: int = 256  # spectral: width of the decoder's residual blocks
    spectral_layers: int = 8  # spectral: residual blocks (dilations 1, 2, 4, 8 in turn)
    mel_loss_weight: float = 1.0  # spectral: loss = L1 of log-magnitudes + this * multi-scale log-mel L1
    griffin_lim_iterations: int = 32  # spectral: Griffin-Lim iterations when decoding to a waveform
    griffin_lim_momentum: float = 0.99  # spectral: fast Griffin-Lim's momentum (0: the original algorithm)
    griffin_lim_power: float = 1.0  # spectral: predicted magnitude raised to this power before inversion
    # spectral: the predicted log-magnitude's detail across frequency (the harmonics over the envelope, the
    # envelope being its mean over 250 Hz) is multiplied by this before inversion: an L1-trained spectrum is
    # smoother than a real one, and Griffin-Lim turns smeared harmonics into noise; 1: as predicted
    harmonic_contrast: float = 1.0

    def validate(self) -> None:
        self.validate_quantizer("audio")
        check_field(self.decoder in ("wavenet", "spectral"), "audio.decoder", self.decoder,
                    '"wavenet" or "spectral"')
        check_field(self.encoder_frontend in ("conv", "mel"), "audio.encoder_frontend", self.encoder_frontend,
                    '"conv" or "mel"')
        check_field(self.encoder_input_norm in ("none", "utterance"), "audio.encoder_input_norm",
                    self.encoder_input_norm, '"none" or "utterance"')
        check_field(self.encoder_mel_bands >= 1, "audio.encoder_mel_bands", self.encoder_mel_bands, ">= 1")
        if self.decoder == "spectral":
            check_field(self.use_codes, "audio.use_codes", self.use_codes, "true with audio.decoder spectral")
        if self.decoder == "spectral" or self.encoder_frontend == "mel":
            check_field(self.frame_hop >= 1 and self.hop % self.frame_hop == 0, "audio.frame_hop",
                        self.frame_hop, f"a divisor of the code hop {self.hop} (2^audio.num_downsamples)")
            check_field(self.n_fft >= 2 * self.frame_hop and self.n_fft % 2 == 0, "audio.n_fft", self.n_fft,
                        f"even and >= 2 * audio.frame_hop ({2 * self.frame_hop})")
        if self.decoder == "spectral":
            for name, ok, expected in (
                    ("spectral_channels", self.spectral_channels >= 1, ">= 1"),
                    ("spectral_layers", self.spectral_layers >= 1, ">= 1"),
                    ("mel_loss_weight", self.mel_loss_weight >= 0, ">= 0"),
                    ("griffin_lim_iterations", self.griffin_lim_iterations >= 0, ">= 0"),
                    ("griffin_lim_momentum", 0 <= self.griffin_lim_momentum < 1, "in [0, 1)"),
                    ("griffin_lim_power", self.griffin_lim_power > 0, "> 0"),
                    ("harmonic_contrast", self.harmonic_contrast > 0, "> 0")):
                check_field(ok, f"audio.{name}", getattr(self, name), expected)
        check_field(self.sample_rate >= 1000, "audio.sample_rate", self.sample_rate, ">= 1000")
        check_field(1 <= self.num_downsamples <= 12, "audio.num_downsamples", self.num_downsamples,
                    "in 1..12")
        for name in ("hidden", "local_channels", "channels", "skip_channels"):
            check_field(getattr(self, name) >= 1, f"audio.{name}", getattr(self, name), ">= 1")
        self.validate_dilations("audio")
        check_field(self.encoder_norm in ("none", "instance"), "audio.encoder_norm", self.encoder_norm,
                    '"none" or "instance"')
        check_field(0 <= self.jitter <= 0.5, "audio.jitter", self.jitter, "in [0, 0.5]")
        check_field(self.num_speakers >= 0, "audio.num_speakers", self.num_speakers, ">= 0")
        check_field(self.use_codes or not self.kmeans_init, "audio.kmeans_init", self.kmeans_init,
                    "false when audio.use_codes is false (there is no codebook)")

    @property
    def hop(self) -> int:
        """Samples per code."""
        return 2**self.num_downsamples



def check_field(ok: bool, key: str, value: Any, expected: str) -> None:
    """Refuse (VQVAEError) a config value: ``key must be expected, got value``."""
    if not ok:
        raise VQVAEError(f"{key} must be {expected}, got {value!r}")
