"""The parts of a report that depend on the kind of run: the codebook (usage of an image or audio VQ-VAE's codes on
its test split, sorted, dead codes marked, and a 2-D projection of the codebook), and the media the run wrote
(image grids; WAV files, each with a player, a waveform and a spectrogram). Also what each metric means."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vqvae.errors import VQVAEError
from vqvae.report import plots

__all__ = ["DESCRIPTIONS", "codebook_section", "media_dir_section", "media_sections"]

DESCRIPTIONS = {
    "psnr": "peak signal-to-noise ratio of the reconstructions, dB (higher is better)",
    "ssim": "structural similarity of reconstructions and originals, 0..1",
    "mse": "mean squared error of the reconstructions, pixels in [0, 1]",
    "bits_per_dim": "negative log-likelihood of the test images under the model, bits per pixel and channel",
    "codes_used": "codes of the codebook used at least once on the test split",
    "dead_codes": "codes never used on the test split",
    "perplexity": "exp of the entropy of the code frequencies: how many codes are used, effectively",
    "usage_fraction": "fraction of the codebook used on the test split",
    "bits_per_sample": "negative log-likelihood of the test audio, bits per sample (8-bit mu-law: 8 is uniform)",
    "prior_bits_per_code": "negative log-likelihood of the test codes under the prior, bits per code",
    "prior_nll_bits_per_latent": "negative log-likelihood of the test codes under the prior, bits per latent",
    "uniform_bits_per_latent": "log2 K: the bits per latent of a uniform prior",
    "prior_bits_per_image": "bits per image the codes take under the prior",
    "uniform_bits_per_code": "log2 K: the bits per code of a uniform prior",
    "test_accuracy": "fraction of test images the classifier recognises",
    "step": "optimisation steps taken",
    "train_seconds": "wall time of the training steps, seconds",
    "num_images": "test images evaluated",
    "num_utterances": "test utterances evaluated",
    "bit_rate": "bits per second the codes take at log2 K bits each",
    "codes_per_second": "codes per second of audio",
}
MAX_WAVS = 24


def codebook_section(run: dict[str, Any], examples: int, img: Callable[..., str]) -> str:
    """Codebook usage of an image VQ-VAE on up to ``examples`` test images (empty for other kinds); a one-line note
    when the model or its data cannot be read (e.g. a run still writing its first checkpoint)."""
    if run["kind"] != "vqvae" or not (run["dir"] / "model.safetensors").is_file():
        return ""
    try:
        counts, codebook = _usage(run["dir"], examples)
    except (VQVAEError, OSError) as exc:
        return f"<h2>{html.escape(run['name'])}: codebook</h2><p>not available: {html.escape(str(exc))}</p>"
    return (f"<h2>{html.escape(run['name'])}: codebook (test split, {int(counts.sum())} vectors)</h2>"
            f'<div class="grid">{img(plots.usage_histogram(counts), "codes sorted by use; dead codes in red")}'
            f"{img(plots.codebook_projection(codebook, counts), 'the codebook in 2-D, coloured by log usage')}</div>")


def _usage(run_dir: Path, examples: int) -> tuple[np.ndarray, np.ndarray]:
    from vqvae.data import to_float
    from vqvae.runs import load_run, run_split

    model, config = load_run(run_dir, "vqvae", "cpu")
    test = run_split(model, config, None, "test")
    k = model.config.num_embeddings
    counts = torch.zeros(k, dtype=torch.long)
    with torch.no_grad():
        for lo in range(0, min(examples, len(test)), 256):
            hi = min(lo + 256, examples, len(test))
            idx = model.encode(to_float(test.images[lo:hi]))
            counts += torch.bincount(idx.reshape(-1), minlength=k)
    return counts.numpy(), model.quantizer.codebook.detach().float().numpy()


def media_sections(run: dict[str, Any], img: Callable[..., str], uri: Callable[[bytes, str], str]) -> list[str]:
    """The image grids and WAV files a run wrote into its directory (and its sub-folders)."""
    d, name = run["dir"], html.escape(run["name"])
    out = []
    grids = [(p, cap) for p, cap in (("reconstructions.png", "originals above reconstructions"),
                                     ("samples.png", "prior samples, one row per class")) if (d / p).is_file()]
    if grids:
        out.append(f"<h2>{name}: images</h2><div class='grid'>"
                   + "".join(img((d / p).read_bytes(), cap) for p, cap in grids) + "</div>")
    per_class = run["eval"].get("recognised_per_class")
    if isinstance(per_class, dict) and per_class:
        rows = "".join(f"<tr><td>{html.escape(str(c))}</td><td>{float(v):.1%}</td></tr>" for c, v in per_class.items())
        out.append(f"<h2>{name}: samples recognised, per class</h2><table>{rows}</table>")
    wavs = sorted(p for p in d.rglob("*.wav") if ".previous" not in p.parts)[:MAX_WAVS]
    if wavs:
        out.append(f"<h2>{name}: audio</h2><div class='grid'>" + "".join(_wav(p, d, uri) for p in wavs) + "</div>")
    return out


def media_dir_section(d: Path, img: Callable[..., str], uri: Callable[[bytes, str], str]) -> str:
    """A folder of outputs a command wrote outside its run (``--wav-dir`` of ``vqvae audio conversion`` / ``audio
    score``, sample grids): its images, and its WAV files with what the judges heard in each (``verdicts.json``)."""
    if not d.is_dir():
        raise VQVAEError(f"--media {d} is not a directory")
    verdicts = {}
    if (d / "verdicts.json").is_file():
        try:
            verdicts = json.loads((d / "verdicts.json").read_text())
        except ValueError as exc:
            raise VQVAEError(f"{d / 'verdicts.json'} is not valid JSON ({exc})") from None
    pngs, wavs = sorted(d.glob("*.png"))[:MAX_WAVS], sorted(d.glob("*.wav"))
    parts = [img(p.read_bytes(), p.name) for p in pngs]
    parts += [_wav(p, d, uri, verdicts.get(p.name) if isinstance(verdicts, dict) else None) for p in wavs[:MAX_WAVS]]
    more = len(wavs) - MAX_WAVS
    note = f"<p>{more} more WAV files in the folder are not shown.</p>" if more > 0 else ""
    return f"<h2>{html.escape(str(d))}</h2><div class='grid'>{''.join(parts)}</div>{note}"


def _wav(path: Path, root: Path, uri: Callable[[bytes, str], str], verdict: Any = None) -> str:
    from vqvae.data.audio import read_wav

    label = html.escape(str(path.relative_to(root)))
    if isinstance(verdict, dict):
        pitch = verdict.get("pitch_hz")
        heard = [f"speaker {verdict.get('speaker')}", *([f"says {verdict['class']}"] if "class" in verdict else []),
                 f"pitch {pitch} Hz" if pitch is not None else "unvoiced"]
        label += f" -- the judges hear: {html.escape(', '.join(heard))}"
    try:
        x, rate = read_wav(path)
    except VQVAEError as exc:
        return f"<figure><figcaption>{label}: {html.escape(str(exc))}</figcaption></figure>"
    picture = uri(plots.waveform_and_spectrogram(x, rate), "image/png")
    return (f"<figure><audio controls preload=\"auto\" src=\"{uri(path.read_bytes(), 'audio/wav')}\"></audio>"
            f"<img src=\"{picture}\" alt=\"{label}\"><figcaption>{label} ({len(x) / rate:.2f} s)</figcaption></figure>")
