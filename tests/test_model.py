import pytest
import torch

from vqvae.errors import VQVAEError
from vqvae.models import VQVAE


@pytest.mark.parametrize(
    "kw, latent",
    [
        (dict(), 7),
        (dict(downsample=8), 4),  # 28 is padded to 32
        (dict(in_channels=3, image_size=32, downsample=8), 4),
        (dict(quantizer="vq", image_size=16, downsample=2), 8),
    ],
)
def test_shapes_and_decode_of_encode_equals_forward(kw, latent, device):
    torch.manual_seed(0)
    m = VQVAE(hidden=16, res_hidden=8, embedding_dim=4, num_embeddings=32, **kw).eval().to(device)
    c, s = m.config.in_channels, m.config.image_size
    x = torch.rand(3, c, s, s).to(device)
    out = m(x)
    assert out.reconstruction.device.type == out.indices.device.type == device.type
    assert out.reconstruction.shape == x.shape
    assert out.indices.shape == (3, latent, latent) and out.indices.dtype == torch.int64
    idx = m.encode(x)
    assert torch.equal(idx, out.indices)
    torch.testing.assert_close(m.decode_indices(idx), out.reconstruction)


def test_loss_is_reconstruction_plus_vq_and_training_updates_only_in_train_mode(device):
    torch.manual_seed(0)
    m = VQVAE(hidden=16, res_hidden=8, embedding_dim=4, num_embeddings=32).to(device)
    x = torch.rand(2, 1, 28, 28).to(device)
    out = m(x)
    torch.testing.assert_close(out.loss, out.recon_loss + out.vq_loss)
    torch.testing.assert_close(out.vq_loss, 0.25 * out.commitment_loss)
    before = m.quantizer.codebook.clone()
    m.eval()
    m(x)
    m.encode(x)
    assert torch.equal(before, m.quantizer.codebook)
    m.train()
    m.encode(x)  # encode never updates the codebook, even in train mode
    assert torch.equal(before, m.quantizer.codebook)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    m = VQVAE(hidden=16, res_hidden=8, embedding_dim=4, num_embeddings=32, quantizer="vq").eval()
    m.save_pretrained(tmp_path)
    m2 = VQVAE.from_pretrained(tmp_path).eval()
    assert m2.config == m.config
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(m(x).reconstruction, m2(x).reconstruction)


def test_bad_inputs():
    m = VQVAE(hidden=16, res_hidden=8, embedding_dim=4, num_embeddings=32)
    with pytest.raises(VQVAEError, match=r"expected images of shape \(B, 1, 28, 28\), got \(2, 3, 28, 28\)"):
        m(torch.rand(2, 3, 28, 28))
    with pytest.raises(VQVAEError, match=r"expected indices of shape \(B, 7, 7\)"):
        m.decode_indices(torch.zeros(1, 6, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="indices must lie in"):
        m.decode_indices(torch.full((1, 7, 7), 32))
    with pytest.raises(VQVAEError, match="model.downsample"):
        VQVAE(downsample=3)


def test_logistic_likelihood_model_and_its_bits_per_dim():
    from vqvae.data import ImageDataset
    from vqvae.evaluate import evaluate_image_model

    torch.manual_seed(0)
    m = VQVAE(hidden=16, res_hidden=8, embedding_dim=4, num_embeddings=32, recon_loss="logistic").eval()
    images = torch.randint(256, (6, 1, 28, 28), dtype=torch.uint8)
    x = images.float() / 255
    out = m(x)
    assert out.reconstruction.shape == x.shape
    z_q = m.quantizer.lookup(out.indices).permute(0, 3, 1, 2)
    lp = m.pixel_log_prob(x, z_q)
    torch.testing.assert_close(out.recon_loss, -lp.mean())  # the training loss is the NLL in nats/dim
    metrics = evaluate_image_model(m.eval(),
                                   ImageDataset(images, torch.zeros(6, dtype=torch.long), ["a"], "toy"))
    with torch.no_grad():
        z_q_eval = m.quantizer.lookup(m.encode(x)).permute(0, 3, 1, 2)
        expected_nll = -float(m.pixel_log_prob(x, z_q_eval).double().sum())
    assert metrics["nll_bits_per_dim"] == pytest.approx(expected_nll / (6 * 784 * 0.6931471805599453))
    # the uniform prior adds log2(K) bits per latent: 49 * 5 bits over 784 pixels
    gap = metrics["elbo_bits_per_dim_uniform_prior"] - metrics["nll_bits_per_dim"]
    assert gap == pytest.approx(49 * 5 / 784)
    with pytest.raises(VQVAEError, match="no pixel likelihood"):
        VQVAE(hidden=16, res_hidden=8, embedding_dim=4, num_embeddings=32).pixel_log_prob(x, z_q)


# -- several codes at each latent position (the paper's 8x8x10 CIFAR-10 layout) ------------------------------
def test_several_codes_per_position_share_one_codebook():
    from vqvae.config import ImageModelConfig
    from vqvae.models import VQVAE

    config = ImageModelConfig(in_channels=3, image_size=16, hidden=16, res_hidden=8, num_res_layers=1,
                              embedding_dim=4, num_embeddings=8, latents_per_position=3)
    torch.manual_seed(0)
    model = VQVAE(config).eval()
    x = torch.rand(2, 3, 16, 16)
    assert model.code_shape == (3, 4, 4)
    z = model.encode_continuous(x)  # (B, G*D, h, w), D innermost
    assert z.shape == (2, 12, 4, 4)
    vectors = z.unflatten(1, (3, 4)).permute(0, 1, 3, 4, 2)  # (B, G, h, w, D)
    nearest = torch.cdist(vectors.reshape(-1, 4), model.quantizer.codebook).argmin(1).reshape(2, 3, 4, 4)
    idx = model.encode(x)
    assert torch.equal(idx, nearest)  # each of the G vectors quantised against the one codebook
    z_q = model.embed(idx)
    assert torch.equal(z_q.unflatten(1, (3, 4)).permute(0, 1, 3, 4, 2), model.quantizer.codebook[idx])
    with torch.no_grad():
        out = model(x)
    assert torch.equal(out.indices, idx)
    torch.testing.assert_close(model.decode_indices(idx), out.reconstruction)
    with pytest.raises(VQVAEError, match=r"expected indices of shape \(B, 3, 4, 4\)"):
        model.decode_indices(idx[:, 0])
