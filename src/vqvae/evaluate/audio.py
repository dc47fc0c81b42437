"""Whole-utterance metrics of the audio VQ-VAE (bits per sample or spectral losses, code usage, bit rate, code
probes) and of its WaveNet prior (bits per code), and speaker conversion judged."""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqvae.codes import SpeechCodes
from vqvae.data import pick_examples
from vqvae.data.audio import SpeechDataset, whole_codes
from vqvae.devices import model_device
from vqvae.distributed import Ranks
from vqvae.errors import VQVAEError
from vqvae.evaluate.sums import reduce_over_ranks, sums_of, usage_metrics, write_codebook_usage
from vqvae.judges.audio import SpeechJudges, write_conversion_verdicts
from vqvae.judges.codes import probe_codes
from vqvae.metrics import CodebookUsage, MeanAccumulator, nats_to_bits
from vqvae.models import AudioVQVAE
from vqvae.priors.wavenet import WaveNetPrior
from vqvae.reconstruct import decode_as, write_conversions

__all__ = ["evaluate_audio", "evaluate_audio_prior", "evaluate_conversion"]


def _add_utterance(model: AudioVQVAE, sums: MeanAccumulator, x: torch.Tensor, speaker: torch.Tensor,
                   idx: torch.Tensor | None) -> None:
    """Add one utterance ``x`` (1, T) to ``sums``: a spectral decoder's L1s weighted by its frames, or a
    WaveNet decoder's nats over its samples."""
    if model.spectral:
        l1, mel = model.spectral_losses(model.log_spectrum(idx, speaker if model.num_speakers else None),
                                        model.target_spectrum(x))
        frames = x.shape[1] // model.config.frame_hop
        sums.add("l1", float(l1) * frames, frames)
        sums.add("mel", float(mel) * frames, frames)
    else:
        sums.add("nats", model.nll(x, speaker, idx).double().sum(), x.shape[1])
    sums.add("utterances", 0.0, 1)


@torch.no_grad()
def evaluate_audio(model: AudioVQVAE, data: SpeechDataset, *, limit: int | None = None,
                   ranks: Ranks = Ranks(), train: SpeechDataset | None = None,
                   codebook_file: str | Path | None = None) -> dict[str, Any]:
    """Over whole utterances (cut to a multiple of the code hop): a WaveNet decoder's NLL in bits per mu-law
    sample given what it is conditioned on, or a spectral decoder's L1 of log-magnitudes and of multi-scale
    log-mel spectra (nats per frame); code usage, perplexity and the bit rate (codes per second times log2 K,
    and times log2 perplexity).

    Args:
        model: the audio VQ-VAE.
        data: the utterances.
        limit: evaluate the first ``limit`` utterances only; None: all.
        ranks: under torchrun each process takes every world-th utterance and the sums are added up.
        train: the train split, for the probes of :func:`vqvae.judges.codes.probe_codes`; None: no probes.
        codebook_file: where rank 0 writes the code counts (:func:`write_codebook_usage`); None: nowhere.

    Returns:
        The metrics, as ``eval.json`` holds them.
    """
    model.eval()
    c = model.config
    n = len(data) if limit is None else min(limit, len(data))
    usage = CodebookUsage(c.num_codes) if model.quantizer is not None else None
    sums, dev = sums_of("nats", "l1", "mel", "utterances"), model_device(model)
    for i in ranks.mine(range(n)):
        length = len(data.waves[i]) // c.hop * c.hop
        if length == 0:
            continue
        x = torch.from_numpy(data.waves[i][:length])[None].to(dev)  # (1, T)
        speaker = torch.tensor([data.labels[i]], device=dev)
        idx = model.encode(x) if usage is not None else None
        _add_utterance(model, sums, x, speaker, idx)
        if usage is not None:
            usage.update(idx)
    reduce_over_ranks(ranks, sums, usage)
    if codebook_file is not None and usage is not None and ranks.main:
        write_codebook_usage(codebook_file, usage, model.quantizer)
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
        u, rate = usage_metrics(usage, model.quantizer), c.sample_rate / c.hop
        out.update(codes_per_second=rate, bit_rate=rate * math.log2(c.num_codes),
                   entropy_bit_rate=rate * math.log2(max(u["perplexity"], 1.0)),
                   **u)
        if train is not None and len(data.speakers) > 1:
            out.update(probe_codes(model, train, data))
    return out


@torch.no_grad()
def evaluate_audio_prior(prior: WaveNetPrior, data: SpeechCodes, codes_per_second: float, *,
                         limit: int | None = None, ranks: Ranks = Ranks()) -> dict[str, Any]:
    """The prior's NLL of whole code sequences (each from an empty context), in bits per code against the
    uniform prior's log2 K, and the bit rate it implies for the codes (codes per second * bits per code).

    Args:
        prior: the WaveNet prior.
        data: the code sequences of a split, with their speakers and classes.
        codes_per_second: the rate of the codes.
        limit: evaluate the first ``limit`` sequences only; None: all.
        ranks: under torchrun each process takes every world-th sequence and the sums are added up.

    Returns:
        The metrics, as ``eval.json`` holds them.
    """
    prior.eval()
    n = len(data) if limit is None else min(limit, len(data))
    sums, dev = sums_of("nats"), model_device(prior)
    for i in ranks.mine(range(n)):
        q = torch.from_numpy(data.codes[i])[None].to(dev)
        speaker, klass = (torch.tensor([int(a[i])], device=dev) for a in (data.labels, data.classes))
        sums.add("nats", prior.nll(q, speaker, classes=klass).double().sum(), q.shape[1])
    reduce_over_ranks(ranks, sums)
    k, per_code = prior.config.num_embeddings, sums.mean("nats")
    bits = nats_to_bits(per_code)
    return {"num_utterances": n, "num_codes": sums.count("nats"), "prior_nll_nats_per_code": per_code,
            "prior_bits_per_code": bits, "uniform_bits_per_code": math.log2(k),
            "bits_below_uniform": math.log2(k) - bits,
            "codes_per_second": codes_per_second, "bit_rate_with_prior": codes_per_second * bits,
            "bit_rate_uniform": codes_per_second * math.log2(k)}


def _conversion_pairs(model: AudioVQVAE, test: SpeechDataset, pairs: int, seconds: float, seed: int):
    """(inputs, their codes, source speakers, target speakers drawn with ``seed``, classes or -1) of up to
    ``pairs`` test utterances (:func:`~vqvae.data.pick_examples` over the speakers: one of each first), each
    cut to ``seconds`` and to a whole number of codes."""
    c, rng, dev = model.config, np.random.default_rng(seed), model_device(model)
    inputs, codes, sources, targets, classes = [], [], [], [], []
    for i in pick_examples(torch.as_tensor(test.labels, dtype=torch.long), pairs, seed).tolist():
        x = whole_codes(test.waves[i], c.hop, int(seconds * c.sample_rate))
        if len(x) == 0:
            continue
        inputs.append(x)
        codes.append(model.encode(x[None].to(dev))[0])
        sources.append(test.labels[i])
        targets.append(int(rng.choice([s for s in range(model.num_speakers) if s != sources[-1]])))
        classes.append(test.classes[i] if test.classes else -1)
    if not codes:
        raise VQVAEError(f"{test.name} has no utterance of at least one code")
    return inputs, codes, sources, targets, classes


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
        model: the audio VQ-VAE (conditioned on codes and on the speaker).
        train: the corpus's train split, which the judges learn from.
        test: its test split, where the utterances come from.
        pairs: test utterances converted.
        seconds: the first ``seconds`` of each.
        seed: draws the utterances, the target speakers and the decoder's samples.
        temperature: divides the decoder's logits (> 0).
        wav_dir: a directory to receive every input, reconstruction and conversion; None: none written.
        batch_size: utterances decoded at once.
        one_stream: the first ones decoded one at a time too, for the one-stream real-time factor.

    Returns:
        The judges' verdicts and the decoder's real-time factors.
    """
    c = model.config
    if model.quantizer is None or not model.num_speakers:
        raise VQVAEError("speaker conversion needs a model conditioned on codes and on the speaker")
    if model.num_speakers < 2:
        raise VQVAEError("speaker conversion needs at least two speakers")
    model.eval()
    dev, gen = model_device(model), torch.Generator().manual_seed(seed)
    inputs, codes, sources, targets, classes = _conversion_pairs(model, test, pairs, seconds, seed)
    start = time.perf_counter()
    decode = partial(decode_as, model, temperature=temperature, generator=gen)
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
