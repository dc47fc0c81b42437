import pytest

from vqvae.errors import VQVAEError
from vqvae.recipes import builtin_recipes, load_recipe, recipe_from_dict


def test_builtin_recipe_keeps_the_reference_bottleneck():
    assert "fashion_mnist" in builtin_recipes()
    r = load_recipe(None)
    assert (r.model.image_size, r.model.downsample, r.model.num_embeddings) == (28, 4, 512)
    assert r.model.latent_size == 7
    assert r.train.max_seconds == 120


def test_overrides_parse_yaml_values_and_exponents_without_a_dot():
    r = load_recipe("fashion_mnist", ["train.lr=3e-4", "model.hidden=32", "model.kmeans_init=false"])
    assert r.train.lr == 3e-4 and r.model.hidden == 32 and r.model.kmeans_init is False


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.hiden=3"], "unknown config key.*hiden"),
        (["model.hidden=abc"], "model.hidden must be an integer"),
        (["model.hidden=1.5"], "model.hidden must be an integer"),
        (["model.kmeans_init=3"], "true or false"),
        (["model.quantizer=foo"], "model.quantizer"),
        (["model.downsample=6"], "power of two"),
        (["train.lr=-1"], "train.lr must be > 0"),
        (["train.max_seconds=0"], "no end"),
        (["optim.lr=1"], "model.<key> or train.<key>"),
        (["lr"], "section.key=value"),
    ],
)
def test_bad_values_are_rejected_by_name(overrides, message):
    with pytest.raises(VQVAEError, match=message):
        load_recipe("fashion_mnist", overrides)


def test_unknown_sections_and_missing_recipe(tmp_path):
    with pytest.raises(VQVAEError, match="unknown config section.*optim"):
        recipe_from_dict({"optim": {}})
    with pytest.raises(VQVAEError, match="no recipe named"):
        load_recipe("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(VQVAEError, match="not valid YAML"):
        load_recipe(bad)


def test_speech_conversion_recipe_is_the_speech_recipe_with_a_narrower_bottleneck():
    # the conversion figures of docs/audio.md came from the `speech` recipe with exactly these overrides
    conv = load_recipe("speech_conversion", kind="audio")
    same = load_recipe("speech", ["audio.num_downsamples=8", "audio.num_embeddings=64",
                                  "audio.encoder_norm=instance", "train.lr=4e-3", "train.max_seconds=3000"],
                       kind="audio")
    assert conv == same
    assert conv.audio.hop == 256 and "speech_conversion" in builtin_recipes()


def test_audio_kmeans_init_needs_codes():
    with pytest.raises(VQVAEError, match="audio.kmeans_init"):
        load_recipe("speech", ["audio.kmeans_init=true", "audio.use_codes=false"], kind="audio")
    assert load_recipe("speech", ["audio.kmeans_init=true"], kind="audio").audio.kmeans_init
