"""The paper's recipes (arXiv:1711.00937, section 4): CIFAR-10, ImageNet 128x128 and VCTK-style speech.

They cannot be trained to the end here. A fast test reads each one as written and checks the paper's values
and the latent shapes of the models it builds; the slow ones shrink each recipe (widths, batch, steps: never
the number of strided convolutions, the latent grid's ratio or K) and train it a few steps on data made in the
test, in one process and under ``torchrun`` with two gloo ranks.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqvae import VQVAE, AudioVQVAE, GatedPixelCNN, WaveNetPrior
from vqvae.recipes import load_recipe

# -- data made in the test --------------------------------------------------------------------------------


def _smooth_images(n: int, size: int, seed: int) -> np.ndarray:
    """(n, size, size, 3) uint8: low-frequency colour blobs, so that an image is not white noise."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((n, 3, 4, 4), dtype=np.float32))
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (fine.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def write_cifar_batches(root: Path, n_train: int = 32, n_test: int = 16) -> Path:
    """``root/cifar-10-batches-py`` in CIFAR-10's python format (rows of 1024 R, 1024 G, 1024 B values)."""
    out = root / "cifar-10-batches-py"
    out.mkdir(parents=True)
    for name, n, seed in (("data_batch_1", n_train, 0), ("test_batch", n_test, 1)):
        rows = _smooth_images(n, 32, seed).transpose(0, 3, 1, 2).reshape(n, 3072)  # HWC -> CHW planes
        with open(out / name, "wb") as handle:
            batch = {b"batch_label": name.encode(), b"data": rows, b"labels": [i % 10 for i in range(n)]}
            pickle.dump(batch, handle, 4)
    with open(out / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}, handle, 4)
    return out


def write_image_folder(root: Path, per_class: int = 10) -> Path:
    """Two class sub-folders of 160x128 RGB PNGs (the loader resizes and centre-crops them to 128x128); with
    10 per class, the folder's deterministic split leaves one test image in each."""
    for c, name in enumerate(("goldfish", "tabby")):
        (root / name).mkdir(parents=True)
        for i, image in enumerate(_smooth_images(per_class, 160, 10 + c)):
            Image.fromarray(image[:128]).save(root / name / f"{i:03d}.png")
    return root


def write_speaker_corpus(root: Path, speakers: int = 2, per_speaker: int = 3, rate: int = 16000) -> Path:
    """Speaker sub-folders of 0.3 s 16-bit WAVs: a voiced-like buzz (a pitch per speaker) with a moving
    formant."""
    from vqvae.data.audio import write_wav

    t = np.arange(int(0.3 * rate)) / rate
    for s in range(speakers):
        (root / f"p{225 + s}").mkdir(parents=True)
        for u in range(per_speaker):
            f0 = 110.0 * (1 + s) * (1 + 0.05 * u)
            buzz = np.sign(np.sin(2 * np.pi * f0 * t)) * np.sin(2 * np.pi * (500 + 300 * u) * t)
            write_wav(root / f"p{225 + s}" / f"p{225 + s}_{u:03d}.wav", (0.3 * buzz).astype(np.float32), rate)
    return root


# -- how the recipes are shrunk ---------------------------------------------------------------------------
# Kept as the paper has them: the strided convolutions (so the latent grid's ratio), K, beta, the quantizer,
# the likelihood, speaker conditioning, the residual blocks. Shrunk: widths, D, the WaveNet's depth, the
# batch, the crop, the step count; the priors' widths and depths too.
COMMON = ["train.eval_batches=1", "train.log_every=1"]
CIFAR_SMALL = ["model.hidden=32", "model.res_hidden=16", "model.embedding_dim=8", "train.batch_size=8",
               *COMMON]
IMAGENET_SMALL = ["model.hidden=16", "model.res_hidden=8", "model.embedding_dim=8", "train.batch_size=4",
                  *COMMON]
VCTK_SMALL = ["audio.hidden=8", "audio.embedding_dim=8", "audio.local_channels=8", "audio.channels=8",
              "audio.skip_channels=8", "audio.max_dilation=8", "audio.dilation_cycles=1",
              "train.batch_size=2", "train.crop_length=512", *COMMON]
PIXELCNN_SMALL = ["prior.channels=8", "prior.num_layers=2", "prior.head_channels=16", "train.batch_size=4",
                  *COMMON]
WAVENET_PRIOR_SMALL = ["wavenet_prior.channels=8", "wavenet_prior.skip_channels=8",
                       "wavenet_prior.max_dilation=4", "wavenet_prior.dilation_cycles=1",
                       "train.batch_size=2", "train.crop_length=4", *COMMON]
STEPS = 3


def _vqvae(capsys, argv: list, nproc: int) -> None:
    """``vqvae ARGV --quiet --device cpu``: in this process for one rank; for two, under ``torchrun
    --nproc_per_node 2`` (gloo on the CPU, one thread each) as tests/test_torchrun.py runs it."""
    argv = [*map(str, argv), "--quiet", "--device", "cpu"]
    if nproc == 1:
        from vqvae.cli import main

        code = main(argv)
        assert code == 0, capsys.readouterr().err[-3000:]
        return
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "vqvae"]
    done = subprocess.run([*launcher, *argv, "train.threads=1"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]


def _finished(out: Path, steps: int) -> dict:
    assert {"config.json", "model.safetensors", "eval.json", "metrics.csv"} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "eval.json").read_text())
    assert metrics["step"] == steps
    return metrics


# -- the recipes as written -------------------------------------------------------------------------------


def test_cifar10_recipe_is_section_4_1():
    r = load_recipe("cifar10")
    arch, train = r.model, r.train
    assert (arch.in_channels, arch.image_size) == (3, 32)
    assert arch.downsample == 4  # two stride-2 4x4 convolutions
    # "two residual blocks ... 256 hidden units"
    assert (arch.hidden, arch.res_hidden, arch.num_res_layers) == (256, 256, 2)
    assert (train.lr, train.batch_size, train.steps) == (2e-4, 128, 250_000)
    assert (train.max_seconds, train.schedule) == (0, "constant")
    assert train.data == "cifar10"
    # section 3.2's 8x8x10
    assert arch.latent_size == 8 and arch.latents_per_position == 10 and arch.num_embeddings == 512
    assert (arch.quantizer, arch.commitment_cost) == ("vq", 0.25)  # section 3.2: no EMA, beta 0.25
    model = VQVAE(arch).eval()
    strided = [c for c in model.encoder.modules() if isinstance(c, torch.nn.Conv2d) and c.stride == (2, 2)]
    assert len(strided) == 2 and all(c.kernel_size == (4, 4) for c in strided)
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.indices.shape == (2, 10, 8, 8) and out.reconstruction.shape == (2, 3, 32, 32)
    assert torch.equal(model.encode(x := torch.rand(2, 3, 32, 32)), model(x).indices)


def test_imagenet128_recipe_is_section_4_2():
    r = load_recipe("imagenet128")
    arch, train = r.model, r.train
    assert (arch.in_channels, arch.image_size, arch.latent_size, arch.num_embeddings) == (3, 128, 32, 512)
    assert (arch.quantizer, arch.commitment_cost, arch.recon_loss) == ("vq", 0.25, "mse")
    assert (train.lr, train.batch_size, train.steps) == (2e-4, 128, 250_000)
    model = VQVAE(arch).eval()
    with torch.no_grad():  # full width at batch 1: 128x128x3 -> 32x32x1 codes
        out = model(torch.rand(1, 3, 128, 128))
    assert out.indices.shape == (1, 32, 32) and out.reconstruction.shape == (1, 3, 128, 128)
    # section 4.2's reduction in bits
    assert 128 * 128 * 3 * 8 / (32 * 32 * 9) == pytest.approx(42.67, abs=0.01)
    p = load_recipe("imagenet128_prior", kind="prior").prior
    # the gated stack reaches over the grid
    assert p.conditional and p.num_layers * (p.kernel_size // 2) >= 32
    # its depth and kernel as written, narrowed (256 -> 16 channels) so that one forward pass takes no seconds
    prior = GatedPixelCNN(**{**vars(p), "channels": 16, "head_channels": 32, "num_embeddings": 512,
                             "num_classes": 2}).eval()
    with torch.no_grad():
        logits = prior(torch.randint(0, 512, (1, 32, 32)), torch.tensor([1]))
    assert logits.shape == (1, 512, 32, 32)


def test_vctk_recipe_is_section_4_3():
    r = load_recipe("vctk", kind="audio")
    arch, train = r.audio, r.train
    assert (arch.num_downsamples, arch.hop, arch.num_embeddings) == (6, 64, 512)
    assert arch.speaker_conditioning and arch.use_codes
    assert (arch.quantizer, arch.commitment_cost) == ("vq", 0.25)
    assert train.crop_length % arch.hop == 0 and train.steps == 250_000
    model = AudioVQVAE(r.with_architecture(num_speakers=109).audio).eval()  # VCTK's 109 speakers
    strided = [c for c in model.encoder.modules() if isinstance(c, torch.nn.Conv1d) and c.stride == (2,)]
    assert len(strided) == 6 and all(c.kernel_size == (4,) for c in strided)
    with torch.no_grad():
        assert model.encode(torch.zeros(1, 1024)).shape == (1, 16)  # 64x shorter: 1024 samples -> 16 codes
        out = model(torch.zeros(2, 1024), torch.tensor([0, 108]))
    assert out.indices.shape == (2, 16)
    p = load_recipe("vctk_prior", kind="audio_prior")
    assert p.train.crop_length * arch.hop == 40960  # section 4.3: the prior's chunks of 40960 samples
    prior = WaveNetPrior(**{**vars(p.wavenet_prior), "num_embeddings": 512, "num_speakers": 109})
    assert prior.net.receptive_field >= p.train.crop_length


# -- shrunk, trained a few steps: one process and two gloo ranks ---------------------------------------------


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("paper-data")
    write_cifar_batches(root / "cifar")
    return {"cifar_home": root / "cifar", "imagenet": write_image_folder(root / "imagenet"),
            "vctk": write_speaker_corpus(root / "vctk")}


def _image_run(out: Path, latent: int, k: int) -> None:
    model = VQVAE.from_pretrained(out)
    assert model.config.num_embeddings == k and model.config.latent_size == latent
    size = model.config.image_size
    assert model.encode(torch.rand(1, 3, size, size)).shape == (1, *model.code_shape)
    assert model.code_shape[-2:] == (latent, latent)


def _audio_run(out: Path) -> None:
    model = AudioVQVAE.from_pretrained(out)
    assert model.config.num_embeddings == 512 and model.config.num_speakers == 2 and model.config.hop == 64
    assert model.encode(torch.zeros(1, 640)).shape == (1, 10)


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_cifar10_recipe_trains(datasets, tmp_path, nproc, monkeypatch, capsys):
    # train.data stays the recipe's "cifar10", found through VQVAE_DATA_DIR
    monkeypatch.setenv("VQVAE_DATA_DIR", str(datasets["cifar_home"]))
    out = tmp_path / "cifar10"
    _vqvae(capsys, ["train", "--config", "cifar10", "--out", out, "--steps", STEPS, *CIFAR_SMALL], nproc)
    metrics = _finished(out, STEPS)
    # K = 512: 9 bits a code
    assert metrics["latent_grid"] == [8, 8] and metrics["bits_per_image"] == 8 * 8 * 10 * 9
    assert metrics["nll_bits_per_dim"] > 0  # the logistic likelihood gives bits/dim, the paper's measure
    _image_run(out, latent=8, k=512)
    # the paper trained no prior on these latents; the Gated PixelCNN models one code a position
    if nproc == 1:
        from vqvae.cli import main

        assert main(["train-prior", str(out), "--out", str(tmp_path / "prior"), "--steps", "1"]) == 2
        assert "has 10 codes at each latent position" in capsys.readouterr().err
        assert not (tmp_path / "prior").exists()


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_imagenet128_recipe_and_its_prior_train(datasets, tmp_path, nproc, capsys):
    out = tmp_path / "imagenet128"
    _vqvae(capsys, ["train", "--config", "imagenet128", "--data", datasets["imagenet"], "--out", out,
                    "--steps", STEPS, *IMAGENET_SMALL], nproc)
    metrics = _finished(out, STEPS)
    # section 4.2's 32x32x9
    assert metrics["latent_grid"] == [32, 32] and metrics["bits_per_image"] == 32 * 32 * 9
    _image_run(out, latent=32, k=512)
    if nproc == 1:  # the class-conditional PixelCNN over the 32x32 codes of the two classes
        prior = tmp_path / "prior"
        _vqvae(capsys, ["train-prior", out, "--config", "imagenet128_prior", "--out", prior, "--steps", 2,
                        *PIXELCNN_SMALL], nproc)
        _finished(prior, 2)
        config = GatedPixelCNN.from_pretrained(prior).config
        assert (config.num_embeddings, config.num_classes, config.conditional) == (512, 2, True)


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_vctk_recipe_and_its_prior_train(datasets, tmp_path, nproc, capsys):
    out = tmp_path / "vctk"
    _vqvae(capsys, ["audio", "train", "--config", "vctk", "--data", datasets["vctk"], "--out", out,
                    "--steps", STEPS, *VCTK_SMALL], nproc)
    metrics = _finished(out, STEPS)
    assert metrics["conditioned_on"] == ["codes", "speaker"] and metrics["codes_per_second"] == 250
    _audio_run(out)
    if nproc == 1:  # the speaker-conditioned WaveNet over the codes
        prior = tmp_path / "prior"
        _vqvae(capsys, ["audio", "train-prior", out, "--config", "vctk_prior", "--out", prior, "--steps", 2,
                        *WAVENET_PRIOR_SMALL], nproc)
        _finished(prior, 2)
        config = WaveNetPrior.from_pretrained(prior).config
        assert (config.num_embeddings, config.num_speakers, config.speaker_conditioning) == (512, 2, True)
