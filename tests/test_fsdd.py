"""Real speech: the Free Spoken Digit Dataset arranged as a speaker-folder corpus (digit classes, the
dataset's own split), a download checked against its SHA-256 (served from a local file here), and
per-utterance classes in any corpus through ``utterances.tsv``."""

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from vqvae.cli import main
from vqvae.data.audio import UTTERANCES, load_speech, read_utterances, split_files, write_wav
from vqvae.data.audio.fsdd import arrange_fsdd, download_fsdd
from vqvae.errors import VQVAEError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd-digits0-4"


def recordings(root: Path, speakers=("anna", "bob"), digits=(0, 1, 2), takes=7) -> Path:
    """A flat folder of FSDD-named recordings: {digit}_{speaker}_{take}.wav, each a short tone."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for s in speakers:
        for d in digits:
            for t in range(takes):
                write_wav(root / f"{d}_{s}_{t}.wav", 0.3 * rng.standard_normal(400 + 10 * t), 8000)
    (root / "README.txt").write_text("not a recording")
    write_wav(root / "noise.wav", np.zeros(100), 8000)  # not an FSDD name: left out
    return root


def test_arrange_gives_speaker_folders_digits_and_the_official_split(tmp_path):
    src = recordings(tmp_path / "recordings")
    summary = arrange_fsdd(tmp_path / "corpus", src)
    assert summary["utterances"] == 2 * 3 * 7 and summary["speakers"] == ["anna", "bob"]
    assert summary["digits"] == ["0", "1", "2"]
    assert summary["test"] == 2 * 3 * 5 and summary["train"] == 2 * 3 * 2
    out = tmp_path / "corpus"
    assert sorted(p.name for p in out.iterdir()) == ["anna", "bob", UTTERANCES]
    assert (out / "bob" / "2_bob_6.wav").read_bytes() == (src / "2_bob_6.wav").read_bytes()
    table = read_utterances(out)
    assert table["anna/1_anna_4.wav"] == ("1", "test") and table["anna/1_anna_5.wav"] == ("1", "train")
    test, train = load_speech(out, "test", 8000), load_speech(out, "train", 8000)
    assert len(test) == 30 and len(train) == 12
    assert test.class_names == train.class_names == ["0", "1", "2"]
    # every utterance's class is the digit in its name, its speaker the one in its name
    for ds in (test, train):
        for path, c, s in zip(ds.paths, ds.classes, ds.labels):
            digit, speaker, take = Path(path).stem.split("_")
            assert ds.class_names[c] == digit and ds.speakers[s] == speaker
            assert (int(take) < 5) == (ds is test)


def test_arrange_cli_and_its_errors(tmp_path, capsys):
    src = recordings(tmp_path / "rec")
    assert main(["data", "fsdd", "--out", str(tmp_path / "c"), "--from", str(src)]) == 0
    assert "wrote 42 recordings by 2 speakers of the digits 0, 1, 2" in capsys.readouterr().out
    before = (tmp_path / "c" / UTTERANCES).read_bytes()
    # nothing overwritten
    assert main(["data", "fsdd", "--out", str(tmp_path / "c"), "--from", str(src)]) == 2
    assert "already exists and is not empty: pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "c" / UTTERANCES).read_bytes() == before
    (tmp_path / "empty").mkdir()
    with pytest.raises(VQVAEError, match="holds no FSDD recordings"):
        arrange_fsdd(tmp_path / "d", tmp_path / "empty")
    with pytest.raises(VQVAEError, match="is not a directory"):
        arrange_fsdd(tmp_path / "d", tmp_path / "missing")
    (tmp_path / "twice" / "a").mkdir(parents=True)
    (tmp_path / "twice" / "b").mkdir(parents=True)
    for sub in ("a", "b"):
        write_wav(tmp_path / "twice" / sub / "0_x_0.wav", np.zeros(10), 8000)
    with pytest.raises(VQVAEError, match="0_x_0.wav is in .* twice"):
        arrange_fsdd(tmp_path / "d", tmp_path / "twice")


def _release(tmp_path: Path) -> Path:
    """A .tar.gz laid out as the FSDD release (free-spoken-digit-dataset-1.0.9/recordings/*.wav)."""
    src = recordings(tmp_path / "rec", speakers=("cy",), digits=(3,), takes=6)
    archive = tmp_path / "release.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for f in sorted(src.glob("*.wav")):
            tar.add(f, arcname=f"free-spoken-digit-dataset-1.0.9/recordings/{f.name}")
        info = tarfile.TarInfo("free-spoken-digit-dataset-1.0.9/README.md")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"FSDD\n"))
    return archive


def test_download_checks_the_sha256(tmp_path):
    archive = _release(tmp_path)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    (tmp_path / "dl").mkdir()
    unpacked = download_fsdd(tmp_path / "dl", archive.as_uri(), digest)
    summary = arrange_fsdd(tmp_path / "corpus", unpacked)
    assert summary["utterances"] == 6 and summary["test"] == 5
    (tmp_path / "dl2").mkdir()
    with pytest.raises(VQVAEError, match=f"has SHA-256 {digest}, expected {'0' * 64}: not the pinned FSDD"):
        download_fsdd(tmp_path / "dl2", archive.as_uri(), "0" * 64)
    with pytest.raises(VQVAEError, match="could not download FSDD .* pass --from"):
        download_fsdd(tmp_path / "dl2", (tmp_path / "nowhere.tar.gz").as_uri())


def test_utterances_table_errors(tmp_path):
    out = tmp_path / "c"
    arrange_fsdd(out, recordings(tmp_path / "rec"))
    table = (out / UTTERANCES).read_text().splitlines()
    for lines, message in ((["file\tdigit\tsplit"] + table[1:], "first line must be the header"),
                           (table[:2] + ["anna/0_anna_1.wav\t0\tvalid"] + table[3:],
                            "line 3: expected file, class"),
                           (table[:1] + [row.rsplit("\t", 1)[0] + "\t" for row in table[1:2]] + table[2:],
                            "gives a split to some files only"),
                           (table[:-1], "has no row for bob/2_bob_6.wav")):
        (out / UTTERANCES).write_text("\n".join(lines) + "\n")
        with pytest.raises(VQVAEError, match=message):
            load_speech(out, "train", 8000)
    # classes without splits: the seeded shuffle splits, the classes stay
    unsplit = table[:1] + [row.rsplit("\t", 1)[0] + "\t" for row in table[1:]]
    (out / UTTERANCES).write_text("\n".join(unsplit) + "\n")
    shuffled = load_speech(out, "test", 8000)
    assert [p for p, _ in split_files(out, "test")] == [Path(p) for p in shuffled.paths]
    assert all(shuffled.class_names[c] == Path(p).stem[0] for p, c in zip(shuffled.paths, shuffled.classes))


def test_classes_change_the_fingerprint(tmp_path):
    out = tmp_path / "c"
    arrange_fsdd(out, recordings(tmp_path / "rec"))
    before = load_speech(out, "test", 8000).fingerprint()
    text = (out / UTTERANCES).read_text().replace("anna/0_anna_0.wav\t0", "anna/0_anna_0.wav\t2")
    (out / UTTERANCES).write_text(text)
    assert load_speech(out, "test", 8000).fingerprint() != before  # cached codes are keyed by the classes too


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/fsdd-digits0-4 is not beside the project")
def test_the_shared_real_corpus(tmp_path):
    summary = arrange_fsdd(tmp_path / "fsdd", SHARED)
    assert summary["utterances"] == 1500 and summary["train"] == 1350 and summary["test"] == 150
    assert summary["speakers"] == ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
    test = load_speech(tmp_path / "fsdd", "test", 8000)
    assert np.bincount(test.classes).tolist() == [30] * 5 and np.bincount(test.labels).tolist() == [25] * 6


AUDIO_TINY = ["audio.sample_rate=8000", "audio.hidden=8", "audio.embedding_dim=4", "audio.num_embeddings=16",
              "audio.local_channels=8", "audio.channels=8", "audio.skip_channels=8", "audio.max_dilation=8",
              "train.batch_size=2", "train.crop_length=512", "train.eval_batches=2", "train.warmup_steps=1"]
PRIOR_TINY = ["wavenet_prior.channels=8", "wavenet_prior.skip_channels=8", "wavenet_prior.max_dilation=4",
              "train.batch_size=2", "train.crop_length=16", "train.eval_batches=2", "train.warmup_steps=1"]


def test_a_class_conditional_audio_prior_from_the_command_line(tmp_path, capsys):
    import json

    from vqvae.data.audio import read_wav

    corpus = tmp_path / "corpus"
    arrange_fsdd(corpus, recordings(tmp_path / "rec", takes=6))
    vq, prior = tmp_path / "vq", tmp_path / "prior"
    assert main(["audio", "train", "--data", str(corpus), "--out", str(vq), "--steps", "2", "--quiet",
                 *AUDIO_TINY]) == 0
    assert json.loads((vq / "config.json").read_text())["classes"] == ["0", "1", "2"]
    capsys.readouterr()
    assert main(["audio", "train-prior", str(vq), "--out", str(prior), "--steps", "2", "--quiet", "--json",
                 *PRIOR_TINY]) == 0
    m = json.loads(capsys.readouterr().out.splitlines()[0])
    assert m["num_utterances"] == 4 and 0 < m["prior_bits_per_code"] < 8  # train.eval_batches=2 of 2
    config = json.loads((prior / "config.json").read_text())
    assert config["wavenet_prior"]["num_classes"] == 3 and config["classes"] == ["0", "1", "2"]
    assert np.array_equal(np.load(vq / "prior_codes.cache.npz")["test_classes"][:5], [0] * 5)
    out = tmp_path / "two.wav"
    assert main(["audio", "sample", str(prior), "--speaker", "bob", "--class", "2", "--seconds", "0.1",
                 "--out", str(out)]) == 0
    assert "as bob saying 2" in capsys.readouterr().out and len(read_wav(out)[0]) == 768
    for argv, message in ((["--class", "7"], "unknown class '7': this prior knows 0, 1, 2"),
                          ([], "pass --class: this prior knows 0, 1, 2")):
        assert main(["audio", "sample", str(prior), "--speaker", "bob", *argv,
                     "--out", str(tmp_path / "x.wav")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()
    # the judges (trained on the corpus's train split) on reconstructions, conversions and prior samples
    assert main(["audio", "conversion", str(vq), "--pairs", "4", "--json"]) == 0
    cm = json.loads(capsys.readouterr().out)
    for key in ("reconstructions_recognised_as_class", "converted_recognised_as_class",
                "reconstructions_voiced", "content_classifier_test_accuracy", "decoder_real_time_factor"):
        assert cm[key] is not None and cm[key] >= 0, key
    assert cm["pairs"] == 4 and cm["decode_batch_size"] == 4
    wavs = tmp_path / "samples"
    assert main(["audio", "score", str(prior), "--per", "2", "--wav-dir", str(wavs)]) == 0
    text = capsys.readouterr().out
    assert "12 prior samples: recognised as the speaker asked for" in text
    assert "as the class asked for" in text
    assert "s of audio per second in batches" in text and "one utterance at a time" in text
    names = sorted(p.name for p in wavs.glob("*.wav"))
    assert len(names) == 12 and names[0] == "000_anna_says_0.wav" and names[-1] == "011_bob_says_2.wav"
    # what was asked of each, beside what was heard
    verdicts = json.loads((wavs / "verdicts.json").read_text())
    assert sorted(verdicts) == names
    for name, v in verdicts.items():
        _, who, _, digit = name[:-4].split("_")
        assert v["expected"] == {"speaker": who, "class": digit} and v["class"] in ("0", "1", "2"), (name, v)
    assert main(["audio", "score", str(prior), "--wav-dir", str(wavs)]) == 2  # nothing overwritten
    assert "not empty" in capsys.readouterr().err
    assert main(["audio", "score", str(prior), "--per", "1", "--wav-dir", str(wavs), "--overwrite"]) == 0
    again = json.loads((wavs / "verdicts.json").read_text())  # the 12 files of before are gone, not mixed in
    assert len(again) == 6 and sorted(again) == sorted(p.name for p in wavs.glob("*.wav"))
    # without class conditioning the prior takes no --class
    assert main(["audio", "train-prior", str(vq), "--out", str(tmp_path / "p2"), "--steps", "1", "--quiet",
                 *PRIOR_TINY, "wavenet_prior.class_conditioning=false"]) == 0
    assert main(["audio", "sample", str(tmp_path / "p2"), "--speaker", "bob", "--class", "1",
                 "--out", str(tmp_path / "x.wav")]) == 2
    assert "not conditioned on classes" in capsys.readouterr().err
    # a corpus where a take has no class cannot train a class-conditional prior
    table = corpus / UTTERANCES
    table.write_text(table.read_text().replace("anna/0_anna_0.wav\t0\t", "anna/0_anna_0.wav\t\t"))
    assert main(["audio", "train-prior", str(vq), "--out", str(tmp_path / "p3"), "--steps", "1",
                 *PRIOR_TINY]) == 2
    assert "1 test utterances have no class in utterances.tsv" in capsys.readouterr().err
