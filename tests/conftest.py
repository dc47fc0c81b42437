import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

# The devices this machine has: the CPU, and CUDA and MPS when present. Tests that take the `device` fixture
# run once on each (on this project's CPU machine: the CPU alone).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (
    ["mps"] if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


def float64_on(device: torch.device) -> None:
    """Skip where a device lacks float64 (MPS): the exact-causality tests differentiate in float64."""
    if device.type == "mps":
        pytest.skip("MPS has no float64")

def write_idx(directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    n, h, w = images.shape
    (directory / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">IIII", 0x803, n, h, w) + images.astype(np.uint8).tobytes())
    )
    (directory / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 0x801, n) + labels.astype(np.uint8).tobytes()
    )


@pytest.fixture(scope="session")
def small_fmnist(tmp_path_factory) -> Path:
    """A small slice of the real Fashion-MNIST (512 train / 256 test images) as an IDX directory.
    The data comes from Debian's dataset-fashion-mnist (which `make test` installs) or the loader's
    download."""
    from vqvae.data import load_images

    out = tmp_path_factory.mktemp("fmnist-small")
    for split, prefix, n in (("train", "train", 512), ("test", "t10k", 256)):
        ds = load_images("fashion-mnist", split)
        write_idx(out, prefix, ds.images[:n, 0].numpy(), ds.labels[:n].numpy())
    return out


@pytest.fixture(scope="session")
def tone_corpus(tmp_path_factory) -> Path:
    """Three speakers of three 0.4 s harmonic tones each at 8 kHz, as a speaker-folder corpus."""
    from vqvae.data.audio import write_wav

    root = tmp_path_factory.mktemp("tones")
    rate = 8000
    t = np.arange(int(0.4 * rate)) / rate
    for s, f0 in enumerate((110.0, 190.0, 300.0)):
        (root / f"spk{s}").mkdir()
        for i in range(3):
            f = f0 * (1 + 0.02 * i)
            x = sum(0.3 / h * np.sin(2 * np.pi * h * f * t) for h in (1, 2, 3))
            write_wav(root / f"spk{s}" / f"u{i}.wav", x.astype(np.float32), rate)
    return root
