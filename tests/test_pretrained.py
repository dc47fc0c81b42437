"""Saving and loading every model (``Pretrained``), the quantizer an autoencoder's config asks for
(``build_quantizer``)."""

import dataclasses
import hashlib
import json

import pytest
import torch

from vqvae import checkpoint
from vqvae.config import AudioModelConfig, AudioPriorConfig, ImageModelConfig
from vqvae.errors import VQVAEError
from vqvae.judges.image import ImageClassifier
from vqvae.models import VQVAE, AudioVQVAE
from vqvae.priors import GatedPixelCNN, ImagePrior, WaveNetPrior
from vqvae.quantize import VectorQuantizer, VectorQuantizerEMA, build_quantizer

AUDIO_TINY = dict(num_speakers=3, num_downsamples=2, channels=8, skip_channels=8, local_channels=8, hidden=8,
                  embedding_dim=4, num_embeddings=8, max_dilation=4, dilation_cycles=1, sample_rate=8000)

BUILDERS = {
    "vqvae": lambda: VQVAE(hidden=8, res_hidden=4, num_res_layers=1, embedding_dim=4, num_embeddings=16),
    "audio": lambda: AudioVQVAE(AudioModelConfig(**AUDIO_TINY)),
    "prior": lambda: GatedPixelCNN(num_embeddings=16, num_classes=3, channels=8, num_layers=2,
                                   head_channels=16),
    "audio_prior": lambda: WaveNetPrior(AudioPriorConfig(num_embeddings=8, num_speakers=2, channels=8,
                                                         skip_channels=8, max_dilation=4, dilation_cycles=1)),
    "classifier": lambda: ImageClassifier(in_channels=1, num_classes=3, image_size=28),
}
KINDS = list(BUILDERS)


def built(kind: str) -> torch.nn.Module:
    torch.manual_seed(KINDS.index(kind))
    model = BUILDERS[kind]()
    with torch.no_grad():  # every weight and buffer away from its initial value (zero EMAs and embeddings)
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.rand_like(t) * 0.1 + 0.01)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Every kind saved in training mode: {kind: (model, directory)}."""
    out = {}
    for kind in KINDS:
        model = built(kind).train()
        directory = tmp_path_factory.mktemp(kind)
        model.save_pretrained(directory, {"note": kind})
        out[kind] = (model, directory)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_round_trip(saved, kind):
    model, directory = saved[kind]
    cls = type(model)
    assert cls.checkpoint_kind == kind
    config = json.loads((directory / "config.json").read_text())
    assert config["kind"] == kind and config["note"] == kind
    assert config[cls.config_section] == dataclasses.asdict(model.config)
    loaded = cls.from_pretrained(directory)
    assert type(loaded) is cls and loaded.config == model.config
    assert loaded.training is False and not any(m.training for m in loaded.modules())  # saved in train mode
    assert model.training  # the saved model itself is untouched
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert loaded.weights_sha256 == hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    assert model.weights_sha256 is None  # built in memory: no file to fingerprint


@pytest.mark.parametrize("kind", KINDS)
def test_map_location(saved, kind):
    model, directory = saved[kind]
    for where in ("cpu", torch.device("cpu")):
        loaded = type(model).from_pretrained(directory, map_location=where)
        assert all(t.device.type == "cpu" for t in loaded.state_dict().values())
        assert loaded.training is False


@pytest.mark.parametrize("kind", KINDS)
def test_loading_another_kind_is_refused(saved, kind):
    cls = type(saved[kind][0])
    for other in KINDS:
        if other == kind:
            continue
        expected = f"records the kind '{other}': expected a checkpoint of kind '{kind}'"
        with pytest.raises(VQVAEError, match=expected):
            cls.from_pretrained(saved[other][1])


def test_a_changed_weights_file_changes_the_fingerprint(saved, tmp_path):
    model, directory = saved["prior"]
    first = GatedPixelCNN.from_pretrained(directory).weights_sha256
    with torch.no_grad():
        model.embed.weight[0, 0] += 1
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        model.embed.weight[0, 0] -= 1
    assert GatedPixelCNN.from_pretrained(tmp_path).weights_sha256 != first


# -- build_quantizer -----------------------------------------------------------------------------------------
QUANTIZER_FIELDS = dict(embedding_dim=6, num_embeddings=20, commitment_cost=0.4, decay=0.9, epsilon=1e-3,
                        restart_threshold=0.5)


@pytest.mark.parametrize("config_cls", [ImageModelConfig, AudioModelConfig])
def test_build_quantizer_follows_the_config(config_cls):
    ema = build_quantizer(config_cls(quantizer="ema", **QUANTIZER_FIELDS), dim=1)
    assert type(ema) is VectorQuantizerEMA
    assert ema.decay == 0.9 and ema.epsilon == 1e-3
    vq = build_quantizer(config_cls(quantizer="vq", **QUANTIZER_FIELDS), dim=1)
    assert type(vq) is VectorQuantizer
    for q in (ema, vq):
        assert q.embedding_dim == 6 and q.num_embeddings == 20 and q.codebook.shape == (20, 6)
        assert q.commitment_cost == 0.4 and q.restart_threshold == 0.5 and q.dim == 1
    # k-means is seeded by training from several batches, never by the layer's own first batch
    wants_kmeans = config_cls(quantizer="vq", kmeans_init=True, **QUANTIZER_FIELDS)
    assert build_quantizer(wants_kmeans).kmeans_init is False
    assert build_quantizer(config_cls(**QUANTIZER_FIELDS), dim=-1).dim == -1


def test_build_quantizer_quantises_along_dim_one():
    q = build_quantizer(ImageModelConfig(quantizer="vq", embedding_dim=3, num_embeddings=5), dim=1).eval()
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = q(x)
    vectors = x.permute(0, 2, 3, 1).reshape(-1, 3)
    nearest = torch.cdist(vectors, q.codebook.detach()).argmin(1).reshape(2, 4, 4)
    assert torch.equal(out.indices, nearest)
    assert torch.equal(out.quantized.detach(), q.codebook.detach()[nearest].permute(0, 3, 1, 2))


@pytest.mark.parametrize("name, cls", [("ema", VectorQuantizerEMA), ("vq", VectorQuantizer)])
def test_the_autoencoders_use_the_quantizer_their_config_names(name, cls):
    image = VQVAE(hidden=8, res_hidden=4, num_res_layers=1, embedding_dim=4, num_embeddings=16,
                  quantizer=name, commitment_cost=0.3)
    assert type(image.quantizer) is cls and image.quantizer.commitment_cost == 0.3
    assert image.quantizer.num_embeddings == 16 and image.quantizer.embedding_dim == 4
    audio = AudioVQVAE(AudioModelConfig(**{**AUDIO_TINY, "quantizer": name}))
    assert type(audio.quantizer) is cls and audio.quantizer.num_embeddings == 8
    no_codes = AudioModelConfig(**{**AUDIO_TINY, "quantizer": name, "use_codes": False})
    assert AudioVQVAE(no_codes).quantizer is None


def test_classifier_is_built_from_its_config_and_refuses_bad_configs(tmp_path):
    from vqvae.errors import VQVAEError
    from vqvae.judges.image import ImageClassifier

    c = ImageClassifier(in_channels=3, num_classes=5, image_size=32)
    assert (c.config.in_channels, c.config.num_classes, c.config.image_size) == (3, 5, 32)
    assert c(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    c.save_pretrained(tmp_path / "clf")
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    weights = checkpoint.load_model_state(tmp_path / "clf")[0]
    for bad, says in (({"in_channels": "1"}, "classifier in_channels must be an integer"),
                      ({"num_classes": 0}, "classifier num_classes must be"),
                      ({"image_size": -4}, "classifier image_size must be"), ({"colour": True}, "colour")):
        # a whole checkpoint (its manifest lists the edited config): the config itself is what is checked
        checkpoint.save_model(tmp_path / "clf", {**config, "model": {**config["model"], **bad}}, weights)
        with pytest.raises(VQVAEError, match=says):
            ImageClassifier.from_pretrained(tmp_path / "clf")


def test_every_model_class_registers_its_checkpoint_kind():
    from vqvae.models.pretrained import Pretrained, model_class

    kinds = {"vqvae": VQVAE, "prior": ImagePrior, "audio": AudioVQVAE, "audio_prior": WaveNetPrior,
             "classifier": ImageClassifier}
    assert {kind: model_class(kind) for kind in kinds} == kinds
    with pytest.raises(VQVAEError, match="no model class is registered for checkpoint kind 'nope'"):
        model_class("nope")
    with pytest.raises(TypeError, match="two model classes for the checkpoint kind 'vqvae'"):
        type("Impostor", (Pretrained,), {"checkpoint_kind": "vqvae"})
