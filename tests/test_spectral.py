"""The spectral decoder's parts against independent references: the STFT against a NumPy one, the spectral
losses against NumPy, Griffin-Lim on signals whose spectrum is known, the decoder's shapes and a tone decoded
to its frequency, the encoder hearing in `encode` what it hears in training, and the code probe at chance and
above."""

import numpy as np
import pytest
import torch

from vqvae.errors import VQVAEError
from vqvae.judges.codes import CodeProbe, code_features
from vqvae.models import AudioVQVAE
from vqvae.models.audio import MEL_SCALES
from vqvae.spectral import (
    LOG_FLOOR,
    griffin_lim,
    log_magnitude,
    mel_filterbank,
    sharpen_harmonics,
    spectral_convergence,
    spectral_loss,
    stft,
)


def numpy_stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Frames centred on multiples of hop, zeros beyond the ends, periodic Hann window, T // hop frames."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    padded = np.pad(x, n_fft // 2)
    frames = [padded[i * hop : i * hop + n_fft] * window for i in range(len(x) // hop)]
    return np.fft.rfft(np.array(frames), axis=1).T  # (F, N)


def test_stft_and_log_magnitude_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000).astype(np.float64) * 0.3
    ours = stft(torch.from_numpy(x)[None], 256, 40)[0].numpy()
    ref = numpy_stft(x, 256, 40)
    assert ours.shape == ref.shape == (129, 25)
    assert np.abs(ours - ref).max() < 1e-10
    logs = log_magnitude(torch.from_numpy(x)[None].float(), 256, 40)[0].numpy()
    assert np.abs(logs - np.log(np.maximum(np.abs(ref), LOG_FLOOR))).max() < 1e-4


def test_a_sine_peaks_in_its_bin():
    rate, n_fft, f = 8000, 512, 1000.0  # 1000 Hz lies exactly on bin 64
    x = torch.sin(2 * torch.pi * f * torch.arange(4096) / rate)[None]
    mag = stft(x, n_fft, 64)[0].abs()
    middle = mag[:, 8:-8]
    assert bool((middle.argmax(0) == 64).all())
    assert float(middle[64].mean()) == pytest.approx(n_fft / 4, rel=1e-3)  # amplitude 1 under a Hann window


def test_spectral_loss_matches_numpy():
    rng = np.random.default_rng(1)
    pred, target = (rng.standard_normal((2, 129, 13)) - 3 for _ in range(2))
    mask = np.ones((2, 13))
    mask[1, 9:] = 0  # the second example's last 4 frames are padding
    banks = [mel_filterbank(8000, 256, m).double() for m in (20, 10)]
    pools = [1, 4]
    l1, mel = spectral_loss(torch.from_numpy(pred), torch.from_numpy(target), banks, pools,
                            torch.from_numpy(mask))

    ref_l1 = (np.abs(pred - target).mean(1) * mask).sum() / mask.sum()
    ref_mel = []
    for bank, pool in zip(banks, pools):
        b = bank.numpy()
        logs = []
        for s in (pred, target):
            power = np.exp(2 * s)
            n = -(-power.shape[2] // pool)
            pooled = np.stack([power[:, :, i * pool : (i + 1) * pool].mean(2) for i in range(n)], 2)
            logs.append(np.log(np.maximum(np.einsum("mf,bfn->bmn", b, pooled), LOG_FLOOR**2)))
        kept = np.stack([mask[:, i * pool : (i + 1) * pool].max(1) for i in range(-(-13 // pool))], 1)
        ref_mel.append((np.abs(logs[0] - logs[1]).mean(1) * kept).sum() / kept.sum())
    assert float(l1) == pytest.approx(ref_l1, rel=1e-9)
    assert float(mel) == pytest.approx(np.mean(ref_mel), rel=1e-9)
    same_l1, same_mel = spectral_loss(torch.from_numpy(pred), torch.from_numpy(pred), banks, pools)
    assert float(same_l1) == 0 and float(same_mel) == 0


def test_griffin_lim_inverts_a_known_spectrum():
    rate, n_fft, hop = 8000, 512, 64
    t = torch.arange(4096, dtype=torch.float32) / rate
    # a vowel-like signal: harmonics of 120 Hz under a falling envelope, with a slow glide
    f0 = 120 * (1 + 0.1 * t)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / rate
    x = sum(torch.sin(k * phase) / k for k in range(1, 12)) * 0.1
    mag = stft(x[None], n_fft, hop).abs()
    y = griffin_lim(mag, n_fft, hop, iterations=100, generator=torch.Generator().manual_seed(0))
    assert y.shape == (1, 4096)
    # phase is lost, the magnitude is not: within 10% (the random start alone is at ~90%)
    assert float(spectral_convergence(mag, y, n_fft, hop)[0]) < 0.1
    start = griffin_lim(mag, n_fft, hop, iterations=0, generator=torch.Generator().manual_seed(0))
    assert float(spectral_convergence(mag, start, n_fft, hop)[0]) > 0.5
    with pytest.raises(ValueError, match="frequency bins"):
        griffin_lim(mag[:, :-1], n_fft, hop)


def test_griffin_lim_in_a_padded_batch_is_each_waveform_alone():
    n_fft, hop = 256, 32
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 40 * hop, generator=g) * 0.1, torch.randn(1, 25 * hop, generator=g) * 0.1
    ma, mb = stft(a, n_fft, hop).abs(), stft(b, n_fft, hop).abs()
    batch = torch.cat([ma, torch.nn.functional.pad(mb, (0, 15))])
    together = griffin_lim(batch, n_fft, hop, iterations=10, lengths=[40, 25],
                           generator=torch.Generator().manual_seed(3))
    alone_a = griffin_lim(ma, n_fft, hop, iterations=10, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    torch.rand(n_fft // 2 + 1, 40 + n_fft // (2 * hop), generator=g)  # the first waveform's phases
    alone_b = griffin_lim(mb, n_fft, hop, iterations=10, generator=g)
    # the same up to float rounding (batched FFTs round differently; 10 iterations amplify it to ~1e-5)
    assert torch.allclose(together[0], alone_a[0], atol=1e-4)
    assert torch.allclose(together[1, : 25 * hop], alone_b[0], atol=1e-4)
    assert float(together[1, 25 * hop :].abs().max()) == 0


def _spectral(**kw):
    torch.manual_seed(0)
    args = dict(decoder="spectral", sample_rate=8000, hidden=16, embedding_dim=8, num_embeddings=16,
                num_speakers=3, spectral_channels=32, spectral_layers=2, num_downsamples=7)
    args.update(kw)
    return AudioVQVAE(**args)


def test_spectral_decoder_shapes_and_conditioning():
    model = _spectral().eval()
    x, speakers = torch.randn(2, 1024) * 0.1, torch.tensor([0, 2])
    out = model(x, speakers)
    assert out.indices.shape == (2, 8)  # 128x
    spec = model.log_spectrum(out.indices, speakers)
    assert spec.shape == (2, 257, 16)  # two frames per code
    assert torch.allclose(out.recon_loss, out.spectral_l1 + out.mel_loss)
    assert model.target_spectrum(x).shape == spec.shape
    other = model.log_spectrum(out.indices, torch.tensor([1, 1]))
    with torch.no_grad():
        model.decoder.speaker.weight.normal_()
    assert not torch.allclose(model.log_spectrum(out.indices, speakers),
                              model.log_spectrum(out.indices, torch.tensor([1, 1])))
    assert other.shape == spec.shape
    wave = model.decode_indices(out.indices, speakers, generator=torch.Generator().manual_seed(0))
    assert wave.shape == (2, 1024) and float(wave.abs().max()) <= 1
    many = model.decode_many([out.indices[0, :3], out.indices[1]], speakers,
                             generator=torch.Generator().manual_seed(0))
    assert [len(w) for w in many] == [384, 1024]
    alone = model.decode_many([out.indices[0, :3]], speakers[:1],
                              generator=torch.Generator().manual_seed(0))[0]
    assert torch.allclose(many[0], alone, atol=1e-5)  # the longer one's frames are silence to the shorter one
    with pytest.raises(VQVAEError, match="spectral decoder has no likelihood"):
        model.nll(x, speakers)
    with pytest.raises(VQVAEError, match="speaker ids"):
        model.log_spectrum(out.indices, torch.tensor([0, 3]))


def test_spectral_decoder_learns_a_tone_and_decodes_it_to_its_frequency():
    rate, f = 8000, 500.0  # bin 32 of 512
    model = _spectral(num_downsamples=6, num_embeddings=4, num_speakers=1)
    x = (0.5 * torch.sin(2 * torch.pi * f * torch.arange(2048) / rate))[None]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(x, torch.tensor([0])).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    y = model.decode_indices(model.encode(x), torch.tensor([0]),
                             generator=torch.Generator().manual_seed(0))[0]
    spectrum = np.abs(np.fft.rfft(y[256:-256].numpy() * np.hanning(1536)))
    peak = np.argmax(spectrum) * rate / 1536
    assert abs(peak - f) < rate / 1536  # within one bin of the tone
    assert 0.2 < float(y[256:-256].abs().max()) < 0.8  # its loudness too (amplitude 0.5)


@pytest.mark.parametrize("decoder,frontend", [("wavenet", "conv"), ("spectral", "conv"), ("wavenet", "mel"),
                                              ("spectral", "mel")])
def test_encode_gives_the_codes_of_a_training_forward_pass(decoder, frontend):
    if decoder == "spectral":
        kw = dict(decoder=decoder)
    else:
        kw = dict(decoder=decoder, channels=8, skip_channels=8, local_channels=8, max_dilation=4)
    model = AudioVQVAE(sample_rate=8000, hidden=16, embedding_dim=8, num_embeddings=64, num_speakers=2,
                       spectral_channels=16, spectral_layers=1, encoder_frontend=frontend, frame_hop=16,
                       encoder_input_norm="utterance" if frontend == "mel" else "none", **kw)
    torch.manual_seed(1)
    x = torch.randn(3, 2048).clamp(-1, 1) * 0.7  # loud noise: the mu-law round trip changes every sample
    codes = model.encode(x)
    model.train()
    trained = model(x, torch.tensor([0, 1, 0])).indices  # a training step: the EMA moves the codebook after
    assert torch.equal(codes, trained)


def test_spectral_config_is_checked():
    with pytest.raises(VQVAEError, match="audio.frame_hop must be a divisor of the code hop 64"):
        AudioVQVAE(decoder="spectral", frame_hop=48)
    with pytest.raises(VQVAEError, match="audio.decoder must be"):
        AudioVQVAE(decoder="vocoder")
    with pytest.raises(VQVAEError, match="audio.use_codes must be true"):
        AudioVQVAE(decoder="spectral", use_codes=False)
    with pytest.raises(VQVAEError, match="audio.encoder_frontend must be"):
        AudioVQVAE(encoder_frontend="mfcc")
    with pytest.raises(VQVAEError, match="audio.frame_hop must be a divisor"):
        AudioVQVAE(encoder_frontend="mel", frame_hop=48)
    with pytest.raises(VQVAEError, match="audio.harmonic_contrast must be > 0"):
        AudioVQVAE(decoder="spectral", harmonic_contrast=0)
    assert len(MEL_SCALES) == 3


def test_mel_frontend_matches_numpy_and_its_utterance_norm_ignores_gain_and_silent_padding():
    from vqvae.nets.audio import MelEncoder

    rate, n_fft, frame_hop, bands = 8000, 256, 32, 20
    rng = np.random.default_rng(0)
    tone = np.sin(2 * np.pi * 300 * np.arange(2048) / rate)
    x = (rng.standard_normal(2048) * 0.2 + tone * 0.3).astype(np.float32)
    enc = MelEncoder(rate, n_fft, frame_hop, 128, bands, hidden=8, embedding_dim=4)
    bank = mel_filterbank(rate, n_fft, bands).numpy().astype(np.float64)
    ref = np.log(np.maximum(bank @ np.abs(numpy_stft(x.astype(np.float64), n_fft, frame_hop)) ** 2, 1e-8))
    ours = enc.features(torch.from_numpy(x)[None])[0].numpy()
    assert ours.shape == ref.shape == (bands, 2048 // frame_hop)
    assert np.abs(ours - ref).max() < 1e-3
    assert enc(torch.from_numpy(x)[None, None]).shape == (1, 4, 2048 // 128)  # two stride-2 layers: 32 -> 128

    norm = MelEncoder(rate, n_fft, frame_hop, 128, bands, hidden=8, embedding_dim=4, input_norm="utterance")
    live = norm.features(torch.from_numpy(x)[None])[0]
    assert torch.allclose(live.mean(1), torch.zeros(bands), atol=1e-4)
    assert torch.allclose(live.std(1, unbiased=False), torch.ones(bands), atol=1e-3)
    quiet = norm.features(torch.from_numpy(x * 0.05)[None])[0]  # a gain is a constant in every log band
    assert torch.allclose(live, quiet, atol=1e-3)
    # zero padding (whole frames of digital silence) is left out of the statistics
    silent = torch.zeros(1, 4096)
    silent[0, :2048] = torch.from_numpy(x)
    padded = norm.features(silent)[0]
    assert bool((padded[:, -(n_fft // frame_hop) :] == 0).all())
    sounding = 2048 // frame_hop + n_fft // (2 * frame_hop)  # frames whose window reaches into x
    assert bool((padded[:, sounding:] == 0).all()) and bool((padded[:, sounding - 1] != 0).any())
    assert torch.allclose(padded[:, :sounding].mean(1), torch.zeros(bands), atol=1e-4)
    assert torch.allclose(padded[:, :sounding].std(1, unbiased=False), torch.ones(bands), atol=1e-3)


def numpy_sharpen(log_mag: np.ndarray, contrast: float, width: int) -> np.ndarray:
    """sharpen_harmonics of one (F, N) log-magnitude, transcribed: moving means over ``width`` bins, edges
    repeated."""
    half = width // 2

    def smooth(v):
        padded = np.concatenate([np.repeat(v[:1], half, 0), v, np.repeat(v[-1:], width - 1 - half, 0)])
        return np.stack([padded[i : i + width].mean(0) for i in range(len(v))])

    env = smooth(log_mag)
    sharp = env + contrast * (log_mag - env)
    return sharp - 0.5 * (np.log(smooth(np.exp(2 * sharp))) - np.log(smooth(np.exp(2 * log_mag))))


def test_sharpen_harmonics_matches_numpy_raises_the_harmonics_and_keeps_the_envelope():
    f = np.arange(257)
    envelope = -f / 60.0  # falling with frequency
    # harmonics every 8 bins
    comb = envelope[:, None] + 2.0 * np.cos(2 * np.pi * f / 8)[:, None] + np.zeros((1, 5))
    ours = sharpen_harmonics(torch.from_numpy(comb)[None], 2.5, 16)[0].numpy()
    assert np.abs(ours - numpy_sharpen(comb, 2.5, 16)).max() < 1e-9
    middle = slice(32, 224)
    peaks, valleys = f[middle][f[middle] % 8 == 0], f[middle][f[middle] % 8 == 4]
    assert (ours[peaks, 0] - ours[valleys, 0]).mean() > 2.3 * (comb[peaks, 0] - comb[valleys, 0]).mean()

    def power(v):  # bands of 16 bins
        return np.exp(2 * v)[middle].reshape(-1, 16, 5).sum(1)

    assert np.abs(np.log(power(ours) / power(comb))).max() < 0.15  # the envelope stays within 0.15 nepers
    flat = torch.from_numpy(np.tile(envelope[:, None], (1, 5)))[None]
    # no detail
    assert torch.allclose(sharpen_harmonics(flat, 2.5, 16)[0, 20:-20], flat[0, 20:-20], atol=1e-6)
    assert torch.equal(sharpen_harmonics(torch.from_numpy(comb)[None], 1.0, 16)[0], torch.from_numpy(comb))


def test_code_features_count_codes_and_pairs():
    f = code_features([np.array([0, 1, 1, 3])], 4, bigram_buckets=16)[0]
    assert f[:4].tolist() == [0.25, 0.5, 0, 0.25]
    pairs = {0 * 4 + 1: 1 / 3, 1 * 4 + 1: 1 / 3, 1 * 4 + 3: 1 / 3}
    assert all(abs(float(f[4 + i]) - pairs.get(i, 0.0)) < 1e-6 for i in range(16))


def test_speaker_probe_at_chance_on_codes_without_speaker_and_high_on_codes_with_one():
    rng = np.random.default_rng(0)
    k, speakers = 32, 4

    def corpus(n, own_codes: bool):
        labels = list(rng.integers(0, speakers, n))
        codes = []
        for s in labels:
            if own_codes:  # each speaker favours its own quarter of the codebook
                favoured = rng.integers(s * 8, s * 8 + 8, 30)
                codes.append(np.where(rng.random(30) < 0.5, favoured, rng.integers(0, k, 30)))
            else:
                codes.append(rng.integers(0, k, 30))
        return codes, labels

    for own, lo, hi in ((False, 0.0, 0.4), (True, 0.9, 1.0)):
        train_codes, train_labels = corpus(400, own)
        test_codes, test_labels = corpus(400, own)
        probe = CodeProbe(k, speakers).fit(train_codes, train_labels)
        accuracy = float((probe.predict(test_codes) == torch.tensor(test_labels)).double().mean())
        assert lo <= accuracy <= hi, (own, accuracy)  # chance is 0.25
