"""What a run shows while it trains (TensorBoard images, sounds and the codebook's projector, read back with
TensorBoard's own event reader), the examples they show (one of each class or speaker first, the same at
every step), that showing them changes nothing in the run, and the report's paths and curves."""

import io
import json
import os
import shutil
import time

import numpy as np
import pytest
import torch
from PIL import Image

from vqvae.recipes import load_recipe
from vqvae.train import media as media_module
from vqvae.train.media import MediaClock

from .test_cli import PRIOR_TINY, TINY
from .test_train_loop import AUDIO_TINY, PRIOR_AUDIO_TINY

pytestmark = pytest.mark.slow

CLASSES = ["ankle", "bag", "coat", "dress"]  # class c: images of level 30 + 60 c
SIZE = 28


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0, "audio": 0, "scalars": 0})
    acc.Reload()
    return acc


def _pixels(event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)))


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    """An image folder sorted by class, 20 images per class, each class at its own grey level."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(20):
            level = 30 + 60 * c + rng.integers(-5, 6, (SIZE, SIZE))
            Image.fromarray(level.astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def every_step(monkeypatch_module):
    """Media at every step: no least interval, and no share of the time kept for training."""
    monkeypatch_module.setattr(media_module, "MEDIA_SHARE", 1e9)
    return ["train.media_every=1e-9"]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def image_runs(class_folder, every_step, tmp_path_factory):
    from vqvae.train import train_image_and_evaluate, train_image_prior_and_evaluate

    root = tmp_path_factory.mktemp("image-runs")
    vq = load_recipe("fashion_mnist", [f"train.data={class_folder}", *TINY, "train.steps=6", *every_step],
                     kind="vqvae")
    train_image_and_evaluate(vq, root / "vq", progress=False)
    prior = load_recipe("fashion_mnist_prior", ["train.steps=3", *PRIOR_TINY, *every_step], kind="prior")
    train_image_prior_and_evaluate(prior, root / "vq", root / "prior", progress=False)
    return root


@pytest.fixture(scope="module")
def audio_runs(tone_corpus, every_step, tmp_path_factory):
    from vqvae.train import train_audio_and_evaluate, train_audio_prior_and_evaluate

    root = tmp_path_factory.mktemp("audio-runs")
    for name, extra in (("vq", []), ("plain", ["audio.use_codes=false"])):
        recipe = load_recipe("speech", [f"train.data={tone_corpus}", "train.steps=3", *AUDIO_TINY,
                                        *every_step,
                                        "train.eval_batches=1", *extra], kind="audio")
        train_audio_and_evaluate(recipe, root / name, progress=False)
    prior = load_recipe("speech_prior", ["train.steps=2", *PRIOR_AUDIO_TINY, *every_step], kind="audio_prior")
    train_audio_prior_and_evaluate(prior, root / "vq", root / "prior", progress=False)
    return root


# -- the examples shown ------------------------------------------------------------------------------------
def test_a_class_sorted_folder_shows_every_class_first_and_the_same_images_at_every_step(image_runs):
    shots = _events(image_runs / "vq").Images("media/reconstructions")
    assert [s.step for s in shots] == list(range(1, 7))  # at every step (as set here), the last one included
    tops = []
    for shot in shots:
        grid = _pixels(shot)
        n = (grid.shape[1] - 2) // (SIZE + 2)  # 8 test images (2 of each class), above their reconstructions
        assert n == 8 and grid.shape[0] == 2 * (SIZE + 2) + 2
        tops.append(grid[2 : 2 + SIZE])
        levels = [grid[2 : 2 + SIZE, 2 + k * (SIZE + 2) : 2 + k * (SIZE + 2) + SIZE].mean() for k in range(n)]
        # one of each class first, in class order, then round-robin
        assert [round((v - 30) / 60) for v in levels] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert all(np.array_equal(tops[0], t) for t in tops[1:])  # the same originals at every step
    png = np.asarray(Image.open(image_runs / "vq" / "reconstructions.png"))
    assert np.array_equal(png[2 : 2 + SIZE], tops[0][..., 0])  # ... and in reconstructions.png (TB: RGB)


def test_conversion_takes_one_utterance_of_each_speaker_first(audio_runs, tone_corpus, tmp_path):
    from vqvae.data.audio import load_speech
    from vqvae.evaluate.audio import evaluate_conversion
    from vqvae.runs import load_run

    model, _ = load_run(audio_runs / "vq", "audio", "cpu")
    train, test = (load_speech(tone_corpus, s, 8000) for s in ("train", "test"))
    evaluate_conversion(model, train, test, pairs=3, seconds=0.1, wav_dir=tmp_path, one_stream=0)
    inputs = sorted(p.name for p in tmp_path.glob("*_input.wav"))
    assert inputs == ["00_spk0_input.wav", "01_spk1_input.wav", "02_spk2_input.wav"]


# -- what each kind of run logs ----------------------------------------------------------------------------
def test_image_vqvae_logs_reconstructions_and_the_codebook_in_the_projector(image_runs):
    tb = image_runs / "vq" / "tb"
    config = (tb / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "codebook:00006"' in config
    meta = (tb / "00006" / "codebook" / "metadata.tsv").read_text().splitlines()
    vectors = np.loadtxt(tb / "00006" / "codebook" / "tensors.tsv", delimiter="\t")
    counts = np.load(image_runs / "vq" / "codebook.npz")
    assert meta[0] == "code\ttest uses" and len(meta) == 33 and vectors.shape == (32, 8)
    assert [int(r.split("\t")[1]) for r in meta[1:]] == counts["counts"].tolist()
    assert np.allclose(vectors, counts["codebook"], atol=1e-5)
    eval_json = json.loads((image_runs / "vq" / "eval.json").read_text())
    assert 0 < eval_json["media_seconds"] < eval_json["train_seconds"] + 60


def test_image_prior_logs_samples_in_rows_named_by_class(image_runs):
    shots = _events(image_runs / "prior").Images("media/samples")
    assert [s.step for s in shots] == [1, 2, 3]
    grid = _pixels(shots[-1])
    plain = 8 * (SIZE + 2) + 2  # 8 samples per row ...
    assert grid.shape[0] == 4 * (SIZE + 2) + 2 and grid.shape[1] > plain  # ... 4 classes, names on the left
    margin = grid[:, : grid.shape[1] - plain]
    rows = [margin[2 + r * (SIZE + 2) : 2 + r * (SIZE + 2) + SIZE] for r in range(4)]
    assert all((r > 128).any() for r in rows)  # a name written beside every row
    assert not np.array_equal(rows[0], rows[1])
    png = np.asarray(Image.open(image_runs / "prior" / "samples.png"))
    assert png.shape[0] == 4 * (SIZE + 2) + 2 and png.shape[1] > 10 * (SIZE + 2) + 2


def test_audio_vqvae_logs_input_reconstruction_conversion_and_spectrograms(audio_runs):
    acc = _events(audio_runs / "vq")
    for k, (me, other) in enumerate((("spk0", "spk1"), ("spk1", "spk2"), ("spk2", "spk0"))):
        for role in ("input", "reconstruction", f"as_{other}"):
            sound = acc.Audio(f"media/{k}_{me}/{role}")[-1]
            assert sound.sample_rate == 8000 and sound.step == 3
            assert 0.3 * 8000 <= sound.length_frames <= 0.4 * 8000  # the whole 0.4 s take, in codes
        picture = _pixels(acc.Images(f"media/{k}_{me}/spectrograms")[-1])
        assert picture.ndim == 3 and picture.shape[1] >= 256
        assert (picture == 255).all(axis=(1, 2)).sum() == 2 * 2  # three spectrograms, two white lines
    assert [s.step for s in acc.Audio("media/0_spk0/input")] == [1, 2, 3]


def test_a_wavenet_without_codes_logs_samples_and_no_code_figures(audio_runs):
    acc = _events(audio_runs / "plain")
    assert acc.Audio("media/0_spk0/sample")[-1].length_frames > 0
    header = (audio_runs / "plain" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "bits_per_sample" in header and not {"perplexity", "vq_loss", "codes_used"} & set(header)


def test_audio_prior_logs_samples_of_each_speaker(audio_runs):
    acc = _events(audio_runs / "prior")
    for speaker in ("spk0", "spk1", "spk2"):
        for j in (0, 1):
            assert acc.Audio(f"media/{speaker}/{j}")[-1].length_frames > 0
        assert _pixels(acc.Images(f"media/{speaker}/spectrograms")[-1]).ndim == 3


# -- media change nothing in the run -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["image", "audio"])
def test_media_change_nothing_in_the_trained_weights(kind, class_folder, tone_corpus, every_step, tmp_path):
    from vqvae.train import train_audio_and_evaluate, train_image_and_evaluate

    weights = {}
    for media in ("true", "false"):
        out = tmp_path / media
        if kind == "image":
            recipe = load_recipe("fashion_mnist", [f"train.data={class_folder}", *TINY, "train.steps=5",
                                                   *every_step, f"train.log_media={media}"], kind="vqvae")
            train_image_and_evaluate(recipe, out, progress=False)
        else:
            recipe = load_recipe("speech", [f"train.data={tone_corpus}", "train.steps=4", *AUDIO_TINY,
                                            *every_step,
                                            "train.eval_batches=1", f"train.log_media={media}"], kind="audio")
            train_audio_and_evaluate(recipe, out, progress=False)
        weights[media] = (out / "model.safetensors").read_bytes()
        assert ("media_seconds" in json.loads((out / "eval.json").read_text())) == (media == "true")
    assert weights["true"] == weights["false"]
    assert not list((tmp_path / "false" / "tb").glob("*/codebook"))  # no projector without media


def test_the_clock_keeps_media_to_their_share_and_survives_a_failure(capsys, monkeypatch):
    monkeypatch.setattr(media_module, "MEDIA_SHARE", 0.02)
    model = torch.nn.Linear(2, 2)
    calls = []

    def slow():
        calls.append(model.training)
        torch.rand(3)  # draws from the global generator: put back afterwards
        time.sleep(0.05)

    clock = MediaClock(slow, model, every=1e-6)
    assert clock.due()
    before = torch.get_rng_state()
    clock.log(step=1)
    assert calls == [False] and model.training and torch.equal(torch.get_rng_state(), before)
    assert clock.next - time.perf_counter() > 0.9 * 0.05 / media_module.MEDIA_SHARE  # waits 50x its cost
    assert not clock.due() and clock.seconds >= 0.05
    clock.log(step=1)
    assert len(calls) == 1  # once per step

    def broken():
        raise RuntimeError("no display\nmore")

    clock = MediaClock(broken, model, every=1e-6)
    clock.log(step=2)
    assert model.training and clock.media is None and not clock.due()
    err = capsys.readouterr().err
    assert "TensorBoard media are off for the rest of the run (RuntimeError: no display)" in err
    assert not MediaClock().due()


# -- the report --------------------------------------------------------------------------------------------
def test_the_report_names_paths_from_where_it_lies(image_runs, audio_runs, tmp_path):
    from vqvae.report import build_report

    out = tmp_path / "reports" / "week1" / "r.html"
    out.parent.mkdir(parents=True)
    build_report([image_runs / "prior", audio_runs / "plain"], out, media=[image_runs / "vq"])
    page = out.read_text()
    for absolute in (str(image_runs), str(audio_runs), str(tmp_path), "/tmp/"):
        assert absolute not in page
    assert os.path.relpath(image_runs / "prior", out.parent) in page  # the run directory, from the report
    assert f"the codes of {os.path.relpath(image_runs / 'vq', out.parent)}" in page
    # the WaveNet without codes draws its loss, not the code figures it never had ...
    assert "bits_per_sample against steps" in page
    assert "perplexity against" not in page and "vq_loss against" not in page
    # ... even where its metrics.csv has them (0 or not): the report goes by its config
    old = tmp_path / "old"
    shutil.copytree(audio_runs / "plain", old)
    rows = (old / "metrics.csv").read_text().splitlines()
    (old / "metrics.csv").write_text("\n".join([rows[0] + ",perplexity,vq_loss"]
                                               + [r + ",3.5,0.25" for r in rows[1:]]) + "\n")
    page = build_report([old], tmp_path / "old.html").read_text()
    curves = page.split("training curves")[1].split("metrics (eval.json)")[0]
    assert "bits_per_sample against steps" in curves
    assert "perplexity" not in curves and "vq_loss" not in curves


def test_overwrite_removes_the_projector_files_a_run_wrote_and_nothing_else(tmp_path):
    from vqvae.runs import prepare_out_dir

    tb = tmp_path / "run" / "tb"
    (tb / "00006" / "codebook").mkdir(parents=True)
    (tb / "00006" / "codebook" / "tensors.tsv").write_text("1\t2\n")
    (tb / "00010" / "codebook").mkdir(parents=True)
    (tb / "00010" / "mine").mkdir()
    (tb / "00012" / "codebook").mkdir(parents=True)  # a folder of the user's, named alike: kept
    (tb / "00012" / "codebook" / "notes.txt").write_text("mine")
    for name in ("projector_config.pbtxt", "events.out.tfevents.1.vm.1.0", "notes.txt"):
        (tb / name).write_text("x")
    prepare_out_dir(tmp_path / "run", overwrite=True)
    left = sorted(str(p.relative_to(tb)) for p in tb.rglob("*"))
    assert left == ["00010", "00010/mine", "00012", "00012/codebook", "00012/codebook/notes.txt", "notes.txt"]
