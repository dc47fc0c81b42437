"""Data through an autoencoder and back, to files: images above their reconstructions in a PNG grid
(``vqvae reconstruct``), and a WAV file encoded and decoded as its own speaker or as another one
(``vqvae audio reconstruct`` / ``vqvae audio convert``)."""

from __future__ import annotations

from pathlib import Path

import torch

from vqvae.data import ImageDataset, save_image_grid, to_float
from vqvae.data.audio import read_utterance, write_wav
from vqvae.devices import model_device
from vqvae.errors import VQVAEError
from vqvae.models import VQVAE
from vqvae.priors.sampling import check_generation_options, speaker_id
from vqvae.runs import check_out_file, load_run, run_split

__all__ = ["reconstruction_grid", "resynthesize_file", "write_reconstructions"]


@torch.no_grad()
def reconstruction_grid(model: VQVAE, data: ImageDataset, path: str | Path, n: int = 16) -> None:
    """PNG of the first ``n`` (at most 256) images of ``data`` (top row) above their reconstructions (bottom row)."""
    model.eval()
    x = to_float(data.images[: min(n, 256)])
    recon = model.decode_indices(model.encode(x.to(model_device(model)))).clamp(0, 1).cpu()
    save_image_grid(torch.cat([x, recon]), path, nrow=x.shape[0])


def write_reconstructions(run_dir: str | Path, out: str | Path, *, data: str | None = None, split: str = "test",
                          n: int = 16, overwrite: bool = False, device: str | None = "auto") -> Path:
    """``vqvae reconstruct``: :func:`reconstruction_grid` of the image VQ-VAE in ``run_dir`` on ``split`` of
    ``data`` (default: its own), written to ``out``."""
    path = check_out_file(out, overwrite, (".png",))
    model, config = load_run(run_dir, "vqvae", device)
    reconstruction_grid(model, run_split(model, config, data, split), path, n=n)
    return path


@torch.no_grad()
def resynthesize_file(run_dir: str | Path, wav: str | Path, out: str | Path, *, speaker: str | None = None,
                      seconds: float = 4.0, temperature: float = 1.0, seed: int = 0,
                      overwrite: bool = False, device: str | None = "auto") -> dict[str, object]:
    """Encode (at most ``seconds`` of) the WAV file ``wav`` with the audio VQ-VAE in ``run_dir`` and decode its
    codes as ``speaker`` (default: the speaker named by the file's folder, i.e. a reconstruction), written to
    ``out``. Returns the seconds, codes and speaker of the output."""
    path = check_out_file(out, overwrite, (".wav",))
    check_generation_options(temperature, seconds)
    model, config = load_run(run_dir, "audio", device)
    if model.quantizer is None:
        raise VQVAEError(f"{run_dir} is a WaveNet without codes (audio.use_codes: false): nothing to encode")
    speakers = config.get("speakers", [])
    folder = Path(wav).parent.name  # a corpus file's folder names its speaker
    ids, dev = None, model_device(model)
    if model.num_speakers:
        ids = torch.tensor([speaker_id(speaker, speakers, fallback=folder if folder in speakers else None)], device=dev)
    c = model.config
    x = read_utterance(wav, c.sample_rate, c.hop, max_seconds=seconds)  # (T,)
    codes = model.encode(x[None].to(dev))
    y = model.decode_indices(codes, ids, temperature=temperature, generator=torch.Generator().manual_seed(seed))
    write_wav(path, y[0].cpu(), c.sample_rate)
    return {"seconds": len(x) / c.sample_rate, "codes": codes.shape[1],
            "speaker": None if ids is None else speakers[int(ids[0])]}
