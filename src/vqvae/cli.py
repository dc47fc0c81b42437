"""``vqvae`` command line: a thin shell over importable functions.

    vqvae train [--config RECIPE] [--data D] [--out DIR] [--steps N] [--max-seconds S] [key=value ...]
    vqvae train --resume DIR [--steps N] [--max-seconds S]
    vqvae evaluate DIR [--data D] [--split test] [--json]
    vqvae reconstruct DIR --out grid.png
    vqvae encode DIR --out codes.npz
    vqvae decode DIR codes.npz --out grid.png
    vqvae train-prior VQVAE_DIR [--config RECIPE] [--out DIR] [--steps N] [--max-seconds S] [key=value ...]
    vqvae sample PRIOR_DIR [--per-class P | --class C --n N] [--temperature T] [--seed S] --out FILE.png|.npz
    vqvae evaluate-prior PRIOR_DIR [--split test] [--json]
    vqvae train-classifier [--data D] [--out DIR]
    vqvae score SAMPLES.npz --classifier DIR [--vqvae DIR] [--json]

Problems the user can fix print one line (``vqvae: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqvae.errors import VQVAEError


def _out_path(path: str, overwrite: bool, suffixes: tuple[str, ...]) -> Path:
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise VQVAEError(f"--out {p} must end in {' or '.join(suffixes)}")
    if p.exists() and not overwrite:
        raise VQVAEError(f"{p} already exists: pass --overwrite to replace it")
    if p.is_dir():
        raise VQVAEError(f"{p} is a directory")
    return p


def _load(run_dir: str):
    from vqvae.checkpoint import read_config
    from vqvae.model import VQVAE

    config = read_config(run_dir, kind="vqvae")
    return VQVAE.from_pretrained(run_dir).eval(), config


def _spec(config: dict[str, Any], data: str | None) -> str:
    """The data to use: ``--data``, else what the model was trained on."""
    return data or config.get("train", {}).get("data", "fashion-mnist")


def _data(model, config: dict[str, Any], data: str | None, split: str):
    from vqvae.evaluate import load_images_for

    return load_images_for(model.config, _spec(config, data), split)


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**63), got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _budget_overrides(a: argparse.Namespace) -> list[str]:
    """The recipe overrides of a training command, with --steps / --max-seconds as train.* overrides."""
    overrides = list(a.overrides)
    if a.steps is not None:
        overrides.append(f"train.steps={a.steps}")
    if a.max_seconds is not None:
        overrides.append(f"train.max_seconds={a.max_seconds}")
    return overrides


def _run_and_recipe(a: argparse.Namespace, kind: str, extra: list[str] = (), source: str | None = None):
    """(output directory, the run it builds on or None, recipe) of a training command: ``--resume DIR`` takes the
    recipe saved in DIR (only --steps/--max-seconds may change it), otherwise ``--config`` plus overrides."""
    from vqvae.config import load_recipe
    from vqvae.train import resume_recipe

    overrides = _budget_overrides(a)
    given = getattr(a, "vqvae_dir", None)
    if a.resume:
        if a.config or a.overrides or extra or given or a.out:
            raise VQVAEError("--resume continues a run in its own directory with its saved recipe: "
                             "only --steps/--max-seconds may change")
        return a.resume, None, resume_recipe(a.resume, overrides, kind=kind)
    if source and not given:
        raise VQVAEError(f"{a.command}{' ' + a.audio_command if getattr(a, 'audio_command', None) else ''} needs "
                         f"the {source} run directory (or --resume DIR)")
    return a.out or a.default_out, given, load_recipe(a.config, [*overrides, *extra], kind=kind)


# -- commands --------------------------------------------------------------------------------------
def cmd_train(a: argparse.Namespace) -> dict[str, Any]:
    from vqvae.train import train_and_evaluate

    out, _, recipe = _run_and_recipe(a, "vqvae", [f"train.data={a.data}"] if a.data else [])
    metrics = train_and_evaluate(recipe, out, resume=bool(a.resume), overwrite=a.overwrite, progress=not a.quiet)
    print(json.dumps(metrics) if a.json else _summary(metrics))
    print(f"run directory: {Path(out).resolve()} (config.json, model.safetensors, metrics.csv, eval.json, "
          f"reconstructions.png, tb/)")
    return metrics


def _summary(m: dict[str, Any]) -> str:
    return (f"{m['split']}: psnr {m['psnr']:.2f} dB, ssim {m['ssim']:.4f}, mse {m['mse']:.5f}, "
            f"codes used {m['codes_used']}/{m['num_embeddings']}, perplexity {m['perplexity']:.1f}")


def cmd_evaluate(a: argparse.Namespace) -> dict[str, Any]:
    from vqvae.evaluate import evaluate_model

    model, config = _load(a.run_dir)
    metrics = evaluate_model(model, _data(model, config, a.data, a.split), limit=a.limit)
    print(json.dumps(metrics) if a.json else _summary(metrics))
    return metrics


def cmd_reconstruct(a: argparse.Namespace) -> None:
    from vqvae.evaluate import write_reconstruction_grid

    out = _out_path(a.out, a.overwrite, (".png",))
    model, config = _load(a.run_dir)
    write_reconstruction_grid(model, _data(model, config, a.data, a.split), out, n=a.n)
    print(f"wrote {out} (top: originals, bottom: reconstructions)")


def cmd_encode(a: argparse.Namespace) -> None:
    from vqvae.evaluate import encode_splits, save_codes

    out = _out_path(a.out, a.overwrite, (".npz",))
    model, config = _load(a.run_dir)
    splits = encode_splits(model, _spec(config, a.data), a.splits.split(","))
    meta = {"num_embeddings": model.config.num_embeddings, "latent_size": model.config.latent_size}
    save_codes(out, splits, meta)
    shapes = ", ".join(f"{s}: {v[0].shape}" for s, v in splits.items())
    print(f"wrote {out} ({shapes})")


@torch.no_grad()
def cmd_decode(a: argparse.Namespace) -> None:
    from vqvae.data import save_image_grid
    from vqvae.evaluate import load_codes

    out = _out_path(a.out, a.overwrite, (".png",))
    model, _ = _load(a.run_dir)
    codes = load_codes(a.codes, model.config.num_embeddings, model.config.latent_size)
    key = f"{a.split}_indices"
    if key not in codes:
        have = sorted(k[: -len("_indices")] for k in codes if k.endswith("_indices"))
        raise VQVAEError(f"{a.codes} has no split {a.split!r} (it has: {', '.join(have)})")
    idx = torch.from_numpy(codes[key][: min(a.n, 1024)].astype(np.int64))  # a grid of at most 1024
    images = model.decode_indices(idx).clamp(0, 1)
    save_image_grid(images, out, nrow=int(np.ceil(np.sqrt(len(images)))) if len(images) else 1)
    print(f"wrote {out} ({len(images)} decoded images)")


def cmd_train_prior(a: argparse.Namespace) -> dict[str, Any]:
    from vqvae.train import train_prior_and_evaluate

    out, vqvae_dir, recipe = _run_and_recipe(a, "prior", source="VQ-VAE")
    metrics = train_prior_and_evaluate(recipe, vqvae_dir, out, resume=bool(a.resume), overwrite=a.overwrite,
                                       progress=not a.quiet)
    print(json.dumps(metrics) if a.json else _prior_summary(metrics))
    print(f"run directory: {Path(out).resolve()} (config.json, model.safetensors, metrics.csv, eval.json, "
          f"samples.png, tb/)")
    return metrics


def _prior_vqvae(prior_config: dict[str, Any], model_cls, kind: str):
    """(the VQ-VAE a prior was trained on, its config), refused when it is gone or its weights have changed."""
    from vqvae.checkpoint import read_config

    vq_dir = prior_config.get("vqvae_dir")
    if not isinstance(vq_dir, str) or not Path(vq_dir).is_dir():
        raise VQVAEError(f"the VQ-VAE this prior was trained on ({vq_dir}) is not there any more")
    vq_config = read_config(vq_dir, kind=kind)
    vq = model_cls.from_pretrained(vq_dir).eval()
    if vq.weights_sha256 != prior_config.get("vqvae_weights_sha256"):
        raise VQVAEError(f"{vq_dir} holds different weights from the VQ-VAE this prior was trained on")
    return vq, vq_config


def _load_prior(prior_dir: str):
    """(prior, its VQ-VAE, the prior's config, the VQ-VAE's config); refuses a VQ-VAE whose weights changed."""
    from vqvae.checkpoint import read_config
    from vqvae.model import VQVAE
    from vqvae.priors import GatedPixelCNN

    config = read_config(prior_dir, kind="prior")
    prior = GatedPixelCNN.from_pretrained(prior_dir)
    vq, vq_config = _prior_vqvae(config, VQVAE, "vqvae")
    if vq.config.num_embeddings != prior.config.num_embeddings:
        raise VQVAEError(f"{config['vqvae_dir']} has K={vq.config.num_embeddings} codes, the prior models "
                         f"{prior.config.num_embeddings}")
    return prior, vq, config, vq_config


def cmd_evaluate_prior(a: argparse.Namespace) -> dict[str, Any]:
    from vqvae.evaluate import evaluate_prior, load_images_for

    prior, vq, _, vq_config = _load_prior(a.prior_dir)
    metrics = evaluate_prior(prior, vq, load_images_for(vq.config, _spec(vq_config, None), a.split), limit=a.limit)
    print(json.dumps(metrics) if a.json else _prior_summary(metrics))
    return metrics


def _prior_summary(m: dict[str, Any]) -> str:
    line = (f"{m['split']}: prior NLL {m['prior_nll_bits_per_latent']:.3f} bits/latent "
            f"({m['bits_below_uniform']:.3f} below the uniform prior's {m['uniform_bits_per_latent']:g})")
    if "elbo_bits_per_dim_learned_prior" in m:
        line += (f"; image bits/dim: decoder {m['decoder_nll_bits_per_dim']:.3f}, ELBO with the uniform prior "
                 f"{m['elbo_bits_per_dim_uniform_prior']:.3f}, with the learned prior "
                 f"{m['elbo_bits_per_dim_learned_prior']:.3f}")
    return line


def _sample_labels(a: argparse.Namespace, classes: list[str], conditional: bool) -> tuple[torch.Tensor, int]:
    """The label of every sample requested on the command line (-1: unconditional) and the grid's row length."""
    if a.class_ is not None:
        if not conditional:
            raise VQVAEError("this prior is unconditional: it takes no --class (use --n)")
        if not 0 <= a.class_ < len(classes):
            raise VQVAEError(f"--class {a.class_} is not a class of this prior (0..{len(classes) - 1}: {', '.join(classes)})")
        n = a.n or 64
        return torch.full((n,), a.class_, dtype=torch.long), int(np.ceil(np.sqrt(n)))
    if conditional:
        if a.n is not None:
            raise VQVAEError("--n goes with --class C; for samples of every class use --per-class P")
        per_class = a.per_class or 8
        return torch.arange(len(classes)).repeat_interleave(per_class), per_class
    if a.per_class is not None:
        raise VQVAEError("this prior is unconditional: it has no classes for --per-class (use --n)")
    n = a.n or 64
    return torch.full((n,), -1, dtype=torch.long), int(np.ceil(np.sqrt(n)))


def cmd_sample(a: argparse.Namespace) -> None:
    from vqvae.data import save_image_grid, to_uint8
    from vqvae.evaluate import sample_images

    out = _out_path(a.out, a.overwrite, (".png", ".npz"))
    if not a.temperature > 0:
        raise VQVAEError(f"--temperature must be > 0, got {a.temperature}")
    prior, vq, config, _ = _load_prior(a.prior_dir)
    labels, nrow = _sample_labels(a, config.get("classes", []), prior.config.num_classes > 0)
    images, idx = sample_images(prior, vq, labels, temperature=a.temperature, seed=a.seed)
    if out.suffix.lower() == ".png":
        save_image_grid(images, out, nrow=nrow)
    else:
        from vqvae.fileio import atomic_write_npz

        u8 = to_uint8(images).numpy()
        atomic_write_npz(out, {
            "images": u8[:, 0] if u8.shape[1] == 1 else u8, "labels": labels.numpy(),
            "indices": idx.numpy().astype(np.int16 if prior.config.num_embeddings <= 32768 else np.int32),
            "prior_dir": str(Path(a.prior_dir).resolve()), "vqvae_dir": config["vqvae_dir"],
            "classes": np.asarray(config.get("classes", []), dtype=str)})
    print(f"wrote {out} ({len(labels)} samples)")


def cmd_train_classifier(a: argparse.Namespace) -> dict[str, Any]:
    import time

    from vqvae.classifier import accuracy, train_classifier
    from vqvae.data import load_images
    from vqvae.fileio import atomic_write_json

    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise VQVAEError(f"--out {out} is a file, not a directory")
    if out.exists() and any(out.iterdir()) and not a.overwrite:
        raise VQVAEError(f"{out} already exists and is not empty: pass --overwrite to replace it")
    train, test = load_images(a.data, "train"), load_images(a.data, "test")
    start = time.perf_counter()
    model = train_classifier(train, epochs=a.epochs, max_seconds=a.max_seconds, seed=a.seed)
    seconds = round(time.perf_counter() - start, 1)
    metrics = {"split": test.name, "test_accuracy": accuracy(model, test), "train_seconds": seconds,
               "epochs": a.epochs, "seed": a.seed}
    named = a.data in ("fashion-mnist", "mnist", "cifar10")  # a path is recorded absolute, for use from anywhere
    spec = a.data if named else str(Path(a.data).expanduser().resolve())
    model.save_pretrained(out, extra={"data": spec, "classes": train.classes, **metrics})
    atomic_write_json(out / "eval.json", metrics)
    print(json.dumps(metrics) if a.json else
          f"{test.name}: test accuracy {metrics['test_accuracy']:.4f} after {seconds:.0f} s; wrote {out}")
    return metrics


@torch.no_grad()
def cmd_score(a: argparse.Namespace) -> dict[str, Any]:
    from vqvae.checkpoint import read_config
    from vqvae.classifier import Classifier, judge
    from vqvae.data import load_images, to_float
    from vqvae.fileio import read_npz
    from vqvae.model import VQVAE

    clf_config = read_config(a.classifier, kind="classifier")
    clf = Classifier.from_pretrained(a.classifier)
    if not isinstance(clf_config.get("data"), str):
        raise VQVAEError(f"{a.classifier}/config.json records no data spec: retrain it with `vqvae train-classifier`")
    c, s, k = (clf.config[key] for key in ("in_channels", "image_size", "num_classes"))
    arrays = read_npz(a.samples, "samples file")
    if "images" not in arrays:
        raise VQVAEError(f"{a.samples} holds no 'images' array (written by `vqvae sample --out FILE.npz`?)")
    images = arrays["images"]
    if images.ndim == 3:
        images = images[:, None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (c, s, s) or len(images) < 2:
        raise VQVAEError(f"{a.samples}: images must be uint8 (N >= 2, {s}, {s})" + (f" or (N, {c}, {s}, {s})" if c > 1 else "")
                         + f" for this classifier, got {images.dtype} {arrays['images'].shape}")
    labels = None
    if "labels" in arrays:
        lab = arrays["labels"]
        if lab.shape != (len(images),) or not np.issubdtype(lab.dtype, np.integer):
            raise VQVAEError(f"{a.samples}: labels must be integers of shape ({len(images)},), got {lab.dtype} {lab.shape}")
        if (lab >= 0).any():  # -1 marks unconditional samples
            if lab.min() < 0 or lab.max() >= k:
                raise VQVAEError(f"{a.samples}: labels must lie in [0, {k}) (the classifier's classes), "
                                 f"got [{lab.min()}, {lab.max()}]")
            labels = torch.from_numpy(lab.astype(np.int64))
    classes = [str(x) for x in clf_config.get("classes", range(k))]
    if "classes" in arrays and arrays["classes"].size and [str(x) for x in arrays["classes"]] != classes:
        raise VQVAEError(f"{a.samples} was sampled with classes {', '.join(map(str, arrays['classes']))}, but the "
                         f"classifier knows {', '.join(classes)}: judge samples with a classifier of their own data")
    test = load_images(clf_config["data"], "test", image_size=s, channels=c)
    # every set has the same size n (the Fréchet distance of a finite sample is biased by n): samples are
    # subsampled if there are more than half the test split; the references are held-out test images, the
    # target the rest of the test split
    gen = torch.Generator().manual_seed(a.seed)
    n = min(len(images), len(test) // 2)
    keep = torch.randperm(len(images), generator=gen)[:n].sort().values
    perm = torch.randperm(len(test), generator=gen)
    ref, target = perm[:n], perm[n:]
    real = to_float(test.images[ref])
    samples = to_float(torch.from_numpy(images))[keep]
    sets = {"samples": (samples, None if labels is None else labels[keep]), "real_test": (real, test.labels[ref])}
    vq_dir = a.vqvae or (str(arrays["vqvae_dir"]) if "vqvae_dir" in arrays else None)
    if vq_dir:
        vq = VQVAE.from_pretrained(vq_dir).eval()
        if (vq.config.in_channels, vq.config.image_size) != (c, s):
            raise VQVAEError(f"{vq_dir} makes {vq.config.in_channels}x{vq.config.image_size}x{vq.config.image_size} "
                             f"images, the classifier takes {c}x{s}x{s}")
        recon = torch.cat([vq.decode_indices(vq.encode(x)).clamp(0, 1) for x in real.split(500)])
        sets["reconstructions"] = (recon, test.labels[ref])
    metrics = {"classifier_test_accuracy": clf_config.get("test_accuracy"), "target_images": len(target),
               **judge(clf, to_float(test.images[target]), sets, classes)}
    if a.json:
        print(json.dumps(metrics))
    else:
        for name, row in metrics.items():
            if isinstance(row, dict):
                rec = f", recognised {row['recognised']:.3f}" if "recognised" in row else ""
                print(f"{name} ({row['num_images']}): Fréchet distance {row['frechet_distance']:.3f}{rec}")
    return metrics


# -- the parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vqvae", description="VQ-VAE: train, evaluate, encode, decode.")
    sub = p.add_subparsers(dest="command", required=True)

    def training_cmd(name: str, fn, help: str, recipe: str, out: str, example: str,
                     source: str | None = None, parent=sub) -> argparse.ArgumentParser:
        s = parent.add_parser(name, help=help)
        if source:  # the run this one builds on, before the overrides so that it is not taken for one
            s.add_argument("vqvae_dir", nargs="?", help=source)
        s.add_argument("--config", help=f"recipe: a YAML file or a built-in name (default: {recipe})")
        s.add_argument("--out", help=f"run directory (default: {out})")
        s.add_argument("--steps", type=int, help="stop after this many optimisation steps (a total)")
        s.add_argument("--max-seconds", type=float, help="wall-clock budget for training, in seconds (a total)")
        s.add_argument("--resume", metavar="DIR", help="continue the run in DIR where it stopped")
        s.add_argument("--overwrite", action="store_true", help="replace an existing run directory's contents")
        s.add_argument("--quiet", action="store_true", help="no progress bar")
        s.add_argument("--json", action="store_true", help="print the final metrics as JSON")
        s.add_argument("overrides", nargs="*", metavar="key=value", help=f"recipe overrides, e.g. {example}")
        s.set_defaults(fn=fn, default_out=out)
        return s

    t = training_cmd("train", cmd_train, "train an image VQ-VAE", "fashion_mnist", "runs/vqvae",
                     "model.hidden=64")
    t.add_argument("--data", help="fashion-mnist, mnist, cifar10, or a path (IDX dir, CIFAR dir, image folder)")

    def run_cmd(name: str, fn, help: str) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help)
        s.add_argument("run_dir", help="a run directory written by `vqvae train`")
        s.add_argument("--data", help="data to use (default: the data the model was trained on)")
        s.set_defaults(fn=fn)
        return s

    e = run_cmd("evaluate", cmd_evaluate, "reconstruction quality and codebook usage over a whole split")
    e.add_argument("--split", default="test", choices=["train", "test"])
    e.add_argument("--limit", type=_positive, help="evaluate only the first N images")
    e.add_argument("--json", action="store_true", help="print one JSON object")

    r = run_cmd("reconstruct", cmd_reconstruct, "PNG grid: originals above reconstructions")
    r.add_argument("--split", default="test", choices=["train", "test"])
    r.add_argument("--n", type=_positive, default=16, help="number of images (default 16)")
    r.add_argument("--out", required=True, help="output .png")
    r.add_argument("--overwrite", action="store_true")

    c = run_cmd("encode", cmd_encode, "code indices + labels of whole splits, to .npz")
    c.add_argument("--splits", default="train,test", help="comma-separated splits (default train,test)")
    c.add_argument("--out", required=True, help="output .npz")
    c.add_argument("--overwrite", action="store_true")

    d = sub.add_parser("decode", help="decode indices from an .npz written by `vqvae encode` into a PNG grid")
    d.add_argument("run_dir")
    d.add_argument("codes", help=".npz written by `vqvae encode`")
    d.add_argument("--split", default="test")
    d.add_argument("--n", type=_positive, default=64, help="decode the first N entries (default 64)")
    d.add_argument("--out", required=True, help="output .png")
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(fn=cmd_decode)
    training_cmd("train-prior", cmd_train_prior, "train a class-conditional Gated PixelCNN on a VQ-VAE's codes",
                      "fashion_mnist_prior", "runs/prior", "prior.num_layers=8",
                      source="run directory of the VQ-VAE (written by `vqvae train`)")

    sp = sub.add_parser("sample", help="sample codes from a prior and decode them with its VQ-VAE")
    sp.add_argument("prior_dir", help="run directory written by `vqvae train-prior`")
    group = sp.add_mutually_exclusive_group()
    group.add_argument("--class", dest="class_", type=int, help="sample only this class (with --n)")
    group.add_argument("--per-class", type=_positive, help="samples of every class, one row each (default 8)")
    sp.add_argument("--n", type=_positive, help="number of samples with --class or from an unconditional prior "
                                                "(default 64)")
    sp.add_argument("--temperature", type=float, default=1.0, help="divides the logits (default 1)")
    sp.add_argument("--seed", type=_seed, default=0)
    sp.add_argument("--out", required=True, help=".png (a grid, one row per class) or .npz (images, labels, indices)")
    sp.add_argument("--overwrite", action="store_true")
    sp.set_defaults(fn=cmd_sample)

    ep = sub.add_parser("evaluate-prior", help="prior NLL (bits/latent) and image bits/dim of the ELBO over a split")
    ep.add_argument("prior_dir", help="run directory written by `vqvae train-prior`")
    ep.add_argument("--split", default="test", choices=["train", "test"])
    ep.add_argument("--limit", type=_positive, help="evaluate only the first N images")
    ep.add_argument("--json", action="store_true", help="print one JSON object")
    ep.set_defaults(fn=cmd_evaluate_prior)

    tc = sub.add_parser("train-classifier", help="train the CNN that judges samples (accuracy, Fréchet distance)")
    tc.add_argument("--data", default="fashion-mnist", help="fashion-mnist, mnist, cifar10 or a path")
    tc.add_argument("--out", default="runs/classifier", help="checkpoint directory (default runs/classifier)")
    tc.add_argument("--epochs", type=_positive, default=4, help="passes over the train split (default 4)")
    tc.add_argument("--max-seconds", type=float, default=600.0, help="stop earlier after this long (default 600)")
    tc.add_argument("--seed", type=_seed, default=0)
    tc.add_argument("--overwrite", action="store_true")
    tc.add_argument("--json", action="store_true")
    tc.set_defaults(fn=cmd_train_classifier)

    sc = sub.add_parser("score", help="judge samples with a classifier: recognition rate and Fréchet distances")
    sc.add_argument("samples", help=".npz written by `vqvae sample` (images, labels)")
    sc.add_argument("--classifier", required=True, help="directory written by `vqvae train-classifier`")
    sc.add_argument("--vqvae", help="VQ-VAE whose reconstructions are the reference (default: the samples' own)")
    sc.add_argument("--seed", type=_seed, default=0, help="which test images are the held-out references")
    sc.add_argument("--json", action="store_true")
    sc.set_defaults(fn=cmd_score)

    from vqvae.cli_audio import add_audio_commands

    add_audio_commands(sub, training_cmd)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may stand anywhere, also after options that follow a positional argument
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.fn(args)
    except VQVAEError as exc:
        print(f"vqvae: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unwritable output, full disk, ...: the system's own one-line reason
        print(f"vqvae: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vqvae: interrupted (checkpoints written so far are intact)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
