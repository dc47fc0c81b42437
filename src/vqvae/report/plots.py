"""The figures of a report, drawn with matplotlib (Agg, no display) and returned as PNG (JPEG for a
spectrogram) bytes: training curves (one run or several overlaid), the sorted codebook-usage histogram, a 2-D
projection of the codebook coloured by usage, and a waveform with its spectrogram."""

from __future__ import annotations

import io
from typing import Any

import matplotlib
import numpy as np

# no display: files only. The backend must be chosen before pyplot is imported, so pyplot comes late (E402).
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["codebook_projection", "curves", "jpeg", "png", "usage_histogram", "waveform_and_spectrogram"]


def png(fig, **options: Any) -> bytes:
    """The figure as PNG bytes, and closed.

    Args:
        fig: the matplotlib figure.
        **options: further arguments of ``savefig``, e.g. another ``format``.
    Returns:
        the encoded image.
    """
    buf = io.BytesIO()
    fig.savefig(buf, dpi=90, bbox_inches="tight", **{"format": "png", **options})
    plt.close(fig)
    return buf.getvalue()


def jpeg(fig) -> bytes:
    """The figure as JPEG bytes at quality 85 (and closed): a third of the PNG for a spectrogram's noise.

    Args:
        fig: the matplotlib figure.
    Returns:
        the JPEG bytes.
    """
    return png(fig, format="jpeg", pil_kwargs={"quality": 85})


def curves(series: dict[str, dict[str, np.ndarray]], field: str, x: str = "step") -> bytes:
    """``field`` against ``x`` for each run of ``series``, on a log scale for ``loss``, ``recon_loss`` and
    ``lr`` when all their values are positive.

    Args:
        series: run name -> its ``metrics.csv`` columns.
        field: the column drawn.
        x: the column along the x axis, ``step`` or ``seconds``.
    Returns:
        PNG bytes.
    """
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    for name, cols in series.items():
        if field in cols and x in cols:
            few = len(cols[x]) < 20  # a short run (or one just started): its points must show
            ax.plot(cols[x], cols[field], label=name, linewidth=1.2, marker="o" if few else None,
                    markersize=3)
    ax.set_xlabel("wall time (s)" if x == "seconds" else "step")
    ax.set_title(field)
    ax.grid(alpha=0.3)
    if field in ("loss", "recon_loss", "lr") and all(np.all(c.get(field, np.ones(1)) > 0)
                                                      for c in series.values()):
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend(fontsize=7)
    return png(fig)


def usage_histogram(counts: np.ndarray) -> bytes:
    """How often each code was used, codes sorted from most to least used; unused (dead) codes marked red.

    Args:
        counts: (K,) vectors assigned to each code.
    Returns:
        PNG bytes.
    """
    order = np.sort(counts)[::-1]
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    dead = order == 0
    used = int((~dead).sum())
    if len(order) <= 4096:  # a bar per code
        ax.bar(np.arange(len(order))[~dead], order[~dead], width=1.0, color="tab:blue", label="used")
        if dead.any():
            ax.bar(np.arange(len(order))[dead], np.full(int(dead.sum()), max(order.max(), 1) * 0.02),
                   width=1.0, color="tab:red", label=f"dead ({int(dead.sum())})")
    else:  # a residual stack's 2^20 codes: the same picture as areas (a million bars take minutes)
        ax.fill_between(np.arange(used), order[:used], step="post", color="tab:blue", label="used")
        if dead.any():
            ax.axvspan(used, len(order), color="tab:red", alpha=0.3, label=f"dead ({int(dead.sum())})")
    if dead.any():
        ax.legend(fontsize=7)
    ax.set_xlabel("code (sorted by use)")
    ax.set_ylabel("vectors")
    ax.set_title(f"codebook usage: {used} of {len(order)} codes used")
    return png(fig)


def codebook_projection(codebook: np.ndarray, counts: np.ndarray) -> bytes:
    """The codebook's first two principal components, each code coloured by log usage (dead codes as red x).

    Args:
        codebook: (K, D) code vectors.
        counts: (K,) vectors assigned to each code.
    Returns:
        PNG bytes.
    """
    centred = codebook - codebook.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T if vt.shape[0] >= 2 else np.c_[centred[:, 0], np.zeros(len(centred))]
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    used = counts > 0
    sc = ax.scatter(xy[used, 0], xy[used, 1], c=np.log10(counts[used]), s=8, cmap="viridis")
    if (~used).any():
        ax.scatter(xy[~used, 0], xy[~used, 1], marker="x", color="tab:red", s=12, label="dead")
        ax.legend(fontsize=7)
    fig.colorbar(sc, ax=ax, label="log10 vectors")
    ax.set_title("codebook, first two principal components")
    return png(fig)


def waveform_and_spectrogram(x: np.ndarray, rate: int) -> bytes:
    """The waveform above its spectrogram (time in seconds, frequency in Hz).

    Args:
        x: (T,) waveform.
        rate: its sample rate in Hz.
    Returns:
        JPEG bytes.
    """
    fig, (a, b) = plt.subplots(2, 1, figsize=(4.6, 2.8), sharex=True)
    t = np.arange(len(x)) / rate
    a.plot(t, x, linewidth=0.5)
    peak = float(np.abs(x).max(initial=0.0))
    a.set_ylim(-max(peak, 1e-3) * 1.05, max(peak, 1e-3) * 1.05)  # a quiet recording fills the box too
    a.set_yticks([])
    a.set_ylabel(f"peak {peak:.2f}", fontsize=7)
    nfft = 256 if len(x) >= 256 else max(16, 1 << (len(x).bit_length() - 1))
    # digital silence is -inf dB, masked: drawn as the lowest colour, not left blank
    magma = plt.get_cmap("magma")
    cmap = magma.with_extremes(bad=magma(0.0))
    with np.errstate(divide="ignore"):
        b.specgram(x, NFFT=nfft, Fs=rate, noverlap=nfft // 2, cmap=cmap)
    b.set_ylabel("Hz")
    b.set_xlabel("s")
    return jpeg(fig)
