import json
import os

import pytest
import torch
from safetensors.torch import load_file

from vqvae import checkpoint, fileio
from vqvae.errors import VQVAEError


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "model.safetensors"
    fileio.atomic_write_bytes(target, b"old")

    def boom(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)  # the rename never happens
    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temp file left


def test_trainer_state_round_trip_without_pickle(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = torch.get_rng_state()
    checkpoint.save_trainer_state(tmp_path, opt, {"torch": state}, {"step": 7})
    assert set(load_file(tmp_path / checkpoint.STATE_TENSORS))  # plain safetensors
    json.loads((tmp_path / checkpoint.STATE_JSON).read_text())
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=5.0)
    rng, meta = checkpoint.load_trainer_state(tmp_path, opt2)
    assert meta == {"step": 7} and torch.equal(rng["torch"], state)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"] == 1e-3
    for pid in a["state"]:
        for k, v in a["state"][pid].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["state"][pid][k]))


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(VQVAEError, match="not found"):
        checkpoint.read_config(tmp_path / "missing")
    with pytest.raises(VQVAEError, match="is not a checkpoint directory"):
        checkpoint.read_config(tmp_path)
    (tmp_path / "config.json").write_text("{oops")
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(VQVAEError, match="not valid JSON"):
        checkpoint.read_config(tmp_path)
    with pytest.raises(VQVAEError, match="cannot read"):
        checkpoint.load_model_state(tmp_path)
