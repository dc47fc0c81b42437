"""Configuration: the architecture (:class:`ImageModelConfig`) is kept apart from the run
(:class:`TrainConfig`); both are saved in every checkpoint, so evaluating or sampling needs no flags. Recipes
are YAML files (read by :mod:`vqvae.recipes`) with two sections, ``model:`` and ``train:``; overrides use
dotted keys (``model.hidden=64 train.lr=3e-4``); :mod:`vqvae.recipes` puts the sections of each kind of run
together. Unknown keys, wrong types and non-finite numbers are rejected with a message naming them."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
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
            _check(ok, f"{section}.{name}", getattr(self, name), expected)
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
        check("quantizer", self.num_codes <= MAX_CODES, f"a layer of at most 2^20 codes per position (they "
              f"are counted and modelled), this one has {self.num_codes}")
        check("kmeans_init", not (self.kmeans_init and q in ("fsq", "lfq")), f"false with quantizer {q}")
        _check(self.commitment_cost >= 0, f"{section}.commitment_cost", self.commitment_cost, ">= 0")
        _check(0 <= self.decay < 1, f"{section}.decay", self.decay, "in [0, 1)")
        _check(self.epsilon > 0, f"{section}.epsilon", self.epsilon, "> 0")
        _check(self.restart_threshold >= 0, f"{section}.restart_threshold", self.restart_threshold, ">= 0")


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
        _check(self.in_channels in (1, 3), "model.in_channels", self.in_channels, "1 or 3")
        _check(self.image_size >= 4, "model.image_size", self.image_size, ">= 4")
        for name in ("hidden", "res_hidden"):
            _check(getattr(self, name) >= 1, f"model.{name}", getattr(self, name), ">= 1")
        _check(self.num_res_layers >= 0, "model.num_res_layers", self.num_res_layers, ">= 0")
        d = self.downsample
        _check(d >= 2 and d & (d - 1) == 0, "model.downsample", d, "a power of two >= 2")
        _check(self.latents_per_position >= 1, "model.latents_per_position", self.latents_per_position,
               ">= 1")
        _check(self.recon_loss in ("mse", "mse_in_range", "logistic"), "model.recon_loss", self.recon_loss,
               '"mse", "mse_in_range" or "logistic"')

    @property
    def latent_size(self) -> int:
        """Side of the latent grid: ceil(image_size / downsample) (images are padded to a multiple)."""
        return -(-self.image_size // self.downsample)


@dataclass
class PixelCNNConfig:
    """The Gated PixelCNN prior's architecture; ``num_embeddings``, ``num_classes`` from the VQ-VAE's data."""

    num_embeddings: int = 512  # K: codes per position (the VQ-VAE's codebook size)
    num_classes: int = 10  # labels for conditioning (0: unconditional)
    channels: int = 64  # width of both stacks
    num_layers: int = 12  # gated layers
    kernel_size: int = 5  # odd; the first layer uses the same size
    head_channels: int = 256  # width of the output head
    conditional: bool = True  # condition on the class label (train-prior sets num_classes to 0 when false)

    def validate(self) -> None:
        for name in ("num_embeddings", "channels", "num_layers", "head_channels"):
            _check(getattr(self, name) >= 1, f"prior.{name}", getattr(self, name), ">= 1")
        _check(self.num_classes >= 0, "prior.num_classes", self.num_classes, ">= 0")
        _check(self.kernel_size >= 3 and self.kernel_size % 2 == 1, "prior.kernel_size", self.kernel_size,
               "odd and >= 3")


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
        _check(d >= 1 and d & (d - 1) == 0, f"{section}.max_dilation", d, "a power of two")
        _check(self.dilation_cycles >= 1, f"{section}.dilation_cycles", self.dilation_cycles, ">= 1")


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
        _check(self.decoder in ("wavenet", "spectral"), "audio.decoder", self.decoder,
               '"wavenet" or "spectral"')
        _check(self.encoder_frontend in ("conv", "mel"), "audio.encoder_frontend", self.encoder_frontend,
               '"conv" or "mel"')
        _check(self.encoder_input_norm in ("none", "utterance"), "audio.encoder_input_norm",
               self.encoder_input_norm, '"none" or "utterance"')
        _check(self.encoder_mel_bands >= 1, "audio.encoder_mel_bands", self.encoder_mel_bands, ">= 1")
        if self.decoder == "spectral":
            _check(self.use_codes, "audio.use_codes", self.use_codes, "true with audio.decoder spectral")
        if self.decoder == "spectral" or self.encoder_frontend == "mel":
            _check(self.frame_hop >= 1 and self.hop % self.frame_hop == 0, "audio.frame_hop", self.frame_hop,
                   f"a divisor of the code hop {self.hop} (2^audio.num_downsamples)")
            _check(self.n_fft >= 2 * self.frame_hop and self.n_fft % 2 == 0, "audio.n_fft", self.n_fft,
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
                _check(ok, f"audio.{name}", getattr(self, name), expected)
        _check(self.sample_rate >= 1000, "audio.sample_rate", self.sample_rate, ">= 1000")
        _check(1 <= self.num_downsamples <= 12, "audio.num_downsamples", self.num_downsamples, "in 1..12")
        for name in ("hidden", "local_channels", "channels", "skip_channels"):
            _check(getattr(self, name) >= 1, f"audio.{name}", getattr(self, name), ">= 1")
        self.validate_dilations("audio")
        _check(self.encoder_norm in ("none", "instance"), "audio.encoder_norm", self.encoder_norm,
               '"none" or "instance"')
        _check(0 <= self.jitter <= 0.5, "audio.jitter", self.jitter, "in [0, 0.5]")
        _check(self.num_speakers >= 0, "audio.num_speakers", self.num_speakers, ">= 0")
        _check(self.use_codes or not self.kmeans_init, "audio.kmeans_init", self.kmeans_init,
               "false when audio.use_codes is false (there is no codebook)")

    @property
    def hop(self) -> int:
        """Samples per code."""
        return 2**self.num_downsamples


@dataclass
class AudioPriorConfig(WaveNetStack):
    """Architecture of the audio prior: a WaveNet over code sequences (K-way softmax), optionally conditioned
    on the speaker and on the utterance's class (e.g. the digit). The counts come from the VQ-VAE's corpus."""

    num_embeddings: int = 512
    num_speakers: int = 0
    speaker_conditioning: bool = True
    num_classes: int = 0  # classes of the corpus's utterances.tsv (0: none)
    class_conditioning: bool = True
    channels: int = 64
    skip_channels: int = 128
    max_dilation: int = 64  # dilations 1 .. max_dilation, repeated dilation_cycles times
    dilation_cycles: int = 2

    def validate(self) -> None:
        for name in ("num_embeddings", "channels", "skip_channels"):
            _check(getattr(self, name) >= 1, f"wavenet_prior.{name}", getattr(self, name), ">= 1")
        self.validate_dilations("wavenet_prior")
        for name in ("num_speakers", "num_classes"):
            _check(getattr(self, name) >= 0, f"wavenet_prior.{name}", getattr(self, name), ">= 0")


@dataclass
class TrainConfig:
    """How one training run goes (data, optimiser, budget, logging)."""

    data: str = "fashion-mnist"  # "fashion-mnist", "mnist", "cifar10" or a path (IDX/CIFAR dir, image folder)
    batch_size: int = 64
    lr: float = 1e-3  # peak learning rate (Adam)
    weight_decay: float = 0.0
    schedule: str = "cosine"  # "cosine" (decays to min_lr_ratio * lr over the budget) or "constant"
    warmup_steps: int = 100  # linear warm-up of the learning rate
    min_lr_ratio: float = 0.05  # final learning rate of the cosine schedule, as a fraction of lr
    steps: int = 0  # stop after this many steps (0: no step limit; then max_seconds must be set)
    max_seconds: float = 0.0  # wall-clock budget for the optimisation steps (0: none)
    # Batches below are of train.batch_size examples: images, utterances, or code grids / sequences.
    kmeans_batches: int = 20  # training batches whose encoder outputs the k-means init sees (*.kmeans_init)
    precision: str = "fp32"  # nets' autocast: "fp32", "bf16", "fp16" (loss-scaled on CUDA); quantizer: fp32
    seed: int = 0
    threads: int = 0  # torch intra-op threads (0: leave PyTorch's default)
    num_workers: int = 0  # DataLoader processes loading image folders / speech files (0: in-process)
    log_every: int = 50  # steps between CSV/TensorBoard rows
    checkpoint_every: float = 60.0  # seconds between checkpoints (one is always written at the end)
    eval_batches: int = 0  # test-split batches evaluated at the end of training (0: the whole split)
    crop_length: int = 8192  # audio only: samples per training crop (codes per crop for an audio prior)
    # a non-finite loss or gradient: "skip" undoes the step (logged; 50 in a row stop the run), "stop" ends it
    on_nonfinite: str = "skip"

    def validate(self) -> None:
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, ">= 1")
        _check(self.lr > 0, "train.lr", self.lr, "> 0")
        _check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, ">= 0")
        _check(self.schedule in ("cosine", "constant"), "train.schedule", self.schedule,
               '"cosine" or "constant"')
        _check(self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, ">= 0")
        _check(0 <= self.min_lr_ratio <= 1, "train.min_lr_ratio", self.min_lr_ratio, "in [0, 1]")
        _check(self.steps >= 0, "train.steps", self.steps, ">= 0")
        _check(self.max_seconds >= 0, "train.max_seconds", self.max_seconds, ">= 0")
        if self.steps == 0 and self.max_seconds == 0:
            raise VQVAEError("set train.steps or train.max_seconds (--steps / --max-seconds): "
                             "the run has no end")
        _check(self.kmeans_batches >= 1, "train.kmeans_batches", self.kmeans_batches, ">= 1")
        _check(self.precision in ("fp32", "bf16", "fp16"), "train.precision", self.precision,
               '"fp32", "bf16" or "fp16"')
        _check(self.threads >= 0, "train.threads", self.threads, ">= 0")
        _check(self.num_workers >= 0, "train.num_workers", self.num_workers, ">= 0")
        _check(self.log_every >= 1, "train.log_every", self.log_every, ">= 1")
        _check(self.checkpoint_every > 0, "train.checkpoint_every", self.checkpoint_every, "> 0")
        _check(self.eval_batches >= 0, "train.eval_batches", self.eval_batches, ">= 0")
        _check(self.crop_length >= 1, "train.crop_length", self.crop_length, ">= 1")
        _check(self.on_nonfinite in ("skip", "stop"), "train.on_nonfinite", self.on_nonfinite,
               '"skip" or "stop"')


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise VQVAEError(f"{key} must be {expected}, got {value!r}")


def _coerce(cls_name: str, f: dataclasses.Field, value: Any) -> Any:
    hint = typing.get_type_hints(_CLASSES[cls_name])[f.name]
    key = f"{cls_name}.{f.name}"
    if isinstance(hint, types.UnionType):
        hint = next(t for t in typing.get_args(hint) if t is not type(None))
    if typing.get_origin(hint) is list:
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise VQVAEError(f"{key} must be a list of integers, got {value!r}")
        return list(value)
    if hint is bool or hint is str:
        if not isinstance(value, hint):
            raise VQVAEError(f"{key} must be {'true or false' if hint is bool else 'a string'}, "
                             f"got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise VQVAEError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (isinstance(value, float)
                or abs(value) < 10**308) or not math.isfinite(value):  # ints beyond floats
            raise VQVAEError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    raise TypeError(f"unsupported config type {hint} for {key}")


_CLASSES = {"model": ImageModelConfig, "prior": PixelCNNConfig, "train": TrainConfig,
            "audio": AudioModelConfig, "wavenet_prior": AudioPriorConfig}


def section_from_dict(name: str, values: dict[str, Any]) -> Any:
    """Build one config section from a dict, rejecting unknown keys and bad types.

    Args:
        name: the section (``model``, ``prior``, ``train``, ``audio`` or ``wavenet_prior``).
        values: its keys and values, as read from YAML or config.json.

    Returns:
        The section's dataclass (not validated: see its ``validate``).
    """
    cls = _CLASSES[name]
    if not isinstance(values, dict):
        raise VQVAEError(f"config section {name!r} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise VQVAEError(f"unknown config key(s) in {name}: {', '.join(unknown)} "
                         f"(known: {', '.join(fields)})")
    return cls(**{k: _coerce(name, fields[k], v) for k, v in values.items()})
