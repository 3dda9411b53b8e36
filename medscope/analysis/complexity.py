"""Complexity metrics of weight vectors.

Pure functions (no I/O apart from numba's on-disk compilation cache):

* :func:`sample_entropy` -- exact Sample Entropy (Richman & Moorman, 2000) with
  the Chebyshev distance, computed by sorting and counting (O(N log^2 N) for
  ``m = 2``) instead of comparing all template pairs.
* :func:`lmc_complexity` -- López-Ruiz--Mancini--Calbet statistical complexity
  of a histogram of the values.
* :func:`weight_statistics` -- count, moments, norms and sparsity of a vector.

All functions take a 1-D vector; a layer's weights are passed flattened in
PyTorch memory order (``tensor.detach().cpu().numpy().ravel()``).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Union

import numpy as np
from numba import njit

__all__ = [
    "SampleEntropyResult",
    "sample_entropy",
    "sample_entropy_value",
    "LMCResult",
    "lmc_complexity",
    "WeightStatistics",
    "weight_statistics",
]

#: Default tolerance factor: ``r = R_FACTOR * std(x, ddof=0)``.
R_FACTOR = 0.2
CONSTANT_REASON = "constant vector (std = 0)"  # undefined for Sample Entropy and LMC alike

# Event blocks this small are counted by direct comparison inside the
# divide-and-conquer of the 3-D count (cheaper than the counter there).
_BASE_BLOCK = 64


# ---------------------------------------------------------------------------
# numba kernels: everything below works on *ranks* of the sorted values, and
# every floating-point "within r" decision is taken once, in
# ``_match_bounds``, with the very comparison of the definition.
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _match_bounds(s, r, inclusive):
    """For sorted ``s`` return ``lo, hi`` such that value ``s[t]`` is within
    ``r`` of ``s[k]`` exactly when ``lo[k] <= t <= hi[k]``.

    "Within" is ``abs(s[t] - s[k]) <= r`` (``inclusive``) or ``< r``, evaluated
    in float64 exactly as written.  Because rounding is monotone,
    ``fl(s[k] - s[t])`` is monotone in ``t`` and in ``k``; the matching set of
    each value is therefore a contiguous run of ranks and both bounds are
    non-decreasing in ``k`` (two pointers, O(N)).  Requires that every value
    matches itself (``r >= 0`` inclusive, ``r > 0`` strict).
    """
    n = s.size
    lo = np.empty(n, np.int64)
    hi = np.empty(n, np.int64)
    t = 0
    for k in range(n):
        if inclusive:
            while s[k] - s[t] > r:
                t += 1
        else:
            while s[k] - s[t] >= r:
                t += 1
        lo[k] = t
    t = 0
    for k in range(n):
        if t < k:
            t = k
        if inclusive:
            while t + 1 < n and s[t + 1] - s[k] <= r:
                t += 1
        else:
            while t + 1 < n and s[t + 1] - s[k] < r:
                t += 1
        hi[k] = t
    return lo, hi


@njit(cache=True, nogil=True)
def _fw_add(tree, i, v, size):
    """Fenwick tree over positions ``0 .. size-1`` (``tree[1..size]``; the
    array may be longer): add ``v`` at 0-based position ``i``."""
    i += 1
    while i <= size:
        tree[i] += v
        i += i & (-i)


@njit(cache=True, nogil=True)
def _fw_range(tree, lo_, hi_):
    """Fenwick tree: sum of positions ``lo_ .. hi_-1`` (``lo_ <= hi_``); the
    two prefix walks stop where they meet."""
    s = 0
    while hi_ > lo_:
        s += tree[hi_]
        hi_ &= hi_ - 1
    while lo_ > hi_:
        s -= tree[lo_]
        lo_ &= lo_ - 1
    return s


@njit(cache=True, nogil=True)
def _popcount(x):
    """Number of set bits of a uint64 (SWAR)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@njit(cache=True, nogil=True)
def _bs_flip(bits, coarse, nw, i, v):
    """Bit-set counter over distinct positions: toggle position ``i`` (``v``:
    +1 when setting, -1 when clearing) and update the per-word Fenwick
    tree ``coarse`` (``nw`` words)."""
    bits[i >> 6] ^= np.uint64(1) << np.uint64(i & 63)
    _fw_add(coarse, i >> 6, v, nw)


@njit(cache=True, nogil=True)
def _bs_count(bits, coarse, lo_, hi_):
    """Number of set positions in ``lo_ .. hi_-1``: popcounts of the two end
    words plus a Fenwick range over the full words between.  The structure is
    small (1 bit per position) and stays in L1/L2 cache."""
    if lo_ >= hi_:
        return 0
    wl = lo_ >> 6
    wh = hi_ >> 6
    ol = np.uint64(lo_ & 63)
    oh = np.uint64(hi_ & 63)
    one = np.uint64(1)
    if wl == wh:
        return _popcount((bits[wl] >> ol) & ((one << (oh - ol)) - one))
    s = _popcount(bits[wl] >> ol) + _fw_range(coarse, wl + 1, wh)
    if oh > 0:
        s += _popcount(bits[wh] & ((one << oh) - one))
    return s


@njit(cache=True, nogil=True)
def _blocks(hi, n):
    """Cut the sorted values (rank space ``0..n-1``) greedily into blocks: a
    block starts at the first rank not within ``r`` of the previous block's
    start and holds every rank within ``r`` of its own start.

    Any two values of one block match, values two or more blocks apart never
    match (monotone rounding: for ``t`` in the block of ``s``,
    ``fl(x_t - x_u) <= fl(x_t - x_s) <= r`` for ``s <= u <= t``; and across
    two blocks the difference exceeds the gap between the middle block's
    start and the next start, which is ``> r``).
    Returns ``bstart`` (length ``nb + 1``), ``blk`` (block of each rank), ``nb``.
    """
    bstart = np.empty(n + 1, np.int64)
    blk = np.empty(n, np.int64)
    nb = 0
    s = 0
    while s < n:
        bstart[nb] = s
        e = hi[s] + 1
        for u in range(s, e):
            blk[u] = nb
        nb += 1
        s = e
    bstart[nb] = n
    return bstart[: nb + 1].copy(), blk, nb


@njit(cache=True, nogil=True)
def _a_order(a, hi, n):
    """Blocks of the rank space and the points (distinct ranks ``a``) listed in
    ascending ``a``; a block's points are the contiguous positions
    ``goff[k] .. goff[k+1]-1``.  Returns ``bstart, nb, perm, pblk, goff``."""
    bstart, blk, nb = _blocks(hi, n)
    npt = a.size
    at = np.full(n, -1, np.int64)
    for p in range(npt):
        at[a[p]] = p
    perm = np.empty(npt, np.int64)
    pblk = np.empty(npt, np.int64)
    goff = np.zeros(nb + 1, np.int64)
    t = 0
    for u in range(n):
        p = at[u]
        if p >= 0:
            perm[t] = p
            k = blk[u]
            pblk[t] = k
            goff[k + 1] += 1
            t += 1
    for k in range(nb):
        goff[k + 1] += goff[k]
    return bstart, nb, perm, pblk, goff


@njit(cache=True, nogil=True)
def _local_ranks(key, pblk, nb, lo, hi, n):
    """One sweep over the rank space of a coordinate (``key[pos]``: distinct
    ranks of the points at positions ``pos`` in ``a`` order, ``pblk[pos]``:
    their ``a`` block).  For every position returns, as int32:

    * ``rk``: rank of its key among the keys of its own block;
    * ``olo, ohi``: how many keys of its own block are ``< lo[key]`` /
      ``<= hi[key]`` -- its matching keys are local ranks ``olo .. ohi-1``;
    * ``plo, phi``: the same counts in the previous block.

    O(n), no binary searches; results are recorded in rank order and
    gathered back to positions once (cache-friendlier than scattering).
    """
    npt = key.size
    # at[u]: (position << 32 | block) of the key with rank u, or -1
    at = np.full(n, -1, np.int64)
    for p in range(npt):
        at[key[p]] = (np.int64(p) << 32) | np.int64(pblk[p])
    rec = np.empty((n, 5), np.int32)  # by rank: rk, olo, ohi, plo, phi
    counter = np.zeros(nb + 1, np.int64)  # counter[k + 1]: keys of block k seen
    m32 = np.int64(0xFFFFFFFF)
    j1 = 0
    j2 = 0
    for t in range(n + 1):
        # keys whose matching range starts at t: count keys < t
        while j1 < n and lo[j1] <= t:
            v = at[j1]
            if v >= 0:
                k = v & m32
                rec[j1, 1] = counter[k + 1]
                rec[j1, 3] = counter[k]
            j1 += 1
        # keys whose matching range ends at t - 1: count keys <= t - 1
        while j2 < n and hi[j2] < t:
            v = at[j2]
            if v >= 0:
                k = v & m32
                rec[j2, 2] = counter[k + 1]
                rec[j2, 4] = counter[k]
            j2 += 1
        if t < n:
            v = at[t]
            if v >= 0:
                k = v & m32
                rec[t, 0] = counter[k + 1]
                counter[k + 1] += 1
    rk = np.empty(npt, np.int32)
    olo = np.empty(npt, np.int32)
    ohi = np.empty(npt, np.int32)
    plo = np.empty(npt, np.int32)
    phi = np.empty(npt, np.int32)
    for p in range(npt):
        u = key[p]
        rk[p] = rec[u, 0]
        olo[p] = rec[u, 1]
        ohi[p] = rec[u, 2]
        plo[p] = rec[u, 3]
        phi[p] = rec[u, 4]
    return rk, olo, ohi, plo, phi


@njit(cache=True, nogil=True)
def _query_count(ka, lo, g0, g1, limit):
    """Number of leading positions ``g0 ..`` of a block whose ``a`` matches a
    value below rank ``limit`` (``lo`` is non-decreasing)."""
    t = g0
    while t < g1 and lo[ka[t]] < limit:
        t += 1
    return t - g0


@njit(cache=True, nogil=True)
def _pairs_1d(a, lo, n):
    """Number of unordered pairs of points (distinct ranks ``a``) whose values
    match.  O(n)."""
    pref = np.zeros(n + 1, np.int64)
    for p in range(a.size):
        pref[a[p] + 1] = 1
    for u in range(n):
        pref[u + 1] += pref[u]
    total = 0
    for p in range(a.size):
        u = a[p]
        total += pref[u] - pref[lo[u]]
    return total


@njit(cache=True, nogil=True)
def _pairs_2d_sorted(ka, bstart, nb, goff, olo, ohi, rk, plo, phi, lo):
    """2-D pair count given the ``a`` order and the local ranks of ``b``.

    Pairs inside one ``a`` block match in ``a`` automatically, so they are
    counted from the own-block ``b`` ranges (O(n)).  Pairs in adjacent blocks
    ``k, k+1`` need ``a_i >= lo[a_j]``: walking both blocks in descending key
    order (inserts first on equal keys) makes that "inserted before", and a
    Fenwick tree over block ``k``'s local ``b`` ranks counts the ``b`` range
    (O(n log n)).  Blocks further apart never match.
    """
    total = 0
    for pos in range(ka.size):
        total += ohi[pos] - olo[pos] - 1
    total //= 2
    gmax = 0
    for k in range(nb):
        gmax = max(gmax, goff[k + 1] - goff[k])
    tree = np.zeros(gmax + 1, np.int32)
    for k in range(nb - 1):
        g0 = goff[k]
        g1 = goff[k + 1]
        nq = _query_count(ka, lo, g1, goff[k + 2], bstart[k + 1])
        if g1 == g0 or nq == 0:
            continue
        ip = g1 - 1
        iq = g1 + nq - 1
        while iq >= g1:
            if ip >= g0 and ka[ip] >= lo[ka[iq]]:
                _fw_add(tree, rk[ip], 1, g1 - g0)
                ip -= 1
            else:
                total += _fw_range(tree, plo[iq], phi[iq])
                iq -= 1
        tree[: g1 - g0 + 1] = 0
    return total


@njit(cache=True, nogil=True)
def _pairs_2d(a, b, lo, hi, n):
    """Number of unordered pairs of 2-D points (rank coordinates ``a``, ``b``,
    each distinct) that match in both coordinates.  O(n log n)."""
    bstart, nb, perm, pblk, goff = _a_order(a, hi, n)
    ka = a[perm]
    kb = b[perm]
    rk, olo, ohi, plo, phi = _local_ranks(kb, pblk, nb, lo, hi, n)
    return _pairs_2d_sorted(ka, bstart, nb, goff, olo, ohi, rk, plo, phi, lo)


@njit(cache=True, nogil=True)
def _merge_keys(src, dst, a0, a1, a2):
    """Merge the sorted runs ``src[a0:a1]`` and ``src[a1:a2]`` into
    ``dst[a0:a2]``."""
    i = a0
    j = a1
    o = a0
    while i < a1 and j < a2:
        x = src[i]
        y = src[j]
        if y < x:
            dst[o] = y
            j += 1
        else:
            dst[o] = x
            i += 1
        o += 1
    while i < a1:
        dst[o] = src[i]
        i += 1
        o += 1
    while j < a2:
        dst[o] = src[j]
        j += 1
        o += 1


@njit(cache=True, nogil=True)
def _merge_pairs(src, srcv, dst, dstv, a0, a1, a2):
    """Like :func:`_merge_keys`, carrying the payload ``srcv`` along."""
    i = a0
    j = a1
    o = a0
    while i < a1 and j < a2:
        if src[j] < src[i]:
            dst[o] = src[j]
            dstv[o] = srcv[j]
            j += 1
        else:
            dst[o] = src[i]
            dstv[o] = srcv[i]
            i += 1
        o += 1
    while i < a1:
        dst[o] = src[i]
        dstv[o] = srcv[i]
        i += 1
        o += 1
    while j < a2:
        dst[o] = src[j]
        dstv[o] = srcv[j]
        j += 1
        o += 1


@njit(cache=True, nogil=True)
def _cross_3d(g0, g1, q1, ka, lo, rkb, plb, phb, rkc, plc, phc, bits, coarse):
    """Pairs (i in block k: positions ``g0..g1-1``; j in block k+1: positions
    ``g1..q1-1``) with ``a_i >= lo[a_j]`` and matching ``b`` and ``c``.

    All ``b`` and ``c`` values are local ranks in block k: an insert ``i`` has
    ranks ``rkb[i], rkc[i]``; a query ``j`` matches the ranks
    ``plb[j] .. phb[j]-1`` and ``plc[j] .. phc[j]-1``.

    The one-sided ``a`` condition becomes an event order (descending key,
    inserts before queries on equal keys); the remaining 2-D box count over
    "earlier inserts" is an offline divide and conquer (CDQ) over that order,
    bottom-up: base blocks of events are compared directly, then each node
    sweeps its left-half inserts and right-half queries in ``b`` order
    (sliding window) with a bit-set counter over ``c`` ranks, and merges the
    halves.  Inserts and queries live in separate arrays, each kept sorted by
    ``b`` inside every node (queries by ``(plb, phb)``, which orders both
    bounds since they are non-decreasing in the query's ``b``).  Records are
    packed ``hi << 32 | lo`` int64.  O(n log^2 n).
    """
    npn = g1 - g0
    nq = q1 - g1
    ne = npn + nq
    m32 = np.int64(0xFFFFFFFF)
    ins = np.empty(npn, np.int64)  # (local b << 32) | local c
    qk = np.empty(nq, np.int64)  # (plb << 32) | phb
    qc = np.empty(nq, np.int64)  # (plc << 32) | phc
    qpre = np.empty(nq, np.int64)  # inserts before the query (event order)
    icum = np.empty(ne + 1, np.int64)  # inserts among the first e events
    ip = g1 - 1
    iq = q1 - 1
    ni = 0
    nn = 0
    for e in range(ne):
        icum[e] = ni
        if ip >= g0 and (iq < g1 or ka[ip] >= lo[ka[iq]]):
            ins[ni] = (np.int64(rkb[ip]) << 32) | np.int64(rkc[ip])
            ni += 1
            ip -= 1
        else:
            qk[nn] = (np.int64(plb[iq]) << 32) | np.int64(phb[iq])
            qc[nn] = (np.int64(plc[iq]) << 32) | np.int64(phc[iq])
            qpre[nn] = ni
            nn += 1
            iq -= 1
    icum[ne] = ni

    total = 0
    for l0 in range(0, ne, _BASE_BLOCK):
        l1 = min(l0 + _BASE_BLOCK, ne)
        i0 = icum[l0]
        i1 = icum[l1]
        qa = l0 - i0
        qb = l1 - i1
        for qi in range(qa, qb):
            bl = qk[qi] >> 32
            bh = qk[qi] & m32
            cl = qc[qi] >> 32
            ch = qc[qi] & m32
            for ii in range(i0, qpre[qi]):
                v = ins[ii]
                bv = v >> 32
                cv = v & m32
                total += (bv >= bl) & (bv < bh) & (cv >= cl) & (cv < ch)
        # insertion sorts (base blocks are small)
        for t in range(i0 + 1, i1):
            v = ins[t]
            u = t - 1
            while u >= i0 and ins[u] > v:
                ins[u + 1] = ins[u]
                u -= 1
            ins[u + 1] = v
        for t in range(qa + 1, qb):
            v = qk[t]
            vc = qc[t]
            u = t - 1
            while u >= qa and qk[u] > v:
                qk[u + 1] = qk[u]
                qc[u + 1] = qc[u]
                u -= 1
            qk[u + 1] = v
            qc[u + 1] = vc

    nw = (npn + 63) >> 6
    tins = np.empty(npn, np.int64)
    tqk = np.empty(nq, np.int64)
    tqc = np.empty(nq, np.int64)
    w = _BASE_BLOCK
    while w < ne:
        for l0 in range(0, ne, 2 * w):
            mid = min(l0 + w, ne)
            end = min(l0 + 2 * w, ne)
            ia = icum[l0]
            im = icum[mid]
            ie = icum[end]
            qa = l0 - ia
            qm = mid - im
            qe = end - ie
            if im > ia and qe > qm:
                hp = ia
                lp = ia
                for qi in range(qm, qe):
                    kq = qk[qi]
                    bl = kq >> 32
                    bh = kq & m32
                    while hp < im and (ins[hp] >> 32) < bh:
                        _bs_flip(bits, coarse, nw, ins[hp] & m32, 1)
                        hp += 1
                    while lp < hp and (ins[lp] >> 32) < bl:
                        _bs_flip(bits, coarse, nw, ins[lp] & m32, -1)
                        lp += 1
                    cq = qc[qi]
                    total += _bs_count(bits, coarse, cq >> 32, cq & m32)
                for t in range(lp, hp):
                    _bs_flip(bits, coarse, nw, ins[t] & m32, -1)
            _merge_keys(ins, tins, ia, im, ie)
            _merge_pairs(qk, qc, tqk, tqc, qa, qm, qe)
        ins, tins = tins, ins
        qk, tqk = tqk, qk
        qc, tqc = tqc, qc
        w *= 2
    return total


@njit(cache=True, nogil=True)
def _counts_m2(rank, lo, hi, n):
    """(A, B) for ``m = 2``: B counts pairs of points ``(r_i, r_{i+1})`` and A
    pairs of points ``(r_i, r_{i+1}, r_{i+2})``, ``0 <= i < n - 2``, matching
    in every coordinate (``r`` = ranks).

    B is the 2-D count of :func:`_pairs_2d_sorted`.  For A, with blocks on the
    first coordinate: pairs inside one block need ``b`` and ``c`` to match
    (sliding window over the block's local ``b`` order, bit-set counter over
    local ``c`` ranks; O(n log n)); pairs in adjacent blocks go to
    :func:`_cross_3d` (O(n log^2 n)); all other pairs never match.
    """
    nt = n - 2
    a = rank[:nt]
    bstart, nb, perm, pblk, goff = _a_order(a, hi, n)
    ka = a[perm]
    kb = rank[1 : nt + 1][perm]
    kc = rank[2 : nt + 2][perm]
    rkb, olb, ohb, plb, phb = _local_ranks(kb, pblk, nb, lo, hi, n)
    b_count = _pairs_2d_sorted(ka, bstart, nb, goff, olb, ohb, rkb, plb, phb, lo)
    rkc, olc, ohc, plc, phc = _local_ranks(kc, pblk, nb, lo, hi, n)

    gmax = 0
    for k in range(nb):
        gmax = max(gmax, goff[k + 1] - goff[k])
    a_count = 0
    # pairs inside one a-block: window over local b order. Gather what the
    # window needs into b order first (one scatter pass, then sequential).
    wlb = np.empty(nt, np.int32)  # own-block lower bound of b (local rank)
    wc = np.empty(nt, np.int32)  # local c rank
    wcl = np.empty(nt, np.int32)  # own-block c range
    wch = np.empty(nt, np.int32)
    for pos in range(nt):
        t = goff[pblk[pos]] + rkb[pos]
        wlb[t] = olb[pos]
        wc[t] = rkc[pos]
        wcl[t] = olc[pos]
        wch[t] = ohc[pos]
    bits = np.zeros((gmax + 63) // 64 + 1, np.uint64)
    coarse = np.zeros((gmax + 63) // 64 + 2, np.int32)
    for k in range(nb):
        g0 = goff[k]
        g1 = goff[k + 1]
        nw = (g1 - g0 + 63) >> 6
        left = g0
        for t in range(g0, g1):
            low = g0 + wlb[t]
            while left < low:
                _bs_flip(bits, coarse, nw, wc[left], -1)
                left += 1
            a_count += _bs_count(bits, coarse, wcl[t], wch[t])
            _bs_flip(bits, coarse, nw, wc[t], 1)
        for t in range(left, g1):
            _bs_flip(bits, coarse, nw, wc[t], -1)
    # pairs in adjacent a-blocks
    for k in range(nb - 1):
        g0 = goff[k]
        g1 = goff[k + 1]
        nq = _query_count(ka, lo, g1, goff[k + 2], bstart[k + 1])
        if g1 > g0 and nq > 0:
            a_count += _cross_3d(
                g0, g1, g1 + nq, ka, lo, rkb, plb, phb, rkc, plc, phc, bits, coarse
            )
    return a_count, b_count


@njit(cache=True, nogil=True)
def _brute_counts(x, m, r, inclusive):
    """Reference O(N^2) counts for any ``m``: walk every diagonal (offset
    ``d = j - i``) once, tracking the run of consecutive matching samples."""
    n = x.size
    nt = n - m  # templates 0 .. n-m-1 for both lengths
    a_count = 0
    b_count = 0
    for d in range(1, nt):
        run = 0
        # template i (i + d <= nt - 1) of length m+1 ends at sample i + m
        for p in range(0, nt - d + m):
            diff = abs(x[p] - x[p + d])
            if inclusive:
                ok = diff <= r
            else:
                ok = diff < r
            if ok:
                run += 1
            else:
                run = 0
            if run >= m and p - m + 1 <= nt - 1 - d and p - m + 1 >= 0:
                b_count += 1
            if run >= m + 1:
                a_count += 1
    return a_count, b_count


# ---------------------------------------------------------------------------
# Sample Entropy
# ---------------------------------------------------------------------------


class SampleEntropyResult(NamedTuple):
    """Outcome of :func:`sample_entropy`.

    Attributes
    ----------
    value : float
        ``-ln(A / B)`` in nats, or ``nan`` when undefined (see ``reason``).
    a_count : int
        A: unordered pairs of distinct templates of length ``m + 1`` within
        ``r`` (``-1`` when not computed).
    b_count : int
        B: unordered pairs of distinct templates of length ``m`` within ``r``
        (``-1`` when not computed).
    n : int
        Length N of the input vector.
    m : int
        Embedding dimension (template length).
    r : float
        Tolerance actually used, in the units of ``x``.
    reason : str or None
        ``None`` when ``value`` is finite, otherwise why it is ``nan``.
    """

    value: float
    a_count: int
    b_count: int
    n: int
    m: int
    r: float
    reason: Optional[str]

    @property
    def ok(self) -> bool:
        """True when ``value`` is defined (finite)."""
        return self.reason is None


def _as_vector(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(
            f"expected a 1-D vector, got shape {x.shape}; flatten it first "
            "(e.g. tensor.detach().cpu().numpy().ravel())"
        )
    return np.ascontiguousarray(x, dtype=np.float64)


def sample_entropy(
    x,
    m: int = 2,
    r: Optional[float] = None,
    *,
    inclusive: bool = True,
    method: str = "auto",
) -> SampleEntropyResult:
    r"""Exact Sample Entropy (SampEn) of a 1-D vector.

    Parameters
    ----------
    x : array_like, shape (N,)
        1-D vector, e.g. a layer's weights flattened in PyTorch memory order.
        Converted to float64 (C-contiguous) before anything else.
    m : int
        Embedding dimension (template length), ``m >= 1``. Default 2.
    r : float or None
        Tolerance, absolute, in the units of ``x``. Default
        ``0.2 * np.std(x, ddof=0)`` of the float64 vector.
    inclusive : bool
        Tie rule. ``True`` (default): two samples match when
        ``abs(x_i - x_j) <= r``; ``False``: when ``abs(x_i - x_j) < r``.
    method : {"auto", "fast", "brute"}
        ``"fast"``: sort-and-count (``m`` = 1 or 2 only). ``"brute"``: O(N^2)
        walk over all template pairs (any ``m``; the reference).
        ``"auto"`` (default): fast for ``m <= 2``, brute for ``m >= 3``.

    Returns
    -------
    result : SampleEntropyResult
        ``value`` (nats) with the counts ``a_count`` (A), ``b_count`` (B),
        ``n``, ``m``, ``r`` and ``reason`` (``None`` when ``value`` is defined,
        else why it is ``nan``). ``value`` is never ``inf``.

    Notes
    -----
    Richman & Moorman (2000) with the Chebyshev distance. Templates are
    :math:`u_i^{(k)} = (x_i, \dots, x_{i+k-1})` for :math:`0 \le i < N - m`
    -- the *same* :math:`N - m` start indices for both lengths
    :math:`k = m` and :math:`k = m + 1`. With
    :math:`d(u, v) = \max_l |u_l - v_l|`,

    .. math::

        B = \#\{i < j : d(u_i^{(m)}, u_j^{(m)}) \le r\}, \quad
        A = \#\{i < j : d(u_i^{(m+1)}, u_j^{(m+1)}) \le r\}, \quad
        \mathrm{SampEn} = -\ln(A / B).

    Self-matches (:math:`i = j`) are excluded; counting ordered pairs would
    double both counts and leave the value unchanged.

    **Ties.** A pair of samples is within tolerance when
    ``abs(x_i - x_j) <= r`` (default, ``inclusive=True``: Richman &
    Moorman's "within r", as in PhysioNet's ``sampen``), or when
    ``abs(x_i - x_j) < r`` (``inclusive=False``). The comparison is the
    float64 expression as written -- never a shifted or rescaled bound -- so
    a difference that evaluates to exactly ``r`` is a match if and only if
    ``inclusive``.

    **Relation to antropy** (``antropy.sample_entropy(x, order=m)``, 0.2.x).
    Both of its code paths use the same :math:`N - m` templates for A and B
    and the same default ``r`` (for float64 input), but different tie rules:

    * ``N < 5000``: a numba loop that counts a position as *mismatching* when
      ``abs(diff) >= r``, i.e. a match is ``< r`` -- our ``inclusive=False``;
    * ``N >= 5000``: ``sklearn.neighbors.KDTree.query_radius`` counts
      neighbours at distance ``<= r`` -- our default ``inclusive=True``; it
      returns ``-log(mean((c2-1)/(N-m-1)) / mean((c1-1)/(N-m-1)))``, equal to
      ``-ln(A/B)`` up to rounding (~1e-16).

    The rules differ only when some difference equals ``r`` exactly in
    float64, which essentially never happens on continuous data (for float32
    weights it cannot happen unless ``r`` itself has few significant bits):
    there this function equals antropy on both paths (tested to 1e-12). On
    tied data (e.g. integers with an integer ``r``) ``inclusive=False``
    reproduces antropy's numba path and ``inclusive=True`` its KDTree path.
    antropy returns ``inf`` when A = 0 and ``nan`` when B = 0; here both are
    ``nan`` with a ``reason``.

    **Algorithm.** The values are sorted once; each value's matches form a
    contiguous range of ranks, found with the exact comparison above (two
    pointers). Everything after is integer counting, so A and B are exact --
    no sampling, no approximation:

    * ``m = 1``: B by prefix counts (O(N)); A as the 2-D count below.
    * ``m = 2``: B is a 2-D Chebyshev range count and A a 3-D one. The sorted
      values are cut into blocks of width ~r (any two values of a block match,
      values two blocks apart never do). Pairs in one block of the first
      coordinate reduce to a 1-D count (B) or a sliding window over the
      second coordinate with a counter over ranks of the third (A); pairs in
      adjacent blocks have a one-sided first-coordinate condition, handled
      as an event order with a Fenwick tree (B, O(N log N)) or an offline
      divide and conquer (CDQ) over that order with a sliding window and a
      bit-set/Fenwick counter (A, O(N log^2 N)).
    * ``m >= 3``: exact O(N^2) brute force (numba) -- fine up to ~5e4
      values, minutes beyond ~5e5.

    Memory is O(N) (peak about 110 bytes per value for ``m = 2``). The numba
    kernels are compiled on first use (~10-20 s) and cached on disk.

    Undefined results (``value = nan``), checked in this order:
    ``"contains NaN"``, ``"contains inf"``, ``"too short: N=3 < m+2=4"``
    (fewer than two templates), ``"constant vector (std = 0)"`` (all values
    equal: the default ``r`` would be 0, or a rounding error of the std;
    :func:`lmc_complexity` gives the same reason; with an explicit ``r`` a
    constant vector gives 0),
    ``"std overflows float64"``, ``"no m-matches (B = 0)"``,
    ``"no (m+1)-matches (A = 0)"`` (SampEn would be +inf; a common finite
    bound is ``-ln(2 / ((N-m-1) * (N-m)))``).

    References
    ----------
    Richman, J. S., & Moorman, J. R. (2000). Physiological time-series
    analysis using approximate entropy and sample entropy. Am J Physiol Heart
    Circ Physiol, 278(6), H2039-H2049.

    Examples
    --------
    Nine samples, m = 2, r = 0.5 (integers, so "match" means "equal"): the
    seven 2-templates contain (1, 2) three times -> B = 3 pairs; the seven
    3-templates contain (1, 2, 3) twice -> A = 1 pair; SampEn = ln 3.

    >>> import numpy as np
    >>> from medscope.analysis.complexity import sample_entropy
    >>> res = sample_entropy([1, 2, 3, 1, 2, 4, 1, 2, 3], m=2, r=0.5)
    >>> res.a_count, res.b_count, round(res.value, 4)
    (1, 3, 1.0986)
    >>> sample_entropy(np.ones(10)).reason
    'constant vector (std = 0)'
    >>> sample_entropy([0.0, 1.0, 2.0]).reason
    'too short: N=3 < m+2=4'
    >>> rng = np.random.default_rng(0)
    >>> print(f"{sample_entropy(rng.standard_normal(2000)).value:.4f}")
    2.1871
    """
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m must be an integer >= 1, got {m!r}")
    m = int(m)
    if method not in ("auto", "fast", "brute"):
        raise ValueError(f"method must be 'auto', 'fast' or 'brute', got {method!r}")
    if method == "fast" and m > 2:
        raise ValueError("method='fast' supports m = 1 or 2; use 'brute' or 'auto'")
    if r is not None:
        r = float(r)
        if not (r >= 0.0) or math.isinf(r):
            raise ValueError(f"r must be a finite number >= 0, got {r!r}")

    x = _as_vector(x)
    n = int(x.size)
    if n >= 2**31 - 1:
        raise ValueError(f"vector too long for the int32 counters: N={n}")
    r_out = float("nan") if r is None else r

    def undefined(reason, a=-1, b=-1, rr=r_out):
        return SampleEntropyResult(float("nan"), a, b, n, m, rr, reason)

    if n and np.isnan(x).any():
        return undefined("contains NaN")
    if n and np.isinf(x).any():
        return undefined("contains inf")
    if n < m + 2:
        return undefined(f"too short: N={n} < m+2={m + 2}")
    if r is None:
        with np.errstate(over="ignore", invalid="ignore"):
            r = float(R_FACTOR * np.std(x, ddof=0))  # the expression antropy uses
        # max == min, not std == 0: numpy's std of np.full(100, 0.7) is 2e-16, and antropy then gives 0
        # where for np.full(100, 1.0) it gives nan; every constant vector is undefined here
        if r == 0.0 or x.min() == x.max():
            return undefined(CONSTANT_REASON, rr=0.0)
        if not math.isfinite(r):
            return undefined("std overflows float64", rr=r)

    if not inclusive and r == 0.0:
        a_count, b_count = 0, 0  # nothing is strictly closer than 0
    elif method == "brute" or (method == "auto" and m > 2):
        a_count, b_count = _brute_counts(x, m, r, bool(inclusive))
    else:
        a_count, b_count = _fast_counts(x, m, r, bool(inclusive))
    a_count = int(a_count)
    b_count = int(b_count)

    if b_count == 0:
        return undefined("no m-matches (B = 0)", a_count, b_count, r)
    if a_count == 0:
        return undefined("no (m+1)-matches (A = 0)", a_count, b_count, r)
    value = -math.log(a_count / b_count) + 0.0  # + 0.0: no "-0.0"
    return SampleEntropyResult(value, a_count, b_count, n, m, r, None)


def _fast_counts(x: np.ndarray, m: int, r: float, inclusive: bool):
    """(A, B) by sort-and-count, ``m`` in {1, 2}; ``x`` float64, finite."""
    n = x.size
    order = np.argsort(x)  # ties may take any order
    s = np.ascontiguousarray(x[order])
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    lo, hi = _match_bounds(s, r, inclusive)
    nt = n - m
    if m == 1:
        b_count = _pairs_1d(rank[:nt], lo, n)
        a_count = _pairs_2d(rank[:nt], rank[1 : nt + 1], lo, hi, n)
    elif m == 2:
        a_count, b_count = _counts_m2(rank, lo, hi, n)
    else:  # pragma: no cover - guarded by the caller
        raise ValueError("fast path supports m = 1 or 2")
    return a_count, b_count


def sample_entropy_value(x, m: int = 2, r: Optional[float] = None, **kwargs) -> float:
    """Sample Entropy as a plain float (``nan`` when undefined).

    Same parameters as :func:`sample_entropy`; use that function to learn
    *why* a value is ``nan``.

    Examples
    --------
    >>> import numpy as np
    >>> from medscope.analysis.complexity import sample_entropy_value
    >>> round(sample_entropy_value([1, 2, 3, 1, 2, 4, 1, 2, 3], r=0.5), 4)
    1.0986
    >>> sample_entropy_value(np.ones(10))
    nan
    """
    return sample_entropy(x, m=m, r=r, **kwargs).value


# ---------------------------------------------------------------------------
# LMC complexity
# ---------------------------------------------------------------------------


class LMCResult(NamedTuple):
    """Outcome of :func:`lmc_complexity`.

    Attributes
    ----------
    H : float
        Normalised Shannon entropy of the histogram, in [0, 1].
    D : float
        Disequilibrium ``sum_i (p_i - 1/B)^2``, in [0, 1 - 1/B].
    C : float
        LMC complexity ``H * D``.
    n_bins : int
        Number of bins B actually used.
    lo, hi : float
        Histogram range (min and max of ``x``).
    reason : str or None
        ``None`` when defined, otherwise why the values are ``nan``.
    """

    H: float
    D: float
    C: float
    n_bins: int
    lo: float
    hi: float
    reason: Optional[str]


#: Default number of bins of :func:`lmc_complexity`.
LMC_DEFAULT_BINS = 64
#: Cap on the number of bins chosen by a rule (``"fd"``, ``"sqrt"``, ...).
LMC_MAX_BINS = 1024


def _rule_bins(x: np.ndarray, rule: str, max_bins: int) -> int:
    n = x.size
    span = float(x.max()) - float(x.min())
    if rule == "fd":
        q75, q25 = np.percentile(x, [75.0, 25.0])
        width = 2.0 * (q75 - q25) * n ** (-1.0 / 3.0)
        if span == 0:
            k = 1
        elif width > 0:
            k = math.ceil(span / width)
        else:  # IQR = 0 (e.g. mostly-zero weights): fall back to Sturges
            k = math.ceil(math.log2(n)) + 1
    elif rule == "sturges":
        k = math.ceil(math.log2(n)) + 1
    elif rule == "sqrt":
        k = math.ceil(math.sqrt(n))
    else:
        raise ValueError(f"unknown bin rule {rule!r}; use an int, 'fd', 'sturges' or 'sqrt'")
    return int(min(max(k, 1), max_bins))


def lmc_complexity(
    x, bins: Union[int, str] = LMC_DEFAULT_BINS, *, max_bins: int = LMC_MAX_BINS
) -> LMCResult:
    r"""López-Ruiz--Mancini--Calbet (LMC) statistical complexity of the value
    distribution of a 1-D vector.

    Parameters
    ----------
    x : array_like, shape (N,)
        1-D vector (e.g. flattened layer weights); converted to float64.
    bins : int or {"fd", "sturges", "sqrt"}
        Number of equal-width bins B over ``[min(x), max(x)]`` (default 64), or
        a rule: ``"fd"`` Freedman--Diaconis (width ``2 IQR N^(-1/3)``;
        Sturges when the IQR is 0), ``"sturges"`` (``ceil(log2 N) + 1``),
        ``"sqrt"`` (``ceil(sqrt N)``); a rule's count is clipped to
        ``[1, max_bins]``.
    max_bins : int
        Cap for rule-chosen bin counts (default 1024).

    Returns
    -------
    result : LMCResult
        ``H``, ``D``, ``C`` (dimensionless), ``n_bins``, ``lo``, ``hi`` and a
        ``reason`` (``None`` when defined).

    Notes
    -----
    With bin probabilities :math:`p_i = n_i / N` of an equal-width histogram
    with :math:`B` bins (``numpy.histogram``: half-open bins, the last one
    closed),

    .. math::

        H = -\frac{1}{\ln B} \sum_{i:\,p_i > 0} p_i \ln p_i, \qquad
        D = \sum_{i=1}^{B} \left(p_i - \frac{1}{B}\right)^2, \qquad
        C = H \cdot D.

    A uniform histogram gives ``D = 0`` and ``C = 0``; all values in one bin
    give ``H = 0`` and ``C = 0``. With ``B = 1``, ``H`` is defined as 0. A
    constant vector has no range to bin (``numpy`` would invent
    ``[v - 0.5, v + 0.5]``, in the units of ``x``): it is undefined, with the
    reason :func:`sample_entropy` gives it too, ``"constant vector (std = 0)"``,
    so the two measures agree on what such a tensor (a freshly initialised
    batch-norm weight) is. The default fixed B = 64 keeps ``H``, ``D`` and
    ``C`` comparable across layers of different sizes; rule-based bins adapt
    to N but make values depend on N. Empty input or NaN/inf values give
    ``nan`` with a ``reason``.

    References
    ----------
    López-Ruiz, R., Mancini, H. L., & Calbet, X. (1995). A statistical measure
    of complexity. Physics Letters A, 209(5-6), 321-326.

    Examples
    --------
    >>> import numpy as np
    >>> from medscope.analysis.complexity import lmc_complexity
    >>> res = lmc_complexity(np.arange(8.0), bins=8)   # one value per bin
    >>> round(res.H, 6), round(res.D, 6), round(res.C, 6)
    (1.0, 0.0, 0.0)
    >>> res = lmc_complexity(np.array([0.0, 0.0, 0.0, 1.0]), bins=2)
    >>> round(res.H, 4), round(res.D, 4), round(res.C, 4)
    (0.8113, 0.125, 0.1014)
    >>> lmc_complexity(np.ones(10)).reason
    'constant vector (std = 0)'
    """
    x = _as_vector(x)
    n = int(x.size)
    nan = float("nan")
    if n == 0:
        return LMCResult(nan, nan, nan, 0, nan, nan, "empty vector")
    if np.isnan(x).any():
        return LMCResult(nan, nan, nan, 0, nan, nan, "contains NaN")
    if np.isinf(x).any():
        return LMCResult(nan, nan, nan, 0, nan, nan, "contains inf")
    if isinstance(bins, str):
        n_bins = _rule_bins(x, bins, int(max_bins))
    else:
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
            raise ValueError(f"bins must be a positive int or a rule name, got {bins!r}")
        n_bins = int(bins)
    lo = float(x.min())
    hi = float(x.max())
    if lo == hi:
        return LMCResult(nan, nan, nan, 0, lo, hi, CONSTANT_REASON)
    counts, _ = np.histogram(x, bins=n_bins, range=(lo, hi))
    p = counts.astype(np.float64) / n
    nz = p[p > 0]
    if n_bins == 1:
        H = 0.0
    else:
        H = float(-(nz * np.log(nz)).sum() / math.log(n_bins))
        H = min(max(H, 0.0), 1.0) + 0.0  # clip rounding; no "-0.0"
    D = float(((p - 1.0 / n_bins) ** 2).sum())
    return LMCResult(H, D, H * D, n_bins, lo, hi, None)


# ---------------------------------------------------------------------------
# Weight statistics
# ---------------------------------------------------------------------------


class WeightStatistics(NamedTuple):
    """Outcome of :func:`weight_statistics` (see there for definitions)."""

    count: int
    mean: float
    std: float
    kurtosis: float
    l1_norm: float
    l2_norm: float
    frac_near_zero: float
    near_zero_threshold: float


def weight_statistics(
    x, near_zero: float = 1e-3, *, relative: bool = True
) -> WeightStatistics:
    r"""Summary statistics of a weight vector.

    Parameters
    ----------
    x : array_like, shape (N,)
        1-D vector (e.g. flattened layer weights); converted to float64.
    near_zero : float
        Near-zero threshold factor. With ``relative=True`` (default) a weight
        is near zero when ``|w| <= near_zero * max|w|``; with
        ``relative=False`` when ``|w| <= near_zero`` (absolute, units of
        ``x``). Default 1e-3.
    relative : bool
        Whether ``near_zero`` is relative to ``max|w|``.

    Returns
    -------
    stats : WeightStatistics
        ``count`` (N), ``mean``, ``std`` (population, ``ddof=0``),
        ``kurtosis`` (excess/Fisher, biased moment estimator:
        :math:`m_4 / m_2^2 - 3`, equal to
        ``scipy.stats.kurtosis(x, fisher=True, bias=True)``; 0 for a normal
        distribution, ``nan`` when ``std = 0``), ``l1_norm``
        (:math:`\sum |w|`), ``l2_norm`` (:math:`\sqrt{\sum w^2}`),
        ``frac_near_zero`` (fraction of weights at or below the threshold) and
        ``near_zero_threshold`` (the absolute threshold used). Mean, std and
        norms (and the threshold) have the units of ``x``; the rest are
        dimensionless. An empty vector, or one containing NaN, gives ``nan``
        in every field but ``count``.

    Examples
    --------
    >>> import numpy as np
    >>> from medscope.analysis.complexity import weight_statistics
    >>> st = weight_statistics(np.array([-2.0, 0.0, 0.0, 2.0]))
    >>> st.count, st.mean, st.std, st.kurtosis, st.l1_norm, st.l2_norm
    (4, 0.0, 1.4142135623730951, -1.0, 4.0, 2.8284271247461903)
    >>> st.frac_near_zero, st.near_zero_threshold
    (0.5, 0.002)
    """
    x = _as_vector(x)
    n = int(x.size)
    nan = float("nan")
    if n == 0 or np.isnan(x).any():
        return WeightStatistics(n, nan, nan, nan, nan, nan, nan, nan)
    mean = float(x.mean())
    d = x - mean
    m2 = float(np.mean(d * d))
    m4 = float(np.mean((d * d) ** 2))
    std = math.sqrt(m2)
    kurt = m4 / (m2 * m2) - 3.0 if m2 > 0 else nan
    absx = np.abs(x)
    l1 = float(absx.sum())
    l2 = float(np.linalg.norm(x))
    thr = float(near_zero) * float(absx.max()) if relative else float(near_zero)
    frac = float(np.count_nonzero(absx <= thr)) / n
    return WeightStatistics(n, mean, std, kurt, l1, l2, frac, thr)
