"""The ceiling of the spectral decoder: Griffin-Lim of the real test takes' own STFT magnitudes, judged as
reconstructions by the corpus's judges (speaker, content, voicing, pitch) and by STOI and narrow-band PESQ,
for several iteration counts, with the real-time factor of one take at a time. With ``--model RUN`` (a
spectral audio VQ-VAE trained on that corpus), also that model's own spectra of the test takes, inverted by
the model's Griffin-Lim and, for comparison, given the input's true phase: what the inversion costs on a
decoded spectrum.

    python benchmarks/griffin_lim_ceiling.py runs/fsdd          # a corpus made by `vqvae data fsdd`
    python benchmarks/griffin_lim_ceiling.py runs/fsdd --model runs/demo-speech/vqvae --only-model
"""

import argparse
import time

import torch
import torch.nn.functional as F

from vqvae.data.audio import load_speech
from vqvae.judges.audio import SpeechJudges, intelligibility
from vqvae.runs import load_run
from vqvae.spectral import griffin_lim, stft


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus")
    p.add_argument("--sample-rate", type=int, default=8000)
    p.add_argument("--n-fft", type=int, default=512)
    p.add_argument("--hop", type=int, default=64)
    p.add_argument("--model", help="a spectral audio VQ-VAE run trained on the corpus")
    p.add_argument("--only-model", action="store_true", help="skip the real spectra's rows")
    args = p.parse_args()
    train, test = (load_speech(args.corpus, s, args.sample_rate, in_memory=True) for s in ("train", "test"))
    judges = SpeechJudges(train, test)
    waves = [torch.from_numpy(w[: len(w) // args.hop * args.hop]) for w in test.waves]
    seconds = sum(len(w) for w in waves) / args.sample_rate
    if args.model:
        model_rows(args.model, waves, test, judges, args.sample_rate)
    if args.only_model:
        return
    print("iterations momentum | own speaker digit voiced pitch10 | STOI PESQ-NB | x real time")
    for iterations, momentum in ((0, 0.99), (16, 0.99), (32, 0.99), (60, 0.99), (60, 0.0), (100, 0.99)):
        start, outs = time.perf_counter(), []
        for w in waves:
            mag = stft(w[None], args.n_fft, args.hop).abs()
            outs.append(griffin_lim(mag, args.n_fft, args.hop, iterations=iterations, momentum=momentum,
                                    generator=torch.Generator().manual_seed(0))[0])
        rtf = seconds / (time.perf_counter() - start)
        m = judges.conversion(waves, outs, outs, test.labels, test.labels, test.classes or None)
        s = intelligibility(waves, outs, args.sample_rate)
        print(f"{iterations:10d} {momentum:8.2f} | {m['reconstructions_recognised_as_source']:.3f} "
              f"{m.get('reconstructions_recognised_as_class', float('nan')):.3f} "
              f"{m['reconstructions_voiced']:.3f} "
              f"{m['reconstructions_pitch_within_10pct']:.3f} | {s['stoi']:.3f} "
              f"{s['pesq_nb'] or float('nan'):.2f} "
              f"| {rtf:.1f}", flush=True)


def report(name: str, judges: SpeechJudges, waves, outs, test, rate: int) -> None:
    m = judges.conversion(waves, outs, outs, test.labels, test.labels, test.classes or None)
    s = intelligibility(waves, outs, rate)
    print(f"{name:32s} | {m['reconstructions_recognised_as_source']:.3f} "
          f"{m.get('reconstructions_recognised_as_class', float('nan')):.3f} "
          f"{m['reconstructions_voiced']:.3f} "
          f"{m['reconstructions_pitch_within_10pct']:.3f} | {s['stoi']:.3f} "
          f"{s['pesq_nb'] or float('nan'):.2f}",
          flush=True)


@torch.no_grad()
def model_rows(run: str, waves, test, judges: SpeechJudges, rate: int) -> None:
    """The model's spectra of every test take (its codes, its speaker) through its own inversion, and with the
    input's true phase instead."""
    model, _ = load_run(run, "audio", "cpu")
    model.eval()
    c = model.config
    if not model.spectral or c.sample_rate != rate:
        raise SystemExit(f"{run}: needs a spectral decoder at {rate} Hz")
    window = torch.hann_window(c.n_fft)
    waves = [w[: len(w) // c.hop * c.hop] for w in waves]  # whole codes
    inverted, true_phase = [], []
    for w, speaker in zip(waves, test.labels):
        codes = model.encode(w[None])
        spectrum = model.log_spectrum(codes, torch.tensor([speaker]))  # (1, F, N)
        inverted.append(model.decode_many([codes[0]], torch.tensor([speaker]),
                                          generator=torch.Generator().manual_seed(0))[0])
        real = stft(w[None], c.n_fft, c.frame_hop)
        spec = F.pad(spectrum.exp() * real / real.abs().clamp_min(1e-8), (0, 1))  # the frame at T as well
        restored = torch.istft(spec, c.n_fft, c.frame_hop, window=window, length=len(w))
        true_phase.append(restored[0].clamp(-1, 1))
    print(f"{run}: own speaker digit voiced pitch10 | STOI PESQ-NB")
    report(f"its inversion ({c.griffin_lim_iterations} it., contrast {c.harmonic_contrast:g})", judges, waves,
           inverted, test, rate)
    report("the input's true phase", judges, waves, true_phase, test, rate)


if __name__ == "__main__":
    main()
