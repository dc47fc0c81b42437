"""File I/O in one place. Atomic writes: every file vqvae writes goes through here, so an interrupted
write leaves the previous file intact, never a half-written one. Arrays travel as .npz, read without
pickle."""

from __future__ import annotations

import errno
import io
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from vqvae.errors import VQVAEError


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``.

    The temporary file sits beside the target because ``os.replace`` is atomic only within one file
    system; it is opened with ``open`` (not ``mkstemp``) so the result gets the usual umask permissions.

    Args:
        path: the file to write (its parent directories are created).
        data: the file's whole content.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise VQVAEError(f"cannot write {path}: permission denied creating {path.parent}") from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, PermissionError):
            raise VQVAEError(f"cannot write {path}: permission denied in {path.parent}") from None
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(path.parent).free
            raise VQVAEError(f"no space left to write {path} ({len(data) / 1e6:.1f} MB, {free / 1e6:.1f} MB "
                             "free): nothing already there was replaced (a training run keeps its last "
                             "complete checkpoint: --resume continues from it once there is space)") from None
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON with sorted keys (and a final newline), atomically.

    Args:
        path: the file to write, as :func:`atomic_write_bytes`.
        obj: anything ``json.dumps`` accepts.
    """
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_write_npz(path: str | os.PathLike[str], arrays: dict[str, Any]) -> None:
    """Write a compressed .npz of ``arrays``, atomically (strings as 0-d unicode arrays: no pickle needed to
    read them back).

    Args:
        path: the file to write, as :func:`atomic_write_bytes`.
        arrays: name -> array, or anything ``np.asarray`` turns into one.
    """
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


def read_npz(path: str | os.PathLike[str], what: str) -> dict[str, np.ndarray]:
    """Every array of an .npz (never unpickled); a one-line error naming ``what`` the file should be.

    Args:
        path: the .npz file to read.
        what: what the file should be, for the error message (e.g. "codes file").
    Returns:
        name -> array, for every array in the archive.
    Raises:
        VQVAEError: the file is missing, is not an .npz archive, holds pickled objects or cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise VQVAEError(f"{what} not found: {path}")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if not (magic.startswith(b"PK") or magic == b"\x93NUMPY"):
            raise VQVAEError(f"cannot read {what} {path}: it is not an .npz archive (not a zip file)")
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a single .npy array under an .npz name
            raise VQVAEError(f"cannot read {what} {path}: it holds one bare array, "
                             "not an .npz archive of named arrays")
        with loaded as f:
            return {k: f[k] for k in f.files}
    except VQVAEError:
        raise
    except Exception as exc:  # noqa: BLE001 -- an untrusted file: whatever its bytes break is "cannot read"
        why = ("it holds pickled objects, which are never loaded" if "pickle" in str(exc)
               else (str(exc) or type(exc).__name__))
        raise VQVAEError(f"cannot read {what} {path}: {why}") from None


def hash_file_stamps(h: Any, names: Any, root: Path = Path()) -> None:
    """Feed each file of ``names`` (bytes paths, relative to ``root``) to hash ``h`` as its name, size and
    modification time: what identifies a dataset read from files without reading them.

    Args:
        h: a ``hashlib`` hash object (anything with ``update(bytes)``).
        names: the files, as bytes paths relative to ``root``, in the order they are fed.
        root: the directory ``names`` are relative to (default: the current directory).
    """
    for name in names:
        stat = (root / name.decode()).stat()
        h.update(name + f"|{stat.st_size}|{stat.st_mtime_ns}".encode())


# the lock a training job holds on its run directory (vqvae.runs.hold_run_dir): not a file of the run
RUN_LOCK = ".lock"


def check_out_dir(path: str | Path, overwrite: bool, *,
                  is_file: str = "output path {out} exists and is not a directory",
                  not_empty: str = ("output directory {out} is not empty: pass --resume to continue it or "
                                    "--overwrite to replace it")) -> Path:
    """An output directory: refused (with the message ``is_file`` or ``not_empty``, where ``{out}`` is the
    path) when it is a file, or not empty and ``overwrite`` is false (a run's lock alone leaves it empty).

    Args:
        path: the output directory (it may not exist yet; it is not created here).
        overwrite: accept a directory that is not empty.
        is_file: the error message when ``path`` is a file; ``{out}`` stands for the path.
        not_empty: the error message when the directory is not empty; ``{out}`` stands for the path.
    Returns:
        ``path`` as a ``Path``.
    Raises:
        VQVAEError: ``path`` is a file, or a directory that is not empty while ``overwrite`` is false.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise VQVAEError(is_file.format(out=out))
    if out.is_dir() and any(p.name != RUN_LOCK for p in out.iterdir()) and not overwrite:
        raise VQVAEError(not_empty.format(out=out))
    return out


def check_out_file(path: str | Path, overwrite: bool, suffixes: tuple[str, ...]) -> Path:
    """An output file to write: refused when its suffix is not one of ``suffixes``, when it is a directory,
    or when it exists and ``overwrite`` is false.

    Args:
        path: the file to write (``--out``).
        overwrite: accept a file that already exists.
        suffixes: the lower-case suffixes allowed, with their dots (e.g. ``(".png",)``).
    Returns:
        ``path`` as a ``Path``.
    Raises:
        VQVAEError: a suffix not in ``suffixes``, an existing file without ``overwrite``, or a directory.
    """
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise VQVAEError(f"--out {p} must end in {' or '.join(suffixes)}")
    if p.exists() and not overwrite:
        raise VQVAEError(f"{p} already exists: pass --overwrite to replace it")
    if p.is_dir():
        raise VQVAEError(f"{p} is a directory")
    return p


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop the rows of a run's ``metrics.csv`` logged after the checkpoint it resumes from (they will be
    logged again).

    Args:
        path: the ``metrics.csv`` (nothing happens when there is none).
        last_step: the step of the checkpoint.
    """
    if not path.exists():
        return
    rows = path.read_text().splitlines(keepends=True)
    kept = rows[:1] + [r for r in rows[1:]
                       if r.split(",", 1)[0].isdigit() and int(r.split(",", 1)[0]) <= last_step]
    atomic_write_bytes(path, "".join(kept).encode())
