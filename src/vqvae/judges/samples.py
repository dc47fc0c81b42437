"""The scores of a prior's samples, one command each: ``vqvae score`` judges image samples with the image
classifier (recognition of the class asked for, Fréchet distance, beside held-out real images and their
reconstructions); ``vqvae audio score`` draws speech samples and judges them with the speech judges (the
speaker and class asked for, voicing), with the real-time factor of prior + decoder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqvae import checkpoint
from vqvae.data import load_images, to_float
from vqvae.data.audio import write_wav
from vqvae.devices import model_device, resolve_device
from vqvae.errors import VQVAEError
from vqvae.fileio import check_out_dir, read_npz
from vqvae.judges.audio import SpeechJudges, write_verdicts
from vqvae.judges.image import ImageClassifier, judge
from vqvae.nets.controls import SamplingControls
from vqvae.priors.sampling import sample_utterances
from vqvae.reconstruct import remove_previous
from vqvae.runs import load_prior, load_run, run_split

__all__ = ["score_audio_prior", "score_image_samples"]


def _read_samples(path: str | Path, c: int, s: int, k: int) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(images uint8 (N, C, H, W), labels (N,) or None for unconditional samples, all arrays) of a samples
    .npz written by ``vqvae sample``, refused when they do not fit a classifier of ``k`` classes on CxSxS
    images."""
    arrays = read_npz(path, "samples file")
    if "images" not in arrays:
        raise VQVAEError(f"{path} holds no 'images' array (written by `vqvae sample --out FILE.npz`?)")
    images = arrays["images"]
    if images.ndim == 3:
        images = images[:, None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (c, s, s) or len(images) < 2:
        raise VQVAEError(f"{path}: images must be uint8 (N >= 2, {s}, {s})"
                         + (f" or (N, {c}, {s}, {s})" if c > 1 else "")
                         + f" for this classifier, got {images.dtype} {arrays['images'].shape}")
    labels = None
    if "labels" in arrays:
        lab = arrays["labels"]
        if lab.shape != (len(images),) or not np.issubdtype(lab.dtype, np.integer):
            raise VQVAEError(f"{path}: labels must be integers of shape ({len(images)},), "
                             f"got {lab.dtype} {lab.shape}")
        if (lab >= 0).any():  # -1 marks unconditional samples
            if lab.min() < 0 or lab.max() >= k:
                raise VQVAEError(f"{path}: labels must lie in [0, {k}) (the classifier's classes), "
                                 f"got [{lab.min()}, {lab.max()}]")
            labels = lab.astype(np.int64)
    return images, labels, arrays


@torch.no_grad()
def score_image_samples(samples: str | Path, classifier: str | Path, *, vqvae: str | Path | None = None,
                        seed: int = 0, device: str | None = "auto") -> dict[str, Any]:
    """``vqvae score``: judge the samples .npz of ``vqvae sample`` with the classifier in ``classifier``, next
    to held-out real test images and their reconstructions by ``vqvae``. Every set has the same size n (the
    Fréchet distance of a finite sample is biased by n): samples are subsampled to at most half the test
    split; the target of the distances is the rest of the test split. Samples that do not fit the classifier
    (shape, labels, classes) are refused.

    Args:
        samples: the .npz written by ``vqvae sample --out``.
        classifier: the run directory of ``vqvae train-classifier`` (its config records its data).
        vqvae: the image VQ-VAE run that reconstructs the real images (default: the samples' own).
        seed: seed of the subsampling and of the split of the test images.
        device: where the models run (``auto``: see :func:`vqvae.devices.resolve_device`).
    Returns:
        ``classifier_test_accuracy``, ``target_images`` and, per set (``samples``, ``real_test``,
        ``reconstructions``), the scores of :func:`vqvae.judges.image.judge`.
    """
    clf_config = checkpoint.read_config(classifier, kind="classifier")
    clf = ImageClassifier.from_pretrained(classifier, resolve_device(device))
    if not isinstance(clf_config.get("data"), str):
        raise VQVAEError(f"{classifier}/config.json records no data spec: "
                         "retrain it with `vqvae train-classifier`")
    c, s, k = clf.config.in_channels, clf.config.image_size, clf.config.num_classes
    images, labels, arrays = _read_samples(samples, c, s, k)
    classes = [str(x) for x in clf_config.get("classes", range(k))]
    if "classes" in arrays and arrays["classes"].size and [str(x) for x in arrays["classes"]] != classes:
        raise VQVAEError(f"{samples} was sampled with classes {', '.join(map(str, arrays['classes']))}, "
                         f"but the classifier knows {', '.join(classes)}: "
                         "judge samples with a classifier of their own data")
    test = load_images(clf_config["data"], "test", image_size=s, channels=c)
    gen = torch.Generator().manual_seed(seed)
    n = min(len(images), len(test) // 2)
    keep = torch.randperm(len(images), generator=gen)[:n].sort().values
    perm = torch.randperm(len(test), generator=gen)
    ref, target = perm[:n], perm[n:]
    real = to_float(test.images[ref])
    sample_labels = None if labels is None else torch.from_numpy(labels)[keep]
    sets = {"samples": (to_float(torch.from_numpy(images))[keep], sample_labels),
            "real_test": (real, test.labels[ref])}
    vq_dir = vqvae or (str(arrays["vqvae_dir"]) if "vqvae_dir" in arrays else None)
    if vq_dir:
        vq, _ = load_run(vq_dir, "vqvae", device)
        if (vq.config.in_channels, vq.config.image_size) != (c, s):
            raise VQVAEError(f"{vq_dir} makes "
                             f"{vq.config.in_channels}x{vq.config.image_size}x{vq.config.image_size} "
                             f"images, the classifier takes {c}x{s}x{s}")
        dev = model_device(vq)
        recon = torch.cat([vq.decode_indices(vq.encode(x.to(dev))).clamp(0, 1).cpu()
                           for x in real.split(500)])
        sets["reconstructions"] = (recon, test.labels[ref])
    return {"classifier_test_accuracy": clf_config.get("test_accuracy"), "target_images": len(target),
            **judge(clf, to_float(test.images[target]), sets, classes)}


def score_audio_prior(prior_dir: str | Path, *, per: int = 5, controls: SamplingControls | None = None,
                      seed: int = 0,
                      wav_dir: str | Path | None = None, overwrite: bool = False,
                      device: str | None = "auto", one_stream: int = 8) -> dict[str, Any]:
    """``vqvae audio score``: samples for every speaker (and class), each as long as its median train
    utterance, judged by :class:`SpeechJudges` trained on the VQ-VAE's corpus (heard as the speaker and class
    asked for, voiced); the real-time factor of prior + decoder (audio seconds per second), batched and alone.

    Args:
        prior_dir: the audio prior's run directory (its VQ-VAE is the one its config names).
        per: samples per speaker (and per class, for a class-conditional prior).
        controls: the prior's temperature (also the decoder's), top-k, top-p, guidance; None: none.
        seed: seed of the sampling and of the judges' training.
        wav_dir: folder for the samples as WAV files and ``verdicts.json``, replacing those it lists; or None.
        overwrite: write into ``wav_dir`` even when it is not empty.
        device: where the models run (``auto``: see :func:`vqvae.devices.resolve_device`).
        one_stream: utterances also drawn alone, for the one-stream real-time factor.
    Returns:
        the metrics of :meth:`SpeechJudges.samples`, ``per_speaker_and_class`` and the real-time factors.
    """
    if wav_dir is not None:
        check_out_dir(wav_dir, overwrite, is_file="--wav-dir {out} is a file, not a directory",
                      not_empty="{out} already exists and is not empty: pass --overwrite to write into it")
    prior, vq, config, vq_config = load_prior(prior_dir, "audio_prior", device)
    train, test = (run_split(vq, vq_config, None, s) for s in ("train", "test"))
    hop, names = vq.config.hop, config.get("classes", []) if prior.config.num_classes else []
    asked = [(s, k) for s in range(len(train.speakers)) for k in (range(len(names)) if names else [None])]
    speakers, classes, lengths = [], [], []
    for s, k in asked:
        own = [n for n, who, c in zip(train.lengths, train.labels, train.classes or [None] * len(train))
               if who == s and (k is None or c == k)]
        n = max(1, int(np.median(own)) // hop) if own else max(1, int(np.median(train.lengths)) // hop)
        speakers += [s] * per
        classes += [k] * per
        lengths += [n] * per
    asked_classes = classes if names else None
    start = time.perf_counter()
    waves, _ = sample_utterances(prior, vq, speakers, asked_classes, lengths, controls=controls, seed=seed)
    rtf = sum(len(w) for w in waves) / vq.config.sample_rate / (time.perf_counter() - start)
    start, alone = time.perf_counter(), 0  # one utterance at a time, as a single listener would be served
    for i in range(min(one_stream, len(speakers))):
        alone += len(sample_utterances(prior, vq, speakers[i : i + 1], None if asked_classes is None else
                                       asked_classes[i : i + 1], lengths[i : i + 1],
                                       controls=controls, seed=seed + i)[0][0])
    rtf_one = alone / vq.config.sample_rate / max(time.perf_counter() - start, 1e-9)
    judges = SpeechJudges(train, test, seed=seed)
    if wav_dir is not None:
        remove_previous(wav_dir)
        files, expected = [], []
        for i, (w, s, k) in enumerate(zip(waves, speakers, classes)):
            said = "" if k is None else f"_says_{names[k]}"
            files.append(f"{i:03d}_{train.speakers[s]}{said}.wav")
            expected.append({"speaker": train.speakers[s], **({} if k is None else {"class": names[k]})})
            write_wav(Path(wav_dir) / files[-1], w, vq.config.sample_rate)
        write_verdicts(Path(wav_dir) / "verdicts.json", files, judges.verdicts(waves), expected)
    m = judges.samples(waves, speakers, asked_classes)
    return {**m, "per_speaker_and_class": per, "prior_and_decoder_real_time_factor": rtf,
            "prior_and_decoder_real_time_factor_one_stream": rtf_one}
