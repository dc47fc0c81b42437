"""Whole-split metrics of the image VQ-VAE and of its prior (Gated PixelCNN or transformer). ``mse`` is the
mean squared error per pixel of the reconstructions (clamped to the valid range [0, 1]), ``psnr`` = 10 log10(1
/ mse) of that split-wide mse, ``psnr_per_image`` the mean of per-image PSNRs (always >= ``psnr``), ``ssim``
the mean per-image SSIM (7x7 uniform window), codebook usage over the whole split; with a pixel likelihood,
bits/dim; for the prior, bits per latent and both ELBOs in bits/dim."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from vqvae.data import ImageDataset, to_float
from vqvae.devices import model_device
from vqvae.distributed import Ranks
from vqvae.errors import VQVAEError
from vqvae.evaluate.sums import (
    count_examples,
    reduce_over_ranks,
    sums_of,
    usage_metrics,
    write_codebook_usage,
)
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
from vqvae.models import VQVAE
from vqvae.priors.base import ImagePrior

__all__ = ["evaluate_image_model", "evaluate_image_prior"]


@torch.no_grad()
def evaluate_image_model(model: VQVAE, data: ImageDataset, *, limit: int | None = None, batch_size: int = 500,
                         ranks: Ranks = Ranks(), num_workers: int = 0,
                         codebook_file: str | Path | None = None) -> dict[str, Any]:
    """Reconstruction quality and codebook usage (see the module docstring) of ``model`` on ``data``.

    Args:
        model: the image VQ-VAE.
        data: the images.
        limit: evaluate the first ``limit`` images only; None: all.
        batch_size: images per batch.
        ranks: under torchrun each process takes every world-th batch and the sums are added up.
        num_workers: DataLoader workers that read the images (0: in this process).
        codebook_file: where rank 0 writes the code counts (:func:`write_codebook_usage`); None: nowhere.

    Returns:
        The metrics, as ``eval.json`` holds them.
    """
    model.eval()
    n, dev = count_examples(len(data), limit, data.name, "images"), model_device(model)
    usage = CodebookUsage(model.config.num_codes)
    sums = sums_of("nll_nats", "mse", "psnr_per_image", "ssim")
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
    reduce_over_ranks(ranks, sums, usage)
    if codebook_file is not None and ranks.main:
        write_codebook_usage(codebook_file, usage, model.quantizer)
    mse, h, k = sums.mean("mse"), model.config.latent_size, model.config.num_codes
    codes = math.prod(model.code_shape)  # per image: h * w * G
    out = {"split": data.name, "num_images": n, "mse": mse,
           "psnr": psnr_from_mse(max(mse, 1e-12)),  # capped at 120 dB so the JSON stays finite
           "psnr_per_image": sums.mean("psnr_per_image"), "ssim": sums.mean("ssim"),
           **usage_metrics(usage, model.quantizer),
           "latent_grid": [h, h], "latents_per_position": model.config.latents_per_position,
           "bits_per_image": codes * math.log2(k)}
    if logistic:  # the decoder's NLL, and the ELBO with the uniform prior (log K nats per latent)
        nll, pixels = sums.total("nll_nats"), sums.count("mse")
        out["nll_bits_per_dim"] = bits_per_dim(nll, pixels)
        out["elbo_bits_per_dim_uniform_prior"] = elbo_bits_per_dim(nll, n * uniform_prior_nll_nats(codes, k),
                                                                   pixels)
    return out


@torch.no_grad()
def evaluate_image_prior(prior: ImagePrior, vq: VQVAE, data: ImageDataset, *, limit: int | None = None,
                         batch_size: int = 500, ranks: Ranks = Ranks(),
                         num_workers: int = 0) -> dict[str, Any]:
    """Likelihoods of a prior and its VQ-VAE over ``data``, summed over the whole split before dividing.

    * prior NLL of the codes z = encode(x), in nats and bits per latent, against log2 K of the uniform prior;
    * for a VQ-VAE with a pixel likelihood (``recon_loss: logistic``), image bits/dim of the negative ELBO
      ``(-log p(x|z) - log p(z)) / (num_dims ln 2)`` with the uniform prior (log p(z) = -h w log K) and with
      the learned prior (log p(z) from the prior). The posterior is one-hot, so it adds no entropy term.
      A class-conditional prior gives log p(z|y) for the true label y; log p(x) >= log p(x|z) + log p(z|y) +
      log p(y), so the label's cost under a uniform p(y), ln C nats per image, is added to make the
      learned-prior ELBO a bound on -log p(x) (``label_bits_per_dim``).

    Args:
        prior: the image prior (Gated PixelCNN or transformer).
        vq: the VQ-VAE whose codes it models.
        data: the images.
        limit: evaluate the first ``limit`` images only; None: all.
        batch_size: images per batch.
        ranks: under torchrun each process takes every world-th batch and the sums are added up.
        num_workers: DataLoader workers that read the images (0: in this process).

    Returns:
        The metrics, as ``eval.json`` holds them (``note`` says why image bits/dim are missing)."""
    prior.eval()
    vq.eval()
    n = count_examples(len(data), limit, data.name, "images")
    conditional = prior.config.num_classes > 0
    if conditional and len(data.classes) != prior.config.num_classes:
        raise VQVAEError(f"{data.name} has {len(data.classes)} classes, the prior was trained with "
                         f"{prior.config.num_classes}")
    logistic = vq.config.recon_loss == "logistic"
    h, k = vq.config.latent_size, vq.config.num_codes
    sums, dev = sums_of("prior", "decoder"), model_device(vq)  # nats per latent; decoder nats per dimension
    for images, labels in data.batches(ranks.mine(range(0, n, batch_size)), batch_size, n, num_workers,
                                       labels=True):
        x = to_float(images.to(dev))
        idx = vq.encode(x)  # (B, h, w)
        labels = labels.to(dev) if conditional else None
        sums.add("prior", prior.nll(idx, labels).double().sum(), idx.numel())
        z_q = vq.embed(idx)
        sums.add("decoder", -vq.pixel_log_prob(x, z_q).double().sum() if logistic else 0.0, x.numel())
    reduce_over_ranks(ranks, sums)
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
    label_nats = n * math.log(prior.config.num_classes) if conditional else 0.0
    return {**out, **_elbos(sums, n * uniform_prior_nll_nats(h * h, k), label_nats)}


def _elbos(sums: MeanAccumulator, uniform_nats: float, label_nats: float) -> dict[str, float]:
    """Image bits/dim from the split's sums of prior nats (per latent) and decoder nats (per dimension): the
    decoder's NLL, the ELBO with the uniform prior (``uniform_nats`` for the split's codes) and with the
    learned prior plus the labels' cost (``label_nats``)."""
    dims, decoder_nats = sums.count("decoder"), sums.total("decoder")
    learned = sums.total("prior") + label_nats
    return {"decoder_nll_bits_per_dim": bits_per_dim(decoder_nats, dims),
            "elbo_bits_per_dim_uniform_prior": elbo_bits_per_dim(decoder_nats, uniform_nats, dims),
            "label_bits_per_dim": bits_per_dim(label_nats, dims),
            "elbo_bits_per_dim_learned_prior": elbo_bits_per_dim(decoder_nats, learned, dims)}
