"""``vqvae`` command line: a thin shell over importable functions.

    vqvae train [--config RECIPE] [--data D] [--out DIR] [--steps N] [--max-seconds S] [key=value ...]
    vqvae train --resume DIR [--steps N] [--max-seconds S]
    vqvae evaluate DIR [--data D] [--split test] [--json]
    vqvae reconstruct DIR --out grid.png
    vqvae encode DIR --out codes.npz
    vqvae decode DIR codes.npz --out grid.png

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


# -- commands --------------------------------------------------------------------------------------
def cmd_train(a: argparse.Namespace) -> dict[str, Any]:
    from vqvae.config import load_recipe
    from vqvae.train import resume_recipe, train_and_evaluate

    overrides = _budget_overrides(a) + ([f"train.data={a.data}"] if a.data else [])
    if a.resume:
        if a.config or a.overrides or a.data:
            raise VQVAEError("--resume continues a run with its saved recipe: only --steps/--max-seconds may change")
        out = a.resume
        recipe = resume_recipe(out, overrides)  # --steps / --max-seconds: new totals for the whole run
    else:
        out = a.out
        recipe = load_recipe(a.config, overrides)
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
    from vqvae.config import load_recipe
    from vqvae.train import resume_recipe, train_prior_and_evaluate

    overrides = _budget_overrides(a)
    if a.resume:
        if a.config or a.overrides or a.vqvae_dir:
            raise VQVAEError("--resume continues a run with its saved recipe: only --steps/--max-seconds may change")
        out, vqvae_dir = a.resume, None
        recipe = resume_recipe(out, overrides, kind="prior")
    else:
        if not a.vqvae_dir:
            raise VQVAEError("train-prior needs the VQ-VAE run directory (or --resume DIR)")
        out, vqvae_dir = a.out, a.vqvae_dir
        recipe = load_recipe(a.config, overrides, kind="prior")
    metrics = train_prior_and_evaluate(recipe, vqvae_dir, out, resume=bool(a.resume), overwrite=a.overwrite,
                                       progress=not a.quiet)
    print(json.dumps(metrics) if a.json else
          f"test: prior NLL {metrics['nll_bits_per_latent']:.3f} bits/latent "
          f"({metrics['bits_below_uniform']:.3f} below the uniform prior's {metrics['uniform_bits_per_latent']:.0f})")
    print(f"run directory: {Path(out).resolve()} (config.json, model.safetensors, metrics.csv, eval.json, "
          f"samples.png, tb/)")
    return metrics


def _load_prior(prior_dir: str):
    from vqvae.checkpoint import read_config
    from vqvae.evaluate import weights_sha256
    from vqvae.model import VQVAE
    from vqvae.priors import GatedPixelCNN

    config = read_config(prior_dir, kind="prior")
    prior = GatedPixelCNN.from_pretrained(prior_dir)
    vq_dir = config.get("vqvae_dir")
    if not vq_dir or not Path(vq_dir).is_dir():
        raise VQVAEError(f"the VQ-VAE this prior was trained on ({vq_dir}) is not there any more")
    if weights_sha256(vq_dir) != config.get("vqvae_weights_sha256"):
        raise VQVAEError(f"{vq_dir} holds different weights from the VQ-VAE this prior was trained on")
    return prior, VQVAE.from_pretrained(vq_dir).eval(), config


@torch.no_grad()
def cmd_sample(a: argparse.Namespace) -> None:
    from vqvae.data import save_image_grid, to_uint8

    out = _out_path(a.out, a.overwrite, (".png", ".npz"))
    if not a.temperature > 0:
        raise VQVAEError(f"--temperature must be > 0, got {a.temperature}")
    prior, vq, config = _load_prior(a.prior_dir)
    classes = config.get("classes", [])
    if a.class_ is not None and not 0 <= a.class_ < len(classes):
        raise VQVAEError(f"--class {a.class_} is not a class of this prior (0..{len(classes) - 1}: {', '.join(classes)})")
    if a.class_ is not None:
        labels = torch.full((a.n,), a.class_, dtype=torch.long)
        nrow = int(np.ceil(np.sqrt(a.n)))
    else:
        labels = torch.arange(len(classes)).repeat_interleave(a.per_class)
        nrow = a.per_class
    h = vq.config.latent_size
    idx = prior.sample((h, h), labels, a.temperature, torch.Generator().manual_seed(a.seed))
    images = vq.decode_indices(idx).clamp(0, 1)
    if out.suffix.lower() == ".png":
        save_image_grid(images, out, nrow=nrow)
    else:
        import io

        from vqvae.fileio import atomic_write_bytes

        u8 = to_uint8(images).numpy()
        buf = io.BytesIO()
        np.savez_compressed(buf, images=u8[:, 0] if u8.shape[1] == 1 else u8, labels=labels.numpy(),
                            indices=idx.numpy().astype(np.int16))
        atomic_write_bytes(out, buf.getvalue())
    print(f"wrote {out} ({len(labels)} samples)")


# -- the parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vqvae", description="VQ-VAE: train, evaluate, encode, decode.")
    sub = p.add_subparsers(dest="command", required=True)

    def training_cmd(name: str, fn, help: str, recipe: str, out: str, example: str,
                     source: str | None = None) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help)
        if source:  # the run this one builds on, before the overrides so that it is not taken for one
            s.add_argument("vqvae_dir", nargs="?", help=source)
        s.add_argument("--config", help=f"recipe: a YAML file or a built-in name (default: {recipe})")
        s.add_argument("--out", default=out, help=f"run directory (default: {out})")
        s.add_argument("--steps", type=int, help="stop after this many optimisation steps (a total)")
        s.add_argument("--max-seconds", type=float, help="wall-clock budget for training, in seconds (a total)")
        s.add_argument("--resume", metavar="DIR", help="continue the run in DIR where it stopped")
        s.add_argument("--overwrite", action="store_true", help="replace an existing run directory's contents")
        s.add_argument("--quiet", action="store_true", help="no progress bar")
        s.add_argument("--json", action="store_true", help="print the final metrics as JSON")
        s.add_argument("overrides", nargs="*", metavar="key=value", help=f"recipe overrides, e.g. {example}")
        s.set_defaults(fn=fn)
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
    group.add_argument("--per-class", type=_positive, default=8, help="samples per class, one row each (default 8)")
    sp.add_argument("--n", type=_positive, default=64, help="number of samples with --class (default 64)")
    sp.add_argument("--temperature", type=float, default=1.0, help="divides the logits (default 1)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", required=True, help=".png (a grid, one row per class) or .npz (images, labels, indices)")
    sp.add_argument("--overwrite", action="store_true")
    sp.set_defaults(fn=cmd_sample)
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
