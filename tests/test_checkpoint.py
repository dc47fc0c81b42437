import hashlib
import json
import os
import shutil

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


def _save(directory, net, opt, step):
    checkpoint.save_training(directory, {"kind": "test", "step": step}, net.state_dict(), opt,
                             {"torch": torch.get_rng_state()}, {"step": step, "seconds": float(step)})


def _trained(steps):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(steps):
        net(torch.randn(4, 3)).sum().backward()
        opt.step()
    return net, opt


def test_trainer_state_round_trip_without_pickle(tmp_path):
    net, opt = _trained(1)
    state = torch.get_rng_state()
    _save(tmp_path, net, opt, 7)
    assert set(load_file(tmp_path / checkpoint.STATE_TENSORS))  # plain safetensors
    json.loads((tmp_path / checkpoint.STATE_JSON).read_text())
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=5.0)
    rng, meta = checkpoint.load_trainer_state(tmp_path, opt2)
    assert meta == {"step": 7, "seconds": 7.0} and torch.equal(rng["torch"], state)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"] == 1e-3
    for pid in a["state"]:
        for k, v in a["state"][pid].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["state"][pid][k]))


FILES = [checkpoint.CONFIG, checkpoint.WEIGHTS, checkpoint.STATE_JSON, checkpoint.STATE_TENSORS,
         checkpoint.MANIFEST]


def _load_all(directory):
    checkpoint.read_config(directory)
    checkpoint.load_model_state(directory)
    checkpoint.load_trainer_state(directory, torch.optim.Adam(torch.nn.Linear(3, 2).parameters()))


@pytest.fixture
def two_steps(tmp_path):
    """The checkpoints of step 1 and of step 2 of one run, in directories of their own."""
    net, opt = _trained(1)
    _save(tmp_path / "s1", net, opt, 1)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    _save(tmp_path / "s2", net, opt, 2)
    return tmp_path / "s1", tmp_path / "s2"


def test_the_manifest_lists_every_file_with_its_hash_and_the_step(two_steps):
    _, s2 = two_steps
    m = checkpoint.verify(s2)
    assert m["step"] == 2 and sorted(m["files"]) == sorted(FILES[:-1])
    for name, sha in m["files"].items():
        assert hashlib.sha256((s2 / name).read_bytes()).hexdigest() == sha
    _load_all(s2)


@pytest.mark.parametrize("kind", ["from-another-step", "missing", "truncated"])
@pytest.mark.parametrize("name", FILES)
def test_a_torn_checkpoint_is_refused(two_steps, tmp_path, kind, name):
    s1, s2 = two_steps
    torn = tmp_path / "torn"
    shutil.copytree(s2, torn)
    if kind == "from-another-step":
        shutil.copy(s1 / name, torn / name)
    elif kind == "missing":
        (torn / name).unlink()
    else:
        (torn / name).write_bytes((torn / name).read_bytes()[:-7])
    with pytest.raises(VQVAEError) as exc:
        checkpoint.verify(torn)
    assert "\n" not in str(exc.value)
    with pytest.raises(VQVAEError):
        _load_all(torn)
    with pytest.raises(VQVAEError, match="no earlier complete checkpoint"):
        checkpoint.recover(torn)  # and no .previous to fall back on: refused in one line


@pytest.mark.parametrize("files_written", [1, 2, 3, 4])
def test_a_save_cut_short_leaves_the_previous_checkpoint_to_resume_from(tmp_path, monkeypatch, files_written):
    net, opt = _trained(1)
    run = tmp_path / "run"
    _save(run, net, opt, 1)
    _save(run, net, opt, 2)
    before = {n: (run / n).read_bytes() for n in FILES}

    def cut(n):
        if n == files_written:
            raise KeyboardInterrupt  # what a kill leaves: some files of step 3 written, the manifest not
    monkeypatch.setattr(checkpoint, "_fault", cut)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    with pytest.raises(KeyboardInterrupt):
        _save(run, net, opt, 3)
    with pytest.raises(VQVAEError):
        _load_all(run)
    note = checkpoint.recover(run)
    assert "step 2" in note
    assert {n: (run / n).read_bytes() for n in FILES} == before
    _load_all(run)
    assert checkpoint.recover(run) is None  # whole: nothing to do


def test_a_checkpoint_without_manifest_is_refused_whatever_its_config_says(tmp_path):
    net, opt = _trained(1)
    checkpoint.save_model(tmp_path, {"kind": "test"}, net.state_dict())
    (tmp_path / checkpoint.MANIFEST).unlink()
    config = json.loads((tmp_path / checkpoint.CONFIG).read_text())
    for version in (2, 1, None):  # a config claiming an older format, or none, is not trusted either
        edited = {k: v for k, v in config.items() if k != "format_version" or version is not None}
        edited.update({} if version is None else {"format_version": version})
        (tmp_path / checkpoint.CONFIG).write_text(json.dumps(edited))
        with pytest.raises(VQVAEError, match="no manifest.json"):
            checkpoint.read_config(tmp_path)
        with pytest.raises(VQVAEError, match="no manifest.json"):
            checkpoint.load_model_state(tmp_path)
        assert not checkpoint.whole(tmp_path)


def test_malformed_trainer_state_is_one_line(tmp_path):
    net, opt = _trained(1)
    _save(tmp_path, net, opt, 1)
    info = json.loads((tmp_path / checkpoint.STATE_JSON).read_text())
    info["optim_scalars"] = [1, 2]  # a field of the wrong shape, with a manifest that agrees
    raw = json.dumps(info).encode()
    (tmp_path / checkpoint.STATE_JSON).write_bytes(raw)
    m = json.loads((tmp_path / checkpoint.MANIFEST).read_text())
    m["files"][checkpoint.STATE_JSON] = hashlib.sha256(raw).hexdigest()
    (tmp_path / checkpoint.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(VQVAEError, match="does not hold a trainer state this run can use"):
        checkpoint.load_trainer_state(tmp_path, torch.optim.Adam(torch.nn.Linear(3, 2).parameters()))


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
