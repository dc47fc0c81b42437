"""The tiled nearest-code search against an independent NumPy transcription of the reference expression:
``(||e||^2 - 2 x.e) + ||x||^2``, every sum left to right over D, one rounding per operation, float32 (float64
for float64 inputs), ties to the lowest index. Near-ties are built on purpose: duplicate codes, codes one ulp
apart, exact ties across tiles, rows whose GEMM rounding and the reference's can disagree."""

import numpy as np
import pytest
import torch

from vqvae.quantize import nearest_codes
from vqvae.quantize.search import reference_distances

TILE = 1024  # codes per tile in search.py: K around and above it crosses tiles


def np_reference_distances(flat, codebook):
    dt = np.float64 if np.float64 in (flat.dtype, codebook.dtype) else np.float32
    x, e = flat.astype(dt), codebook.astype(dt)

    def seq(a, b):  # left to right over the last axis
        acc = a[..., 0] * b[..., 0]
        for i in range(1, a.shape[-1]):
            acc = acc + a[..., i] * b[..., i]
        return acc

    dot = seq(x[:, None, :], e[None, :, :])
    return (seq(e, e)[None, :] - dt(2) * dot) + seq(x, x)[:, None]


def np_reference(flat, codebook):
    return np_reference_distances(np.asarray(flat), np.asarray(codebook)).argmin(1)  # first minimum


def check(flat, codebook, **kw):
    got = nearest_codes(flat, codebook, **kw)
    assert got.dtype == torch.long and got.shape == (flat.shape[0],)
    np.testing.assert_array_equal(got.numpy(), np_reference(flat.numpy(), codebook.numpy()))
    return got


def near_tie_codebook(k, d, gen):
    """Random codes, then duplicates, one-ulp twins and 1e-7 twins spread over the tiles."""
    cb = torch.randn(k, d, generator=gen)
    for src, dst in ((3, 7), (10, k - 1), (k // 2, 5), (1, k // 3)):
        cb[dst] = cb[src]  # duplicates, lower and higher index, across tiles
    cb[k - 2] = torch.nextafter(cb[k // 4], torch.full_like(cb[k // 4], np.inf))  # one ulp apart
    cb[k - 3] = cb[k // 5] * (1 + 1e-7)
    return cb


def rows_near(cb, picks, gen, scale=1e-3):
    return cb[picks] + scale * torch.randn(len(picks), cb.shape[1], generator=gen)


def test_reference_distances_match_numpy_bitwise():
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(17, 24, generator=gen, dtype=dtype)
        cb = torch.randn(33, 24, generator=gen, dtype=dtype)
        want = np_reference_distances(x.numpy(), cb.numpy())
        np.testing.assert_array_equal(reference_distances(x, cb).numpy(), want)


@pytest.mark.parametrize("k", [1, 3, 700, TILE, TILE + 1, 2 * TILE + 77])
def test_random_rows_and_near_ties_across_tiles(k):
    gen = torch.Generator().manual_seed(k)
    d = 16
    cb = near_tie_codebook(max(k, 12), d, gen)[:k] if k >= 12 else torch.randn(k, d, generator=gen)
    picks = torch.randint(k, (300,), generator=gen)
    flat = torch.cat([torch.randn(300, d, generator=gen), rows_near(cb, picks, gen), cb[picks]])
    for chunk in (None, 1, 7, 600):
        check(flat, cb, chunk_size=chunk)


def test_exact_ties_go_to_the_lowest_index_in_any_tile():
    # integer coordinates: every dot product is exact in any order, so the ties are ties for every method
    k, d = 3 * TILE, 8
    gen = torch.Generator().manual_seed(1)
    cb = torch.randint(-50, 50, (k, d), generator=gen).float()
    cb[2500] = torch.tensor([2.0] + [0.0] * (d - 1))
    cb[1100] = torch.tensor([-2.0] + [0.0] * (d - 1))  # x = 0 is 4 away from both
    cb[40] = torch.tensor([0.0, 2.0] + [0.0] * (d - 2))  # ... and from this one, in the first tile
    flat = torch.zeros(3, d)
    got = check(flat, cb)
    assert got.tolist() == [40, 40, 40]
    cb[40] = 9.0
    assert check(flat, cb).tolist() == [1100] * 3
    twins = torch.cat([cb, cb])  # every code twice: the first copy always wins
    assert torch.equal(check(cb[::97].clone(), twins), torch.arange(0, k, 97))


def test_rows_far_from_the_origin_where_rounding_decides():
    # a large common offset makes ||x||^2 dwarf the distances: most rows have several codes within the
    # rounding window, so the result rests on the reference expression, not on the GEMM's summation order
    gen = torch.Generator().manual_seed(2)
    cb = 300 + torch.randn(1500, 8, generator=gen) * 1e-2
    flat = 300 + torch.randn(400, 8, generator=gen) * 1e-2
    a = check(flat, cb)
    b = torch.cat([nearest_codes(flat[i : i + 1], cb) for i in range(0, 400, 37)])
    assert torch.equal(a[::37], b)  # a row's code does not depend on the rows searched with it


def test_empty_small_and_single_code():
    cb = torch.randn(5, 4)
    out = nearest_codes(torch.empty(0, 4), cb)
    assert out.shape == (0,) and out.dtype == torch.long
    check(torch.randn(3, 4), cb)
    assert nearest_codes(torch.randn(6, 4), cb[:1]).tolist() == [0] * 6
    assert nearest_codes(torch.randn(6, 4), torch.zeros(40, 4)).tolist() == [0] * 6  # all codes identical


def test_non_contiguous_float64_and_half_inputs():
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(200, 32, generator=gen)
    cb_base = near_tie_codebook(1300, 32, gen)
    flat, cb = base[::2, ::2], cb_base[:, 1::2]  # strided views, D = 16
    assert not flat.is_contiguous() and not cb.is_contiguous()
    check(flat, cb)
    check(flat.t().contiguous().t(), cb)
    check(flat.double(), cb.double())  # float64 is searched in float64
    check(flat.double(), cb)  # mixed: promoted to float64
    half = flat.half()
    got = nearest_codes(half, cb)  # float16 is searched in float32
    np.testing.assert_array_equal(got.numpy(), np_reference(half.float().numpy(), cb.numpy()))


def test_reduced_matmul_precision_is_still_exact():
    gen = torch.Generator().manual_seed(4)
    cb = near_tie_codebook(1100, 16, gen)
    flat = torch.cat([torch.randn(100, 16, generator=gen), rows_near(cb, torch.arange(0, 1100, 11), gen)])
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")  # TF32 or bfloat16 GEMMs where the backend has them
        check(flat, cb)
    finally:
        torch.set_float32_matmul_precision(before)


def test_non_finite_inputs_fall_back_and_bad_shapes_raise():
    cb = torch.randn(8, 4)
    flat = torch.randn(5, 4)
    flat[2, 1] = float("nan")
    got = nearest_codes(flat, cb)
    finite = [0, 1, 3, 4]
    np.testing.assert_array_equal(got[finite].numpy(), np_reference(flat[finite].numpy(), cb.numpy()))
    with pytest.raises(ValueError, match=r"\(5, 4\) and \(8, 3\)"):
        nearest_codes(flat, torch.randn(8, 3))
    with pytest.raises(ValueError, match="empty"):
        nearest_codes(flat, torch.empty(0, 4))
    with pytest.raises(ValueError, match="floating-point"):
        nearest_codes(flat.long(), cb)
    with pytest.raises(ValueError, match="chunk_size"):
        nearest_codes(flat, cb, chunk_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_agrees_with_the_reference():
    gen = torch.Generator().manual_seed(5)
    cb = near_tie_codebook(2100, 16, gen)
    flat = torch.cat([torch.randn(300, 16, generator=gen), rows_near(cb, torch.arange(0, 2100, 7), gen)])
    got = nearest_codes(flat.cuda(), cb.cuda())
    assert got.device.type == "cuda"
    np.testing.assert_array_equal(got.cpu().numpy(), np_reference(flat.numpy(), cb.numpy()))


@pytest.mark.parametrize("width, minima", [(64, 1 << 22), (50, 3000)])
def test_two_pass_search_with_many_tiles(monkeypatch, width, minima):
    # >= 8 tiles: the first pass keeps tile minima only, the second redoes each row's best tile; small
    # blocks of minima make several blocks
    from vqvae.quantize import search

    monkeypatch.setattr(search, "_TILE_CODES", width)
    monkeypatch.setattr(search, "_MINIMA_ELEMENTS", minima)
    gen = torch.Generator().manual_seed(width)
    cb = near_tie_codebook(1000, 12, gen)
    near = rows_near(cb, torch.arange(0, 1000, 3), gen)
    flat = torch.cat([torch.randn(400, 12, generator=gen), near, cb[::5]])
    for chunk in (None, 1, 33):
        check(flat, cb, chunk_size=chunk)
    assert (check(cb[::7].clone(), torch.cat([cb, cb])) < 1000).all()  # of two twins, the first wins


@pytest.mark.parametrize("k", [6, 12])  # one pass (< 8 tiles) and two passes
def test_near_ties_between_tiles_of_one_code(monkeypatch, k):
    # one code per tile: every near-tie is between tiles, where only the tile minima can reveal it
    from vqvae.quantize import search

    monkeypatch.setattr(search, "_TILE_CODES", 1)
    gen = torch.Generator().manual_seed(k)
    cb = 300 + torch.randn(k, 8, generator=gen) * 1e-2
    check(300 + torch.randn(400, 8, generator=gen) * 1e-2, cb)
