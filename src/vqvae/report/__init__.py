"""``vqvae report RUN_DIR [RUN_DIR ...] --out report.html``: one self-contained HTML page (every image, plot
and sound inline as a data URI; no script, no font, no request to the network) for any kind of run -- image
VQ-VAE, image prior, audio VQ-VAE, audio prior, classifier -- or several side by side (curves overlaid,
metrics in columns, the config values that differ highlighted). A run still training (a partial
``metrics.csv``, no ``eval.json``) renders what exists."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vqvae.errors import VQVAEError
from vqvae.fileio import atomic_write_bytes, check_out_file
from vqvae.report import plots
from vqvae.report.sections import (
    DESCRIPTIONS,
    codebook_section,
    media_dir_section,
    media_sections,
    read_json_object,
)

__all__ = ["build_report", "read_metrics"]

CODE_CURVES = {"vq_loss", "perplexity", "codes_used", "commitment_loss"}  # what a run without codes lacks

CSS = """body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:12px;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 6px;text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{margin:0}img{max-width:100%;height:auto}
.diff{background:#fff3b0}.key{color:#555}abbr{text-decoration:underline dotted}
figcaption{font-size:.8em;color:#555;max-width:420px}audio{width:100%}details{margin:8px 0}
.wide{overflow-x:auto;max-width:100%}h1,h2,figcaption,td{overflow-wrap:anywhere}.grid figure{max-width:100%}
.take{border:1px solid #e4e4e4;border-radius:4px;padding:4px;margin:6px 0}.wav{width:340px}"""


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """The columns of a ``metrics.csv`` as float arrays; a last line cut short (a run writing it now) is left
    out, anything else unreadable is refused in one line.

    Args:
        path: the ``metrics.csv`` of a run.
    Returns:
        column name -> (rows,) float64 values (nan where a cell is empty).
    Raises:
        VQVAEError: no ``step,...`` header, or a complete row that does not parse.
    """
    text = path.read_text(errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    elif lines:
        lines = lines[:-1]  # no newline yet: the row being written
    if not lines or not lines[0].startswith("step,"):
        raise VQVAEError(f"{path} is not a metrics.csv written by vqvae "
                         "(its first line must be the header step,...)")
    header = lines[0].split(",")
    rows = []
    for n, line in enumerate(lines[1:], 2):
        cells = line.split(",")
        try:
            if len(cells) != len(header):
                raise ValueError(f"{len(cells)} values for {len(header)} columns")
            rows.append([float(c) if c else np.nan for c in cells])
        except ValueError as exc:
            raise VQVAEError(f"{path}, line {n}: {exc}") from None
    table = np.array(rows, dtype=np.float64).reshape(len(rows), len(header))
    return {name: table[:, i] for i, name in enumerate(header)}


def _shown(value: Any, here: Path) -> Any:
    """``value``, with an absolute path made relative to ``here`` (the report's folder): a report names no
    machine's paths."""
    return os.path.relpath(value, here) if isinstance(value, str) and os.path.isabs(value) else value


def _load(run: Path, here: Path) -> dict[str, Any]:
    """What a report shows of one run directory: config, eval.json, metrics.csv (each where it exists), its
    path from ``here`` (the report's folder), and the curves that mean nothing for it."""
    if not run.is_dir():
        raise VQVAEError(f"run directory not found: {run}")
    config_path, metrics_path, eval_path = run / "config.json", run / "metrics.csv", run / "eval.json"
    if not config_path.is_file() and not metrics_path.is_file():
        raise VQVAEError(f"{run} is not a run directory (no config.json and no metrics.csv)")
    info: dict[str, Any] = {"dir": run, "name": run.resolve().name, "config": read_json_object(config_path),
                            "eval": read_json_object(eval_path), "metrics": {}}
    if metrics_path.is_file():
        info["metrics"] = read_metrics(metrics_path)
    info["kind"] = info["config"].get("kind", "unknown")
    info["where"] = os.path.relpath(run.resolve(), here)
    audio = info["config"].get("audio")
    no_codes = isinstance(audio, dict) and audio.get("use_codes") is False
    info["meaningless"] = CODE_CURVES if no_codes else set()  # a WaveNet without codes: 0 all along
    return info


def _uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _img(data: bytes, caption: str, mime: str = "image/png") -> str:
    return (f'<figure><img src="{_uri(data, mime)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _header(info: dict[str, Any], here: Path) -> str:
    c, e = info["config"], info["eval"]
    train = c.get("train", {}) if isinstance(c.get("train"), dict) else {}
    m = info["metrics"]
    steps = e.get("step", c.get("step", int(m["step"][-1]) if len(m.get("step", [])) else "-"))
    seconds = e.get("train_seconds", float(m["seconds"][-1]) if len(m.get("seconds", [])) else 0.0)
    status = "finished" if e else "in progress (no eval.json yet)"
    codes_of = f"the codes of {_shown(c['vqvae_dir'], here)}" if isinstance(c.get("vqvae_dir"), str) else None
    data = (codes_of or c.get("data_name") or _shown(train.get("data"), here)  # a prior: its VQ-VAE's codes
            or (_shown(c["data"], here) if isinstance(c.get("data"), str) else "?"))
    limits = [f"{train['steps']} steps" if train.get("steps") else "",
              f"{float(train['max_seconds']):g} s" if train.get("max_seconds") else ""]
    budget = (" or ".join(x for x in limits if x) or "none" if train  # whichever comes first
              else f"{c['epochs']} epochs" if "epochs" in c else "-")  # a classifier counts epochs
    precision = train.get("precision", "fp32" if "epochs" in c else "?")  # a classifier trains in fp32
    facts = [("run directory", info["where"]), ("kind", info["kind"]), ("data", data), ("budget", budget),
             ("steps", steps), ("wall time", f"{float(seconds):.0f} s"), ("precision", precision),
             ("status", status)]
    key = [k for k in ("psnr", "ssim", "bits_per_dim", "bits_per_sample", "spectral_l1",
                       "speaker_probe_accuracy", "prior_bits_per_code", "prior_nll_bits_per_latent",
                       "codes_used", "perplexity", "test_accuracy") if k in e]
    facts += [(k, _fmt(e[k])) for k in key[:5]]
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in facts)
    return f"<div class='wide'><table>{rows}</table></div>"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _curves(runs: list[dict[str, Any]]) -> str:
    series = {r["name"]: {k: v for k, v in r["metrics"].items() if k not in r["meaningless"]}
              for r in runs if r["metrics"]}
    if not series:
        return "<p>No metrics.csv yet.</p>"
    fields = [f for f in dict.fromkeys(k for cols in series.values() for k in cols)
              if f not in ("step", "seconds")]
    # a column that is zero all along (e.g. the steps skipped for a non-finite loss) is said, not drawn
    columns = {f: np.concatenate([cols[f] for cols in series.values() if f in cols]) for f in fields}
    # e.g. written only at evaluation, none yet
    empty = [f for f in fields if not np.isfinite(columns[f]).any()]
    flat = [f for f in fields if f not in empty and np.nanmax(np.abs(columns[f])) == 0]
    figs = []
    for x in ("step", "seconds"):
        figs += [_img(plots.curves(series, f, x), f"{f} against {'wall time' if x == 'seconds' else 'steps'}")
                 for f in fields if f not in flat + empty]
    note = (f"<p>0 all along: {html.escape(', '.join(flat))}.</p>" if flat else "") + (
        f"<p>no value yet: {html.escape(', '.join(empty))}.</p>" if empty else "")
    return f'<div class="grid">{"".join(figs)}</div>{note}'


def _metrics_table(runs: list[dict[str, Any]], here: Path) -> str:
    keys = list(dict.fromkeys(k for r in runs for k, v in r["eval"].items()
                              if not isinstance(v, (dict, list))))
    if not keys:
        return "<p>No eval.json yet: the run has not finished.</p>"
    head = "".join(f"<th>{html.escape(r['name'])}</th>" for r in runs)
    rows, notes = [], []
    for k in keys:
        desc = DESCRIPTIONS.get(k)
        label = f'<abbr title="{html.escape(desc)}">{html.escape(k)}</abbr>' if desc else html.escape(k)
        if desc:
            notes.append(f"<li><b>{html.escape(k)}</b>: {html.escape(desc)}</li>")
        cells = "".join(f"<td>{html.escape(_fmt(_shown(r['eval'][k], here))) if k in r['eval'] else ''}</td>"
                        for r in runs)
        rows.append(f"<tr><td>{label}</td>{cells}</tr>")
    return (f"<div class='wide'><table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table></div>"
            f"<details><summary>what each figure means</summary><ul>{''.join(notes)}</ul></details>")


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _config(runs: list[dict[str, Any]], here: Path) -> str:
    kept = [{k: v for k, v in r["config"].items() if k not in ("speakers", "classes")} for r in runs]
    flats = [{k: _shown(v, here) for k, v in _flat(c).items()} for c in kept]
    keys = sorted(set().union(*flats))
    rows = []
    for k in keys:
        values = [json.dumps(f.get(k)) if k in f else "" for f in flats]
        cls = ' class="diff"' if len(runs) > 1 and len(set(values)) > 1 else ""
        rows.append(f"<tr{cls}><td class='key'>{html.escape(k)}</td>"
                    + "".join(f"<td>{html.escape(v)}</td>" for v in values) + "</tr>")
    head = "".join(f"<th>{html.escape(r['name'])}</th>" for r in runs)
    summary = "config" + (" (values that differ are highlighted)" if len(runs) > 1 else "")
    return (f"<details><summary>{summary}</summary><div class='wide'><table><tr><th>key</th>{head}</tr>"
            f"{''.join(rows)}</table></div></details>")


def build_report(run_dirs: list[str | Path], out: str | Path, *, overwrite: bool = False,
                 media: list[str | Path] = ()) -> Path:
    """Write the report of ``run_dirs`` to ``out``, reading only the files the runs wrote (it loads no model).

    Args:
        run_dirs: the run directories, at least one; two of the same name are told apart by their parent.
        out: the ``.html`` (or ``.htm``) file to write, refused when it exists unless ``overwrite``.
        overwrite: replace an existing ``out``.
        media: folders of outputs written outside the runs (WAV files with their judges' verdicts, images).
    Returns:
        the path of the report.
    Raises:
        VQVAEError: no run directory, one that is not a run directory, or a file of it that does not parse.
    """
    out = check_out_file(out, overwrite, (".html", ".htm"))
    if not run_dirs:
        raise VQVAEError("give at least one run directory")
    here = out.resolve().parent  # paths are shown from the report's folder
    runs = [_load(Path(d), here) for d in run_dirs]
    # checked before anything is drawn
    media_parts = [media_dir_section(Path(d), _img, _uri, os.path.relpath(Path(d).resolve(), here))
                   for d in media]
    names = [r["name"] for r in runs]
    if len(set(names)) < len(names):  # two runs named alike: tell them apart by their parent folder
        for r in runs:
            r["name"] = f"{r['dir'].parent.name}/{r['dir'].name}"
    title = "vqvae report: " + ", ".join(r["name"] for r in runs)
    body = [f"<h1>{html.escape(title)}</h1>"]
    for r in runs:
        body.append(f"<h2>{html.escape(r['name'])} ({html.escape(r['kind'])})</h2>{_header(r, here)}")
    body.append(f"<h2>training curves</h2>{_curves(runs)}")
    body.append(f"<h2>metrics (eval.json)</h2>{_metrics_table(runs, here)}")
    for r in runs:
        body += [codebook_section(r, _img), *media_sections(r, _img, _uri)]
    body += media_parts
    body.append(f"<h2>config</h2>{_config(runs, here)}")
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>{''.join(b for b in body if b)}</body></html>")
    atomic_write_bytes(out, page.encode())
    return out
