"""The quantizer family inside the pipeline: one recipe key picks the layer, the autoencoder's codes are the
layer's flat codes (encode -> decode_indices gives what the forward pass decodes), the evaluation counts them,
the prior models them, and the edge cases of the layers that the pipeline meets (NaN input, dropped levels,
huge code spaces) stay well-formed."""

import json

import pytest
import torch

from vqvae import FSQ, LFQ, VQVAE, ResidualVQ, VectorQuantizer
from vqvae.cli import main
from vqvae.config import ImageModelConfig
from vqvae.errors import VQVAEError
from vqvae.recipes import load_recipe

VARIANTS = {
    "rvq": dict(quantizer="rvq", num_embeddings=8, num_quantizers=3, quantize_dropout=True),
    "rvq-learned": dict(quantizer="rvq", num_embeddings=8, num_quantizers=2, residual_ema=False),
    "fsq": dict(quantizer="fsq", fsq_levels=[4, 3, 2]),
    "lfq": dict(quantizer="lfq", num_embeddings=64),
    "options": dict(cosine=True, codebook_dim=3, rotation_trick=True, heads=2,
                    separate_codebook_per_head=True, num_embeddings=8),
    "sampled": dict(quantizer="vq", sample_codebook_temp=0.5),
}
NUM_CODES = {"rvq": 512, "rvq-learned": 64, "fsq": 24, "lfq": 64, "options": 64, "sampled": 512}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_codes_of_every_variant_decode_to_what_the_forward_pass_decodes(name):
    torch.manual_seed(0)
    model = VQVAE(hidden=16, res_hidden=8, embedding_dim=8, num_res_layers=1, **VARIANTS[name])
    assert model.config.num_codes == model.quantizer.num_codes == NUM_CODES[name]
    x = torch.rand(4, 1, 28, 28)
    model.train()
    res = model(x)  # a training step's codes: in range, or -1 for levels that dropout left out
    assert res.indices.shape == (4, 7, 7) and int(res.indices.max()) < NUM_CODES[name]
    assert set(res.quantizer_parts) == set(model.quantizer.part_names)
    model.eval()
    codes = model.encode(x)
    assert codes.shape == (4, 7, 7) and 0 <= int(codes.min()) and int(codes.max()) < NUM_CODES[name]
    torch.testing.assert_close(model.decode_indices(codes), model(x).reconstruction, rtol=1e-5, atol=1e-6)


def test_the_recipe_key_picks_the_layer():
    recipe = load_recipe("fashion_mnist", ["model.quantizer=rvq", "model.num_quantizers=2",
                                           "model.num_embeddings=16"])
    assert isinstance(VQVAE(recipe.model).quantizer, ResidualVQ) and recipe.model.num_codes == 256
    recipe = load_recipe("fashion_mnist", ["model.quantizer=fsq", "model.fsq_levels=[8,8,8]"])
    assert isinstance(VQVAE(recipe.model).quantizer, FSQ) and recipe.model.num_codes == 512
    assert isinstance(VQVAE(quantizer="lfq", num_embeddings=512).quantizer, LFQ)


@pytest.mark.parametrize("overrides, message", [
    (["model.quantizer=pq"], "model.quantizer must be ema or vq or rvq or fsq or lfq"),
    (["model.quantizer=lfq", "model.num_embeddings=500"], "a power of two"),
    (["model.quantizer=rvq", "model.num_quantizers=8"], "at most 2^20 codes"),
    (["model.quantizer=fsq", "model.kmeans_init=true"], "model.kmeans_init must be false"),
    (["model.fsq_levels=[8,1]"], "model.fsq_levels must be integers >= 2"),
    (["model.fsq_levels=8"], "model.fsq_levels must be a list of integers"),
    (["model.heads=3"], "model.heads must be <= 20 and a divisor of embedding_dim 16"),
    (["model.quantizer=rvq", "model.heads=2"], "model.heads must be 1 with quantizer rvq"),
    (["model.quantizer=rvq", "model.rotation_trick=true"], "rotation_trick must be false with quantizer rvq"),
    (["model.quantizer=fsq", "model.cosine=true"], "model.cosine must be false with quantizer fsq"),
    (["model.num_quantizers=3"], "model.num_quantizers must be 1 with quantizer ema"),
    (["model.quantizer=rvq", "model.num_quantizers=1000000000"], "model.num_quantizers must be <= 20"),
])
def test_bad_quantizer_keys_are_refused_in_one_line(overrides, message):
    with pytest.raises(VQVAEError, match=message.replace("^", r"\^")):
        load_recipe("fashion_mnist", overrides).model.validate()


def test_the_edge_cases_the_pipeline_meets():
    nan = FSQ([3, 3])(torch.tensor([[float("nan"), 0.0]]))
    # NaN reaches the loss, not the counts
    assert torch.isnan(nan.quantized).any() and 0 <= int(nan.indices) < 9
    # 2^40 codes: counted without a (2^40,) vector
    assert LFQ(40)(torch.randn(3, 40)).perplexity.item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="codebook_size"):
        LFQ(64, codebook_size=1 << 63)
    dropped = ResidualVQ(4, 4, 2).eval()(torch.randn(3, 4), levels=1)
    assert dropped.encodings.shape == (6, 4) and dropped.encodings[1::2].sum() == 0  # level 1 left out
    for option in (dict(heads=2), dict(codebook_dim=4), dict(rotation_trick=True)):
        with pytest.raises(ValueError, match=f"take no {next(iter(option))}"):
            ResidualVQ(8, 16, 2, **option)


def test_a_prior_models_the_flat_codes_of_a_residual_stack(small_fmnist, tmp_path, capsys):
    tiny = ["model.hidden=16", "model.res_hidden=8", "model.embedding_dim=8", "model.quantizer=rvq",
            "model.num_embeddings=4", "model.num_quantizers=3", "model.quantize_dropout=true",
            "train.batch_size=16", "train.warmup_steps=2", "train.log_every=2"]
    vq = tmp_path / "vq"
    argv = ["train", "--data", str(small_fmnist), "--out", str(vq), "--steps", "6", "--quiet", *tiny]
    assert main(argv) == 0
    metrics = json.loads((vq / "eval.json").read_text())
    assert metrics["num_embeddings"] == 64 and len(metrics["codes_used_per_index"]) == 3
    assert all(1 <= used <= 4 for used in metrics["codes_used_per_index"])
    header = (vq / "metrics.csv").read_text().splitlines()[0]
    assert "level2_loss" in header and "level0_perplexity" in header
    prior = tmp_path / "prior"
    assert main(["train-prior", str(vq), "--out", str(prior), "--steps", "4", "--quiet", "prior.channels=8",
                 "prior.num_layers=2", "prior.head_channels=8", "train.batch_size=16"]) == 0
    assert json.loads((prior / "config.json").read_text())["prior"]["num_embeddings"] == 64
    capsys.readouterr()
    assert main(["sample", str(prior), "--per-class", "1", "--out", str(tmp_path / "s.png")]) == 0


def test_the_flat_code_limit_matches_the_config_and_the_layer():
    config = ImageModelConfig(quantizer="rvq", num_embeddings=32, num_quantizers=4)
    config.validate()
    assert config.num_codes == ResidualVQ(16, 32, 4).num_codes == 1 << 20


@pytest.mark.parametrize("layer", [ResidualVQ(8, 4, 2), FSQ([4, 4], 8), LFQ(8, 16),
                                   VectorQuantizer(8, 4, heads=2, codebook_dim=3, cosine=True)],
                         ids=["rvq", "fsq", "lfq", "options"])
@pytest.mark.parametrize("training", [True, False])
def test_an_empty_batch_passes_through_every_layer(layer, training):
    layer.train(training)
    x = torch.randn(0, 5, 8, requires_grad=True)
    out = layer(x)
    (out.quantized.sum() + out.loss).backward()
    assert out.quantized.shape == (0, 5, 8) and float(out.loss) == 0 and float(out.perplexity) == 1
    assert layer.lookup_codes(torch.zeros(0, 5, dtype=torch.long)).shape == (0, 5, 8)
