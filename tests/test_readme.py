"""Every ```python block of README.md runs as written, in order, in one namespace, from a directory that holds the
runs the README loads (``runs/demo/vqvae``, ``runs/demo/prior``: here tiny ones trained for a few steps)."""

import re
from pathlib import Path

import pytest

from vqvae.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = ["model.hidden=16", "model.res_hidden=8", "model.embedding_dim=8", "model.num_embeddings=32",
        "train.batch_size=16", "train.eval_batches=2", "model.recon_loss=logistic"]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_readme_has_python_blocks():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2 and all(b.strip() for b in blocks)


@pytest.mark.slow
def test_every_python_block_of_the_readme_runs_in_order(small_fmnist, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", str(small_fmnist), "--out", "runs/demo/vqvae", "--steps", "2", "--quiet",
                 *TINY]) == 0
    assert main(["train-prior", "runs/demo/vqvae", "--out", "runs/demo/prior", "--steps", "2", "--quiet",
                 "prior.num_layers=2", "prior.channels=8", "prior.head_channels=16", "train.eval_batches=1"]) == 0
    namespace: dict = {}
    for i, block in enumerate(python_blocks(README.read_text())):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
