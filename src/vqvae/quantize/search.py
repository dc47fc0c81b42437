"""The nearest-neighbour search of vector quantisation, and codes drawn by distance.

What "nearest" means, exactly. The distance of a row ``x`` to a code ``e`` is the floating-point
expression ``d(x, e) = (||e||^2 - 2 x.e) + ||x||^2``, evaluated in the inputs' precision (float32 for
float32, float16 and bfloat16 inputs; float64 when either is float64) with every sum taken left to right
over the D components, one rounding per operation (:func:`reference_distances`); the nearest code is the
lowest index that attains the minimum. A GEMM computes the same expression with its own summation order,
which varies with the library, the device and even the shape of the call (MKL rounds a 1-row or 2-row
product differently from a 64-row one), so on near-ties a GEMM's argmin can pick another code; the
definition here depends on none of those.

How it is computed fast. The distances come from a GEMM, in tiles of rows x codes, and each tile is
reduced with vectorised reductions only (an indexed ``argmin`` costs CPUs more than the GEMM tile itself):
per row, the minimum, and which codes lie within a window ``w`` of it. ``w`` is a rigorous bound
(:func:`_windows`): whatever the GEMM's summation order, the reference's nearest code lies within ``w`` of
the GEMM's minimum. A row with exactly one code in its window gets that code; the rare rest (ties,
near-ties, duplicate codes) are settled by evaluating the reference expression on their candidates only.
With many tiles, a first pass keeps only each tile's minima and a second redoes each row's best tile.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["nearest_codes", "reference_distances", "sample_codes", "tile_elements"]

# Distances computed and reduced at once: on a CPU 2^18 float32 (1 MiB, 256 rows x 1024 codes at K = 16384,
# 512 x 512 at K = 512: the tile and its mask stay in a core's L2 cache), the size
# benchmarks/quantizer_speed.py picks; on an accelerator 2^22 (fewer, larger launches).
_TILE_ELEMENTS = {"cpu": 1 << 18}
_TILE_ELEMENTS_ACCELERATOR = 1 << 22


def tile_elements(device: torch.device) -> int:
    """Distances computed and reduced at once on ``device``."""
    return _TILE_ELEMENTS.get(device.type, _TILE_ELEMENTS_ACCELERATOR)
_TILE_CODES = 1024
# From this many tiles on, two passes (the second pass recomputes only each row's best tile, 1 / T of the
# work, and saves the window sums of every other tile), on blocks of rows whose tile minima, and whose rows
# gathered for the second pass, are at most this many floats (16 MiB in float32).
_TWO_PASS_TILES = 8
_MINIMA_ELEMENTS = 1 << 22
# Distances computed at once when near-ties are settled.
_SETTLE_ELEMENTS = 1 << 20


@torch.no_grad()
def nearest_codes(flat: Tensor, codebook: Tensor, chunk_size: int | None = None) -> Tensor:
    """Index of the nearest code for every row of ``flat``.

    "Nearest" is exactly :func:`reference_distances`' minimum, ties to the lowest index (see the module
    docstring). Memory beyond the inputs and the output: two tiles (2 MiB on a CPU, 32 MiB on an accelerator),
    at most 16 MiB of tile minima
    and 16 MiB of gathered rows, and a few floats per row of a block. A block of rows (or a codebook) with
    NaN or infinity falls back to a chunked GEMM + ``argmin`` (no exactness claim).

    Args:
        flat: (N, D) floating-point vectors to quantise.
        codebook: (K, D) floating-point codes; moved to ``flat``'s device.
        chunk_size: rows per tile; None (default) takes 2^18 distances per tile on a CPU, 2^22 elsewhere.
    Returns:
        (N,) int64 indices into ``codebook``, on ``flat``'s device.
    """
    if flat.dim() != 2 or codebook.dim() != 2 or flat.shape[1] != codebook.shape[1]:
        shapes = f"{tuple(flat.shape)} and {tuple(codebook.shape)}"
        raise ValueError(f"expected flat (N, D) and codebook (K, D), got {shapes}")
    if not (flat.is_floating_point() and codebook.is_floating_point()):
        raise ValueError(f"expected floating-point inputs, got {flat.dtype} and {codebook.dtype}")
    if codebook.shape[0] == 0:
        raise ValueError("the codebook is empty (K = 0)")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    dtype = _search_dtype(flat.dtype, codebook.dtype)
    flat, codebook = flat.to(dtype), codebook.to(device=flat.device, dtype=dtype)
    n = flat.shape[0]
    out = torch.empty(n, dtype=torch.long, device=flat.device)
    if n == 0:
        return out
    code_sq = codebook.pow(2).sum(1)  # (K,)
    tiles = _Tiles.of(codebook, code_sq, chunk_size)
    unsure = torch.empty(n, dtype=torch.bool, device=flat.device)
    # one pass (per tile: GEMM, minima, window sums) for few tiles; else two: the GEMM and minima of every
    # tile, then the window sums of each row's best tile only (its GEMM again: 1 / T more work)
    search = _one_pass if len(tiles.codes) < _TWO_PASS_TILES else _two_pass
    block = max(tiles.rows, _MINIMA_ELEMENTS // max(len(tiles.codes), flat.shape[1]))
    for start in range(0, n, block):
        end = min(start + block, n)
        window, finite = _windows(flat[start:end], code_sq)  # (B,)
        if finite:
            search(flat[start:end], tiles, window, out[start:end], unsure[start:end])
        else:
            _plain_argmin(flat[start:end], codebook, tiles.rows, out[start:end])
            unsure[start:end] = False
    settle = unsure.nonzero().squeeze(1)  # (M,) rows with more than one code in their window
    if settle.numel() > 0:
        out[settle] = _settle(flat[settle], codebook, code_sq, _windows(flat[settle], code_sq)[0])
    return out


def reference_distances(flat: Tensor, codebook: Tensor) -> Tensor:
    """The reference distances that define the nearest code: (N, D), (K, D) -> (N, K).

    ``(||e||^2 - 2 x.e) + ||x||^2`` with each sum taken left to right over D, one rounding per
    operation, in the search's precision. Elementwise operations only, so every device gives the same
    bits; O(N K D) memory-light but slow: for tests and for settling a few candidates.

    Args:
        flat: (N, D) floating-point vectors.
        codebook: (K, D) floating-point codes; moved to ``flat``'s device.
    Returns:
        (N, K) distances, float64 when either input is float64, else float32.
    """
    dtype = _search_dtype(flat.dtype, codebook.dtype)
    x, e = flat.to(dtype), codebook.to(device=flat.device, dtype=dtype)
    dot = _sequential_dot(x[:, None, :], e[None, :, :])  # (N, K)
    return (_sequential_dot(e, e)[None, :] - 2 * dot) + _sequential_dot(x, x)[:, None]


def _sequential_dot(a: Tensor, b: Tensor) -> Tensor:
    """sum_i a[..., i] * b[..., i], added left to right, a rounding per product and per sum (broadcasts)."""
    acc = a[..., 0] * b[..., 0]
    for i in range(1, a.shape[-1]):
        acc = acc + a[..., i] * b[..., i]  # two operations: never an FMA, whatever the device
    return acc


def _search_dtype(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    return torch.float64 if torch.float64 in (a, b) else torch.float32


def _gemm_unit_roundoff(dtype: torch.dtype) -> float:
    """Relative error of one rounding in the distance GEMM: the dtype's, unless float32 matmuls may run in
    TF32 or bfloat16 (``torch.set_float32_matmul_precision``), then bfloat16's (a safe upper bound)."""
    if dtype == torch.float64:
        return 2.0**-53
    reduced = torch.get_float32_matmul_precision() != "highest" or torch.backends.cuda.matmul.allow_tf32
    return 2.0**-8 if reduced else 2.0**-24


def _windows(flat: Tensor, code_sq: Tensor) -> tuple[Tensor, bool]:
    """Per row, a width ``w`` such that the reference's nearest code has a GEMM distance <= the GEMM's
    minimum + ``w``: (N, D), (K,) squared code norms -> (N,) (infinite where no useful bound exists), and
    whether the inputs and their squared norms are finite (else there is no bound at all).

    Error analysis (Higham, ch. 3): a sum of D products in any order, blocked or not, with or without FMA,
    is within gamma_D sum|x_i e_i| <= gamma_D ||x|| ||e|| of the exact dot product, gamma_n = n u / (1 - n u).
    With the squared norms and the two additions, the GEMM's ``||e||^2 - 2 x.e`` is within
    b = gamma_{D+3} (||x|| + ||e||)^2 of its exact value, and the reference's ``d - ||x||^2`` too. For the
    reference's winner k* and any j: gemm_k* - gemm_j <= 2 b + (exact_k* - exact_j) <= 2 b + 2 b, since
    ref_k* <= ref_j. So w = 4 b with ||e|| <= max ||e||, times 2 for the rounding of the norms and of this
    formula; the last term covers underflow (and inputs flushed to zero by bfloat16 instructions). Rows
    whose candidates the window cannot tell apart go to :func:`_settle`, so a loose window costs time only.
    """
    n_u = (flat.shape[1] + 3) * _gemm_unit_roundoff(flat.dtype)
    reach = flat.norm(dim=1).add_(code_sq.max().sqrt())  # (N,) bounds ||x|| + ||e|| for every code
    window = reach.square()
    finite = bool(torch.isfinite(window).all())  # NaN and infinity propagate into the norms
    if n_u >= 0.5:  # no bound: every code is a candidate
        return window.fill_(float("inf")), finite
    gamma = n_u / (1 - n_u)
    underflow = reach.add_(1).square_().mul_(16 * n_u * torch.finfo(flat.dtype).tiny)
    return window.mul_(8 * gamma).add_(underflow), finite  # in place: O(N) memory, two vectors


class _Tiles(NamedTuple):
    """The codebook cut into tiles of ``width`` codes, and what every tile's search needs."""

    # (D + 1, width) views of the transposed (-2 e, ||e||^2): one GEMM of (x, 1) gives ||e||^2 - 2 x.e, with
    # no bias to broadcast into the output first (the GEMM reads B^T as fast)
    codes: list[Tensor]
    code_sq: list[Tensor]  # (width,) squared norms
    width: int
    scale: int  # a power of two >= width
    weights: Tensor  # (width,) 1 + j / scale: exact, in [1, 2)
    precise: bool  # a GEMV of the weights is exact (no TF32 or bfloat16 matmuls)
    rows: int  # rows per tile

    @staticmethod
    def of(codebook: Tensor, code_sq: Tensor, rows: int | None) -> _Tiles:
        k, width = codebook.shape[0], min(_TILE_CODES, codebook.shape[0])
        scale = 1 << (width - 1).bit_length()
        weights = 1 + torch.arange(width, dtype=codebook.dtype, device=codebook.device) / scale
        augmented = torch.cat([codebook * -2.0, code_sq[:, None]], 1)  # (K, D + 1), exact
        return _Tiles(
            codes=[augmented[j : j + width].t() for j in range(0, k, width)],
            code_sq=[code_sq[j : j + width] for j in range(0, k, width)],
            width=width, scale=scale, weights=weights,
            precise=_gemm_unit_roundoff(codebook.dtype) < 2.0**-20,
            rows=rows or max(1, tile_elements(codebook.device) // width),
        )


def _one_pass(x: Tensor, tiles: _Tiles, window: Tensor, out: Tensor, unsure: Tensor) -> None:
    """Rows against every tile: writes each row's nearest index into ``out`` and whether it needs settling
    (more than one code within its window) into ``unsure``.
    ``x``: (B, D); ``window``, ``out``, ``unsure``: (B,).

    Per tile and row: the minimum, and the sum over the codes within ``window`` of it of ``1 + j / scale``
    (j the code's offset in the tile): every term is exact and in [1, 2), so the sum is below 2 exactly when
    one code is within the window, and then it spells that code's offset. A row is sure when exactly one
    tile has its minimum within the window of the overall minimum and that tile has one code within it.
    The tiles only fill the (T, B) minima and sums; the rows are decided once, for the whole block.
    """
    b, r, count = x.shape[0], min(tiles.rows, x.shape[0]), len(tiles.codes)
    opts = dict(dtype=x.dtype, device=x.device)
    minima, sums = torch.empty(count, b, **opts), torch.empty(count, b, **opts)  # (T, B)
    dist = torch.empty(r, tiles.width, **opts)  # distances minus ||x||^2
    xa = _with_ones(r, x.shape[1], **opts)
    for start in range(0, b, r):
        end = min(start + r, b)
        ws, rs = window[start:end, None], end - start
        xs = xa[:rs]
        xs[:, :-1] = x[start:end]
        for t, codes_t in enumerate(tiles.codes):
            c = codes_t.shape[1]
            a = torch.mm(xs, codes_t, out=dist[:rs, :c])  # (rs, c)
            low = torch.amin(a, 1, keepdim=True, out=minima[t, start:end, None])
            m = torch.le(a, low + ws, out=a)  # in place: 1.0 where within the window, else 0.0
            if tiles.precise:
                torch.mv(m, tiles.weights[:c], out=sums[t, start:end])
            else:  # a TF32 or bfloat16 GEMV would round the weights; an elementwise product and a sum do not
                torch.sum(m * tiles.weights[:c], 1, out=sums[t, start:end])
    if count == 1:
        s, tile = sums[0], None
        torch.ge(s, 2, out=unsure)
    else:
        best = minima.amin(0)  # (B,)
        near_tiles = (minima <= best + window).sum(0)
        tile = minima.argmin(0)  # the tile of a minimum (any one: a sure row has just one)
        s = sums.gather(0, tile[None]).squeeze(0)  # (B,)
        torch.logical_or(near_tiles != 1, s >= 2, out=unsure)
    torch.sub(s, 1, out=s).mul_(tiles.scale)
    out.copy_(s)  # exact: an integer below the tile's width (or garbage on an unsure row)
    if tile is not None:
        out.add_(tile * tiles.width)


def _two_pass(x: Tensor, tiles: _Tiles, window: Tensor, out: Tensor, unsure: Tensor) -> None:
    """As :func:`_one_pass`, in two passes: every tile's GEMM and row minima, then :func:`_one_pass` of each
    row against its best tile only. That GEMM may round differently from the first, which does not matter:
    the window argument holds for any evaluation, and the first pass only has to find the one tile within
    the window (a row with several such tiles is unsure)."""
    b, count, r = x.shape[0], len(tiles.codes), min(tiles.rows, x.shape[0])
    minima = torch.empty(count, b, dtype=x.dtype, device=x.device)  # (T, B)
    dist = torch.empty(r, tiles.width, dtype=x.dtype, device=x.device)
    xa = _with_ones(r, x.shape[1], dtype=x.dtype, device=x.device)
    for start in range(0, b, r):
        rs = min(r, b - start)
        xs = xa[:rs]
        xs[:, :-1] = x[start : start + rs]
        for t, codes_t in enumerate(tiles.codes):
            a = torch.mm(xs, codes_t, out=dist[:rs, : codes_t.shape[1]])
            torch.amin(a, 1, out=minima[t, start : start + rs])
    best = minima.amin(0)  # (B,)
    near_tiles = (minima <= best + window).sum(0)
    tile = minima.argmin(0)  # (B,)
    order = torch.argsort(tile)  # rows grouped by their best tile
    end = 0
    for t, size in enumerate(torch.bincount(tile, minlength=count).tolist()):
        if size == 0:
            continue
        rows, end = order[end : end + size], end + size
        one = _Tiles([tiles.codes[t]], [tiles.code_sq[t]], *tiles[2:])
        idx, sub_unsure = torch.empty_like(rows), torch.empty_like(rows, dtype=torch.bool)
        _one_pass(x[rows], one, window[rows], idx, sub_unsure)
        out[rows] = idx + t * tiles.width
        unsure[rows] = sub_unsure | (near_tiles[rows] != 1)


def _with_ones(rows: int, dim: int, **opts) -> Tensor:
    """A (rows, dim + 1) buffer whose last column is 1: rows of x are copied into the rest."""
    buf = torch.empty(rows, dim + 1, **opts)
    buf[:, -1] = 1.0
    return buf


def _settle(flat: Tensor, codebook: Tensor, code_sq: Tensor, window: Tensor) -> Tensor:
    """The reference's nearest code for rows with several candidates: (M, D), (K, D), (K,), (M,) -> (M,).

    The candidates of a row are the codes whose GEMM distance is within its window of the minimum (the
    reference's winner is among them); the reference expression decides among them, ties to the lowest
    index. Where candidates abound (duplicate codes), only the first of identical codes is kept: its twins
    have the same reference distance and a higher index, so they never win.
    """
    m, k = flat.shape[0], codebook.shape[0]
    first = None
    out = torch.empty(m, dtype=torch.long, device=flat.device)
    chunk = max(1, _SETTLE_ELEMENTS // k)
    for start in range(0, m, chunk):
        x = flat[start : start + chunk]  # (c, D)
        a = torch.addmm(code_sq, x, codebook.t(), alpha=-2.0)  # (c, K)
        near = a <= (a.amin(1) + window[start : start + chunk])[:, None]
        if int(near.sum()) > 4 * x.shape[0] + 64:
            first = _first_of_duplicates(codebook) if first is None else first
            near &= first
        row, code = near.nonzero(as_tuple=True)  # (P,) candidate pairs
        ref = _pair_distances(x, codebook, row, code)  # (P,)
        best = torch.full((x.shape[0],), float("inf"), dtype=ref.dtype, device=ref.device)
        best.scatter_reduce_(0, row, ref, "amin")
        hit = ref == best[row]
        winner = torch.full((x.shape[0],), k, dtype=torch.long, device=flat.device)
        out[start : start + chunk] = winner.scatter_reduce_(0, row[hit], code[hit], "amin")
    return out


def _pair_distances(x: Tensor, codebook: Tensor, row: Tensor, code: Tensor) -> Tensor:
    """The reference distance of the pairs (x[row[p]], codebook[code[p]]) -> (P,); the sums as in
    :func:`_sequential_dot`. The three sums (x.e, x.x, e.e) advance together, one component at a time, on a
    (D, 3, P) stack: two operations per component whatever P is."""
    xr, cr = x[row].t(), codebook[code].t()  # (D, P) each
    a = torch.stack([xr, xr, cr], 1)  # (D, 3, P)
    b = torch.stack([cr, xr, cr], 1)
    acc = a[0] * b[0]  # (3, P): x.e, x.x, e.e
    for i in range(1, a.shape[0]):
        acc = acc + a[i] * b[i]  # two operations: never an FMA, whatever the device
    dot, x_sq, e_sq = acc
    return (e_sq - 2 * dot) + x_sq


def _first_of_duplicates(codebook: Tensor) -> Tensor:
    """(K, D) -> (K,) bool: False only for a code that equals a lower-indexed code, component by component.

    Codes are grouped by a hash of their bits and each is compared with the lowest index of its group, so
    a hash collision only leaves a duplicate marked True (it is then evaluated, which is safe).
    """
    k, d = codebook.shape
    bits = codebook.contiguous().view(torch.int32 if codebook.dtype == torch.float32 else torch.int64).long()
    mix = torch.randint(1, 1 << 62, (d,), generator=torch.Generator().manual_seed(0)).to(codebook.device)
    key = (bits * mix).sum(1)  # (K,) wraps around modulo 2^64: a hash, not a value
    ids = torch.arange(k, device=codebook.device)
    _, group = torch.unique(key, return_inverse=True)
    lowest = torch.full((k,), k, dtype=torch.long, device=codebook.device)
    lowest.scatter_reduce_(0, group, ids, "amin")
    first = lowest[group]  # (K,) the lowest index with the same hash
    return (first == ids) | (codebook[first] != codebook).any(1)


def _plain_argmin(flat: Tensor, codebook: Tensor, rows: int, out: Tensor) -> Tensor:
    """A chunked GEMM + argmin, for blocks of rows with NaN or infinity."""
    codebook_t = codebook.t().contiguous()
    code_sq = codebook.pow(2).sum(1)
    for start in range(0, flat.shape[0], rows):
        x = flat[start : start + rows]
        d = torch.addmm(code_sq, x, codebook_t, alpha=-2.0).add_(x.pow(2).sum(1, keepdim=True))
        torch.argmin(d, dim=1, out=out[start : start + x.shape[0]])
    return out


@torch.no_grad()
def sample_codes(flat: Tensor, codebook: Tensor, temperature: float, generator: torch.Generator | None = None
                 ) -> Tensor:
    """A code drawn for every row of ``flat`` with probability ``softmax(-||x - e||^2 / temperature)`` over
    the codebook, by the Gumbel-max trick, in tiles of rows (no (N, K) matrix held at once).

    Args:
        flat: (N, D) floating-point vectors.
        codebook: (K, D) floating-point codes.
        temperature: T > 0; as T -> 0 the draw becomes the nearest code.
        generator: random generator for the Gumbel noise; None uses the global one.
    Returns:
        (N,) int64 indices, on ``flat``'s device.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    flat, codebook = flat.float(), codebook.to(device=flat.device, dtype=torch.float32)
    code_sq = codebook.pow(2).sum(1)
    out = torch.empty(flat.shape[0], dtype=torch.long, device=flat.device)
    rows = max(1, tile_elements(flat.device) // codebook.shape[0])
    for start in range(0, flat.shape[0], rows):
        x = flat[start : start + rows]
        # ||x||^2 is the same for every code of a row: the softmax does not see it
        logits = torch.addmm(code_sq, x, codebook.t(), alpha=-2.0).div_(-temperature)
        uniform = torch.rand(logits.shape, generator=generator, device=flat.device)
        gumbel = uniform.clamp_(min=1e-20).log_().neg_().clamp_(min=1e-20).log_().neg_()
        torch.argmax(logits.add_(gumbel), 1, out=out[start : start + x.shape[0]])
    return out
