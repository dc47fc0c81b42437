"""The image commands: each parses its arguments, calls one importable function and prints the result.

    vqvae train [--config RECIPE] [--data D] [--out DIR] [--steps N] [--max-seconds S] [key=value ...]
    vqvae train --resume DIR [--steps N] [--max-seconds S]
    vqvae evaluate DIR [--data D] [--split test] [--json]
    vqvae reconstruct DIR --out grid.png
    vqvae encode DIR --out codes.npz
    vqvae decode DIR codes.npz --out grid.png
    vqvae train-prior VQVAE_DIR [--config RECIPE] [--out DIR] [--steps N] [--max-seconds S] [key=value ...]
    vqvae sample PRIOR_DIR [--per-class P | --class C --n N] [--temperature T] [--top-k K] [--top-p P]
        [--guidance S] [--seed S] --out FILE.png|.npz
    vqvae evaluate-prior PRIOR_DIR [--split test] [--json]
    vqvae train-classifier [--data D] [--out DIR]
    vqvae score SAMPLES.npz --classifier DIR [--vqvae DIR] [--seed S] [--out score.json [--overwrite]]
        [--json]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vqvae.cli.common import (
    add_device,
    add_sampling_controls,
    add_training_command,
    controls_from_args,
    positive,
    print_result,
    run_training,
    seed,
)
from vqvae.codes import decode_run, encode_run
from vqvae.evaluate import evaluate_image_prior_run, evaluate_run
from vqvae.fileio import atomic_write_json, check_out_file
from vqvae.judges.image import train_classifier_run
from vqvae.judges.samples import score_image_samples
from vqvae.priors.sampling import sample_image_file
from vqvae.reconstruct import write_reconstructions
from vqvae.train import train_image_and_evaluate, train_image_prior_and_evaluate

__all__ = ["add_image_commands"]


def _summary(m: dict[str, Any]) -> str:
    return (f"{m['split']}: psnr {m['psnr']:.2f} dB, ssim {m['ssim']:.4f}, mse {m['mse']:.5f}, "
            f"codes used {m['codes_used']}/{m['num_embeddings']}, perplexity {m['perplexity']:.1f}")


def _prior_summary(m: dict[str, Any]) -> str:
    line = (f"{m['split']}: prior NLL {m['prior_nll_bits_per_latent']:.3f} bits/latent "
            f"({m['bits_below_uniform']:.3f} below the uniform prior's {m['uniform_bits_per_latent']:g})")
    if "elbo_bits_per_dim_learned_prior" in m:
        line += (f"; image bits/dim: decoder {m['decoder_nll_bits_per_dim']:.3f}, "
                 f"ELBO with the uniform prior {m['elbo_bits_per_dim_uniform_prior']:.3f}, "
                 f"with the learned prior {m['elbo_bits_per_dim_learned_prior']:.3f}")
    return line


def _score_summary(metrics: dict[str, Any]) -> str:
    lines = []
    for name, row in metrics.items():
        if isinstance(row, dict):
            rec = f", recognised {row['recognised']:.3f}" if "recognised" in row else ""
            pr = (f", precision {row['precision']:.3f}, recall {row['recall']:.3f}"
                  if row.get("precision") is not None else "")
            fd = row["frechet_distance"]
            lines.append(f"{name} ({row['num_images']}): Fréchet distance {fd:.3f}{pr}{rec}")
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    return run_training(args, "vqvae", train_image_and_evaluate, _summary, "reconstructions.png, tb/")


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    m = evaluate_run(args.run_dir, kind="vqvae", data=args.data, split=args.split, limit=args.limit,
                     device=args.device)
    return print_result(m, args.json, _summary)


def cmd_reconstruct(args: argparse.Namespace) -> None:
    out = write_reconstructions(args.run_dir, args.out, data=args.data, split=args.split, n=args.n,
                                overwrite=args.overwrite, device=args.device)
    print(f"wrote {out} (top: originals, bottom: reconstructions)")


def cmd_encode(args: argparse.Namespace) -> None:
    shapes = encode_run(args.run_dir, args.out, data=args.data, splits=tuple(args.splits.split(",")),
                        overwrite=args.overwrite, device=args.device)
    print(f"wrote {Path(args.out)} ({', '.join(f'{s}: {shape}' for s, shape in shapes.items())})")


def cmd_decode(args: argparse.Namespace) -> None:
    n = decode_run(args.run_dir, args.codes, args.out, split=args.split, n=args.n, overwrite=args.overwrite,
                   device=args.device)
    print(f"wrote {Path(args.out)} ({n} decoded images)")


def cmd_train_prior(args: argparse.Namespace) -> dict[str, Any]:
    return run_training(args, "prior", train_image_prior_and_evaluate, _prior_summary, "samples.png, tb/",
                        source="VQ-VAE")


def cmd_evaluate_prior(args: argparse.Namespace) -> dict[str, Any]:
    m = evaluate_image_prior_run(args.prior_dir, split=args.split, limit=args.limit, device=args.device)
    return print_result(m, args.json, _prior_summary)


def cmd_sample(args: argparse.Namespace) -> None:
    n = sample_image_file(args.prior_dir, args.out, class_=args.class_, per_class=args.per_class, n=args.n,
                          controls=controls_from_args(args), seed=args.seed, overwrite=args.overwrite,
                          device=args.device)
    print(f"wrote {Path(args.out)} ({n} samples)")


def cmd_train_classifier(args: argparse.Namespace) -> dict[str, Any]:
    m = train_classifier_run(args.out, data=args.data, epochs=args.epochs, max_seconds=args.max_seconds,
                             seed=args.seed, overwrite=args.overwrite, device=args.device)
    return print_result(m, args.json, lambda m: f"{m['split']}: test accuracy {m['test_accuracy']:.4f} after "
                                             f"{m['train_seconds']:.0f} s; wrote {args.out}")


def cmd_score(args: argparse.Namespace) -> dict[str, Any]:
    # refused before the work, not after
    out = check_out_file(args.out, args.overwrite, (".json",)) if args.out else None
    m = score_image_samples(args.samples, args.classifier, vqvae=args.vqvae, seed=args.seed,
                            device=args.device)
    if out is not None:
        atomic_write_json(out, m)
    return print_result(m, args.json, _score_summary)


def _run_command(sub, name: str, fn, help: str) -> argparse.ArgumentParser:
    s = sub.add_parser(name, help=help)
    s.add_argument("run_dir", help="a run directory written by `vqvae train`")
    s.add_argument("--data", help="data to use (default: the data the model was trained on)")
    add_device(s)
    s.set_defaults(fn=fn)
    return s


def _output(s: argparse.ArgumentParser, what: str) -> None:
    s.add_argument("--out", required=True, help=f"output {what}")
    s.add_argument("--overwrite", action="store_true")


def add_image_commands(sub) -> None:
    """Register the image commands on the top-level subparsers.

    Args:
        sub: the top-level subparsers.
    """
    train = add_training_command(sub, "train", cmd_train, "train an image VQ-VAE", "fashion_mnist",
                                 "runs/vqvae", "model.hidden=64")
    train.add_argument("--data", help="fashion-mnist, mnist, cifar10, or a path (IDX dir, CIFAR dir, "
                                      "image folder)")
    e = _run_command(sub, "evaluate", cmd_evaluate,
                     "reconstruction quality and codebook usage over a whole split")
    e.add_argument("--split", default="test", choices=["train", "test"])
    e.add_argument("--limit", type=positive, help="evaluate only the first N images")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    r = _run_command(sub, "reconstruct", cmd_reconstruct, "PNG grid: originals above reconstructions")
    r.add_argument("--split", default="test", choices=["train", "test"])
    r.add_argument("--n", type=positive, default=16, help="number of images (default 16)")
    _output(r, ".png")
    c = _run_command(sub, "encode", cmd_encode, "code indices + labels of whole splits, to .npz")
    c.add_argument("--splits", default="train,test", help="comma-separated splits (default train,test)")
    _output(c, ".npz")
    d = sub.add_parser("decode", help="decode indices from an .npz written by `vqvae encode` into a PNG grid")
    d.add_argument("run_dir")
    d.add_argument("codes", help=".npz written by `vqvae encode`")
    d.add_argument("--split", default="test")
    d.add_argument("--n", type=positive, default=64, help="decode the first N entries (default 64)")
    _output(d, ".png")
    add_device(d)
    d.set_defaults(fn=cmd_decode)
    add_training_command(sub, "train-prior", cmd_train_prior, "train a class-conditional Gated PixelCNN on a "
                         "VQ-VAE's codes", "fashion_mnist_prior", "runs/prior", "prior.num_layers=8",
                         source="run directory of the VQ-VAE (written by `vqvae train`)")
    _add_prior_commands(sub)
    _add_judge_commands(sub)


def _add_prior_commands(sub) -> None:
    sp = sub.add_parser("sample", help="sample codes from a prior and decode them with its VQ-VAE")
    sp.add_argument("prior_dir", help="run directory written by `vqvae train-prior`")
    group = sp.add_mutually_exclusive_group()
    group.add_argument("--class", dest="class_", type=int, help="sample only this class (with --n)")
    group.add_argument("--per-class", type=positive, help="samples of every class, one row each (default 8)")
    sp.add_argument("--n", type=positive, help="number of samples with --class or from an unconditional "
                                               "prior (default 64)")
    add_sampling_controls(sp)
    sp.add_argument("--seed", type=seed, default=0)
    _output(sp, ".png (a grid, one row per class) or .npz (images, labels, indices)")
    add_device(sp)
    sp.set_defaults(fn=cmd_sample)
    ep = sub.add_parser("evaluate-prior",
                        help="prior NLL (bits/latent) and image bits/dim of the ELBO over a split")
    ep.add_argument("prior_dir", help="run directory written by `vqvae train-prior`")
    ep.add_argument("--split", default="test", choices=["train", "test"])
    ep.add_argument("--limit", type=positive, help="evaluate only the first N images")
    ep.add_argument("--json", action="store_true", help="print one JSON object")
    add_device(ep)
    ep.set_defaults(fn=cmd_evaluate_prior)


def _add_judge_commands(sub) -> None:
    tc = sub.add_parser("train-classifier",
                        help="train the CNN that judges samples (accuracy, Fréchet distance)")
    tc.add_argument("--data", default="fashion-mnist", help="fashion-mnist, mnist, cifar10 or a path")
    tc.add_argument("--out", default="runs/classifier", help="checkpoint directory (default runs/classifier)")
    tc.add_argument("--epochs", type=positive, default=4, help="passes over the train split (default 4)")
    tc.add_argument("--max-seconds", type=float, default=600.0,
                    help="stop earlier after this long (default 600)")
    tc.add_argument("--seed", type=seed, default=0)
    tc.add_argument("--overwrite", action="store_true")
    tc.add_argument("--json", action="store_true")
    add_device(tc)
    tc.set_defaults(fn=cmd_train_classifier)
    sc = sub.add_parser("score",
                        help="judge samples with a classifier: recognition rate and Fréchet distances")
    sc.add_argument("samples", help=".npz written by `vqvae sample` (images, labels)")
    sc.add_argument("--classifier", required=True, help="directory written by `vqvae train-classifier`")
    sc.add_argument("--vqvae",
                    help="VQ-VAE whose reconstructions are the reference (default: the samples' own)")
    sc.add_argument("--seed", type=seed, default=0, help="which test images are the held-out references")
    sc.add_argument("--out", help="also write the scores to this .json (as score.json in the prior's run "
                                  "directory, `vqvae report` shows them with the prior)")
    sc.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    sc.add_argument("--json", action="store_true")
    add_device(sc)
    sc.set_defaults(fn=cmd_score)
