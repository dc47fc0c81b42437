"""Whole-split metrics of the autoencoders and the priors, and of speaker conversion. Every metric accumulates
sums over the whole split and divides once at the end (never a mean of batch means, see
:class:`vqvae.metrics.MeanAccumulator`): ``mse`` is the mean squared error per pixel of the reconstructions
(clamped to the valid range [0, 1]), ``psnr`` = 10 log10(1 / mse) of that split-wide mse, ``psnr_per_image``
the mean of per-image PSNRs (always >= ``psnr``), ``ssim`` the mean per-image SSIM (7x7 uniform window),
codebook usage over the whole split. Each ``*_run`` function is a command of the CLI: it loads a run directory
and its data and returns the metrics."""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqvae import checkpoint
from vqvae.codes import SpeechCodes
from vqvae.data import ImageDataset, to_float
from vqvae.data.audio import SpeechDataset
from vqvae.devices import model_device
from vqvae.distributed import Ranks, join
from vqvae.errors import VQVAEError
from vqvae.fileio import atomic_write_npz, check_out_dir
from vqvae.judges.audio import SpeechJudges, write_conversion_verdicts
from vqvae.judges.codes import probe_codes
from vqvae.metrics import (
    CodebookUsage,
    MeanAccumulator,
    bits_per_dim,
    elbo_bits_per_dim,
    nats_to_bits,
    psnr_from_mse,
    ssim,
    uniform_prior_nll_nats,
)
from vqvae.models import VQVAE, AudioVQVAE
from vqvae.priors.pixelcnn import GatedPixelCNN
from vqvae.priors.wavenet import WaveNetPrior
from vqvae.reconstruct import decode_as, write_conversions
from vqvae.runs import check_generation_options, load_prior, load_run, run_split

__all__ = ["evaluate_audio", "evaluate_audio_prior", "evaluate_conversion", "evaluate_conversion_run",
           "evaluate_image_model", "evaluate_image_prior", "evaluate_image_prior_run", "evaluate_run",
           "write_codebook_usage"]


def _count(n: int, limit: int | None, name: str, what: str) -> int:
    n = n if limit is None else min(limit, n)
    if n == 0:
        raise VQVAEError(f"{name} has no {what} to evaluate")
    return n


def _sums(*names: str) -> MeanAccumulator:
    """An accumulator with ``names`` registered in this order on every rank (so the ranks' sums line up)."""
    sums = MeanAccumulator()
    for name in names:
        sums.add(name, 0.0, 0)
    return sums


def _reduce(ranks: Ranks, sums: MeanAccumulator, usage: CodebookUsage | None = None) -> None:
    """Add up every rank's sums (and code counts): afterwards each rank holds the whole split's."""
    if ranks.world > 1:
        sums.merge(ranks.sum)
        if usage is not None:
            usage.merge(ranks.sum)


def write_codebook_usage(path: str | Path, usage: CodebookUsage, codebook: torch.Tensor) -> None:
    """``codebook.npz``, what the report draws: each code's ``counts`` (K,) and the ``codebook`` (K, D).
    Args:
        path: the file to write; usage: the code counts; codebook: (K, D) the code vectors."""
    atomic_write_npz(path, {"counts": usage.counts.numpy(),
                            "codebook": codebook.detach().float().cpu().numpy()})


def _usage_metrics(usage: CodebookUsage) -> dict[str, Any]:
    u = usage.as_dict()
    return {k: u[k] for k in ("perplexity", "codes_used", "num_embeddings", "dead_codes", "usage_fraction")}


@torch.no_grad()
def evaluate_image_model(model: VQVAE, data: ImageDataset, *, limit: int | None = None, batch_size: int = 500,
                         ranks: Ranks = Ranks(), num_workers: int = 0,
                         codebook_file: str | Path | None = None) -> dict[str, Any]:
    """Reconstruction quality and codebook usage (see the module docstring) of ``model`` on ``data``.
    Args:
        model, data: the image VQ-VAE and the images; limit: the first ``limit`` only (None: all).
        batch_size: images per batch; num_workers: DataLoader workers that read them (when more than 0).
        ranks: under torchrun each process takes every world-th batch and the sums are added up.
        codebook_file: where rank 0 writes the code counts (:func:`write_codebook_usage`); None: nowhere.
    Returns:
        The metrics, as ``eval.json`` holds them."""
    model.eval()
    n, dev = _count(len(data), limit, data.name, "images"), model_device(model)
    usage = CodebookUsage(model.config.num_embeddings)
    sums = _sums("nll_nats", "mse", "psnr_per_image", "ssim")
    logistic = model.config.recon_loss == "logistic"
    for (images,) in data.batches(ranks.mine(range(0, n, batch_size)), batch_size, n, num_workers):
        x = to_float(images.to(dev))
        idx = model.encode(x)  # (B, h, w)
        z_q = model.embed(idx)  # (B, G*D, h, w)
        recon = model.decode(z_q).clamp(0, 1).float()
        if logistic:
            sums.add("nll_nats", -model.pixel_log_prob(x, z_q).double().sum(), 1)
        usage.update(idx)
        err = (recon - x).pow(2)
        sums.add("mse", err.double().sum(), err.numel())
        per_image = err.flatten(1).mean(1).double()
        sums.add("psnr_per_image", (10 * torch.log10(1.0 / per_image.clamp(min=1e-12))).sum(), len(x))
        sums.add("ssim", ssim(recon, x).double().sum(), len(x))
    _reduce(ranks, sums, usage)
    if codebook_file is not None and ranks.main:
        write_codebook_usage(codebook_file, usage, model.quantizer.codebook)
    mse, h, k = sums.mean("mse"), model.config.latent_size, model.config.num_embeddings
    codes = math.prod(model.code_shape)  # per image: h * w * G
    out = {"split": data.name, "num_images": n, "mse": mse,
           "psnr": psnr_from_mse(max(mse, 1e-12)),  # capped at 120 dB so the JSON stays finite
           "psnr_per_image": sums.mean("psnr_per_image"), "ssim": sums.mean("ssim"), **_usage_metrics(usage),
           "latent_grid": [h, h], "latents_per_position": model.config.latents_per_position,
           "bits_per_image": codes * math.log2(k)}
    if logistic:  # the decoder's NLL, and the ELBO with the uniform prior (log K nats per latent)
        nll, pixels = sums.total("nll_nats"), sums.count("mse")
        out["nll_bits_per_dim"] = bits_per_dim(nll, pixels)
        out["elbo_bits_per_dim_uniform_prior"] = elbo_bits_per_dim(nll, n * uniform_prior_nll_nats(codes, k),
                                                                   pixels)
    return out


@torch.no_grad()
def evaluate_image_prior(prior: GatedPixelCNN, vq: VQVAE, data: ImageDataset, *, limit: int | None = None,
                         batch_size: int = 500, ranks: Ranks = Ranks(),
                         num_workers: int = 0) -> dict[str, Any]:
    """Likelihoods of a prior and its VQ-VAE over ``data``, summed over the whole split before dividing:

    * prior NLL of the codes z = encode(x), in nats and bits per latent, against log2 K of the uniform prior;
    * for a VQ-VAE with a pixel likelihood (``recon_loss: logistic``), image bits/dim of the negative ELBO
      ``(-log p(x|z) - log p(z)) / (num_dims ln 2)`` with the uniform prior (log p(z) = -h w log K) and with
      the learned prior (log p(z) from the PixelCNN). The posterior is one-hot, so it adds no entropy term.
      A class-conditional prior gives log p(z|y) for the true label y; log p(x) >= log p(x|z) + log p(z|y) +
      log p(y), so the label's cost under a uniform p(y), ln C nats per image, is added to make the
      learned-prior ELBO a bound on -log p(x) (``label_bits_per_dim``).
    Args:
        prior, vq: the Gated PixelCNN and the VQ-VAE whose codes it models; data: the images.
        limit, batch_size, ranks, num_workers: as :func:`evaluate_image_model`.
    Returns:
        The metrics, as ``eval.json`` holds them (``note`` says why image bits/dim are missing)."""
    prior.eval()
    vq.eval()
    n = _count(len(data), limit, data.name, "images")
    conditional = prior.config.num_classes > 0
    if conditional and len(data.classes) != prior.config.num_classes:
        raise VQVAEError(f"{data.name} has {len(data.classes)} classes, the prior was trained with "
                         f"{prior.config.num_classes}")
    logistic = vq.config.recon_loss == "logistic"
    h, k = vq.config.latent_size, vq.config.num_embeddings
    sums, dev = _sums("prior", "decoder"), model_device(vq)  # nats per latent; decoder nats per dimension
    for images, labels in data.batches(ranks.mine(range(0, n, batch_size)), batch_size, n, num_workers,
                                       labels=True):
        x = to_float(images.to(dev))
        idx = vq.encode(x)  # (B, h, w)
        labels = labels.to(dev) if conditional else None
        sums.add("prior", prior.nll(idx, labels).double().sum(), idx.numel())
        z_q = vq.embed(idx)
        sums.add("decoder", -vq.pixel_log_prob(x, z_q).double().sum() if logistic else 0.0, x.numel())
    _reduce(ranks, sums)
    per_latent = sums.mean("prior")
    out: dict[str, Any] = {
        "split": data.name, "num_images": n, "latent_grid": [h, h], "num_embeddings": k,
        "prior_nll_nats_per_latent": per_latent, "prior_nll_bits_per_latent": nats_to_bits(per_latent),
        "uniform_bits_per_latent": math.log2(k),
        "bits_below_uniform": math.log2(k) - nats_to_bits(per_latent),
        "prior_bits_per_image": nats_to_bits(sums.total("prior") / n),
    }
    if not logistic:
        out["note"] = ("image bits/dim need a VQ-VAE with a pixel likelihood (model.recon_loss=logistic); "
                       f"this one was trained with {vq.config.recon_loss}")
        return out
    dims = sums.count("decoder")
    prior_nats, decoder_nats = sums.total("prior"), sums.total("decoder")
    label_nats = n * math.log(prior.config.num_classes) if conditional else 0.0
    out["decoder_nll_bits_per_dim"] = bits_per_dim(decoder_nats, dims)
    out["elbo_bits_per_dim_uniform_prior"] = elbo_bits_per_dim(decoder_nats,
                                                               n * uniform_prior_nll_nats(h * h, k), dims)
    out["label_bits_per_dim"] = bits_per_dim(label_nats, dims)
    out["elbo_bits_per_dim_learned_prior"] = elbo_bits_per_dim(decoder_nats, prior_nats + label_nats, dims)
    return out


@torch.no_grad()
def evaluate_audio(model: AudioVQVAE, data: SpeechDataset, *, limit: int | None = None,
                   ranks: Ranks = Ranks(), train: SpeechDataset | None = None,
                   codebook_file: str | Path | None = None) -> dict[str, Any]:
    """Over whole utterances (cut to a multiple of the code hop): a WaveNet decoder's NLL in bits per mu-law
    sample given what it is conditioned on, or a spectral decoder's L1 of log-magnitudes and of multi-scale
    log-mel spectra (nats per frame); code usage, perplexity and the bit rate (codes per second times log2 K,
    and times log2 perplexity).
    Args:
        model, data, limit, ranks, codebook_file: as :func:`evaluate_image_model` (audio VQ-VAE, utterances).
        train: the train split, for the probes of :func:`vqvae.judges.codes.probe_codes`; None: no probes.
    Returns:
        The metrics, as ``eval.json`` holds them."""
    model.eval()
    c = model.config
    n = len(data) if limit is None else min(limit, len(data))
    usage = CodebookUsage(c.num_embeddings) if model.quantizer is not None else None
    sums, dev = _sums("nats", "l1", "mel", "utterances"), model_device(model)
    for i in ranks.mine(range(n)):
        length = len(data.waves[i]) // c.hop * c.hop
        if length == 0:
            continue
        x = torch.from_numpy(data.waves[i][:length])[None].to(dev)  # (1, T)
        speaker = torch.tensor([data.labels[i]], device=dev)
        idx = model.encode(x) if usage is not None else None
        if model.spectral:
            l1, mel = model.spectral_losses(model.log_spectrum(idx, speaker if model.num_speakers else None),
                                            model.target_spectrum(x))
            frames = length // c.frame_hop
            sums.add("l1", float(l1) * frames, frames)
            sums.add("mel", float(mel) * frames, frames)
        else:
            sums.add("nats", model.nll(x, speaker, idx).double().sum(), length)
        sums.add("utterances", 0.0, 1)
        if usage is not None:
            usage.update(idx)
    _reduce(ranks, sums, usage)
    if codebook_file is not None and usage is not None and ranks.main:
        write_codebook_usage(codebook_file, usage, model.quantizer.codebook)
    used = sums.count("utterances")
    if used == 0:
        raise VQVAEError(f"{data.name} has no utterance of at least one code ({c.hop} samples)")
    out: dict[str, Any] = {"split": data.name, "num_utterances": used, "sample_rate": c.sample_rate,
                           "decoder": c.decoder, "conditioned_on": (["codes"] if usage is not None else [])
                           + (["speaker"] if model.num_speakers else [])}
    if model.spectral:
        out.update(seconds=sums.count("l1") * c.frame_hop / c.sample_rate, spectral_l1=sums.mean("l1"),
                   mel_loss=sums.mean("mel"))
    else:
        per_sample = sums.mean("nats")
        out.update(seconds=sums.count("nats") / c.sample_rate, nll_nats_per_sample=per_sample,
                   bits_per_sample=nats_to_bits(per_sample))
    if usage is not None:
        u, rate = _usage_metrics(usage), c.sample_rate / c.hop
        out.update(codes_per_second=rate, bit_rate=rate * math.log2(c.num_embeddings),
                   entropy_bit_rate=rate * math.log2(max(u["perplexity"], 1.0)),
                   **{k: u[k] for k in ("codes_used", "num_embeddings", "dead_codes", "perplexity",
                                        "usage_fraction")})
        if train is not None and len(data.speakers) > 1:
            out.update(probe_codes(model, train, data))
    return out


@torch.no_grad()
def evaluate_audio_prior(prior: WaveNetPrior, data: SpeechCodes, codes_per_second: float, *,
                         limit: int | None = None, ranks: Ranks = Ranks()) -> dict[str, Any]:
    """The prior's NLL of whole code sequences (each from an empty context), in bits per code against the
    uniform prior's log2 K, and the bit rate it implies for the codes (codes per second * bits per code).
    Args:
        prior, data: the WaveNet prior and the code sequences of a split; codes_per_second: their rate.
        limit, ranks: as :func:`evaluate_image_model` (over sequences).
    Returns:
        The metrics, as ``eval.json`` holds them."""
    prior.eval()
    n = len(data) if limit is None else min(limit, len(data))
    sums, dev = _sums("nats"), model_device(prior)
    for i in ranks.mine(range(n)):
        q = torch.from_numpy(data.codes[i])[None].to(dev)
        speaker, klass = (torch.tensor([int(a[i])], device=dev) for a in (data.labels, data.classes))
        sums.add("nats", prior.nll(q, speaker, classes=klass).double().sum(), q.shape[1])
    _reduce(ranks, sums)
    k, per_code = prior.config.num_embeddings, sums.mean("nats")
    bits = nats_to_bits(per_code)
    return {"num_utterances": n, "num_codes": sums.count("nats"), "prior_nll_nats_per_code": per_code,
            "prior_bits_per_code": bits, "uniform_bits_per_code": math.log2(k),
            "bits_below_uniform": math.log2(k) - bits,
            "codes_per_second": codes_per_second, "bit_rate_with_prior": codes_per_second * bits,
            "bit_rate_uniform": codes_per_second * math.log2(k)}


@torch.no_grad()
def evaluate_conversion(model: AudioVQVAE, train: SpeechDataset, test: SpeechDataset, *, pairs: int = 16,
                        seconds: float = 1.5, seed: int = 0, temperature: float = 1.0,
                        wav_dir: str | Path | None = None, batch_size: int = 32,
                        one_stream: int = 16) -> dict[str, Any]:
    """Speaker conversion: test utterances are each encoded and decoded once as another speaker and once as
    their own (the reconstruction), then judged by :class:`vqvae.judges.audio.SpeechJudges` (speaker, content
    where the corpus has classes, pitch). Also the decoder's real-time factor: seconds of audio generated per
    second of compute, in batches and one utterance at a time.
    Args:
        model, train, test: the audio VQ-VAE and the corpus's splits (the judges learn from ``train``).
        pairs: test utterances converted; seconds: the first ``seconds`` of each; batch_size: decoded at once.
        seed: draws the utterances, target speakers and decoder samples; temperature: divides the logits.
        one_stream: the first ones decoded one at a time too; wav_dir: gets inputs, rebuilds and conversions.
    Returns:
        The judges' verdicts and the decoder's real-time factors."""
    c = model.config
    if model.quantizer is None or not model.num_speakers:
        raise VQVAEError("speaker conversion needs a model conditioned on codes and on the speaker")
    if model.num_speakers < 2:
        raise VQVAEError("speaker conversion needs at least two speakers")
    model.eval()
    rng, dev = np.random.default_rng(seed), model_device(model)
    gen = torch.Generator().manual_seed(seed)
    inputs, codes, sources, targets, classes = [], [], [], [], []
    for i in rng.permutation(len(test))[:pairs]:
        w = test.waves[i][: int(seconds * c.sample_rate)]
        w = w[: len(w) // c.hop * c.hop]
        if len(w) == 0:
            continue
        x = torch.from_numpy(np.ascontiguousarray(w))[None]
        inputs.append(x[0])
        codes.append(model.encode(x.to(dev))[0])
        sources.append(test.labels[i])
        targets.append(int(rng.choice([s for s in range(model.num_speakers) if s != sources[-1]])))
        classes.append(test.classes[i] if test.classes else -1)
    if not codes:
        raise VQVAEError(f"{test.name} has no utterance of at least one code")
    start = time.perf_counter()
    decode = partial(decode_as, model, temperature=temperature, generator=gen, batch_size=batch_size)
    converted, rebuilt = [], []
    for lo in range(0, len(codes), batch_size):  # each batch as the targets, then as its own speakers
        converted += decode(codes[lo : lo + batch_size], targets[lo : lo + batch_size])
        rebuilt += decode(codes[lo : lo + batch_size], sources[lo : lo + batch_size])
    compute = time.perf_counter() - start
    alone = codes[:one_stream]  # one utterance at a time, as a single listener would be served
    start = time.perf_counter()
    for q, s in zip(alone, sources):
        model.decode_many([q], torch.tensor([s], device=dev), temperature=temperature, generator=gen)
    one = time.perf_counter() - start
    judges = SpeechJudges(train, test, seed=seed)
    if wav_dir is not None:
        files = write_conversions(Path(wav_dir), test, c.sample_rate, (inputs, rebuilt, converted), sources,
                                  targets, classes)
        write_conversion_verdicts(Path(wav_dir), judges, *files)
    m = judges.conversion(inputs, converted, rebuilt, sources, targets, classes if test.classes else None)
    generated = sum(len(w) for w in converted + rebuilt) / c.sample_rate
    return {**m, "seconds_each": seconds, "decoder_real_time_factor": generated / compute,
            "decode_batch_size": min(batch_size, len(codes)),
            "decoder_real_time_factor_one_stream": sum(len(q) for q in alone) * c.hop / c.sample_rate / one}


def evaluate_run(run_dir: str | Path, *, kind: str | None = None, data: str | None = None,
                 split: str = "test", limit: int | None = None,
                 device: str | None = "auto") -> dict[str, Any]:
    """``vqvae evaluate`` and ``vqvae audio evaluate``: the autoencoder in ``run_dir`` on ``split``.
    Args:
        run_dir: an image (:func:`evaluate_image_model`) or audio (:func:`evaluate_audio`) VQ-VAE's run.
        kind: ``vqvae`` or ``audio`` to insist on one (refused in one line otherwise); None: the run's own.
        data, split: the data (None: the run's own) and its split; limit: the first ``limit`` examples only.
        device: where the model runs (``auto``: see :func:`vqvae.devices.resolve_device`).
    Returns:
        The metrics, as ``eval.json`` holds them."""
    kind = kind or checkpoint.read_config(run_dir).get("kind")
    if kind not in ("vqvae", "audio"):
        raise VQVAEError(f"{run_dir} holds a {kind!r} run, not an autoencoder "
                         f"(evaluate a prior with evaluate-prior)")
    ranks = join(device)
    model, config = load_run(run_dir, kind, ranks.device)
    test = run_split(model, config, data, split)
    if kind == "vqvae":
        return evaluate_image_model(model, test, limit=limit, ranks=ranks)
    return evaluate_audio(model, test, limit=limit, ranks=ranks,
                          train=run_split(model, config, data, "train"))


def evaluate_image_prior_run(prior_dir: str | Path, *, split: str = "test", limit: int | None = None,
                             device: str | None = "auto") -> dict[str, Any]:
    """``vqvae evaluate-prior``: :func:`evaluate_image_prior` of the prior in ``prior_dir`` with its VQ-VAE.
    Args:
        prior_dir: the prior's run; split (of its VQ-VAE's data), limit, device: as :func:`evaluate_run`.
    Returns:
        The metrics of :func:`evaluate_image_prior`."""
    ranks = join(device)
    prior, vq, _, vq_config = load_prior(prior_dir, "prior", ranks.device)
    return evaluate_image_prior(prior, vq, run_split(vq, vq_config, None, split), limit=limit, ranks=ranks)


def evaluate_conversion_run(run_dir: str | Path, *, data: str | None = None, pairs: int = 16,
                            seconds: float = 1.5, seed: int = 0, temperature: float = 1.0,
                            wav_dir: str | Path | None = None, overwrite: bool = False,
                            device: str | None = "auto") -> dict[str, Any]:
    """``vqvae audio conversion``: :func:`evaluate_conversion` of the audio VQ-VAE in ``run_dir`` on ``data``.
    Args:
        run_dir, data, device: as :func:`evaluate_run`; overwrite: ``wav_dir`` may be a non-empty directory.
        pairs, seconds, seed, temperature, wav_dir: as :func:`evaluate_conversion`.
    Returns:
        The metrics of :func:`evaluate_conversion`."""
    if wav_dir is not None:
        check_out_dir(wav_dir, overwrite, is_file="--wav-dir {out} is a file, not a directory",
                      not_empty="{out} already exists and is not empty: pass --overwrite to write into it")
    check_generation_options(temperature, seconds)
    model, config = load_run(run_dir, "audio", device)
    train, test = (run_split(model, config, data, s) for s in ("train", "test"))
    return evaluate_conversion(model, train, test, pairs=pairs, seconds=seconds, seed=seed,
                               temperature=temperature, wav_dir=wav_dir)
