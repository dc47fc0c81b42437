"""The parts of a report that depend on the kind of run: the codebook (usage of an autoencoder's codes on its
test split, sorted, dead codes marked, and a 2-D projection of the codebook), and the media the run wrote
(image grids; the samples' scores of ``score.json``; WAV files, each with a player, a waveform and a
spectrogram, and what the judges heard in it from ``verdicts.json``). Also what each metric means."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from itertools import groupby
from pathlib import Path
from typing import Any

from vqvae import checkpoint
from vqvae.errors import VQVAEError
from vqvae.fileio import read_npz
from vqvae.report import plots

__all__ = ["DESCRIPTIONS", "codebook_section", "media_dir_section", "media_sections", "pick_wavs",
           "read_json_object", "score_section"]

DESCRIPTIONS = {
    "psnr": "peak signal-to-noise ratio of the reconstructions, dB (higher is better)",
    "ssim": "structural similarity of reconstructions and originals, 0..1",
    "mse": "mean squared error of the reconstructions, pixels in [0, 1]",
    "bits_per_dim": "negative log-likelihood of the test images under the model, bits per pixel and channel",
    "codes_used": "codes of the codebook used at least once on the test split",
    "dead_codes": "codes never used on the test split",
    "perplexity": "exp of the entropy of the code frequencies: how many codes are used, effectively",
    "usage_fraction": "fraction of the codebook used on the test split",
    "bits_per_sample": ("negative log-likelihood of the test audio, bits per sample "
                        "(8-bit mu-law: 8 is uniform)"),
    "prior_bits_per_code": "negative log-likelihood of the test codes under the prior, bits per code",
    "prior_nll_bits_per_latent": "negative log-likelihood of the test codes under the prior, bits per latent",
    "uniform_bits_per_latent": "log2 K: the bits per latent of a uniform prior",
    "prior_bits_per_image": "bits per image the codes take under the prior",
    "uniform_bits_per_code": "log2 K: the bits per code of a uniform prior",
    "test_accuracy": "fraction of test images the classifier recognises",
    "step": "optimisation steps taken",
    "train_seconds": "wall time of the training steps, seconds",
    "num_images": "test images evaluated",
    "num_utterances": "test utterances evaluated",
    "bit_rate": "bits per second the codes take at log2 K bits each",
    "codes_per_second": "codes per second of audio",
    "spectral_l1": ("spectral decoder: mean L1 distance of its log-magnitude STFT to the test audio's, "
                    "nats per bin"),
    "mel_loss": ("spectral decoder: mean L1 distance of its log-mel spectra to the test audio's over three "
                 "scales, nats"),
    "speaker_probe_accuracy": ("test utterances whose speaker a probe trained on train codes tells from the "
                               "codes alone"),
    "speaker_probe_chance": ("the speaker probe's chance level: the largest speaker's share of the test "
                             "split"),
    "content_probe_accuracy": "test utterances whose class (what is said) a probe tells from the codes alone",
    "content_probe_chance": "the content probe's chance level: the largest class's share of the test split",
}
MAX_WAVS = 30  # e.g. ten conversion triples, or one prior sample per speaker and digit of FSDD (6 x 5)


def codebook_section(run: dict[str, Any], img: Callable[..., str]) -> str:
    """Codebook usage of an autoencoder over its test split, from the ``codebook.npz`` its final evaluation
    wrote (empty for runs without one); a one-line note when the file cannot be read.

    Args:
        run: a run as the report loaded it (``dir``, ``name``, ...).
        img: makes an HTML figure of image bytes and a caption.
    Returns:
        the HTML of the section, or "" when the run has no ``codebook.npz``.
    """
    path = run["dir"] / checkpoint.CODEBOOK
    if not path.is_file():
        return ""
    name = html.escape(run["name"])
    try:
        arrays = read_npz(path, "codebook usage")
        counts, codebook = arrays["counts"], arrays.get("codebook")  # no vectors for a huge code space
        mismatch = codebook is not None and (codebook.ndim != 2 or len(counts) != len(codebook))
        if counts.ndim != 1 or mismatch:
            shape = None if codebook is None else codebook.shape
            raise VQVAEError(f"counts {counts.shape} and codebook {shape} do not match")
    except (VQVAEError, KeyError, OSError) as exc:
        return f"<h2>{name}: codebook</h2><p>not available: {html.escape(str(exc))}</p>"
    usage = img(plots.usage_histogram(counts), "codes sorted by use; dead codes in red")
    projection = "" if codebook is None else img(plots.codebook_projection(codebook, counts),
                                                 "the codebook in 2-D, coloured by log usage")
    return (f"<h2>{name}: codebook (test split, {int(counts.sum())} vectors)</h2>"
            f'<div class="grid">{usage}{projection}</div>')


def media_sections(run: dict[str, Any], img: Callable[..., str],
                   uri: Callable[[bytes, str], str]) -> list[str]:
    """The image grids, the scores of its samples (``score.json``) and the WAV files a run wrote into its
    directory (and its sub-folders, except ``.previous``).

    Args:
        run: a run as the report loaded it (``dir``, ``name``, ...).
        img: makes an HTML figure of image bytes and a caption.
        uri: makes a data URI of bytes and a MIME type.
    Returns:
        the HTML of each section that has something to show.
    """
    d, name = run["dir"], html.escape(run["name"])
    out = []
    grids = [(p, cap) for p, cap in (("reconstructions.png", "test images (one of each class first) above "
                                                             "their reconstructions"),
                                     ("samples.png", "prior samples, one row per class (named on its left)"))
             if (d / p).is_file()]
    if grids:
        out.append(f"<h2>{name}: images</h2><div class='grid'>"
                   + "".join(img((d / p).read_bytes(), cap) for p, cap in grids) + "</div>")
    if (d / "score.json").is_file():
        out.append(score_section(d / "score.json", run["name"]))
    wavs = sorted(p for p in d.rglob("*.wav") if ".previous" not in p.parts)
    if wavs:
        out.append(f"<h2>{name}: audio</h2>{_wav_gallery(wavs, d, uri, {})}")
    return out


def score_section(path: Path, name: str) -> str:
    """The judgement of ``vqvae score --out score.json``: for the samples, real test images and their
    reconstructions, the Fréchet distance of the classifier's features to held-out test images and the
    fraction recognised as the class asked for, overall and per class.

    Args:
        path: the ``score.json``.
        name: whose scores they are (a run or folder), not yet escaped.
    Returns:
        the HTML of the section.
    Raises:
        VQVAEError: the file is not a ``score.json`` written by ``vqvae score --out``.
    """
    try:
        score = json.loads(path.read_text())
        if not isinstance(score, dict):
            raise TypeError("not a JSON object")
        accuracy = score.get("classifier_test_accuracy")
        judge = (f" (the judge recognises {float(accuracy):.1%} of real test images)"
                 if accuracy is not None else "")
        # the samples first
        sets = {k: v for k, v in sorted(score.items(), key=lambda kv: kv[0] != "samples")
                if isinstance(v, dict) and "frechet_distance" in v}
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{int(v['num_images'])}</td>"
                       f"<td>{float(v['frechet_distance']):.3f}</td><td>{_percent(v.get('recognised'))}</td></tr>"
                       for k, v in sets.items())
    except (ValueError, KeyError, TypeError) as exc:
        raise VQVAEError(f"{path} is not a score.json written by `vqvae score --out` ({exc})") from None
    if not sets:
        raise VQVAEError(f"{path} is not a score.json written by `vqvae score --out` (no scored set)")
    per_class = {k: v["recognised_per_class"] for k, v in sets.items()
                 if isinstance(v.get("recognised_per_class"), dict)}
    classes = list(dict.fromkeys(c for v in per_class.values() for c in v))
    table = "".join(f"<tr><td>{html.escape(c)}</td>"
                    + "".join(f"<td>{_percent(v.get(c))}</td>" for v in per_class.values())
                    + "</tr>" for c in classes)
    head = "".join(f"<th>{html.escape(k)}</th>" for k in per_class)
    return (f"<h2>{html.escape(name)}: samples judged by a classifier{html.escape(judge)}</h2>"
            f"<div class='wide'><table><tr><th>set</th><th>images</th><th>Fréchet distance</th>"
            f"<th>recognised as their class</th></tr>{rows}</table></div>"
            + (f"<h3>recognised per class</h3><div class='wide'><table><tr><th>class</th>{head}</tr>{table}"
               f"</table></div>" if per_class else ""))


def _percent(x: Any) -> str:
    return f"{float(x):.1%}" if isinstance(x, (int, float)) else ""


def media_dir_section(d: Path, img: Callable[..., str], uri: Callable[[bytes, str], str],
                      name: str | None = None) -> str:
    """A folder of outputs a command wrote outside its run (``--wav-dir`` of ``vqvae audio conversion`` /
    ``audio score``, sample grids): its images (the first 30), its WAV files with what the judges heard in
    each (``verdicts.json``) and a ``score.json``.

    Args:
        d: the folder (``--media``), refused when it is not a directory.
        img: makes an HTML figure of image bytes and a caption.
        uri: makes a data URI of bytes and a MIME type.
        name: what the section calls the folder (None: ``d`` as given).
    Returns:
        the HTML of the section.
    Raises:
        VQVAEError: ``d`` is not a directory, or its ``verdicts.json`` or ``score.json`` does not parse.
    """
    if not d.is_dir():
        raise VQVAEError(f"--media {d} is not a directory")
    verdicts = read_json_object(d / "verdicts.json", "must map file names to what the judges heard")
    pngs, wavs = sorted(d.glob("*.png")), sorted(d.glob("*.wav"))
    images = (f"<div class='grid'>{''.join(img(p.read_bytes(), p.name) for p in pngs[:MAX_WAVS])}</div>"
              if pngs else "")
    if len(pngs) > MAX_WAVS:
        images += f"<p>the first {MAX_WAVS} of the {len(pngs)} PNG images.</p>"
    name = str(d) if name is None else name
    score = score_section(d / "score.json", name) if (d / "score.json").is_file() else ""
    return f"<h2>{html.escape(name)}</h2>{images}{_wav_gallery(wavs, d, uri, verdicts)}{score}"


def read_json_object(path: Path, shape: str = "must hold a JSON object") -> dict[str, Any]:
    """The JSON object in ``path``, refused in one line when it is not valid JSON or not an object.

    Args:
        path: the JSON file; it need not exist.
        shape: the end of the error message when the JSON is not an object.
    Returns:
        the object, or {} when there is no such file.
    Raises:
        VQVAEError: invalid JSON, or JSON that is not an object.
    """
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except ValueError as exc:  # UnicodeDecodeError included
        raise VQVAEError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise VQVAEError(f"{path} {shape}")
    return value


def pick_wavs(wavs: list[Path], verdicts: dict[str, Any], limit: int = MAX_WAVS) -> list[list[Path]]:
    """Which of ``wavs`` a report plays, in takes: files are grouped by folder and leading number (a
    conversion's input, reconstruction and conversion: ``007_lucas_input.wav``, ..., in that order), then
    whole groups are taken one speaker at a time in turn -- the speaker the group should be heard as
    (``verdicts.json``'s ``expected``), else the word after the number -- each speaker's next group being one
    whose class (``expected``, else the rest of the name: ``says_3``) is not shown for it yet, until
    ``limit`` files.

    Args:
        wavs: the WAV files found, in their order.
        verdicts: ``verdicts.json``: file name -> what the judges heard, with ``expected``.
        limit: most files played (at least one group is).
    Returns:
        the groups chosen, in the order of their first file in ``wavs``.
    """
    groups: dict[tuple[Path, str], list[Path]] = {}
    for p in wavs:
        m = re.match(r"(\d+)_", p.name)
        groups.setdefault((p.parent, m[1] if m else p.name), []).append(p)
    role = {"input": 0, "reconstructed": 1}
    by_speaker: dict[str, list[tuple[list[Path], Any]]] = {}
    for files in groups.values():
        files.sort(key=lambda p: (role.get(p.stem.rsplit("_", 1)[-1], 2), p.name))
        v = verdicts.get(files[0].name)
        expected = v.get("expected") if isinstance(v, dict) and isinstance(v.get("expected"), dict) else {}
        words = files[0].stem.split("_")
        speaker = expected.get("speaker", words[1] if len(words) > 1 and words[0].isdigit() else "")
        by_speaker.setdefault(str(speaker), []).append((files,
                                                        str(expected.get("class", "_".join(words[2:])))))
    chosen: list[list[Path]] = []
    shown: dict[str, set] = {s: set() for s in by_speaker}
    order = {p: i for i, p in enumerate(wavs)}
    count = 0
    while any(by_speaker.values()):
        for speaker, left in by_speaker.items():
            if not left:
                continue
            i = next((i for i, (_, k) in enumerate(left) if k not in shown[speaker]), 0)
            files, k = left.pop(i)
            if count + len(files) > limit and chosen:
                return sorted(chosen, key=lambda g: min(order[p] for p in g))
            chosen.append(files)
            shown[speaker].add(k)
            count += len(files)
    return sorted(chosen, key=lambda g: min(order[p] for p in g))


def _wav_gallery(wavs: list[Path], root: Path, uri: Callable[[bytes, str], str],
                 verdicts: dict[str, Any]) -> str:
    groups = pick_wavs(wavs, verdicts)
    shown = sum(len(g) for g in groups)
    def players(g: list[Path]) -> str:
        return "".join(_wav(p, root, uri, verdicts.get(p.name)) for p in g)

    parts = []
    # a take in its own box; single files side by side
    for takes, run in groupby(groups, key=lambda g: len(g) > 1):
        if takes:
            parts += [f"<div class='grid take'>{players(g)}</div>" for g in run]
        else:
            parts.append(f"<div class='grid'>{''.join(players(g) for g in run)}</div>")
    note = (f"<p>{shown} of the {len(wavs)} WAV files: whole takes, one speaker at a time in turn, a class "
            f"each speaker has not had yet first.</p>" if shown < len(wavs) else "")
    return note + "".join(parts)


def _heard(v: dict[str, Any]) -> str:
    """What the judges heard, each part marked against what was expected (where verdicts.json says)."""
    expected = v.get("expected") if isinstance(v.get("expected"), dict) else {}
    parts = []
    for key, word in (("speaker", "speaker"), ("class", "says")):
        if key in v:
            mark = "" if key not in expected else (" \u2713" if v[key] == expected[key]
                                                   else f" \u2717 (expected {expected[key]})")
            parts.append(f"{word} {v[key]}{mark}")
    pitch, target = v.get("pitch_hz"), expected.get("pitch_hz")
    heard = f"pitch {pitch} Hz" if isinstance(pitch, (int, float)) else "unvoiced"
    if isinstance(target, (int, float)):
        near = isinstance(pitch, (int, float)) and abs(pitch - target) <= 0.1 * target
        heard += " \u2713" if near else f" \u2717 (input {target} Hz)"
    parts.append(heard)
    return "the judges hear: " + ", ".join(parts)


def _wav(path: Path, root: Path, uri: Callable[[bytes, str], str], verdict: Any = None) -> str:
    from vqvae.data.audio import read_wav

    label = html.escape(str(path.relative_to(root)))
    if isinstance(verdict, dict):
        label += f" -- {html.escape(_heard(verdict))}"
    try:
        x, rate = read_wav(path)
    except VQVAEError as exc:
        return f"<figure><figcaption>{label}: {html.escape(str(exc))}</figcaption></figure>"
    picture = uri(plots.waveform_and_spectrogram(x, rate), "image/jpeg")
    return (f"<figure class='wav'><audio controls preload=\"metadata\" "
            f"src=\"{uri(path.read_bytes(), 'audio/wav')}\"></audio>"
            f"<img src=\"{picture}\" alt=\"{label}\">"
            f"<figcaption>{label} ({len(x) / rate:.2f} s)</figcaption></figure>")
