"""``vqvae report``: one self-contained HTML page per run (or several side by side), a run still training
renders what exists, and bad input is one line with exit 2."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from vqvae.cli import main
from vqvae.data.audio import write_wav
from vqvae.errors import VQVAEError
from vqvae.report import build_report, read_metrics

TINY = ["model.hidden=16", "model.res_hidden=8", "model.embedding_dim=8", "model.num_embeddings=32",
        "train.batch_size=16", "train.log_every=2", "train.warmup_steps=2", "train.eval_batches=2"]


@pytest.fixture(scope="module")
def runs(small_fmnist, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    for name, k in (("a", 32), ("b", 16)):
        assert main(["train", "--data", str(small_fmnist), "--out", str(root / name), "--steps", "6",
                     "--quiet", *TINY, f"model.num_embeddings={k}"]) == 0
    return root


def _srcs(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', page)


@pytest.mark.slow
def test_one_run_is_one_self_contained_page(runs, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(runs / "a"), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    page = out.read_text()
    # every image and sound inline: no request anywhere
    assert all(s.startswith("data:") for s in _srcs(page))
    assert "<script" not in page and "http://" not in page and "https://" not in page
    for part in ("training curves", "metrics (eval.json)", "codebook", "above their reconstructions",
                 "model.num_embeddings", "<details>", "psnr"):
        assert part in page, part
    assert len(re.findall(r"<img ", page)) >= 2 * 5 + 2 + 1  # curves against steps and time, usage, grid
    # said, not drawn
    assert "<p>0 all along: skipped.</p>" in page and 'alt="skipped against steps"' not in page


@pytest.mark.slow
def test_two_runs_side_by_side_highlight_what_differs(runs, tmp_path):
    page = build_report([runs / "a", runs / "b"], tmp_path / "r.html").read_text()
    assert re.search(r'<tr class="diff"><td class=\'key\'>model.num_embeddings</td>'
                     r'<td>32</td><td>16</td>', page)
    assert not re.search(r'<tr class="diff"><td class=\'key\'>model.hidden<', page)


@pytest.mark.slow
def test_a_run_still_training_renders_what_exists(runs, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    rows = (runs / "a" / "metrics.csv").read_text().splitlines(keepends=True)
    (partial / "metrics.csv").write_text("".join(rows[:3]) + rows[3][:9])  # the last row half written
    assert len(read_metrics(partial / "metrics.csv")["step"]) == 2
    page = build_report([partial], tmp_path / "p.html").read_text()
    assert "No eval.json yet" in page and "training curves" in page


def test_bad_input_is_one_line_and_nothing_is_overwritten(runs, tmp_path, capfd):
    not_a_run = tmp_path / "mine"
    not_a_run.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "metrics.csv").write_text("step,loss\n1,0.5\n2,zero\n3,0.1\n")
    existing = tmp_path / "old.html"
    existing.write_text("mine")
    for argv, says in (([str(not_a_run)], "is not a run directory"), ([str(corrupt)], "line 3"),
                       ([str(tmp_path / "nowhere")], "not found")):
        assert main(["report", *argv, "--out", str(tmp_path / "x.html")]) == 2
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
    with pytest.raises(VQVAEError, match="already exists"):
        build_report([not_a_run], existing)
    assert existing.read_text() == "mine"
    with pytest.raises(VQVAEError, match="must end in .html"):
        build_report([not_a_run], tmp_path / "r.pdf")
    media = tmp_path / "media"
    media.mkdir()
    for name, text, says in (("verdicts.json", "[1, 2]", "must map file names"),
                             ("verdicts.json", "{", "is not valid JSON"),
                             ("score.json", "[]", "is not a score.json"),
                             ("score.json", '{"classifier_test_accuracy": "high", "samples": {}}',
                              "is not a score.json")):
        (media / name).write_text(text)
        assert main(["report", str(runs / "a"), "--media", str(media),
                     "--out", str(tmp_path / "x.html")]) == 2
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
        (media / name).unlink()
    assert not (tmp_path / "x.html").exists()


def test_a_new_run_with_overwrite_removes_the_old_scores(runs, small_fmnist, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "b", run)
    (run / "score.json").write_text("{}")  # scores of the samples of the run being replaced
    (run / "mine.txt").write_text("mine")
    assert main(["train", "--data", str(small_fmnist), "--out", str(run), "--steps", "1", "--quiet",
                 "--overwrite", *TINY]) == 0
    assert not (run / "score.json").exists() and (run / "mine.txt").read_text() == "mine"


def test_many_wavs_are_picked_whole_takes_one_speaker_at_a_time(tmp_path):
    """150 conversions (450 files): a report plays whole triples (input, reconstruction, conversion), every
    speaker before any speaker twice, a digit each speaker has not had yet first; the verdicts are marked
    against what each file should be heard as."""
    from vqvae.report.sections import MAX_WAVS, media_dir_section, pick_wavs

    speakers, wavs, verdicts = ["ann", "bob", "cy"], [], {}
    for n in range(150):  # each speaker's 50 takes in a block, each digit in runs of 10: a slice would fail
        s, t, k = speakers[n // 50], speakers[(n // 50 + 1) % 3], str(n // 10 % 5)
        for role, who in (("input", s), ("reconstructed", s), (f"as_{t}", t)):
            name = f"{n:03d}_{s}_{role}.wav"
            wavs.append(tmp_path / name)
            verdicts[name] = {"speaker": who, "class": k, "pitch_hz": 120.0,
                              "expected": {"speaker": who, "class": k}}
    groups = pick_wavs(sorted(wavs), verdicts)
    assert sum(map(len, groups)) <= MAX_WAVS and len(groups) == MAX_WAVS // 3
    for g in groups:  # whole takes, in the order input, reconstruction, conversion
        assert [p.name.split("_", 2)[2] for p in g][:2] == ["input.wav", "reconstructed.wav"] and len(g) == 3
        assert len({p.name[:3] for p in g}) == 1
    takes = [(verdicts[g[0].name]["expected"]["speaker"], verdicts[g[0].name]["class"]) for g in groups]
    turns = [sum(who == s for who, _ in takes) for s in speakers]
    assert max(turns) - min(turns) <= 1  # each speaker in turn
    for s in speakers:
        digits = [k for who, k in takes if who == s]
        assert len(set(digits)) == len(digits)  # no digit twice for a speaker while others are left
    # without verdicts.json: the speaker is the word after the number, the class the rest of the name
    samples = [tmp_path / f"{n:03d}_{s}_says_{n // 5 % 5}.wav"
               for n, s in enumerate(["ann"] * 25 + ["bob"] * 25)]
    picked = [g[0].name for g in pick_wavs(samples, {}, limit=6)]
    assert picked == ["000_ann_says_0.wav", "005_ann_says_1.wav", "010_ann_says_2.wav",
                      "025_bob_says_0.wav", "030_bob_says_1.wav", "035_bob_says_2.wav"], picked
    few = sorted(wavs)[:6]  # what fits is all shown, input first
    assert pick_wavs(few, verdicts) == [[few[1], few[2], few[0]], [few[4], few[5], few[3]]]

    folder = tmp_path / "conv"
    for name, (f0, _heard_as) in {"00_ann_input.wav": (120, "ann"), "00_ann_reconstructed.wav": (240, "ann"),
                                 "00_ann_as_bob.wav": (150, "cy")}.items():
        write_wav(folder / name, 0.3 * np.sin(2 * np.pi * f0 * np.arange(800) / 8000), 8000)
    (folder / "verdicts.json").write_text(json.dumps({
        "00_ann_input.wav": {"speaker": "ann", "pitch_hz": 120.0, "expected": {"speaker": "ann"}},
        "00_ann_reconstructed.wav": {"speaker": "ann", "pitch_hz": 240.0,
                                     "expected": {"speaker": "ann", "pitch_hz": 120.0}},
        "00_ann_as_bob.wav": {"speaker": "cy", "pitch_hz": None, "expected": {"speaker": "bob"}}}))
    from vqvae.report import _img, _uri

    page = media_dir_section(folder, _img, _uri)
    # an input's pitch is its own
    assert "the judges hear: speaker ann \u2713, pitch 120.0 Hz (0.10 s)" in page
    assert "speaker ann \u2713, pitch 240.0 Hz \u2717 (input 120.0 Hz)" in page  # an octave off
    assert "speaker cy \u2717 (expected bob), unvoiced" in page
    for name in ("01_solo.wav", "02_solo.wav"):  # single files beside the take: side by side, boxes balanced
        write_wav(folder / name, 0.1 * np.ones(800), 8000)
    page = media_dir_section(folder, _img, _uri)
    assert page.count("<div") == page.count("</div>") and page.count("class='grid take'") == 1
    assert page.count("<figure class='wav'>") == 5
    from PIL import Image

    for i in range(MAX_WAVS + 2):  # images beyond the first 30 are counted, not shown
        Image.new("L", (4, 4), i).save(folder / f"grid{i:02d}.png")
    page = media_dir_section(folder, _img, _uri)
    assert page.count("data:image/png") == MAX_WAVS
    assert f"the first {MAX_WAVS} of the {MAX_WAVS + 2} PNG" in page


AUDIO = ["audio.sample_rate=8000", "audio.num_downsamples=2", "audio.hidden=8", "audio.embedding_dim=4",
         "audio.num_embeddings=8", "audio.local_channels=8", "audio.channels=8", "audio.skip_channels=8",
         "audio.max_dilation=4", "audio.dilation_cycles=1", "train.batch_size=2", "train.crop_length=256",
         "train.warmup_steps=1", "train.log_every=1", "train.eval_batches=1"]


def _chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no chromium here (make installs Debian's chromium when it runs as root with apt-get)")
    return found


@pytest.mark.slow
def test_a_report_of_every_kind_of_run_opens_in_a_real_browser(runs, small_fmnist, tmp_path):
    """Image prior, classifier, audio VQ-VAE and audio prior, as the tiny end-to-end runs make them."""
    from .browser import open_page

    chromium = _chromium()
    tones = tmp_path / "tones"
    t = np.arange(3200) / 8000
    for s, f0 in enumerate((110.0, 190.0, 300.0)):
        for i in range(3):
            write_wav(tones / f"spk{s}" / f"u{i}.wav", 0.3 * np.sin(2 * np.pi * f0 * (1 + 0.02 * i) * t),
                      8000)
    made = {
        "prior": ["train-prior", str(runs / "a"), "--steps", "3", "prior.channels=8", "prior.num_layers=2",
                  "prior.head_channels=16", "train.batch_size=16", "train.eval_batches=1"],
        "classifier": ["train-classifier", "--data", str(small_fmnist), "--epochs", "1",
                       "--max-seconds", "3"],
        "audio": ["audio", "train", "--data", str(tones), "--steps", "3", *AUDIO],
    }
    for name, argv in made.items():
        quiet = ["--quiet"] if name != "classifier" else []
        assert main([*argv, "--out", str(tmp_path / name), *quiet]) == 0
    assert main(["audio", "train-prior", str(tmp_path / "audio"), "--out", str(tmp_path / "audio_prior"),
                 "--steps", "3", "--quiet", "wavenet_prior.channels=8", "wavenet_prior.skip_channels=8",
                 "wavenet_prior.max_dilation=4", "wavenet_prior.dilation_cycles=1", "train.batch_size=2",
                 "train.crop_length=16", "train.warmup_steps=1", "train.eval_batches=1"]) == 0
    wavs = tmp_path / "wavs"  # conversions written outside the run, with what the judges heard in each
    assert main(["audio", "conversion", str(tmp_path / "audio"), "--pairs", "2", "--seconds", "0.1",
                 "--wav-dir", str(wavs)]) == 0
    verdicts = json.loads((wavs / "verdicts.json").read_text())
    assert sorted(verdicts) == sorted(p.name for p in wavs.glob("*.wav")) and len(verdicts) == 6
    assert all(v["speaker"] in ("spk0", "spk1", "spk2") and "pitch_hz" in v for v in verdicts.values())
    for name in ("prior", "classifier", "audio", "audio_prior"):
        media = [wavs] if name == "audio" else []
        out = build_report([tmp_path / name], tmp_path / f"{name}.html", media=media)
        result = open_page(chromium, out, tmp_path / f"{name}.png")
        assert result["console_errors"] == [] and result["requests"] == [], name
        assert result["broken_images"] == 0 and result["screenshot_variance"] > 10.0, name
        # no metrics.csv: no curves
        assert result["images"] >= (0 if name == "classifier" else 4), (name, result)
        if media:
            assert result["audios"] == 6 and result["silent_audios"] == 0, result
            # the caption and the alt text
            assert out.read_text().count("the judges hear: speaker spk") == 2 * 6


@pytest.mark.slow
def test_the_report_opens_in_a_real_browser(runs, tmp_path):
    from .browser import open_page

    chromium = _chromium()

    run = tmp_path / "a"
    shutil.copytree(runs / "a", run)
    write_wav(run / "wav" / "tone.wav", 0.3 * np.sin(np.arange(8000) * 2 * np.pi * 220 / 8000), 8000)
    out = build_report([run], tmp_path / "r.html")
    result = open_page(chromium, out, tmp_path / "shot.png")
    assert result["console_errors"] == [] and result["requests"] == []
    assert result["images"] > 10 and result["broken_images"] == 0
    assert result["audios"] == 1 and result["silent_audios"] == 0
    assert result["screenshot_variance"] > 10.0 and result["overflow"] <= 0
    # on a phone (390 CSS pixels) nothing makes the reader scroll sideways:
    # wide tables scroll in their own box
    two = build_report([run, runs / "b"], tmp_path / "two.html")
    phone = open_page(chromium, two, tmp_path / "phone.png", 390)
    assert (phone["overflow"] <= 0 and phone["broken_images"] == 0
            and phone["screenshot_variance"] > 10.0), phone
    # and the check can fail: a broken image, a request to the network, an unplayable sound, a page too wide
    # for a phone, a blank page
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><html><head></head><body><img src="data:image/png;base64,AAAA">'
                   '<img src="http://192.0.2.1/x.png"><audio src="data:audio/wav;base64,AAAA"></audio>'
                   '</body></html>')
    result = open_page(chromium, bad, tmp_path / "bad.png")
    assert result["broken_images"] == 2 and result["silent_audios"] == 1
    assert result["requests"] == ["http://192.0.2.1/x.png"] and result["screenshot_variance"] < 10.0
    bad.write_text('<!doctype html><html><head></head><body><div style="width:900px">wide</div>'
                   '</body></html>')
    assert open_page(chromium, bad, tmp_path / "bad.png", 390)["overflow"] > 400
