"""``vqvae audio ...`` and ``vqvae data speech``: each command parses its arguments, calls one importable
function and prints the result.

    vqvae data speech --out DIR                     # the espeak-ng multi-speaker corpus
    vqvae data fsdd --out DIR [--from RECORDINGS]   # the Free Spoken Digit Dataset as a speaker-folder corpus
    vqvae audio train [--config speech] [--data DIR] [--out DIR] [--steps N] [--max-seconds S] [key=value ...]
    vqvae audio evaluate DIR [--split test] [--json]
    vqvae audio reconstruct DIR input.wav [--speaker NAME] --out out.wav
    vqvae audio convert DIR input.wav --speaker NAME --out out.wav
    vqvae audio train-prior VQVAE_DIR [--config speech_prior] [--out DIR] [--steps N] [--max-seconds S]
    vqvae audio sample PRIOR_DIR --speaker NAME [--class NAME] [--seconds 2] --out out.wav
    vqvae audio conversion DIR [--pairs 16] [--wav-dir DIR] [--json]
    vqvae audio score PRIOR_DIR [--per 5] [--wav-dir DIR] [--json]
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
from vqvae.data.audio.fsdd import arrange_fsdd
from vqvae.data.audio.synthesis import synthesize_corpus
from vqvae.errors import VQVAEError
from vqvae.evaluate import evaluate_conversion_run, evaluate_run
from vqvae.judges.samples import score_audio_prior
from vqvae.priors.sampling import sample_audio_file
from vqvae.reconstruct import resynthesize_file
from vqvae.train import train_audio_and_evaluate, train_audio_prior_and_evaluate

__all__ = ["add_audio_commands"]


def _summary(m: dict[str, Any]) -> str:
    given = " and ".join(m["conditioned_on"]) or "nothing"
    if "spectral_l1" in m:
        line = (f"{m['split']}: spectral decoder L1 {m['spectral_l1']:.3f} nats per bin of log-magnitude, "
                f"mel loss {m['mel_loss']:.3f}, given {given}")
    else:
        line = f"{m['split']}: {m['bits_per_sample']:.3f} bits per sample given {given}"
    if "codes_used" in m:
        line += (f"; codes used {m['codes_used']}/{m['num_embeddings']}, perplexity {m['perplexity']:.1f}, "
                 f"bit rate {m['bit_rate']:.0f} bits/s ({m['entropy_bit_rate']:.0f} at the code entropy)")
    for name in ("speaker", "content"):
        if f"{name}_probe_accuracy" in m:
            line += (f"; {name} probe on the codes {100 * m[f'{name}_probe_accuracy']:.1f}% "
                     f"(chance {100 * m[f'{name}_probe_chance']:.1f}%)")
    return line


def _prior_summary(m: dict[str, Any]) -> str:
    return (f"test: prior NLL {m['prior_bits_per_code']:.3f} bits per code "
            f"({m['bits_below_uniform']:.3f} below the uniform prior's {m['uniform_bits_per_code']:g}): "
            f"{m['bit_rate_with_prior']:.0f} bits/s for the codes")


def _pct(m: dict[str, Any], key: str) -> str:
    return "n/a" if m.get(key) is None else f"{100 * m[key]:.1f}%"


def _num(m: dict[str, Any], key: str, digits: int) -> str:
    return "n/a" if m.get(key) is None else f"{m[key]:.{digits}f}"


def _judges_summary(m: dict[str, Any]) -> str:
    line = f"judges on real test utterances: speaker {_pct(m, 'speaker_classifier_test_accuracy')}"
    if "content_classifier_test_accuracy" in m:
        line += f", content {_pct(m, 'content_classifier_test_accuracy')}"
    return line


def _conversion_summary(m: dict[str, Any]) -> str:
    said = "converted_recognised_as_class" in m
    lines = [_judges_summary(m),
             f"{m['pairs']} reconstructions: own speaker {_pct(m, 'reconstructions_recognised_as_source')}"
             + (f", words kept {_pct(m, 'reconstructions_recognised_as_class')}" if said else "")
             + f", voiced {_pct(m, 'reconstructions_voiced')}, pitch within 10% of the input's "
               f"{_pct(m, 'reconstructions_pitch_within_10pct')}, "
               f"STOI {_num(m, 'reconstructions_stoi', 3)}, PESQ-NB {_num(m, 'reconstructions_pesq_nb', 2)}",
             f"{m['pairs']} conversions: target speaker {_pct(m, 'converted_recognised_as_target')}, source "
             f"{_pct(m, 'converted_recognised_as_source')}"
             + (f", words kept {_pct(m, 'converted_recognised_as_class')}" if said else "")
             + f", voiced {_pct(m, 'converted_voiced')}; over the {m['pitch_pairs']} pairs of distinct "
               f"pitch, nearer the target's {_pct(m, 'converted_pitch_nearer_target')}, the source's "
               f"{_pct(m, 'converted_pitch_nearer_source')}",
             f"decoder: {m['decoder_real_time_factor']:.3f} s of audio per second "
             f"(batches of {m['decode_batch_size']}), "
             f"{m['decoder_real_time_factor_one_stream']:.3f} one utterance at a time"]
    return "\n".join(lines)


def _score_summary(m: dict[str, Any]) -> str:
    line = (f"{m['samples']} prior samples: recognised as the speaker asked for "
            f"{_pct(m, 'samples_recognised_as_speaker')}")
    if "samples_recognised_as_class" in m:
        line += f", as the class asked for {_pct(m, 'samples_recognised_as_class')}"
    return (f"{_judges_summary(m)}\n{line}, voiced {_pct(m, 'samples_voiced')}\nprior + decoder: "
            f"{m['prior_and_decoder_real_time_factor']:.3f} s of audio per second in batches, "
            f"{m['prior_and_decoder_real_time_factor_one_stream']:.3f} one utterance at a time")


def cmd_data_speech(args: argparse.Namespace) -> dict[str, Any]:
    summary = synthesize_corpus(args.out, num_sentences=args.sentences, per_speaker=args.per_speaker,
                                num_speakers=args.speakers, sample_rate=args.sample_rate, seed=args.seed,
                                overwrite=args.overwrite, progress=not args.quiet)
    return print_result(summary, args.json,
                        lambda s: f"wrote {s['utterances']} utterances ({s['hours'] * 60:.1f} minutes) "
                                  f"by {len(s['speakers'])} speakers to {args.out}")


def cmd_data_fsdd(args: argparse.Namespace) -> dict[str, Any]:
    summary = arrange_fsdd(args.out, args.source, overwrite=args.overwrite)
    return print_result(summary, args.json,
                        lambda s: f"wrote {s['utterances']} recordings by {len(s['speakers'])} speakers "
                                  f"of the digits {', '.join(s['digits'])} to {args.out} "
                                  f"({s['train']} train, {s['test']} test: FSDD's own split)")


def cmd_audio_train(args: argparse.Namespace) -> dict[str, Any]:
    return run_training(args, "audio", train_audio_and_evaluate, _summary, "tb/")


def cmd_audio_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    m = evaluate_run(args.run_dir, kind="audio", data=args.data, split=args.split, limit=args.limit,
                     device=args.device)
    return print_result(m, args.json, _summary)


def cmd_audio_resynthesize(args: argparse.Namespace) -> None:
    """``reconstruct`` (as the input's own speaker) and ``convert`` (as ``--speaker``)."""
    if args.audio_command == "convert" and not args.speaker:
        raise VQVAEError("convert needs --speaker NAME: the voice to convert to")
    r = resynthesize_file(args.run_dir, args.input, args.out, speaker=args.speaker, seconds=args.seconds,
                          temperature=args.temperature, seed=args.seed, overwrite=args.overwrite,
                          device=args.device)
    who = f" as {r['speaker']}" if r["speaker"] is not None else ""
    print(f"wrote {Path(args.out)} ({r['seconds']:.2f} s from {r['codes']} codes{who})")


def cmd_audio_train_prior(args: argparse.Namespace) -> dict[str, Any]:
    return run_training(args, "audio_prior", train_audio_prior_and_evaluate, _prior_summary, "tb/",
                        source="audio VQ-VAE")


def cmd_audio_sample(args: argparse.Namespace) -> None:
    r = sample_audio_file(args.prior_dir, args.out, speaker=args.speaker, seconds=args.seconds,
                          controls=controls_from_args(args), seed=args.seed, overwrite=args.overwrite,
                          device=args.device, class_=args.class_)
    said = f" saying {args.class_}" if args.class_ is not None else ""
    print(f"wrote {Path(args.out)} ({r['seconds']:.2f} s, {r['codes']} codes from the prior, "
          f"as {args.speaker}{said})")


def cmd_audio_score(args: argparse.Namespace) -> dict[str, Any]:
    m = score_audio_prior(args.prior_dir, per=args.per, controls=controls_from_args(args), seed=args.seed,
                          wav_dir=args.wav_dir, overwrite=args.overwrite, device=args.device)
    return print_result(m, args.json, _score_summary)


def cmd_audio_conversion(args: argparse.Namespace) -> dict[str, Any]:
    m = evaluate_conversion_run(args.run_dir, data=args.data, pairs=args.pairs, seconds=args.seconds,
                                seed=args.seed, temperature=args.temperature, wav_dir=args.wav_dir,
                                overwrite=args.overwrite, device=args.device)
    return print_result(m, args.json, _conversion_summary)


def _generation_options(p: argparse.ArgumentParser, seconds: float, help: str, prior: bool = False) -> None:
    add_device(p)
    p.add_argument("--seconds", type=float, default=seconds, help=help)
    if prior:  # the prior's draws take every control, the decoder's the temperature
        add_sampling_controls(p)
    else:
        p.add_argument("--temperature", type=float, default=1.0, help="divides the logits (default 1)")
    p.add_argument("--seed", type=seed, default=0)


def _data_commands(sub) -> None:
    data = sub.add_parser("data", help="make datasets").add_subparsers(dest="data_command", required=True)
    sp = data.add_parser("speech", help="synthesise the multi-speaker speech corpus with espeak-ng")
    sp.add_argument("--out", required=True, help="corpus directory (one sub-folder per speaker)")
    sp.add_argument("--sentences", type=positive, default=300, help="distinct sentences (default 300)")
    sp.add_argument("--per-speaker", type=positive, default=100, help="utterances per speaker (default 100)")
    sp.add_argument("--speakers", type=positive, default=8, help="number of voices, 1..8 (default 8)")
    sp.add_argument("--sample-rate", type=positive, default=16000)
    sp.add_argument("--seed", type=seed, default=0)
    for flag in ("--overwrite", "--quiet", "--json"):
        sp.add_argument(flag, action="store_true")
    sp.set_defaults(fn=cmd_data_speech)
    fs = data.add_parser("fsdd",
                         help="arrange the Free Spoken Digit Dataset (real speech, 8 kHz) as a corpus")
    fs.add_argument("--out", required=True,
                    help="corpus directory (one sub-folder per speaker, utterances.tsv)")
    fs.add_argument("--from", dest="source",
                    help="the dataset's recordings/ folder (default: download release v1.0.9 and check its "
                         "SHA-256)")
    for flag in ("--overwrite", "--json"):
        fs.add_argument(flag, action="store_true")
    fs.set_defaults(fn=cmd_data_fsdd)


def _prior_commands(sub) -> None:
    """``vqvae audio sample`` and ``vqvae audio score``, on the ``vqvae audio`` subparsers ``sub``."""
    sa = sub.add_parser("sample", help="codes from the prior, decoded for a speaker, to a WAV file")
    sa.add_argument("prior_dir", help="run directory written by `vqvae audio train-prior`")
    sa.add_argument("--speaker", required=True,
                    help="the voice to decode with (and to condition the prior on)")
    sa.add_argument("--class", dest="class_",
                    help="what to say, for a prior conditioned on classes (e.g. a digit)")
    _generation_options(sa, 2.0, "length (default 2 s)", prior=True)
    sa.add_argument("--out", required=True, help="output .wav")
    sa.add_argument("--overwrite", action="store_true")
    sa.set_defaults(fn=cmd_audio_sample)
    sc = sub.add_parser("score",
                        help="judge samples of the prior: speaker, class (what is said) and voicing")
    sc.add_argument("prior_dir", help="run directory written by `vqvae audio train-prior`")
    sc.add_argument("--per", type=positive, default=5, help="samples per speaker (and class) (default 5)")
    add_sampling_controls(sc)
    sc.add_argument("--seed", type=seed, default=0)
    sc.add_argument("--wav-dir", help="write every sample here")
    for flag in ("--overwrite", "--json"):
        sc.add_argument(flag, action="store_true")
    add_device(sc)
    sc.set_defaults(fn=cmd_audio_score)


def add_audio_commands(sub) -> None:
    """Register ``vqvae data speech`` and ``vqvae audio ...`` on the top-level subparsers.

    Args:
        sub: the top-level subparsers.
    """
    _data_commands(sub)
    audio = sub.add_parser("audio", help="the audio VQ-VAE and its prior: train, evaluate, reconstruct, "
                                         "convert, train-prior, sample")
    asub = audio.add_subparsers(dest="audio_command", required=True)
    train = add_training_command(asub, "train", cmd_audio_train, "train the audio VQ-VAE (WaveNet decoder)",
                                 "speech", "runs/audio", "audio.channels=64")
    train.add_argument("--data", help="a corpus directory: one sub-folder of .wav files per speaker")
    e = asub.add_parser("evaluate", help="bits per sample, code usage, bit rate over the test utterances")
    e.add_argument("run_dir")
    e.add_argument("--data", help="corpus (default: the one the model was trained on)")
    e.add_argument("--split", default="test", choices=["train", "test"])
    e.add_argument("--limit", type=positive, help="only the first N utterances")
    e.add_argument("--json", action="store_true")
    add_device(e)
    e.set_defaults(fn=cmd_audio_evaluate)
    cv = asub.add_parser("conversion",
                         help="judge reconstructions and speaker conversions (speaker, words, pitch)")
    cv.add_argument("run_dir")
    cv.add_argument("--data", help="corpus (default: the one the model was trained on)")
    cv.add_argument("--pairs", type=positive, default=16, help="test utterances converted (default 16)")
    _generation_options(cv, 1.5, "of each utterance (default 1.5)")
    cv.add_argument("--wav-dir", help="write inputs, reconstructions and conversions here")
    cv.add_argument("--overwrite", action="store_true")
    cv.add_argument("--json", action="store_true")
    cv.set_defaults(fn=cmd_audio_conversion)
    add_training_command(asub, "train-prior", cmd_audio_train_prior,
                         "train the WaveNet prior on an audio VQ-VAE's codes", "speech_prior",
                         "runs/audio_prior", "wavenet_prior.channels=32",
                         source="run directory of the audio VQ-VAE (written by `vqvae audio train`)")
    _prior_commands(asub)
    for name, help in (("reconstruct", "encode a WAV file and decode it again"),
                       ("convert", "encode a WAV file and decode it as another speaker")):
        r = asub.add_parser(name, help=help)
        r.add_argument("run_dir")
        r.add_argument("input", help="a WAV file (any rate; resampled to the model's)")
        r.add_argument("--speaker", help="speaker to decode as" + (" (default: the input's folder name)"
                                                                   if name == "reconstruct" else ""))
        _generation_options(r, 4.0, "at most this much of the input (default 4)")
        r.add_argument("--out", required=True, help="output .wav")
        r.add_argument("--overwrite", action="store_true")
        r.set_defaults(fn=cmd_audio_resynthesize)
