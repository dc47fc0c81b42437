"""The ceiling of the spectral decoder: Griffin-Lim of the real test takes' own STFT magnitudes, judged as
reconstructions by the corpus's judges (speaker, content, voicing, pitch) and by STOI and narrow-band PESQ, for
several iteration counts, with the real-time factor of one take at a time.

    python benchmarks/griffin_lim_ceiling.py runs/fsdd          # a corpus made by `vqvae data fsdd`
"""

import argparse
import time

import torch

from vqvae.data.audio import load_speech
from vqvae.judges.audio import SpeechJudges, intelligibility
from vqvae.spectral import griffin_lim, stft


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus")
    p.add_argument("--sample-rate", type=int, default=8000)
    p.add_argument("--n-fft", type=int, default=512)
    p.add_argument("--hop", type=int, default=64)
    a = p.parse_args()
    train, test = (load_speech(a.corpus, s, a.sample_rate, in_memory=True) for s in ("train", "test"))
    judges = SpeechJudges(train, test)
    waves = [torch.from_numpy(w[: len(w) // a.hop * a.hop]) for w in test.waves]
    seconds = sum(len(w) for w in waves) / a.sample_rate
    print("iterations momentum | own speaker digit voiced pitch10 | STOI PESQ-NB | x real time")
    for iterations, momentum in ((0, 0.99), (16, 0.99), (32, 0.99), (60, 0.99), (60, 0.0), (100, 0.99)):
        start, outs = time.perf_counter(), []
        for w in waves:
            mag = stft(w[None], a.n_fft, a.hop).abs()
            outs.append(griffin_lim(mag, a.n_fft, a.hop, iterations=iterations, momentum=momentum,
                                    generator=torch.Generator().manual_seed(0))[0])
        rtf = seconds / (time.perf_counter() - start)
        m = judges.conversion(waves, outs, outs, test.labels, test.labels, test.classes or None)
        s = intelligibility(waves, outs, a.sample_rate)
        print(f"{iterations:10d} {momentum:8.2f} | {m['reconstructions_recognised_as_source']:.3f} "
              f"{m.get('reconstructions_recognised_as_class', float('nan')):.3f} {m['reconstructions_voiced']:.3f} "
              f"{m['reconstructions_pitch_within_10pct']:.3f} | {s['stoi']:.3f} {s['pesq_nb'] or float('nan'):.2f} "
              f"| {rtf:.1f}", flush=True)


if __name__ == "__main__":
    main()
