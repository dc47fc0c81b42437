"""Audio building blocks: mu-law, WAV I/O, resampling, speaker-folder corpora, the espeak-ng corpus, and the
WaveNet (exact causality, conditioning, incremental generation == naive generation)."""

import json
import math
import wave

import numpy as np
import pytest
import torch

from vqvae.data.audio import load_speech, random_crops, read_wav, resample, split_files, write_wav
from vqvae.errors import VQVAEError
from vqvae.likelihoods import mu_law_decode, mu_law_encode
from vqvae.nets import WaveNet
from vqvae.nets.controls import SamplingControls

from .conftest import float64_on


# -- mu-law -------------------------------------------------------------------------------------------
def test_mu_law_round_trip_and_error_bound():
    q = torch.arange(256)
    assert torch.equal(mu_law_encode(mu_law_decode(q)), q)  # every level survives decode -> encode
    x = torch.linspace(-1, 1, 200001)
    y = mu_law_encode(x)
    assert y.min() == 0 and y.max() == 255 and bool((y[1:] >= y[:-1]).all())  # monotone, full range
    # the reconstruction error is at most half a level: largest at |x| = 1, where a level spans
    # d/dy [(256^|y| - 1) / 255] * (2 / 255) = ln 256 * 256 / 255 * 2 / 255
    half_step = math.log(256) * 256 / 255 / 255
    assert float((mu_law_decode(y) - x).abs().max()) <= half_step + 1e-6
    small = torch.tensor([0.001, -0.001])
    assert float((mu_law_decode(mu_law_encode(small)) - small).abs().max()) < 1e-3
    assert mu_law_encode(torch.tensor([-5.0, 5.0])).tolist() == [0, 255]  # clamped


# -- WAV files ------------------------------------------------------------------------------------------
def _raw_wav(path, frames: bytes, width: int, channels: int, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)


def test_wav_round_trip_and_formats(tmp_path):
    x = (np.sin(np.arange(1000) * 0.05) * 0.8).astype(np.float32)
    write_wav(tmp_path / "a.wav", x, 8000)
    y, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000 and np.abs(y - x).max() <= 0.5 / 32768 + 1e-7
    stereo = np.stack([(x * 32767).astype("<i2"), np.zeros_like(x, dtype="<i2")], 1)  # right channel silent
    _raw_wav(tmp_path / "s.wav", stereo.tobytes(), 2, 2, 8000)
    y, _ = read_wav(tmp_path / "s.wav")
    assert np.abs(y - x / 2).max() < 1e-4  # channels averaged
    _raw_wav(tmp_path / "u8.wav", bytes([128, 255, 0]), 1, 1, 8000)
    assert np.allclose(read_wav(tmp_path / "u8.wav")[0], [0, 127 / 128, -1])
    v = np.array([0, 2**23 - 1, -(2**23)], dtype=np.int64)
    raw24 = b"".join(int(s).to_bytes(3, "little", signed=True) for s in v)
    _raw_wav(tmp_path / "p24.wav", raw24, 3, 1, 8000)
    assert np.allclose(read_wav(tmp_path / "p24.wav")[0], [0, (2**23 - 1) / 2**23, -1])


def test_bad_wav_files(tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"RIFF....not a wave file")
    with pytest.raises(VQVAEError, match="cannot read WAV file"):
        read_wav(tmp_path / "junk.wav")
    _raw_wav(tmp_path / "empty.wav", b"", 2, 1, 16000)
    with pytest.raises(VQVAEError, match="no audio samples"):
        read_wav(tmp_path / "empty.wav")
    with pytest.raises(VQVAEError, match="cannot read WAV file"):
        read_wav(tmp_path / "missing.wav")


def test_resampling_keeps_a_tone():
    rate_in, rate_out, f = 22050, 16000, 440.0
    t_in = np.arange(22050) / rate_in
    y = resample(np.sin(2 * np.pi * f * t_in), rate_in, rate_out)
    assert len(y) == 16000
    t_out = np.arange(16000) / rate_out
    # a whole number of periods fits the second, so the FFT resampler is exact up to rounding
    assert np.abs(y - np.sin(2 * np.pi * f * t_out)).max() < 1e-4
    assert resample(y, 16000, 16000) is not None and np.array_equal(resample(y, 16000, 16000), y)


# -- corpora ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    from vqvae.data.audio.synthesis import synthesize_corpus

    out = tmp_path_factory.mktemp("speech")
    summary = synthesize_corpus(out, num_sentences=8, per_speaker=4, num_speakers=3, progress=False,
                                overwrite=True)
    assert summary["utterances"] == 12
    return out


@pytest.mark.slow
def test_synthesized_corpus_and_splits(tiny_corpus, tmp_path):
    from vqvae.data.audio.synthesis import sentences, synthesize_corpus

    assert len(set(sentences(300))) == 300 and sentences(300) == sentences(300)  # distinct, seeded
    rows = (tiny_corpus / "sentences.tsv").read_text().splitlines()
    assert rows[0] == "file\tspeaker\ttext" and len(rows) == 13
    train, test = split_files(tiny_corpus, "train"), split_files(tiny_corpus, "test")
    assert len(train) == 9 and len(test) == 3 and not {p for p, _ in train} & {p for p, _ in test}
    assert sorted({s for _, s in test}) == [0, 1, 2]  # every speaker in both splits
    assert split_files(tiny_corpus, "test") == test  # seeded
    data = load_speech(tiny_corpus, "train", sample_rate=8000)
    assert data.sample_rate == 8000
    assert data.speakers == sorted(p.name for p in tiny_corpus.iterdir() if p.is_dir())
    assert all(w.dtype == np.float32 and 0.5 < len(w) / 8000 < 10 for w in data.waves)  # seconds of speech
    x, labels = random_crops(data, 4000, [0, 1, 2, 8, 8], torch.Generator().manual_seed(0))
    assert x.shape == (5, 4000) and labels.tolist() == [data.labels[i] for i in (0, 1, 2, 8, 8)]
    assert float(x.abs().max()) <= 1 and float(x.abs().sum()) > 0
    w = data.waves[0]
    long, _ = random_crops(data, len(w) + 100, [0])
    # zero-padded
    assert np.array_equal(long[0, : len(w)].numpy(), w) and float(long[0, len(w) :].abs().max()) == 0
    with pytest.raises(VQVAEError, match="not empty"):
        synthesize_corpus(tiny_corpus, num_sentences=8, per_speaker=4, num_speakers=3, progress=False)
    with pytest.raises(VQVAEError, match="no speaker sub-folders"):
        load_speech(tmp_path, "train")
    with pytest.raises(VQVAEError, match="not found"):
        load_speech(tmp_path / "nope", "train")


# -- WaveNet ------------------------------------------------------------------------------------------
def _tiny(**kw):
    torch.manual_seed(0)
    args = dict(channels=6, skip_channels=10, dilations=[1, 2, 4, 1, 2, 4])
    args.update(kw)
    model = WaveNet(16, **args).double()
    with torch.no_grad():  # speaker embeddings start at zero; give them the spread a trained model has
        for layer in model.layers:
            if layer.glob is not None:
                layer.glob.weight.normal_()
    return model


def test_wavenet_causal_exactly():
    model = _tiny()
    rf = model.receptive_field  # 1 + 14 = 15
    T = 40
    for t in (0, 5, 20, 39):
        e = torch.randn(1, 6, T, dtype=torch.float64, requires_grad=True)
        model.forward_embedded(e)[0, :, t].sum().backward()
        g = e.grad.abs().sum(1)[0]
        assert float(g[t:].abs().max()) == 0.0, t  # nothing at or after t
        before = g[max(0, t - rf) : t]
        assert bool((before > 0).all()), t  # every earlier step within the receptive field counts
        assert float(g[: max(0, t - rf)].abs().sum()) == 0.0  # and nothing further back


def test_wavenet_conditioning_and_shapes():
    model = _tiny(local_channels=3, num_globals=4)
    x = torch.randint(16, (2, 30))
    local = torch.randn(2, 3, 30, dtype=torch.float64)
    g = torch.tensor([0, 1])
    base = model(x, local, g)
    assert base.shape == (2, 16, 30)
    assert not torch.allclose(base, model(x, local, torch.tensor([2, 3])))  # the speaker changes the output
    assert not torch.allclose(base, model(x, local * 2, g))  # so do the local features
    local2 = local.clone()
    # local conditioning is aligned: step 20 on changes only the logits from step 20 on
    local2[:, :, 20:] += 1.0
    diff = (model(x, local2, g) - base).detach().abs().sum(1)
    assert float(diff[:, :20].max()) == 0.0 and float(diff[:, 20:].min()) > 0
    nll = model.nll(x, local, g)
    assert nll.shape == (2, 30) and bool((nll > 0).all())
    with pytest.raises(VQVAEError, match="locally conditioned"):
        model(x, None, g)
    with pytest.raises(VQVAEError, match="global ids must lie in"):
        model(x, local, torch.tensor([0, 4]))
    with pytest.raises(VQVAEError, match="classes must lie in"):
        model(torch.full((2, 30), 16), local, g)
    with pytest.raises(VQVAEError, match="temperature must be > 0"):
        model.generate(2, 30, local, g, SamplingControls(temperature=0))
    with pytest.raises(ValueError, match="dilations"):
        WaveNet(16, dilations=[1, 0])


def test_speakers_start_equal_and_the_gradient_separates_them():
    torch.manual_seed(0)
    model = WaveNet(16, channels=6, skip_channels=10, dilations=[1, 2, 4], num_globals=3).double()
    x = torch.randint(16, (3, 20))
    out = model(x, None, torch.tensor([0, 1, 2]))
    # zero embeddings: no speaker offset yet
    assert torch.equal(out[0], model(x[:1], None, torch.tensor([1]))[0])
    model.nll(x, None, torch.tensor([0, 1, 1])).mean().backward()
    grad = model.layers[0].glob.weight.grad
    # only speakers seen
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0 and grad[2].abs().sum() == 0


@pytest.mark.parametrize("conditioned", [True, False])
def test_incremental_generation_equals_naive(conditioned, device):
    float64_on(device)
    model = _tiny(local_channels=3 if conditioned else 0, num_globals=4 if conditioned else 0).to(device)
    T = 50  # longer than the receptive field (15), so the queues wrap around
    local = torch.randn(3, 3, T, dtype=torch.float64).to(device) if conditioned else None
    g = torch.tensor([0, 3, 1], device=device) if conditioned else None
    for temperature in (1.0, 0.7):
        controls = SamplingControls(temperature)
        naive = model.generate_naive(3, T, local, g, controls, torch.Generator().manual_seed(4))
        fast = model.generate(3, T, local, g, controls, torch.Generator().manual_seed(4))
        assert torch.equal(naive, fast)
        assert len(set(fast[0].tolist())) > 3  # it really samples
    again = model.generate(3, T, local, g, None, torch.Generator().manual_seed(4))
    assert torch.equal(again, model.generate(3, T, local, g, None, torch.Generator().manual_seed(4)))


# -- the audio VQ-VAE end to end ------------------------------------------------------------------------
AUDIO_TINY = ["audio.hidden=8", "audio.embedding_dim=4", "audio.num_embeddings=16", "audio.local_channels=8",
              "audio.channels=8", "audio.skip_channels=8", "audio.max_dilation=8", "train.batch_size=2",
              "train.crop_length=512", "train.eval_batches=2", "train.log_every=1", "train.warmup_steps=1"]


def run(capsys, *argv):
    from vqvae.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_audio_model_shapes_and_conditioning(device):
    from vqvae.models import AudioVQVAE

    torch.manual_seed(0)
    model = AudioVQVAE(hidden=8, embedding_dim=4, num_embeddings=16, local_channels=8, channels=8,
                       skip_channels=8, max_dilation=8, num_speakers=3).to(device)
    x = (torch.rand(2, 640) * 2 - 1).to(device)
    out = model(x, torch.tensor([0, 2], device=device))
    assert out.indices.shape == (2, 10) and out.recon_loss > 0 and out.loss >= out.recon_loss
    out.loss.backward()
    # the straight-through gradient reaches the encoder
    assert model.encoder.net[0].weight.grad.abs().sum() > 0
    with pytest.raises(VQVAEError, match="multiple of 64"):
        model(torch.zeros(2, 100, device=device), torch.tensor([0, 1], device=device))
    with pytest.raises(VQVAEError, match="speaker ids must lie in"):
        model(x, torch.tensor([0, 3], device=device))
    codes = model.eval().encode(x)
    y = model.decode_indices(codes[:, :2], torch.tensor([0, 1], device=device),
                             generator=torch.Generator().manual_seed(0))
    assert y.shape == (2, 128) and float(y.abs().max()) <= 1 and y.device.type == device.type
    x = x.cpu()
    normed = AudioVQVAE(hidden=8, embedding_dim=4, num_embeddings=16, local_channels=8, channels=8,
                        skip_channels=8, max_dilation=8, num_speakers=3, encoder_norm="instance")
    z = normed.encoder(x[:, None])  # (2, 4, 10): every channel standardised over time, so never constant
    assert torch.allclose(z.mean(2), torch.zeros(2, 4), atol=1e-4)
    assert torch.allclose(z.var(2, unbiased=False), torch.ones(2, 4), atol=1e-2)
    base = AudioVQVAE(use_codes=False, speaker_conditioning=False, channels=8, skip_channels=8,
                      max_dilation=8)
    assert base.encoder is None and base(x).indices.shape == (2, 0)
    assert base.decode_indices(None, length=50).shape == (1, 50)


def test_time_jitter_moves_codes_to_their_neighbours_only_in_training():
    from vqvae.nets.audio import time_jitter

    z = torch.arange(2 * 3 * 1000, dtype=torch.float64).reshape(2, 3, 1000).requires_grad_()
    g = torch.Generator().manual_seed(0)
    assert time_jitter(z, 0.0) is z
    y = time_jitter(z, 0.12, g)
    step = (y - z).detach()[:, 0]  # each channel holds its position, so the difference is the shift
    assert set(step.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert bool((y - z).detach().eq(step[:, None]).all())  # the whole code vector moves together
    assert float((step == -1).double().mean()) == pytest.approx(0.12, abs=0.03)
    assert float((step == 1).double().mean()) == pytest.approx(0.12, abs=0.03)
    y.sum().backward()
    picked = (torch.arange(1000) + step.long()).clamp(0, 999)  # where each output was taken from
    counts = torch.stack([torch.bincount(row, minlength=1000) for row in picked]).double()
    assert torch.equal(z.grad, counts[:, None, :].expand_as(z))  # gradients reach exactly the picked codes
    from vqvae.config import AudioModelConfig
    from vqvae.models import AudioVQVAE

    torch.manual_seed(0)
    # "vq": forward keeps the codebook
    m = AudioVQVAE(hidden=8, embedding_dim=4, num_embeddings=16, local_channels=8, channels=8,
                   skip_channels=8, max_dilation=8, num_speakers=2, jitter=0.25, quantizer="vq").eval()
    x, s = torch.rand(2, 2048) * 2 - 1, torch.tensor([0, 1])  # 32 codes each
    assert torch.equal(m(x, s).recon_loss, m(x, s).recon_loss)  # no jitter at evaluation
    m.train()
    seen = []
    m.upsampler.register_forward_hook(lambda mod, inputs, out: seen.append(inputs[0].detach().clone()))
    torch.manual_seed(0)
    m(x, s)
    q = m.quantizer.lookup(m.encode(mu_law_decode(mu_law_encode(x)))).transpose(1, 2)  # the codes, unjittered
    moved = (seen[0] - q).abs().sum(1) > 0
    assert bool(moved.any()) and not bool(moved.all())  # training moves some codes to their neighbours
    with pytest.raises(VQVAEError, match="audio.jitter"):
        AudioModelConfig(jitter=0.6).validate()


def test_encoder_output_follows_a_quiet_input():
    """At init the encoder's output must vary with the input, not sit at a bias-made constant (PyTorch's
    default init gave variation over time of 0.8% of the output's size on speech at RMS 0.1, and the codes
    carried nothing)."""
    from vqvae.nets.audio import AudioEncoder, CodeUpsampler

    torch.manual_seed(0)
    t = torch.arange(8 * 8192) / 16000.0
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t) ** 2  # syllable-like loudness
    pitch = 120 + 80 * torch.sin(2 * math.pi * t)
    x = (0.14 * envelope * torch.sin(2 * math.pi * pitch * t)).reshape(8, 1, 8192)
    assert 0.05 < float(x.std()) < 0.15
    with torch.no_grad():
        z = AudioEncoder(64, 64, 6)(x)
        up = CodeUpsampler(64, 32, 6)(z)
    assert float(z.std(2).mean() / z.abs().mean()) > 0.3
    assert float(up.std(2).mean() / up.abs().mean()) > 0.3


@pytest.mark.slow
def test_audio_cli_train_evaluate_resynthesise(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    code, text, err = run(capsys, "audio", "train", "--data", tiny_corpus, "--out", out, "--steps", 3,
                          "--quiet", "--json", *AUDIO_TINY)
    assert code == 0, err
    m = json.loads(text.splitlines()[0])
    assert m["conditioned_on"] == ["codes", "speaker"] and 0 < m["bits_per_sample"] < 9
    assert m["codes_per_second"] == 250 and m["bit_rate"] == 250 * 4  # K=16: 4 bits per code
    assert {"config.json", "model.safetensors", "eval.json", "metrics.csv"} <= {p.name for p in out.iterdir()}
    assert run(capsys, "audio", "train", "--resume", out, "--steps", 4, "--quiet")[0] == 0
    assert json.loads((out / "eval.json").read_text())["step"] == 4
    code, text, err = run(capsys, "audio", "evaluate", out, "--limit", 1, "--json")
    assert code == 0 and json.loads(text)["num_utterances"] == 1, err

    speakers = json.loads((out / "config.json").read_text())["speakers"]
    wav = next((tiny_corpus / speakers[0]).glob("*.wav"))
    rec = tmp_path / "rec.wav"
    code, text, err = run(capsys, "audio", "reconstruct", out, wav, "--seconds", 0.1, "--out", rec)
    assert code == 0, err
    assert f"as {speakers[0]}" in text  # the folder name gave the speaker
    y, rate = read_wav(rec)
    assert rate == 16000 and len(y) == 1600 - 1600 % 64
    conv = tmp_path / "conv.wav"
    code, text, err = run(capsys, "audio", "convert", out, wav, "--speaker", speakers[1], "--seconds", 0.1,
                          "--out", conv)
    assert code == 0 and f"as {speakers[1]}" in text, err

    code, _, err = run(capsys, "audio", "convert", out, wav, "--speaker", "nobody",
                       "--out", tmp_path / "x.wav")
    assert code == 2 and "unknown speaker 'nobody'" in err
    code, _, err = run(capsys, "audio", "convert", out, wav, "--speaker", speakers[1], "--out", conv)
    assert code == 2 and "already exists" in err
    short = tmp_path / "short.wav"
    write_wav(short, np.zeros(30, np.float32), 16000)
    code, _, err = run(capsys, "audio", "reconstruct", out, short, "--speaker", speakers[0],
                       "--out", tmp_path / "x.wav")
    assert code == 2 and "shorter than one code" in err
    (tmp_path / "bad.wav").write_bytes(b"nonsense")
    code, _, err = run(capsys, "audio", "reconstruct", out, tmp_path / "bad.wav", "--speaker", speakers[0],
                       "--out", tmp_path / "x.wav")
    assert code == 2 and "cannot read WAV file" in err
    assert not (tmp_path / "x.wav").exists()
    # speaker conversion, judged by the speaker classifier
    wavs = tmp_path / "conv_wavs"
    code, text, err = run(capsys, "audio", "conversion", out, "--pairs", 2, "--seconds", 0.1,
                          "--wav-dir", wavs, "--json")
    assert code == 0, err
    cm = json.loads(text)
    assert cm["pairs"] == 2 and 0 <= cm["converted_recognised_as_target"] <= 1
    assert cm["speaker_classifier_test_accuracy"] > 0.5  # distinct espeak-ng voices, 3 speakers
    assert 0 <= cm["converted_voiced"] <= 1 and 0 <= cm["pitch_pairs"] <= 2
    if cm["pitch_pairs"]:
        assert 0 <= cm["converted_pitch_nearer_target"] + cm["converted_pitch_nearer_source"] <= 1
    else:
        assert cm["converted_pitch_nearer_target"] is None
    assert len(cm["speaker_median_pitch_hz"]) >= 2
    assert all(60 < f < 400 for f in cm["speaker_median_pitch_hz"].values())
    assert len(list(wavs.glob("*.wav"))) == 6  # input, reconstruction, conversion of each
    code, _, err = run(capsys, "audio", "conversion", out, "--pairs", 1, "--wav-dir", wavs)
    assert code == 2 and "not empty" in err

    # the prior over the codes, and sampling from it
    prior = tmp_path / "prior"
    tiny_prior = ["wavenet_prior.channels=8", "wavenet_prior.skip_channels=8", "wavenet_prior.max_dilation=4",
                  "train.batch_size=2", "train.crop_length=16", "train.eval_batches=2",
                  "train.warmup_steps=1"]
    code, text, err = run(capsys, "audio", "train-prior", out, "--out", prior, "--steps", 3, "--quiet",
                          "--json", *tiny_prior)
    assert code == 0, err
    pm = json.loads(text.splitlines()[0])
    assert pm["uniform_bits_per_code"] == 4 and 0 < pm["prior_bits_per_code"] < 6
    assert pm["bit_rate_with_prior"] == pytest.approx(250 * pm["prior_bits_per_code"])
    assert (out / "prior_codes.cache.npz").exists()
    assert run(capsys, "audio", "train-prior", "--resume", prior, "--steps", 4, "--quiet")[0] == 0
    sample = tmp_path / "sample.wav"
    code, text, err = run(capsys, "audio", "sample", prior, "--speaker", speakers[2], "--seconds", 0.05,
                          "--out", sample)
    assert code == 0, err
    assert len(read_wav(sample)[0]) == 768  # 0.05 s -> 12 codes of 64 samples
    code, _, err = run(capsys, "audio", "sample", prior, "--speaker", "nobody", "--out", tmp_path / "x.wav")
    assert code == 2 and "unknown speaker" in err
    code, _, err = run(capsys, "audio", "sample", prior, "--speaker", speakers[0], "--temperature", 0,
                       "--out", tmp_path / "x.wav")
    assert code == 2 and "--temperature must be > 0" in err

    code, _, err = run(capsys, "audio", "train", "--data", tiny_corpus, "--out", tmp_path / "r2",
                       "--steps", 1, "--quiet", *AUDIO_TINY, "train.crop_length=500")
    assert code == 2 and "multiple of the code hop" in err


def test_decode_many_decodes_sequences_of_different_lengths_in_one_batch(device):
    from vqvae.models import AudioVQVAE

    torch.manual_seed(0)
    model = AudioVQVAE(hidden=8, embedding_dim=4, num_embeddings=16, local_channels=8, channels=8,
                       skip_channels=8, max_dilation=8, num_speakers=3).eval().to(device)
    codes = torch.randint(16, (2, 5), generator=torch.Generator().manual_seed(1)).to(device)
    speakers = torch.tensor([2, 0], device=device)
    together = model.decode_many(list(codes), speakers, generator=torch.Generator().manual_seed(4))
    stacked = model.decode_indices(codes, speakers, generator=torch.Generator().manual_seed(4))
    assert torch.equal(torch.stack(together), stacked)  # equal lengths: exactly decode_indices of the stack
    ragged = model.decode_many([codes[0, :2], codes[1]], speakers, generator=torch.Generator().manual_seed(4))
    assert [len(w) for w in ragged] == [2 * 64, 5 * 64] and float(ragged[0].abs().max()) <= 1
    # the longest one is decoded as alone with the same uniforms: the padding of the other never reaches it
    assert torch.equal(ragged[1], stacked[1])
    assert model.decode_many([], speakers[:0]) == []
