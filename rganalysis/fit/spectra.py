"""Distances and matchings between eigenvalue sets in the complex plane.

Used to compare the Koopman (DMD) spectra of two IMP flows and to align eigenvalues across the
bags of :class:`rganalysis.koopman.KoopmanDMD`.  Everything here is small, CPU-only numpy/scipy.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment

from rganalysis.errors import InvalidParameterError

__all__ = [
    "conjugate_pairs",
    "match_eigenvalues",
    "pooled_columns",
    "sort_eigenvalues",
    "spectral_wasserstein",
]


def _as_eigs(values: ArrayLike, what: str) -> np.ndarray:
    """1-D complex128 array of eigenvalues, finite, shape (k,)."""
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InvalidParameterError(f"{what}: expected a 1-D set of eigenvalues, got shape {arr.shape}")
    arr = arr.astype(np.complex128)
    if not np.all(np.isfinite(arr)):
        raise InvalidParameterError(f"{what}: eigenvalues must be finite")
    return arr


def _check_p(p: float) -> float:
    p = float(p)
    if not np.isfinite(p) or p < 1:
        raise InvalidParameterError(f"p must be a finite number >= 1, got {p}")
    return p


def sort_eigenvalues(values: ArrayLike, rtol: float = 1e-9) -> np.ndarray:
    """Order of ``values`` by descending ``|lambda|``, ties broken by descending imaginary, then real part.

    Moduli within ``rtol * max(1, max |lambda|)`` of each other count as equal, so two runs whose
    eigenvalues differ by round-off (another BLAS, another thread count) give the same order; a
    conjugate pair comes ``+im`` first.  Returns the (k,) int permutation.
    """
    lam = _as_eigs(values, "values")
    if lam.size == 0:
        return np.zeros(0, dtype=np.int64)
    mods = np.abs(lam)
    tol = float(rtol) * max(1.0, float(mods.max()))
    by_mod = np.argsort(-mods, kind="stable")
    out: list[int] = []
    start = 0
    for i in range(1, lam.size + 1):
        if i == lam.size or mods[by_mod[i - 1]] - mods[by_mod[i]] > tol:
            group = by_mod[start:i]
            out.extend(group[np.lexsort((-lam[group].real, -lam[group].imag))])
            start = i
    return np.asarray(out, dtype=np.int64)


def match_eigenvalues(reference: ArrayLike, other: ArrayLike, p: float = 1) -> np.ndarray:
    """Optimal one-to-one matching of ``other`` onto ``reference``.

    Minimises ``sum |reference[i] - other[idx[i]]|**p`` over injective assignments (scipy's
    ``linear_sum_assignment``).

    Parameters
    ----------
    reference : array_like, shape (k,)
        Complex eigenvalues to align to.
    other : array_like, shape (l,)
        Complex eigenvalues to be aligned.
    p : float
        Exponent of the cost ``|a - b|**p`` (>= 1).

    Returns
    -------
    idx : ndarray of int, shape (k,)
        ``other[idx[i]]`` is the partner of ``reference[i]``; ``-1`` where ``reference[i]`` is left
        unmatched (only possible when ``l < k``).  ``other[idx]`` (for ``l >= k``) is ``other``
        reordered like ``reference``.

    When ``reference`` and ``other`` are both symmetric about the real axis (spectra of real maps),
    an optimal matching and its mirror image tie; which one is returned is a round-off accident.
    Statistics over matchings should pool the partners of each conjugate pair
    (:func:`conjugate_pairs`, :func:`pooled_columns`).
    """
    p = _check_p(p)
    ref = _as_eigs(reference, "reference")
    oth = _as_eigs(other, "other")
    idx = np.full(ref.shape[0], -1, dtype=np.int64)
    if ref.size == 0 or oth.size == 0:
        return idx
    cost = np.abs(ref[:, None] - oth[None, :]) ** p
    rows, cols = linear_sum_assignment(cost)
    idx[rows] = cols
    return idx


def conjugate_pairs(values: ArrayLike, rtol: float = 1e-9) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` with ``lam[j] = conj(lam[i])`` (to ``rtol``) and ``lam[i].imag > 0``."""
    lam = _as_eigs(values, "values")
    tol = float(rtol) * max(1.0, float(np.abs(lam).max(initial=0.0)))
    pairs: list[tuple[int, int]] = []
    used: set[int] = set()
    for i in np.flatnonzero(lam.imag > tol):
        d = np.abs(lam - np.conj(lam[i]))
        d[list(used | {int(i)})] = np.inf
        j = int(np.argmin(d))
        if d[j] <= tol:
            pairs.append((int(i), j))
            used.add(j)
    return pairs


def pooled_columns(samples: np.ndarray, reference: ArrayLike, conjugate: bool = False) -> list[np.ndarray]:
    """Per reference eigenvalue, the samples of its matched partners, a conjugate pair's pooled.

    ``samples`` (n, k) holds, per resample, the partner of each of the k ``reference`` eigenvalues.
    A conjugate pair ``(i, j)`` of the reference is one real mode: whether a resample's partners land
    on ``i`` or on ``j`` is decided by a tie (see :func:`match_eigenvalues`), so both members get the
    pooled ``2n`` values: column i with ``conj`` of column j, and the mirror for j (``conjugate``:
    the samples are complex and the mirror conjugates them; otherwise they are real, e.g. moduli).
    Returns a list of k 1-D arrays.
    """
    s = np.asarray(samples)
    cols = [s[:, k] for k in range(s.shape[1])]
    mirror = np.conj if conjugate else (lambda x: x)
    for i, j in conjugate_pairs(reference):
        cols[i], cols[j] = (
            np.concatenate([s[:, i], mirror(s[:, j])]),
            np.concatenate([s[:, j], mirror(s[:, i])]),
        )
    return cols


def spectral_wasserstein(
    a: ArrayLike, b: ArrayLike, p: float = 1, return_matching: bool = False, pad: complex = 0.0
) -> float | tuple[float, np.ndarray]:
    """p-Wasserstein distance between two eigenvalue sets in the complex plane.

    The shorter set is padded with ``pad`` (default 0: an eigenvalue 0 is a mode that has died out; for
    sets of exponents, :func:`rganalysis.fit.fixed_points.exponent_points`, the dead mode is
    :data:`~rganalysis.fit.fixed_points.EXPONENT_FLOOR`), so both
    sets have ``n = max(len(a), len(b))`` points; each set is read as the uniform measure on its
    ``n`` points, and the distance is

        W_p(a, b) = ( min_pi  (1/n) * sum_i |a_i - b_pi(i)|**p ) ** (1/p)

    over permutations ``pi`` (scipy's ``linear_sum_assignment``).  Examples (p = 1):
    ``{1} vs {0.5} -> 0.5``; ``{1, 0.5} vs {1} -> 0.5 / 2 = 0.25`` (0.5 is matched to the padded 0).
    Two empty sets are at distance 0.  For sets of equal size this is a metric; conjugate pairs
    are handled like any other points.

    Parameters
    ----------
    a, b : array_like, shapes (k,), (l,)
        Complex (or real) eigenvalues.
    p : float
        Order of the distance, >= 1.
    return_matching : bool
        Also return the optimal matching.

    Returns
    -------
    distance : float
    matching : ndarray of int, shape (n, 2), only if ``return_matching``
        Rows ``(i, j)``: ``a[i]`` is matched to ``b[j]``; ``-1`` stands for a padded point.
        Sorted by ``i`` (padded rows last).
    """
    p = _check_p(p)
    ea = _as_eigs(a, "a")
    eb = _as_eigs(b, "b")
    n = max(ea.size, eb.size)
    if n == 0:
        dist = 0.0
        return (dist, np.zeros((0, 2), dtype=np.int64)) if return_matching else dist
    pa = np.full(n, complex(pad), dtype=np.complex128)
    pb = np.full(n, complex(pad), dtype=np.complex128)
    pa[: ea.size] = ea
    pb[: eb.size] = eb
    cost = np.abs(pa[:, None] - pb[None, :]) ** p
    rows, cols = linear_sum_assignment(cost)
    dist = float((cost[rows, cols].sum() / n) ** (1.0 / p))
    if not return_matching:
        return dist
    ia = np.where(rows < ea.size, rows, -1)
    jb = np.where(cols < eb.size, cols, -1)
    matching = np.stack([ia, jb], axis=1).astype(np.int64)
    order = np.lexsort((matching[:, 1], np.where(matching[:, 0] < 0, n, matching[:, 0])))
    return dist, matching[order]
