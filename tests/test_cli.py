"""End to end on real data (a slice of Fashion-MNIST): train -> checkpoint -> resume -> evaluate ->
reconstruct -> encode -> decode, and the one-line errors of bad input."""

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vqvae.cli import main

from .conftest import write_idx

TINY = ["model.hidden=16", "model.res_hidden=8", "model.embedding_dim=8", "model.num_embeddings=32",
        "model.kmeans_init=true", "train.kmeans_batches=2", "train.batch_size=16", "train.log_every=2",
        "train.warmup_steps=2"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(small_fmnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--data", str(small_fmnist), "--out", str(out), "--steps", "12", "--quiet",
                 *TINY]) == 0
    return out


@pytest.mark.slow
def test_train_writes_a_complete_run_directory(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "model.safetensors", "trainer_state.json", "trainer_state.safetensors",
            "metrics.csv", "eval.json", "reconstructions.png", "tb"} <= names
    config = json.loads((trained / "config.json").read_text())
    assert config["model"]["hidden"] == 16 and config["train"]["steps"] == 12
    rows = (trained / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 1 + 6
    metrics = json.loads((trained / "eval.json").read_text())
    assert metrics["num_images"] == 256 and metrics["step"] == 12


@pytest.mark.slow
# channels_last weights, fused Adam: moments keep the layout
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_continues_exactly_where_it_stopped(small_fmnist, tmp_path, capsys, precision):
    a, b = tmp_path / "a", tmp_path / "b"
    # a constant schedule: the cosine one depends on the budget, which a resumed run extends
    base = ["train", "--data", small_fmnist, "--quiet", *TINY, "train.schedule=constant",
            "model.restart_threshold=1.0", f"train.precision={precision}"]
    assert run(capsys, *base, "--out", a, "--steps", 10)[0] == 0
    assert run(capsys, *base, "--out", b, "--steps", 6)[0] == 0
    assert run(capsys, "train", "--resume", b, "--steps", 10, "--quiet")[0] == 0
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert json.loads((b / "eval.json").read_text())["step"] == 10
    assert len((b / "metrics.csv").read_text().splitlines()) == 1 + 5


def test_evaluate_json_reconstruct_encode_decode(trained, small_fmnist, tmp_path, capsys):
    code, out, _ = run(capsys, "evaluate", trained, "--data", small_fmnist, "--split", "test", "--json")
    assert code == 0
    m = json.loads(out)
    for key in ("mse", "psnr", "ssim", "perplexity", "codes_used", "num_embeddings"):
        assert key in m
    assert m["num_images"] == 256 and m["num_embeddings"] == 32 and 0 < m["codes_used"] <= 32
    assert m["psnr"] == pytest.approx(10 * np.log10(1 / m["mse"]))

    grid = tmp_path / "grid.png"
    assert run(capsys, "reconstruct", trained, "--data", small_fmnist, "--out", grid)[0] == 0
    from PIL import Image

    assert Image.open(grid).size == (16 * 30 + 2, 2 * 30 + 2)

    codes = tmp_path / "codes.npz"
    assert run(capsys, "encode", trained, "--data", small_fmnist, "--out", codes)[0] == 0
    with np.load(codes, allow_pickle=False) as f:
        assert f["train_indices"].shape == (512, 7, 7) and f["test_indices"].shape == (256, 7, 7)
        assert f["train_labels"].shape == (512,) and int(f["num_embeddings"]) == 32
        test_idx = f["test_indices"].astype(np.int64)
    # the codes decode to what the model reconstructs
    from vqvae.data import load_images, to_float
    from vqvae.models import VQVAE

    model = VQVAE.from_pretrained(trained).eval()
    x = to_float(load_images(str(small_fmnist), "test").images[:8])
    assert np.array_equal(model.encode(x).numpy(), test_idx[:8])
    assert run(capsys, "decode", trained, codes, "--n", 9, "--out", tmp_path / "dec.png")[0] == 0


@pytest.mark.slow
def test_outputs_are_never_clobbered(trained, small_fmnist, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    grid.write_bytes(b"precious")
    code, _, err = run(capsys, "reconstruct", trained, "--data", small_fmnist, "--out", grid)
    assert code == 2 and "already exists" in err and grid.read_bytes() == b"precious"
    code, _, err = run(capsys, "train", "--data", small_fmnist, "--out", trained, "--steps", 1, "--quiet")
    assert code == 2 and "not empty" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "{tmp}"], "is not a checkpoint directory"),
        (["evaluate", "{tmp}/nope"], "checkpoint directory not found"),
        (["train", "--out", "{tmp}/r", "--steps", "1", "model.hiden=4"], "unknown config key"),
        (["train", "--out", "{tmp}/r", "--steps", "1", "--data", "{tmp}/no-such-dir"], "no-such-dir"),
        (["train", "--out", "{tmp}/r", "--steps", "1", "--data", "{bad}"], "truncated"),
        (["train", "--out", "{tmp}/r", "--steps", "1", "--data", "{big}"], "32x32"),
        (["train", "--resume", "{tmp}", "--steps", "1"], "not a checkpoint directory"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(argv, message, tmp_path, capsys, small_fmnist):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in small_fmnist.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    raw = bad / "train-labels-idx1-ubyte"
    raw.write_bytes(raw.read_bytes()[:-10])  # truncated labels file
    big = tmp_path / "big"  # 32x32 IDX images for a 28x28 model
    big.mkdir()
    for prefix in ("train", "t10k"):
        write_idx(big, prefix, np.zeros((4, 32, 32), np.uint8), np.zeros(4, np.uint8))
    subst = {"{tmp}": str(tmp_path), "{bad}": str(bad), "{big}": str(big)}
    argv = [subst.get(a, a) if a in subst else a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run(capsys, *argv, "--quiet") if argv[0] == "train" else run(capsys, *argv)
    assert code == 2
    assert err.startswith("vqvae: error: ") and err.count("\n") == 1 and message in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_resume_keeps_the_saved_budget_and_refuses_mixed_checkpoints(trained, tmp_path, capsys):
    from vqvae.train import resume_recipe

    assert resume_recipe(trained).train.steps == 12  # no flags: the saved budget, not the default recipe's
    assert resume_recipe(trained, ["train.steps=20"]).train.steps == 20
    plain = tmp_path / "plain"
    from vqvae.models import VQVAE

    VQVAE.from_pretrained(trained).save_pretrained(plain)  # weights only, no recipe
    code, _, err = run(capsys, "train", "--resume", plain, "--quiet")
    assert code == 2 and "cannot be resumed" in err
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in trained.iterdir():
        if f.is_file():
            (mixed / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((mixed / "config.json").read_text())
    cfg["step"] = 999  # as if the weights had been saved by a later step than the trainer state
    (mixed / "config.json").write_text(json.dumps(cfg))
    code, _, err = run(capsys, "train", "--resume", mixed, "--steps", 14, "--quiet")
    assert code == 2 and "torn checkpoint" in err and "no earlier complete checkpoint" in err  # manifest.json


def test_bad_counts_and_corrupt_codes_files(trained, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # argparse rejects it before anything runs
        run(capsys, "reconstruct", trained, "--n", 0, "--out", tmp_path / "g.png")
    assert exc.value.code == 2 and "must be >= 1" in capsys.readouterr().err
    bad = tmp_path / "codes.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    code, _, err = run(capsys, "decode", trained, bad, "--out", tmp_path / "d.png")
    assert code == 2 and err.startswith("vqvae: error: cannot read codes file") and "Traceback" not in err
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, test_indices=np.full((2, 7, 7), 40))  # the model has K=32
    code, _, err = run(capsys, "decode", trained, wrong, "--out", tmp_path / "d.png")
    assert code == 2 and "model has K=32" in err
    np.savez(wrong, test_indices=np.zeros((2, 4, 4), np.int16))  # the model's grid is 7x7
    code, _, err = run(capsys, "decode", trained, wrong, "--out", tmp_path / "d.png")
    assert code == 2 and "expected (N, 7, 7)" in err and not (tmp_path / "d.png").exists()


PRIOR_TINY = ["prior.channels=8", "prior.num_layers=3", "prior.head_channels=16", "train.batch_size=32",
              "train.log_every=2", "train.warmup_steps=2"]


@pytest.mark.slow
def test_train_prior_sample_and_resume(trained, tmp_path, capsys):
    out = tmp_path / "prior"
    code, text, err = run(capsys, "train-prior", trained, "--out", out, "--steps", 6, "--quiet", "--json",
                          *PRIOR_TINY)
    assert code == 0, err
    m = json.loads(text.splitlines()[0])
    assert m["num_images"] == 256 and m["uniform_bits_per_latent"] == 5.0  # K=32
    assert 0 < m["prior_nll_bits_per_latent"] < 6
    assert "elbo_bits_per_dim_learned_prior" not in m and "recon_loss=logistic" in m["note"]  # an MSE VQ-VAE
    assert (trained / "prior_codes.cache.npz").exists()  # the VQ-VAE's codes, cached for the next prior
    code, _, err = run(capsys, "train-prior", trained, "--out", trained, "--overwrite", "--quiet")
    assert code == 2 and "the VQ-VAE's own run directory" in err
    assert {"config.json", "model.safetensors", "samples.png", "eval.json", "metrics.csv"} <= {
        p.name for p in out.iterdir()}
    assert run(capsys, "train-prior", "--resume", out, "--steps", 8, "--quiet")[0] == 0
    assert json.loads((out / "eval.json").read_text())["step"] == 8

    npz = tmp_path / "s.npz"
    assert run(capsys, "sample", out, "--class", 3, "--n", 5, "--seed", 1, "--out", npz)[0] == 0
    with np.load(npz, allow_pickle=False) as f:
        assert f["images"].shape == (5, 28, 28) and f["images"].dtype == np.uint8
        assert f["labels"].tolist() == [3] * 5 and f["indices"].shape == (5, 7, 7)
        first = f["indices"].copy()
    again = tmp_path / "s2.npz"
    assert run(capsys, "sample", out, "--class", 3, "--n", 5, "--seed", 1, "--out", again)[0] == 0
    with np.load(again, allow_pickle=False) as f:
        assert np.array_equal(f["indices"], first)  # seeded
    png = tmp_path / "grid.png"
    assert run(capsys, "sample", out, "--per-class", 2, "--out", png)[0] == 0
    from PIL import Image

    with Image.open(png) as grid:  # 10 rows of 2, each row's class named in a margin on its left
        assert grid.size[1] == 10 * 30 + 2 and grid.size[0] > 2 * 30 + 2

    code, _, err = run(capsys, "sample", out, "--class", 10, "--out", tmp_path / "x.png")
    assert code == 2 and "is not a class of this prior" in err
    code, _, err = run(capsys, "sample", out, "--temperature", 0, "--out", tmp_path / "x.png")
    assert code == 2 and "--temperature must be > 0" in err
    code, _, err = run(capsys, "sample", out, "--out", png)
    assert code == 2 and "already exists" in err
    code, _, err = run(capsys, "sample", out, "--n", 4, "--out", tmp_path / "x.png")
    assert code == 2 and "--n goes with --class" in err
    code, _, err = run(capsys, "train-prior", "--resume", out, "--out", tmp_path / "elsewhere", "--quiet")
    assert code == 2 and "in its own directory" in err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "elsewhere").exists()

    # evaluate-prior: the same test NLL as at the end of training (same weights, same codes)
    code, text, err = run(capsys, "evaluate-prior", out, "--json")
    assert code == 0, err
    ev = json.loads(text)
    assert ev["prior_nll_bits_per_latent"] == pytest.approx(json.loads((out / "eval.json").read_text())
                                                            ["prior_nll_bits_per_latent"], rel=1e-6)


@pytest.mark.slow
def test_unconditional_prior(trained, tmp_path, capsys):
    out = tmp_path / "prior"
    assert run(capsys, "train-prior", trained, "--out", out, "--steps", 3, "--quiet",
               "prior.conditional=false", *PRIOR_TINY)[0] == 0
    assert json.loads((out / "config.json").read_text())["prior"]["num_classes"] == 0
    npz = tmp_path / "u.npz"
    assert run(capsys, "sample", out, "--n", 6, "--out", npz)[0] == 0
    with np.load(npz, allow_pickle=False) as f:
        assert f["images"].shape == (6, 28, 28) and f["labels"].tolist() == [-1] * 6
    code, _, err = run(capsys, "sample", out, "--class", 1, "--out", tmp_path / "x.png")
    assert code == 2 and "unconditional" in err
    code, _, err = run(capsys, "sample", out, "--per-class", 2, "--out", tmp_path / "x.png")
    assert code == 2 and "unconditional" in err
    code, text, err = run(capsys, "evaluate-prior", out, "--json")
    assert code == 0, err
    assert json.loads(text)["prior_nll_bits_per_latent"] > 0
    clf = tmp_path / "clf"
    assert run(capsys, "train-classifier", "--data", trained.parent.parent / "nothing", "--out", clf)[0] == 2


@pytest.mark.slow
def test_transformer_prior_with_guidance_and_sampling_controls(trained, tmp_path, capsys):
    out = tmp_path / "transformer"
    code, text, err = run(capsys, "train-prior", trained, "--out", out, "--steps", 4, "--quiet", "--json",
                          "prior.kind=transformer", "prior.channels=16", "prior.heads=2",
                          "prior.num_layers=2", "prior.class_dropout=0.2", "train.batch_size=32",
                          "train.warmup_steps=2")
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())["prior"]
    assert config["kind"] == "transformer" and config["grid_size"] == 7 and config["class_dropout"] == 0.2
    assert 0 < json.loads(text.splitlines()[0])["prior_nll_bits_per_latent"] < 6
    assert run(capsys, "train-prior", "--resume", out, "--steps", 6, "--quiet")[0] == 0
    assert json.loads((out / "eval.json").read_text())["step"] == 6
    npz = tmp_path / "g.npz"
    assert run(capsys, "sample", out, "--per-class", 2, "--guidance", 3, "--top-k", 8, "--top-p", 0.9,
               "--temperature", 0.8, "--out", npz)[0] == 0
    with np.load(npz, allow_pickle=False) as f:
        assert f["indices"].shape == (20, 7, 7)
        assert (float(f["guidance"]), int(f["top_k"]), float(f["top_p"]), float(f["temperature"])) == (
            3.0, 8, 0.9, 0.8)
    for flags, message in ((["--top-k", -1], "--top_k must be"), (["--top-p", 0], "--top-p must be in"),
                           (["--guidance", -2], "--guidance must be")):
        code, _, err = run(capsys, "sample", out, *flags, "--out", tmp_path / "x.png")
        assert code == 2 and message.replace("top_k", "top-k") in err, err
    code, _, err = run(capsys, "train-prior", trained, "--out", tmp_path / "t2", "--steps", 1, "--quiet",
                       "prior.kind=transformer", "prior.kernel_size=3")
    assert code == 2 and "prior.kernel_size must be 5 (unused) with prior.kind transformer" in err
    plain = tmp_path / "plain"
    assert run(capsys, "train-prior", trained, "--out", plain, "--steps", 2, "--quiet", *PRIOR_TINY,
               "prior.class_dropout=0")[0] == 0
    code, _, err = run(capsys, "sample", plain, "--guidance", 2, "--out", tmp_path / "x.png")
    assert code == 2 and "prior.class_dropout > 0" in err and not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_logistic_pipeline_classifier_and_score(small_fmnist, tmp_path, capsys):
    vq, prior, clf = tmp_path / "vq", tmp_path / "prior", tmp_path / "clf"
    assert run(capsys, "train", "--data", small_fmnist, "--out", vq, "--steps", 4, "--quiet", *TINY,
               "model.recon_loss=logistic")[0] == 0
    assert run(capsys, "train-prior", vq, "--out", prior, "--steps", 3, "--quiet", *PRIOR_TINY)[0] == 0
    code, text, err = run(capsys, "evaluate-prior", prior, "--json")
    assert code == 0, err
    m = json.loads(text)
    dims = 28 * 28
    # ELBO = decoder NLL + prior NLL; the uniform prior costs 7x7 latents * log2 32 bits per image
    assert m["elbo_bits_per_dim_uniform_prior"] == pytest.approx(
        m["decoder_nll_bits_per_dim"] + 49 * 5 / dims)
    assert m["elbo_bits_per_dim_learned_prior"] == pytest.approx(  # + the label: log2 10 bits per image
        m["decoder_nll_bits_per_dim"] + (m["prior_bits_per_image"] + np.log2(10)) / dims)
    assert m["label_bits_per_dim"] == pytest.approx(np.log2(10) / dims)
    assert m["prior_bits_per_image"] == pytest.approx(49 * m["prior_nll_bits_per_latent"])
    code, text, _ = run(capsys, "evaluate-prior", prior)
    assert code == 0 and "with the learned prior" in text

    code, text, err = run(capsys, "train-classifier", "--data", small_fmnist, "--out", clf, "--epochs", 2,
                          "--json")
    assert code == 0, err
    assert 0.1 < json.loads(text)["test_accuracy"] <= 1
    code, _, err = run(capsys, "train-classifier", "--data", small_fmnist, "--out", clf)
    assert code == 2 and "already exists" in err
    samples = tmp_path / "s.npz"
    assert run(capsys, "sample", prior, "--per-class", 3, "--out", samples)[0] == 0
    code, text, err = run(capsys, "score", samples, "--classifier", clf, "--json",
                          "--out", prior / "score.json")
    assert code == 0, err
    sc = json.loads(text)
    assert json.loads((prior / "score.json").read_text()) == sc  # kept beside the prior for its report
    assert {"samples", "real_test", "reconstructions"} <= set(sc)
    assert sc["samples"]["num_images"] == sc["reconstructions"]["num_images"] == 30
    assert sc["target_images"] == 256 - 30
    for row in ("samples", "real_test", "reconstructions"):
        assert 0 <= sc[row]["recognised"] <= 1 and sc[row]["frechet_distance"] >= 0
        assert 0 <= sc[row]["precision"] <= 1 and 0 <= sc[row]["recall"] <= 1
    assert len(sc["samples"]["recognised_per_class"]) == 10
    (prior / "score.json").write_text("mine")
    code, _, err = run(capsys, "score", samples, "--classifier", clf, "--out", prior / "score.json")
    assert code == 2 and "already exists" in err and (prior / "score.json").read_text() == "mine"
    (prior / "score.json").write_text(json.dumps(sc))
    code, _, err = run(capsys, "report", prior, clf, "--out", tmp_path / "r.html")
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "samples judged by a classifier" in page and "recognised per class" in page
    per_class = page.split("recognised per class")[1].split("</table>")[0]
    for name, rate in sc["samples"]["recognised_per_class"].items():  # a row per class: samples, real, recon
        assert re.search(rf"<tr><td>{re.escape(name)}</td><td>{rate:.1%}</td>"
                         r"<td>[0-9.]+%</td><td>[0-9.]+%</td>", per_class), name
    assert re.search(r"<th>budget</th><td>2 epochs</td>", page)  # the classifier's header

    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 32, 32), np.uint8))
    code, _, err = run(capsys, "score", bad, "--classifier", clf)
    assert code == 2 and "images must be uint8" in err
    np.savez(bad, images=np.zeros((4, 28, 28), np.uint8), labels=np.array([0, 1, 2, 10]))
    code, _, err = run(capsys, "score", bad, "--classifier", clf)
    assert code == 2 and "labels must lie in [0, 10)" in err
    code, _, err = run(capsys, "score", samples, "--classifier", vq)
    assert code == 2 and "expected a checkpoint of kind 'classifier'" in err
    np.savez(bad, images=np.zeros((4, 28, 28), np.uint8), labels=np.zeros(4, np.int64),
             classes=np.array([f"c{i}" for i in range(10)]))
    code, _, err = run(capsys, "score", bad, "--classifier", clf)
    assert code == 2 and "judge samples with a classifier of their own data" in err
    np.save(tmp_path / "bare.npy", np.zeros(3))
    (tmp_path / "bare.npy").rename(tmp_path / "bare.npz")
    code, _, err = run(capsys, "score", tmp_path / "bare.npz", "--classifier", clf)
    assert code == 2 and "one bare array" in err and "Traceback" not in err

    # unconditional samples: Fréchet distances, no recognition rate
    uncond = tmp_path / "uprior"
    assert run(capsys, "train-prior", vq, "--out", uncond, "--steps", 2, "--quiet", "prior.conditional=false",
               *PRIOR_TINY)[0] == 0
    assert run(capsys, "sample", uncond, "--n", 12, "--out", tmp_path / "u.npz")[0] == 0
    code, text, err = run(capsys, "score", tmp_path / "u.npz", "--classifier", clf, "--json")
    assert code == 0, err
    sc = json.loads(text)
    assert "recognised" not in sc["samples"] and sc["samples"]["num_images"] == 12
    ev = json.loads(run(capsys, "evaluate-prior", uncond, "--json")[1])
    assert ev["label_bits_per_dim"] == 0.0  # no label to pay for


@pytest.mark.slow
def test_a_corrupt_codes_cache_is_refused_in_one_line_and_encoded_again_with_overwrite(trained, tmp_path,
                                                                                     capsys):
    import zipfile

    from vqvae.codes import CACHE_NAME

    assert run(capsys, "train-prior", trained, "--out", tmp_path / "p1", "--steps", 1, "--quiet",
               *PRIOR_TINY)[0] == 0
    cache = trained / CACHE_NAME
    good = cache.read_bytes()
    with np.load(cache) as f:  # hand-edited: one code changed, the file otherwise valid
        arrays = {k: f[k] for k in f.files}
    arrays["train_indices"] = arrays["train_indices"].copy()
    arrays["train_indices"][0, 0, 0] = (arrays["train_indices"][0, 0, 0] + 1) % 32
    np.savez(cache, **arrays)
    edited = cache.read_bytes()
    for corrupt, reason in ((edited, "its codes do not match their checksum"), (good[: len(good) // 2],
                                                                               "unreadable")):
        cache.write_bytes(corrupt)
        code, _, err = run(capsys, "train-prior", trained, "--out", tmp_path / "p2", "--steps", 1, "--quiet",
                           *PRIOR_TINY)
        assert code == 2 and f"is corrupt ({reason}" in err and "--overwrite" in err, err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "p2").exists()
        assert cache.read_bytes() == corrupt  # nothing the user had is touched
    assert run(capsys, "train-prior", trained, "--out", tmp_path / "p2", "--steps", 1, "--quiet",
               "--overwrite", *PRIOR_TINY)[0] == 0
    assert cache.read_bytes() == good  # encoded again: the same codes
    assert zipfile.is_zipfile(cache)


@pytest.mark.slow
def test_codes_cache_follows_the_weights_and_the_data(small_fmnist, tmp_path):
    from vqvae.codes import cached_codes
    from vqvae.data import load_images
    from vqvae.models import VQVAE

    vq = tmp_path / "vq"
    assert main(["train", "--data", str(small_fmnist), "--out", str(vq), "--steps", "2", "--quiet",
                 *TINY]) == 0
    model = VQVAE.from_pretrained(vq)
    first = cached_codes(vq, model, {"train": {"data": str(small_fmnist)}})
    cache = vq / "prior_codes.cache.npz"
    stamp = cache.stat().st_mtime_ns
    again = cached_codes(vq, model, {"train": {"data": str(small_fmnist)}})
    assert cache.stat().st_mtime_ns == stamp and np.array_equal(again["test_indices"], first["test_indices"])
    # new weights
    assert main(["train", "--data", str(small_fmnist), "--out", str(vq), "--steps", "4", "--quiet",
                 "--overwrite", *TINY]) == 0
    model = VQVAE.from_pretrained(vq)
    cached_codes(vq, model, {"train": {"data": str(small_fmnist)}})
    with np.load(cache) as f:
        assert str(f["weights_sha256"]) == model.weights_sha256 != str(first["weights_sha256"])
    data = load_images(str(small_fmnist), "test")
    fp = data.fingerprint()
    data.images[0, 0, 0, 0] ^= 1  # one pixel changed
    assert data.fingerprint() != fp


@pytest.mark.slow
def test_a_prior_refuses_a_changed_vqvae(small_fmnist, tmp_path, capsys):
    vq = tmp_path / "vq"
    base = ["train", "--data", small_fmnist, "--quiet", *TINY]
    assert run(capsys, *base, "--out", vq, "--steps", 2)[0] == 0
    prior = tmp_path / "prior"
    assert run(capsys, "train-prior", vq, "--out", prior, "--steps", 2, "--quiet", *PRIOR_TINY)[0] == 0
    assert run(capsys, *base, "--out", vq, "--steps", 3, "--overwrite")[0] == 0  # the VQ-VAE is retrained
    code, _, err = run(capsys, "sample", prior, "--out", tmp_path / "x.png")
    assert code == 2 and "different weights" in err
    code, _, err = run(capsys, "train-prior", "--resume", prior, "--steps", 4, "--quiet")
    assert code == 2 and "different weights" in err
    code, _, err = run(capsys, "sample", vq, "--out", tmp_path / "y.png")  # a VQ-VAE is not a prior
    assert code == 2 and "expected a checkpoint of kind 'prior'" in err
