"""A corpus of bad inputs a user can give the CLI -- data files (IDX, CIFAR, image folders, WAV, corpora),
config files and overrides, checkpoints, codes and samples files, run directories and arguments. Every one
must end with exit status 2, exactly one line on stderr (no traceback), and every file that existed before
byte-identical after."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from vqvae import checkpoint
from vqvae.cli import main

from .conftest import write_idx

TINY = ["model.hidden=16", "model.res_hidden=8", "model.embedding_dim=8", "model.num_embeddings=32",
        "train.batch_size=16", "train.log_every=2", "train.warmup_steps=2"]
TRAIN = ["train", "--steps", "2", "--quiet", *TINY]


@pytest.fixture(scope="module")
def run_dir(small_fmnist, tmp_path_factory) -> Path:
    """A tiny image VQ-VAE run (two steps), copied by the cases that damage it."""
    out = tmp_path_factory.mktemp("bad-inputs") / "run"
    assert main([*TRAIN, "--data", str(small_fmnist), "--out", str(out)]) == 0
    return out


def snapshot(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots``."""
    found = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")) if Path(root).is_dir() else [Path(root)]:
            if p.is_file():
                found[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


# -- builders of bad inputs: each takes (tmp, fmnist, run) and returns the command line ----------------------

def idx_dir(tmp: Path, fmnist: Path, mutate) -> Path:
    d = tmp / "idx"
    shutil.copytree(fmnist, d)
    mutate(d)
    return d


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def train_on(data: Path | str, *extra: str, out: str) -> list[str]:
    return [*TRAIN, "--data", str(data), *extra, "--out", out]


def idx_case(mutate):
    return lambda tmp, fm, run: train_on(idx_dir(tmp, fm, mutate), out=str(tmp / "out"))


def gz(path: Path, data: bytes) -> None:
    path.write_bytes(gzip.compress(data))


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def cifar_dir(tmp: Path, batch: bytes) -> Path:
    d = tmp / "cifar"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_bytes(d / name, batch)
    write_bytes(d / "batches.meta", pickle.dumps({b"label_names": [b"a"] * 10}))
    return d


def cifar_case(batch_bytes):
    return lambda tmp, fm, run: train_on(
        cifar_dir(tmp, batch_bytes() if callable(batch_bytes) else batch_bytes), out=str(tmp / "out"))


class _System:
    def __reduce__(self):
        return os.system, ("echo owned",)


class _Huge:
    """Pickles as an ndarray whose header declares 10^13 elements (numpy tries to allocate them)."""

    def __reduce__(self):
        return (np.array(0).__reduce__()[0], (np.ndarray, (0,), b"b"),
                (1, (10**13,), np.dtype("O"), False, [0]))


def _huge_array_pickle() -> bytes:
    return pickle.dumps({b"data": _Huge(), b"labels": [0]}, protocol=4)


def wav_bytes(rate: int = 16000, frames: int = 3200, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(frames, "<i2").tobytes())
    raw = bytearray(buf.getvalue())
    struct.pack_into("<H", raw, 22, channels)  # the fmt chunk's channel count
    struct.pack_into("<I", raw, 24, rate)  # ... and its sample rate
    return bytes(raw)


def corpus(tmp: Path, bad: dict[str, bytes] | None = None, per_speaker: int = 3,
           tsv: str | None = None) -> Path:
    d = tmp / "corpus"
    for s in ("s1", "s2"):
        for i in range(per_speaker):
            write_bytes(d / s / f"{i}.wav", wav_bytes())
    for name, data in (bad or {}).items():
        write_bytes(d / name, data)
    if tsv is not None:
        (d / "utterances.tsv").write_text(tsv)
    return d


def audio_case(**kw):
    return lambda tmp, fm, run: ["audio", "train", "--data", str(corpus(tmp, **kw)),
                                 "--out", str(tmp / "out"), "--steps", "1", "--quiet",
                                 "train.crop_length=256", "audio.channels=4"]


def copy_run(tmp: Path, run: Path, mutate) -> Path:
    d = tmp / "run"
    shutil.copytree(run, d)
    mutate(d)
    return d


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def resigned_without(field: str):
    """A whole checkpoint whose config lacks model.``field`` (written again with vqvae's own ``save_model``,
    so its manifest lists the edited config)."""
    def mutate(d: Path) -> None:
        config = json.loads((d / "config.json").read_text())
        config["model"].pop(field)
        checkpoint.save_model(d, config, checkpoint.load_model_state(d)[0])
    return mutate


def run_case(mutate, command="evaluate"):
    return lambda tmp, fm, run: (
        [command, str(copy_run(tmp, run, mutate)), "--limit", "4"] if command == "evaluate"
        else ["train", "--resume", str(copy_run(tmp, run, mutate)), "--steps", "4", "--quiet"])


def npz_case(data):
    def build(tmp, fm, run):
        path = tmp / "codes.npz"
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            np.savez(path, **data)
        return ["decode", str(run), str(path), "--out", str(tmp / "d.png")]
    return build


def recipe_case(text: str):
    def build(tmp, fm, run):
        (tmp / "r.yaml").write_text(text)
        return train_on(fm, "--config", str(tmp / "r.yaml"), out=str(tmp / "out"))
    return build


def override_case(*overrides: str):
    return lambda tmp, fm, run: train_on(fm, *overrides, out=str(tmp / "out"))


def user_dir(tmp: Path) -> Path:
    d = tmp / "mine"
    write_bytes(d / "notes.txt", b"mine")
    return d


CASES = {
    # IDX
    "idx-truncated-images": idx_case(lambda d: truncate(d / "train-images-idx3-ubyte.gz", 100)),
    "idx-wrong-magic": idx_case(lambda d: gz(d / "train-images-idx3-ubyte.gz",
                                             struct.pack(">IIII", 0x801, 1, 2, 2))),
    "idx-label-count-mismatch": idx_case(lambda d: write_bytes(d / "train-labels-idx1-ubyte",
                                                                 struct.pack(">II", 0x801, 3) + b"\0\0\0")),
    "idx-huge-header": idx_case(lambda d: gz(d / "train-images-idx3-ubyte.gz",
                                             struct.pack(">IIII", 0x803, 10**9, 28, 28) + b"\0" * 64)),
    "idx-empty-file": idx_case(lambda d: write_bytes(d / "t10k-labels-idx1-ubyte", b"")),
    "idx-no-test-split": idx_case(lambda d: [(d / n).unlink() for n in ("t10k-images-idx3-ubyte.gz",
                                                                        "t10k-labels-idx1-ubyte")]),
    "idx-test-labels-outside-train-classes": idx_case(lambda d: (
        write_idx(d, "train", np.zeros((32, 28, 28), np.uint8), np.arange(32) % 2),
        write_idx(d, "t10k", np.zeros((8, 28, 28), np.uint8), np.arange(8)))),
    # CIFAR
    "cifar-malicious-pickle": cifar_case(lambda: pickle.dumps(_System())),
    "cifar-truncated-pickle": cifar_case(
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})[:60]),
    "cifar-wrong-shape": cifar_case(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})),
    "cifar-array-of-1e13": cifar_case(_huge_array_pickle),
    # image folders
    "folder-empty-classes": lambda tmp, fm, run: train_on(
        (tmp / "imgs" / "a").mkdir(parents=True) or tmp / "imgs", out=str(tmp / "out")),
    "folder-is-a-file": lambda tmp, fm, run: train_on(write_bytes(tmp / "images.png", b"x"),
                                                      out=str(tmp / "out")),
    "data-missing": lambda tmp, fm, run: train_on(tmp / "nowhere", out=str(tmp / "out")),
    # WAV and corpora
    "wav-rate-zero": audio_case(bad={"s1/bad.wav": wav_bytes(rate=0)}),
    "wav-zero-channels": audio_case(bad={"s1/bad.wav": wav_bytes(channels=0)}),
    "wav-truncated-header": audio_case(bad={"s1/bad.wav": wav_bytes()[:30]}),
    "wav-random-bytes": audio_case(bad={"s2/bad.wav": bytes(range(256)) * 4}),
    "corpus-bad-utterances-header": audio_case(tsv="name\tlabel\n"),
    "corpus-unknown-split": audio_case(tsv="file\tclass\tsplit\ns1/0.wav\ta\tvalidation\n"),
    "corpus-no-test-split": audio_case(per_speaker=1),
    "corpus-missing": lambda tmp, fm, run: ["audio", "train", "--data", str(tmp / "none"),
                                            "--out", str(tmp / "o"), "--steps", "1"],
    # recipes and overrides
    "recipe-not-yaml": recipe_case("model: [unclosed"),
    "recipe-unknown-key": recipe_case("model:\n  hiden: 3\n"),
    "recipe-not-a-mapping": recipe_case("- 1\n- 2\n"),
    "override-lr-inf": override_case("train.lr=.inf"),
    "override-lr-nan": override_case("train.lr=.nan"),
    "override-epsilon-inf": override_case("model.epsilon=.inf"),
    "override-commitment-inf": override_case("model.commitment_cost=.inf"),
    "override-max-seconds-inf": override_case("train.steps=0", "train.max_seconds=.inf"),
    "override-huge-codebook": override_case("model.num_embeddings=1000000000000"),
    "override-on-nonfinite": override_case("train.on_nonfinite=maybe"),
    "override-batch-size-zero": override_case("train.batch_size=0"),
    "override-unknown-section": override_case("optim.lr=1"),
    # checkpoints
    "checkpoint-missing": lambda tmp, fm, run: ["evaluate", str(tmp / "no-run")],
    "checkpoint-not-a-run": lambda tmp, fm, run: ["evaluate", str(user_dir(tmp))],
    "checkpoint-config-edited": run_case(
        lambda d: edit_json(d / "config.json", lambda c: c["model"].pop("hidden"))),
    "checkpoint-config-lacks-field": run_case(resigned_without("hidden")),
    "checkpoint-no-manifest": run_case(lambda d: (d / "manifest.json").unlink()),
    "checkpoint-weights-truncated": run_case(lambda d: truncate(d / "model.safetensors", 200)),
    "checkpoint-weights-from-elsewhere": run_case(lambda d: write_bytes(d / "model.safetensors", b"\0" * 64)),
    "checkpoint-manifest-damaged": run_case(lambda d: write_bytes(d / "manifest.json", b"{not json")),
    "resume-trainer-state-edited": run_case(
        lambda d: edit_json(d / "trainer_state.json", lambda s: s.update(optim_scalars=[1, 2])), "resume"),
    "resume-not-a-run": lambda tmp, fm, run: ["train", "--resume", str(user_dir(tmp)), "--steps", "3"],
    "resume-with-config": lambda tmp, fm, run: ["train", "--resume", str(run), "--config", "fashion_mnist"],
    # codes and samples files
    "codes-random-bytes": npz_case(bytes(range(256))),
    "codes-pickled-objects": npz_case({"test_indices": np.array([{"a": 1}], dtype=object)}),
    "codes-out-of-range": npz_case({"test_indices": np.full((2, 7, 7), 999, np.int64)}),
    "codes-wrong-grid": npz_case({"test_indices": np.zeros((2, 5, 5), np.int64)}),
    "codes-not-integers": npz_case({"test_indices": np.zeros((2, 7, 7), np.float32)}),
    # run directories
    "out-not-empty": lambda tmp, fm, run: train_on(fm, out=str(user_dir(tmp))),
    "out-is-a-file": lambda tmp, fm, run: train_on(fm, out=str(write_bytes(tmp / "f", b"x"))),
    "prior-of-the-wrong-kind": lambda tmp, fm, run: ["sample", str(run), "--out", str(tmp / "s.npz")],
    "output-suffix": lambda tmp, fm, run: ["reconstruct", str(run), "--out", str(tmp / "x.txt")],
    # command-line arguments
    "arg-steps-not-a-number": lambda tmp, fm, run: ["train", "--steps", "many"],
    "arg-unknown-command": lambda tmp, fm, run: ["trian"],
    "arg-unknown-option": lambda tmp, fm, run: ["evaluate", str(run), "--frobnicate"],
    "arg-device": lambda tmp, fm, run: ["evaluate", str(run), "--device", "tpu"],
    "arg-negative-limit": lambda tmp, fm, run: ["evaluate", str(run), "--limit", "-3"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gives_one_line_and_exit_2(name, small_fmnist, run_dir, tmp_path, capfd):
    argv = CASES[name](tmp_path, small_fmnist, run_dir)
    before = snapshot(tmp_path, run_dir, small_fmnist)
    capfd.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (name, err)
    assert len(lines) == 1 and lines[0].startswith("vqvae"), (name, err)
    assert "Traceback" not in err
    after = snapshot(tmp_path, run_dir, small_fmnist)
    assert {k: v for k, v in after.items() if k in before} == before, name  # nothing that existed was changed


def test_the_corpus_has_at_least_40_cases():
    assert len(CASES) >= 40


# -- messages that name what is wrong (issue 26) -------------------------------------------------------
def test_messages_name_the_value_and_what_would_be_right(tmp_path, monkeypatch):
    from vqvae.checkpoint import read_config
    from vqvae.config import ImageModelConfig
    from vqvae.data.audio import read_wav
    from vqvae.errors import VQVAEError
    from vqvae.fileio import atomic_write_bytes
    from vqvae.recipes import load_recipe

    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hidden: 64\n  res_hidden: [1\n")
    with pytest.raises(VQVAEError, match=r"not valid YAML at line 4, column 1"):
        load_recipe(str(bad))
    with pytest.raises(VQVAEError, match=r"model.num_embeddings must be at most 2\^20 codes per position "
                                         r"with quantizer ema .*gives 1000000000000"):
        ImageModelConfig(num_embeddings=10**12).validate()
    samples = np.zeros(80, np.float32).tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 3, 1, 8000, 32000, 4, 32)  # format 3: IEEE float
    header = (b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVEfmt " + fmt + b"data"
              + struct.pack("<I", len(samples)))
    (tmp_path / "float.wav").write_bytes(header + samples)
    with pytest.raises(VQVAEError, match="it is an IEEE-float WAV; integer PCM WAVs are read"):
        read_wav(tmp_path / "float.wav")
    run = tmp_path / "run"
    run.mkdir()
    raw = json.dumps({"model": {}}).encode()
    (run / "config.json").write_bytes(raw)
    (run / "model.safetensors").write_bytes(b"")
    listed = {"config.json": hashlib.sha256(raw).hexdigest()}
    (run / "manifest.json").write_text(json.dumps({"format_version": 1, "step": 0, "files": listed}))
    with pytest.raises(VQVAEError, match="records no kind: expected a checkpoint of kind 'vqvae'"):
        read_config(run, kind="vqvae")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("os.replace", denied)
    target = tmp_path / "out" / "grid.png"
    with pytest.raises(VQVAEError, match=f"cannot write {target}: permission denied in {target.parent}$"):
        atomic_write_bytes(target, b"x")
    assert list(target.parent.iterdir()) == []  # no temporary file left, none named
