"""Devices and precision: ``--device`` / ``device=`` everywhere, and ``train.precision``. Every test
that runs a model here is parametrised over the devices this machine has (the CPU; CUDA and MPS when
present), and checks that a device gives what the CPU gives."""

import json

import numpy as np
import pytest
import torch

from tests.conftest import DEVICES
from vqvae.cli import main
from vqvae.devices import autocast, grad_scaler, resolve_device
from vqvae.errors import VQVAEError
from vqvae.nets import WaveNet
from vqvae.priors import GatedPixelCNN
from vqvae.recipes import load_recipe

TINY = ["model.hidden=16", "model.res_hidden=8", "model.embedding_dim=8", "model.num_embeddings=32",
        "train.batch_size=16", "train.warmup_steps=1", "train.log_every=1", "train.eval_batches=2"]


def test_resolve_device():
    best = torch.device(DEVICES[-1] if DEVICES[-1] != "cpu" else "cpu")
    assert resolve_device("auto") == resolve_device(None) == best
    assert resolve_device("CPU") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("tpu", "gpu", "cuda:x", ""):
        with pytest.raises(VQVAEError, match="--device must be auto, cpu, cuda, cuda:N or mps"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(VQVAEError, match="no CUDA GPU"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(VQVAEError, match="only"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_autocast_and_the_scaler():
    conv = torch.nn.Conv2d(1, 2, 3)
    x = torch.rand(1, 1, 5, 5)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        with autocast(torch.device("cpu"), precision):
            assert conv(x).dtype == dtype
    with pytest.raises(VQVAEError, match="train.precision"):
        with autocast(torch.device("cpu"), "fp8"):
            pass
    assert not grad_scaler(torch.device("cpu"), "fp16").is_enabled()  # loss scaling: fp16 on CUDA only
    if torch.cuda.is_available():
        assert grad_scaler(torch.device("cuda"), "fp16").is_enabled()


def test_precision_is_validated():
    assert load_recipe("fashion_mnist", ["train.precision=fp16"]).train.precision == "fp16"
    assert load_recipe("fashion_mnist").train.precision == "bf16"  # the default recipe (docs/benchmarks.md)
    assert load_recipe("fashion_mnist", ["train.precision=fp32"]).train.precision == "fp32"
    with pytest.raises(VQVAEError, match="train.precision"):
        load_recipe("fashion_mnist", ["train.precision=fp64"])


@pytest.mark.parametrize("device", DEVICES)
def test_cached_pixelcnn_sampling_is_the_naive_one_and_the_cpu_one(device):
    torch.manual_seed(0)
    prior = GatedPixelCNN(num_embeddings=16, num_classes=3, channels=8, num_layers=3,
                          head_channels=16).double()
    labels = torch.tensor([0, 2, 1])
    on_cpu = prior.sample((5, 5), labels, generator=torch.Generator().manual_seed(1))
    prior = prior.to(device)
    cached = prior.sample((5, 5), labels.to(device), generator=torch.Generator().manual_seed(1))
    naive = prior.sample_naive((5, 5), labels.to(device), generator=torch.Generator().manual_seed(1))
    assert cached.device.type == device and torch.equal(cached, naive) and torch.equal(cached.cpu(), on_cpu)


@pytest.mark.parametrize("device", DEVICES)
def test_incremental_wavenet_generation_is_the_naive_one_and_the_cpu_one(device):
    torch.manual_seed(0)
    net = WaveNet(8, 8, 8, [1, 2, 4, 1, 2], num_globals=2).double().eval()
    g = torch.tensor([1])
    on_cpu = net.generate(1, 40, None, g, None, torch.Generator().manual_seed(3))
    net = net.to(device)
    fast = net.generate(1, 40, None, g.to(device), None, torch.Generator().manual_seed(3))
    slow = net.generate_naive(1, 40, None, g.to(device), None, torch.Generator().manual_seed(3))
    assert fast.device.type == device and torch.equal(fast, slow) and torch.equal(fast.cpu(), on_cpu)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_evaluate_encode_and_sample_on_a_device(device, precision, small_fmnist, tmp_path, capsys):
    vq, prior = tmp_path / "vq", tmp_path / "prior"
    assert main(["train", "--data", str(small_fmnist), "--out", str(vq), "--steps", "3", "--quiet",
                 "--device", device, *TINY, f"train.precision={precision}"]) == 0
    assert json.loads((vq / "eval.json").read_text())["num_images"] == 32
    capsys.readouterr()
    assert main(["evaluate", str(vq), "--json", "--limit", "64", "--device", device]) == 0
    here = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(vq), "--json", "--limit", "64", "--device", "cpu"]) == 0
    on_cpu = json.loads(capsys.readouterr().out)
    assert here["psnr"] == pytest.approx(on_cpu["psnr"], rel=1e-4)
    assert main(["train-prior", str(vq), "--out", str(prior), "--steps", "2", "--quiet", "--device", device,
                 "prior.num_layers=2", "prior.channels=8", "prior.head_channels=16", "train.eval_batches=1",
                 f"train.precision={precision}"]) == 0
    assert json.loads((prior / "config.json").read_text())["train"]["precision"] == precision
    for i, d in enumerate((device, "cpu")):
        assert main(["sample", str(prior), "--n", "3", "--class", "1", "--seed", "4", "--device", d,
                     "--out", str(tmp_path / f"s{i}.npz")]) == 0
    a, b = (np.load(tmp_path / f"s{i}.npz") for i in range(2))
    assert np.array_equal(a["indices"], b["indices"])  # the same samples on every device


def test_a_device_this_machine_lacks_is_one_line_and_exit_2(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(["evaluate", str(tmp_path), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no CUDA GPU" in err
