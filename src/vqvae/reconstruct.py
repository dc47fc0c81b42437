"""Data through an autoencoder and back, to files: images above their reconstructions in a PNG grid
(``vqvae reconstruct``); a WAV file encoded and decoded as its own speaker or as another one (``vqvae audio
reconstruct`` / ``vqvae audio convert``); utterances' codes decoded as given speakers in batches, and the WAV
files of a conversion test (inputs, reconstructions, conversions) that ``vqvae audio conversion`` judges."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vqvae.data import ImageDataset, pick_examples, save_image_grid, to_float
from vqvae.data.audio import SpeechDataset, read_utterance, write_wav
from vqvae.devices import model_device
from vqvae.errors import VQVAEError
from vqvae.fileio import check_out_file
from vqvae.models import VQVAE, AudioVQVAE
from vqvae.runs import check_generation_options, load_run, run_split, speaker_id

__all__ = ["decode_as", "reconstruction_grid", "reconstruction_pairs", "remove_previous", "resynthesize_file",
           "write_conversions", "write_reconstructions"]


@torch.no_grad()
def reconstruction_pairs(model: VQVAE, data: ImageDataset, n: int = 16) -> Tensor:
    """``n`` (at most 256) images of ``data`` (:func:`~vqvae.data.pick_examples`: one of each class first, the
    same ones every time) followed by their reconstructions.

    Args:
        model: the image VQ-VAE (put in eval mode).
        data: the images.
        n: how many images (at most 256).
    Returns:
        (2n, C, H, W) floats in [0, 1] on the CPU: the images, then their reconstructions.
    """
    model.eval()
    x = to_float(data.images[pick_examples(data.labels, min(n, 256))])
    recon = model.decode_indices(model.encode(x.to(model_device(model)))).clamp(0, 1).cpu()
    return torch.cat([x, recon])


def reconstruction_grid(model: VQVAE, data: ImageDataset, path: str | Path, n: int = 16) -> None:
    """PNG of :func:`reconstruction_pairs`: the images in the top row, their reconstructions below.

    Args:
        model: the image VQ-VAE (put in eval mode).
        data: the images.
        path: the PNG file to write.
        n: how many images (at most 256).
    """
    pairs = reconstruction_pairs(model, data, n)
    save_image_grid(pairs, path, nrow=len(pairs) // 2)


def write_reconstructions(run_dir: str | Path, out: str | Path, *, data: str | None = None,
                          split: str = "test", n: int = 16, overwrite: bool = False,
                          device: str | None = "auto") -> Path:
    """``vqvae reconstruct``: :func:`reconstruction_grid` of the image VQ-VAE in ``run_dir`` on ``split`` of
    ``data``, written to ``out``.

    Args:
        run_dir: the image VQ-VAE's run directory.
        out: the ``.png`` file to write, refused when it exists unless ``overwrite``.
        data: the data to reconstruct (None: the run's own).
        split: which split of it.
        n: how many images (at most 256).
        overwrite: replace an existing ``out``.
        device: where the model runs (``auto``: see :func:`vqvae.devices.resolve_device`).
    Returns:
        the path written.
    """
    path = check_out_file(out, overwrite, (".png",))
    model, config = load_run(run_dir, "vqvae", device)
    reconstruction_grid(model, run_split(model, config, data, split), path, n=n)
    return path


@torch.no_grad()
def resynthesize_file(run_dir: str | Path, wav: str | Path, out: str | Path, *, speaker: str | None = None,
                      seconds: float = 4.0, temperature: float = 1.0, seed: int = 0,
                      overwrite: bool = False, device: str | None = "auto") -> dict[str, object]:
    """Encode (at most ``seconds`` of) the WAV file ``wav`` with the audio VQ-VAE in ``run_dir`` and decode
    its codes as ``speaker``, written to ``out``: a reconstruction when the speaker is the file's own.

    Args:
        run_dir: the audio VQ-VAE's run directory (refused for a WaveNet without codes).
        wav: the WAV file to encode.
        out: the ``.wav`` file to write, refused when it exists unless ``overwrite``.
        speaker: the name of the speaker to decode as (None: the one the file's folder names).
        seconds: most seconds of ``wav`` encoded.
        temperature: sampling temperature of a WaveNet decoder.
        seed: seed of the decoder's sampling.
        overwrite: replace an existing ``out``.
        device: where the model runs (``auto``: see :func:`vqvae.devices.resolve_device`).
    Returns:
        ``seconds`` of the output, number of ``codes``, ``speaker`` name (None: the model has no speakers).
    """
    path = check_out_file(out, overwrite, (".wav",))
    check_generation_options(temperature, seconds)
    model, config = load_run(run_dir, "audio", device)
    if model.quantizer is None:
        raise VQVAEError(f"{run_dir} is a WaveNet without codes (audio.use_codes: false): nothing to encode")
    speakers = config.get("speakers", [])
    folder = Path(wav).parent.name  # a corpus file's folder names its speaker
    ids, dev = None, model_device(model)
    if model.num_speakers:
        ids = torch.tensor([speaker_id(speaker, speakers, fallback=folder if folder in speakers else None)],
                           device=dev)
    c = model.config
    x = read_utterance(wav, c.sample_rate, c.hop, max_seconds=seconds)  # (T,)
    codes = model.encode(x[None].to(dev))
    y = model.decode_indices(codes, ids, temperature=temperature,
                             generator=torch.Generator().manual_seed(seed))
    write_wav(path, y[0].cpu(), c.sample_rate)
    return {"seconds": len(x) / c.sample_rate, "codes": codes.shape[1],
            "speaker": None if ids is None else speakers[int(ids[0])]}


@torch.no_grad()
def decode_as(model: AudioVQVAE, codes: list[Tensor], speakers: list[int], *, temperature: float = 1.0,
              generator: torch.Generator | None = None) -> list[Tensor]:
    """Code sequences decoded together, in one batch, as given speakers. A conversion when the speaker is
    another one, a reconstruction when it is their own.

    Args:
        model: the audio VQ-VAE.
        codes: code sequences ``codes[i]`` (L_i,).
        speakers: the speaker index each is decoded as.
        temperature: sampling temperature of a WaveNet decoder.
        generator: random generator of the decoder's sampling (None: torch's global one).
    Returns:
        waveforms (L_i * hop,) on the CPU.
    """
    ids = torch.tensor(speakers, device=model_device(model))
    return [w.cpu() for w in model.decode_many(codes, ids, temperature=temperature, generator=generator)]


def remove_previous(wav_dir: str | Path) -> None:
    """Before new outputs are written into ``wav_dir`` (``--overwrite``): remove the WAV files the previous
    conversion or scoring wrote there -- the ones its ``verdicts.json`` lists, nothing else -- so that a
    folder never mixes two runs' files (e.g. 2-digit names of an earlier run beside 3-digit ones). A
    ``verdicts.json`` that does not parse leaves everything as it is.

    Args:
        wav_dir: the folder about to be written into.
    """
    listed = Path(wav_dir) / "verdicts.json"
    try:
        names = json.loads(listed.read_text()) if listed.is_file() else {}
    except (ValueError, UnicodeDecodeError):
        return  # not ours to interpret: leave everything as it is
    for name in names if isinstance(names, dict) else ():
        p = Path(wav_dir) / name
        if p.name == name and p.suffix == ".wav" and p.is_file():
            p.unlink()


def write_conversions(wav_dir: Path, test: SpeechDataset, rate: int,
                      waves: tuple[list[Tensor], list[Tensor], list[Tensor]],
                      sources: list[int], targets: list[int],
                      classes: list[int]) -> tuple[list[str], list[Tensor], list[dict[str, Any]]]:
    """Every input, reconstruction and conversion of a conversion test as ``NNN_SOURCE_input.wav``,
    ``..._reconstructed.wav``, ``..._as_TARGET.wav`` in ``wav_dir`` (the previous test's files removed first).

    Args:
        wav_dir: the folder to write into.
        test: the corpus split the inputs come from (its speaker and class names).
        rate: sample rate of the WAV files, Hz.
        waves: (inputs, reconstructions, conversions), one waveform each per pair.
        sources: the speaker index of each input.
        targets: the speaker index each input is converted to.
        classes: the class each input says (-1: none).
    Returns:
        (file names, their waveforms, what each should be heard as: the source speaker and the class said;
        the target speaker for a conversion).
    """
    remove_previous(wav_dir)
    digits = max(2, len(str(len(sources) - 1)))  # names that sort in order: 000 .. 149
    names, written, expected = [], [], []
    for n, (x, r, y, s, t, k) in enumerate(zip(*waves, sources, targets, classes)):
        stem = f"{n:0{digits}d}_{test.speakers[s]}"
        said = {"class": test.class_names[k]} if k >= 0 and test.class_names else {}
        for name, w, who in ((f"{stem}_input.wav", x, s), (f"{stem}_reconstructed.wav", r, s),
                             (f"{stem}_as_{test.speakers[t]}.wav", y, t)):
            write_wav(wav_dir / name, w, rate)
            names.append(name)
            written.append(w)
            expected.append({"speaker": test.speakers[who], **said})
    return names, written, expected
