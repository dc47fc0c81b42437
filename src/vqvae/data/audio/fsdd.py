"""The Free Spoken Digit Dataset (FSDD, Jakobovski et al., CC BY-SA 4.0): real recordings of spoken digits,
8 kHz.

``arrange_fsdd(out, source)`` turns the dataset's ``recordings/`` folder (files
``{digit}_{speaker}_{index}.wav``, found anywhere under ``source``, so a copy already in speaker folders works
too) into a speaker-folder corpus: ``out/<speaker>/<file>.wav`` and ``out/utterances.tsv``, which gives every
file its digit (the utterance's class) and the dataset's official split (takes 0-4 of every digit and speaker
are the test set, 5-49 the train set). Without ``source`` it downloads the dataset's release at a pinned
version and checks its SHA-256 first.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from vqvae.data.audio.corpus import UTTERANCES, write_utterances
from vqvae.errors import VQVAEError
from vqvae.fileio import check_out_dir

__all__ = ["FSDD_SHA256", "FSDD_URL", "arrange_fsdd", "download_fsdd"]

# v1.0.9, the release that TensorFlow Datasets pins (its spoken_digit checksums.tsv: 11,975,353 bytes)
FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/v1.0.9.tar.gz"
FSDD_SHA256 = "8bc44cde129d505cbbb6b365c09f80c663f2aa77578afc634e6141a2f87100c0"
FSDD_TEST_TAKES = 5  # the dataset's README: recordings 0-4 of each digit and speaker are the test set
_NAME = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)\.wav$")


def download_fsdd(into: Path, url: str = FSDD_URL, sha256: str = FSDD_SHA256) -> Path:
    """Download the FSDD release to ``into``, check its SHA-256 and unpack it.

    Args:
        into: an existing directory for the archive and the unpacked files.
        url: where to download the release from.
        sha256: the archive's expected SHA-256, hex.
    Returns:
        the folder the archive was unpacked into (``into / "unpacked"``).
    Raises:
        VQVAEError: the download failed, or the archive's SHA-256 is not ``sha256``.
    """
    archive = into / "fsdd.tar.gz"
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as f:
            shutil.copyfileobj(response, f)
    except (OSError, ValueError) as e:
        raise VQVAEError(f"could not download FSDD from {url} ({e}): get it with `git clone "
                         "https://github.com/Jakobovski/free-spoken-digit-dataset` and pass --from "
                         "free-spoken-digit-dataset/recordings") from None
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != sha256:
        raise VQVAEError(f"{url} has SHA-256 {digest}, expected {sha256}: not the pinned FSDD release")
    with tarfile.open(archive) as tar:
        tar.extractall(into / "unpacked", filter="data")
    return into / "unpacked"


def arrange_fsdd(out: str | Path, source: str | Path | None = None, *,
                 overwrite: bool = False) -> dict[str, Any]:
    """Arrange FSDD recordings (from ``source``, or downloaded) as a speaker-folder corpus in ``out`` with
    ``utterances.tsv`` (digit and official split of every file).

    Args:
        out: the corpus directory to write (new or empty unless ``overwrite``).
        source: a folder holding the recordings anywhere below it; None downloads the pinned release.
        overwrite: write into ``out`` even if it is not empty.
    Returns:
        a summary: ``utterances``, ``speakers``, ``digits``, ``train``, ``test`` (counts) and ``out``.
    Raises:
        VQVAEError: ``out`` is not empty, ``source`` holds no recordings or one twice, or the download failed.
    """
    out = check_out_dir(out, overwrite, not_empty="{out} already exists and is not empty: "
                                                  "pass --overwrite to write into it")
    if source is None:
        with tempfile.TemporaryDirectory() as tmp:
            return arrange_fsdd(out, download_fsdd(Path(tmp)), overwrite=True)
    source = Path(source).expanduser()
    if not source.is_dir():
        raise VQVAEError(f"FSDD recordings not found: {source} is not a directory")
    found = sorted((p for p in source.rglob("*.wav") if _NAME.match(p.name)), key=lambda p: p.name)
    if not found:
        raise VQVAEError(f"{source} holds no FSDD recordings "
                         "(files named {digit}_{speaker}_{index}.wav)")
    rows, seen = [], {}
    for path in found:
        digit, speaker, take = _NAME.match(path.name).groups()
        if path.name in seen:
            raise VQVAEError(f"{path.name} is in {source} twice ({seen[path.name]} and {path.parent})")
        seen[path.name] = path.parent
        (out / speaker).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / speaker / path.name)
        rows.append((f"{speaker}/{path.name}", digit, "test" if int(take) < FSDD_TEST_TAKES else "train"))
    write_utterances(out / UTTERANCES, rows)
    return {"utterances": len(rows), "speakers": sorted({r[0].split("/")[0] for r in rows}),
            "digits": sorted({r[1] for r in rows}), "train": sum(r[2] == "train" for r in rows),
            "test": sum(r[2] == "test" for r in rows), "out": str(out)}
