"""Datasets -> codes: encoding whole splits with a VQ-VAE (images or speech), the one codes cache that priors
are trained from, the ``.npz`` files of ``vqvae encode`` / ``vqvae decode``, and random crops of code
sequences.

The cache (``RUN_DIR/prior_codes.cache.npz``) is reused only while the SHA-256 of the weights the VQ-VAE was
loaded from and of every split's data are unchanged; changed weights or data are encoded again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqvae.data import ImageDataset, save_image_grid, to_float
from vqvae.data.audio import SpeechDataset, crop_starts
from vqvae.devices import model_device
from vqvae.distributed import Ranks, join
from vqvae.errors import VQVAEError
from vqvae.fileio import atomic_write_npz, check_out_file, read_npz
from vqvae.models import VQVAE, AudioVQVAE
from vqvae.runs import load_run, run_split

__all__ = ["CACHE_NAME", "SpeechCodes", "cached_codes", "code_crops", "decode_run", "encode_images",
           "encode_run", "encode_speech", "load_codes", "save_codes", "speech_codes"]

CACHE_NAME = "prior_codes.cache.npz"


def _index_dtype(num_embeddings: int) -> type:
    return np.int16 if num_embeddings <= 32768 else np.int32


@torch.no_grad()
def encode_images(model: VQVAE, data: ImageDataset, batch_size: int = 500, ranks: Ranks = Ranks(),
                  num_workers: int = 0) -> np.ndarray:
    """Code indices of every image of ``data``. Under torchrun (``ranks``) each process encodes every
    world-th batch and every process gets the whole result.

    Args:
        model: the image VQ-VAE (put in eval mode).
        data: the images.
        batch_size: images encoded at once.
        ranks: this process's place in a torchrun job (default: alone).
        num_workers: DataLoader workers that read the images (0: read in this process).
        overwrite: encode again over a corrupt cache (``--overwrite``).
    Returns:
        (N, h, w) int16 (K <= 32768) or int32 code indices.
    """
    model.eval()
    dtype, dev = _index_dtype(model.config.num_codes), model_device(model)
    starts = ranks.mine(range(0, len(data), batch_size))
    batches = data.batches(starts, batch_size, len(data), num_workers)
    mine = {i: model.encode(to_float(images.to(dev))).cpu().numpy().astype(dtype)
            for i, (images,) in zip(starts, batches)}
    out = _in_order(ranks, mine)
    return np.concatenate(out) if out else np.zeros((0, *model.code_shape), dtype)


def _in_order(ranks: Ranks, mine: dict[int, np.ndarray]) -> list[np.ndarray]:
    """The pieces every rank made (keyed by their position), in order of position."""
    pieces = {k: v for part in ranks.gather(mine) for k, v in part.items()}
    return [pieces[k] for k in sorted(pieces)]


@torch.no_grad()
def encode_speech(model: AudioVQVAE, data: SpeechDataset,
                  ranks: Ranks = Ranks()) -> tuple[np.ndarray, np.ndarray]:
    """The codes of every utterance (each cut to whole codes), concatenated. Under torchrun each process
    encodes every world-th utterance and every process gets the whole result.

    Args:
        model: the audio VQ-VAE (put in eval mode).
        data: the utterances; one shorter than a code gets no codes.
        ranks: this process's place in a torchrun job (default: alone).
    Returns:
        (flat codes (sum L_i,) int16 (K <= 32768) or int32, lengths L_i (N,) int64).
    """
    model.eval()
    hop, dev = model.config.hop, model_device(model)
    mine = {i: model.encode(torch.from_numpy(w[: len(w) // hop * hop])[None].to(dev))[0].cpu().numpy()
            if len(w) >= hop else np.zeros(0, np.int64) for i, w in
            ((i, data.waves[i]) for i in ranks.mine(range(len(data))))}
    seqs = _in_order(ranks, mine)
    flat = np.concatenate(seqs) if seqs else np.zeros(0)
    return (flat.astype(_index_dtype(model.config.num_codes)),
            np.array([len(q) for q in seqs], dtype=np.int64))


def _encode_split(model: VQVAE | AudioVQVAE, data: ImageDataset | SpeechDataset, split: str,
                  ranks: Ranks, num_workers: int) -> dict[str, np.ndarray]:
    """``{split}_indices`` and ``{split}_labels`` (and for speech ``{split}_lengths``) of one split."""
    if isinstance(model, VQVAE):
        return {f"{split}_indices": encode_images(model, data, ranks=ranks, num_workers=num_workers),
                f"{split}_labels": data.labels.numpy().astype(np.int64)}
    flat, lengths = encode_speech(model, data, ranks)
    classes = data.classes or [-1] * len(data)  # -1: the corpus gives the utterance no class
    return {f"{split}_indices": flat, f"{split}_lengths": lengths,
            f"{split}_labels": np.array(data.labels, dtype=np.int64),
            f"{split}_classes": np.array(classes, np.int64)}


def _codes_sha256(arrays: dict[str, np.ndarray]) -> str:
    """The checksum of a cache's codes: every array but the key's, by name, dtype, shape and bytes."""
    h = hashlib.sha256()
    payload = ("indices", "labels", "lengths", "classes")  # {split}_indices, ...
    for name in sorted(k for k in arrays if k.split("_", 1)[-1] in payload):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def cached_codes(run_dir: str | Path, model: VQVAE | AudioVQVAE, config: dict[str, Any],
                 splits: tuple[str, ...] = ("train", "test"), ranks: Ranks = Ranks(), num_workers: int = 0,
                 overwrite: bool = False) -> dict[str, np.ndarray]:
    """The codes and labels of ``splits`` of the data the run in ``run_dir`` was trained on, encoded once and
    cached in ``run_dir/prior_codes.cache.npz`` with a checksum of its codes. A cache keyed by other weights
    or data is rebuilt; a corrupt one (unreadable, truncated, or codes that do not match their checksum) is
    refused in one line, never trained on, and rebuilt with ``overwrite``; in a read-only directory the codes
    are kept in memory only. Under torchrun every process calls this together: they encode a share each, and
    rank 0 writes the cache.

    Args:
        run_dir: the VQ-VAE's run directory.
        model: the VQ-VAE, loaded from there with ``from_pretrained`` (refused otherwise).
        config: its config.json.
        splits: the splits to encode.
        ranks: this process's place in a torchrun job (default: alone).
        num_workers: DataLoader workers that read the images (0: read in this process).
        overwrite: encode again over a corrupt cache (``--overwrite``).
    Returns:
        ``{split}_indices``, ``{split}_labels`` and the cache's key; for speech the sequences are
        concatenated, ``{split}_lengths`` splits them (see :func:`speech_codes`) and ``{split}_classes``
        holds their classes.
    """
    if model.weights_sha256 is None:
        raise VQVAEError("cached_codes needs a model loaded with from_pretrained (its weights' fingerprint)")
    datasets = {s: run_split(model, config, None, s) for s in splits}
    meta: dict[str, Any] = {"num_embeddings": model.config.num_codes,
                            "weights_sha256": model.weights_sha256,
                            **{f"{s}_data_sha256": ds.fingerprint() for s, ds in datasets.items()}}
    if isinstance(model, VQVAE):
        meta["latent_size"] = model.config.latent_size
    path, arrays, corrupt = Path(run_dir) / CACHE_NAME, None, None
    if path.exists():
        try:
            arrays = read_npz(path, "codes cache")
            if "codes_sha256" not in arrays or not all(k in arrays and str(arrays[k]) == str(v)
                                                       for k, v in meta.items()):
                arrays = None  # another version, other weights or other data: encoded again
            elif str(arrays["codes_sha256"]) != _codes_sha256(arrays):
                corrupt, arrays = "its codes do not match their checksum", None
        except (VQVAEError, ValueError, OSError) as exc:
            corrupt, arrays = f"unreadable: {exc}", None
    if corrupt and not overwrite:
        raise VQVAEError(f"the codes cache {path} is corrupt ({corrupt}); it was not used: pass --overwrite "
                         "(or delete it) to encode the codes again")
    if all(ranks.gather(arrays is not None)):  # every rank read the same valid cache
        return arrays
    arrays = {k: v for s, ds in datasets.items()
              for k, v in _encode_split(model, ds, s, ranks, num_workers).items()}
    arrays.update({k: np.asarray(v) for k, v in meta.items()})
    arrays["codes_sha256"] = np.asarray(_codes_sha256(arrays))
    if ranks.main:
        try:
            atomic_write_npz(path, arrays)
        except OSError:
            pass
    ranks.barrier()  # the cache is written before any rank goes on
    return arrays


@dataclass
class SpeechCodes:
    """The code sequences of one split of a corpus.

    Args:
        codes: ``codes[i]`` (L_i,) int64, the codes of utterance i.
        labels: (N,) the speaker of each utterance.
        classes: (N,) the class each says (-1: none; all -1 when not given).
    """

    codes: list[np.ndarray]
    labels: np.ndarray
    classes: np.ndarray | None = None

    def __post_init__(self):
        if self.classes is None:
            self.classes = np.full(len(self.codes), -1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.codes)


def speech_codes(arrays: dict[str, np.ndarray], split: str, data: str = "the corpus") -> SpeechCodes:
    """The non-empty code sequences of ``split`` from :func:`cached_codes` of an audio VQ-VAE.

    Args:
        arrays: what :func:`cached_codes` returned.
        split: the split to take.
        data: the name of the corpus, for the error message.
    Returns:
        the split's sequences with their speakers and classes.
    Raises:
        VQVAEError: no utterance of the split is long enough for one code.
    """
    lengths = arrays[f"{split}_lengths"]
    flat = arrays[f"{split}_indices"].astype(np.int64)
    keep = lengths > 0
    seqs = np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
    classes = arrays.get(f"{split}_classes", np.full(len(lengths), -1, dtype=np.int64))
    out = SpeechCodes([q for q, k in zip(seqs, keep) if k], arrays[f"{split}_labels"][keep], classes[keep])
    if len(out) == 0:
        raise VQVAEError(f"{data}: no {split} utterance is long enough for one code")
    return out


def code_crops(data: SpeechCodes, length: int, indices: list[int], starts: list[int] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A crop of at most ``length`` codes of each utterance ``indices[i]``, starting at ``starts[i]``.

    Args:
        data: the code sequences.
        length: the longest crop, in codes.
        indices: the utterances to crop (B of them).
        starts: where each crop starts (None: drawn by :func:`vqvae.data.audio.crop_starts` from torch's
            global generator).
    Returns:
        (codes (B, length) int64, zero-padded; valid lengths (B,); speaker labels (B,); classes (B,), -1 where
        none).
    """
    if starts is None:
        starts = crop_starts([len(data.codes[i]) for i in indices], length)
    x = torch.zeros(len(indices), length, dtype=torch.long)
    lengths = torch.zeros(len(indices), dtype=torch.long)
    for row, (i, start) in enumerate(zip(indices, starts)):
        piece = torch.from_numpy(data.codes[i][start : start + length].astype(np.int64))
        x[row, : len(piece)] = piece
        lengths[row] = len(piece)
    return (x, lengths, torch.from_numpy(data.labels[indices]).long(),
            torch.from_numpy(data.classes[indices]).long())


# -- the files of `vqvae encode` / `vqvae decode` ------------------------------------------------------------
def save_codes(path: str | Path, splits: dict[str, tuple[np.ndarray, np.ndarray]],
               meta: dict[str, Any]) -> None:
    """Write ``{split}_indices`` / ``{split}_labels`` arrays and ``meta`` to an .npz, atomically.

    Args:
        path: the .npz file.
        splits: split name -> (code indices, labels).
        meta: further arrays to store: ``num_embeddings``, ``latent_size``.
    """
    arrays: dict[str, Any] = {}
    for split, (indices, labels) in splits.items():
        arrays[f"{split}_indices"] = indices
        arrays[f"{split}_labels"] = labels.astype(np.int64)
    atomic_write_npz(path, {**arrays, **meta})


def load_codes(path: str | Path, num_embeddings: int,
               latent_size: int | tuple[int, ...]) -> dict[str, np.ndarray]:
    """Read an .npz written by :func:`save_codes` (never with pickle) and check it fits the model.

    Args:
        path: the .npz file.
        num_embeddings: K, the model's number of codes.
        latent_size: the codes' shape per image (an int: a square grid; or the model's ``code_shape``).
    Returns:
        its arrays by name.
    Raises:
        VQVAEError: no ``*_indices`` array, or one of the wrong shape, dtype or range.
    """
    shape = (latent_size, latent_size) if isinstance(latent_size, int) else tuple(latent_size)
    arrays = read_npz(path, "codes file")
    splits = [k[: -len("_indices")] for k in arrays if k.endswith("_indices")]
    if not splits:
        raise VQVAEError(f"{path} holds no *_indices array (written by `vqvae encode`?)")
    for split in splits:
        idx = arrays[f"{split}_indices"]
        if idx.shape[1:] != shape:
            raise VQVAEError(f"{path}: {split}_indices has shape {idx.shape}, "
                             f"expected (N, {', '.join(map(str, shape))})")
        if not np.issubdtype(idx.dtype, np.integer):
            raise VQVAEError(f"{path}: {split}_indices must be integers, got {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= num_embeddings):
            raise VQVAEError(f"{path}: {split}_indices has codes in [{idx.min()}, {idx.max()}], "
                             f"model has K={num_embeddings}")
    return arrays


def encode_run(run_dir: str | Path, out: str | Path, *, data: str | None = None,
               splits: tuple[str, ...] = ("train", "test"), overwrite: bool = False,
               device: str | None = "auto") -> dict[str, tuple[int, ...]]:
    """``vqvae encode``: the codes and labels of ``splits`` under the image VQ-VAE in ``run_dir``, written to
    the .npz ``out`` (by rank 0 under torchrun).

    Args:
        run_dir: the image VQ-VAE's run directory.
        out: the ``.npz`` file to write, refused when it exists unless ``overwrite``.
        data: the data to encode (None: the run's own).
        splits: the splits to encode.
        overwrite: replace an existing ``out``.
        device: where the model runs (``auto``: see :func:`vqvae.devices.resolve_device`).
    Returns:
        split -> the shape of its codes.
    """
    path = check_out_file(out, overwrite, (".npz",))
    ranks = join(device)
    model, config = load_run(run_dir, "vqvae", ranks.device)
    encoded = {}
    for split in splits:
        ds = run_split(model, config, data, split)
        encoded[split] = (encode_images(model, ds, ranks=ranks), ds.labels.numpy())
    if ranks.main:
        meta = {"num_embeddings": model.config.num_codes, "latent_size": model.config.latent_size}
        save_codes(path, encoded, meta)
    return {s: v[0].shape for s, v in encoded.items()}


@torch.no_grad()
def decode_run(run_dir: str | Path, codes: str | Path, out: str | Path, *, split: str = "test",
               n: int = 64, overwrite: bool = False, device: str | None = "auto") -> int:
    """``vqvae decode``: the first ``n`` code grids of ``split`` in the .npz ``codes``, decoded by the image
    VQ-VAE in ``run_dir`` into a PNG grid ``out``.

    Args:
        run_dir: the image VQ-VAE's run directory.
        codes: the .npz of ``vqvae encode`` (checked by :func:`load_codes`).
        out: the ``.png`` file to write, refused when it exists unless ``overwrite``.
        split: the split to decode, refused when the file lacks it.
        n: how many code grids (at most 1,024).
        overwrite: replace an existing ``out``.
        device: where the model runs (``auto``: see :func:`vqvae.devices.resolve_device`).
    Returns:
        how many images the grid holds.
    """
    path = check_out_file(out, overwrite, (".png",))
    model, _ = load_run(run_dir, "vqvae", device)
    arrays = load_codes(codes, model.config.num_codes, model.code_shape)
    key = f"{split}_indices"
    if key not in arrays:
        have = sorted(k[: -len("_indices")] for k in arrays if k.endswith("_indices"))
        raise VQVAEError(f"{codes} has no split {split!r} (it has: {', '.join(have)})")
    idx = torch.from_numpy(arrays[key][: min(n, 1024)].astype(np.int64)).to(model_device(model))
    images = model.decode_indices(idx).clamp(0, 1).cpu()
    save_image_grid(images, path, nrow=int(np.ceil(np.sqrt(len(images)))) if len(images) else 1)
    return len(images)
