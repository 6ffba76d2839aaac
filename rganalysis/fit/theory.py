"""Closed-form theory of the data-free global IMP flow of per-layer densities (derived with sympy):
the rank-one density Jacobian, Gaussian layers, random-pruning perturbations.  Derivation:
docs/theory.md and docs/design.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import sympy as sp
import torch
from scipy.optimize import brentq

from rganalysis.errors import InvalidParameterError
from rganalysis.rg.coarse_graining import check_rate
from rganalysis.store.state import State

__all__ = [
    "density_jacobian_from_state",
    "density_jacobian_symbolic",
    "empirical_survival",
    "gaussian_density_jacobian",
    "gaussian_random_jacobian",
    "gaussian_survival",
    "gaussian_survival_prime",
    "gaussian_survival_symbolic",
    "gaussian_threshold",
    "gaussian_trajectory",
    "global_threshold",
    "gaussian_relative_jacobian",
    "random_perturbation_jacobian",
    "rank_one_density_jacobian",
    "relative_density_jacobian",
    "relative_density_jacobian_symbolic",
    "secant_ratios",
]


# --- symbolic derivation -----------------------------------------------------------------------------
def gaussian_survival_symbolic() -> tuple[sp.Expr, sp.Symbol, sp.Symbol]:
    """``(g, T, sigma)`` with ``g = erfc(T / (sigma sqrt 2)) = P(|w| > T)`` for ``w ~ N(0, sigma^2)``."""
    T = sp.Symbol("T", nonnegative=True)
    sigma = sp.Symbol("sigma", positive=True)
    return sp.erfc(T / (sigma * sp.sqrt(2))), T, sigma


def density_jacobian_symbolic(n_layers: int = 3, distribution: str = "generic") -> sp.Matrix:
    """The exact density Jacobian of one global round, derived with sympy.

    The round is ``rho'_l = g_l(T)`` with ``T`` defined implicitly by
    ``F(T, rho) = sum_l N_l g_l(T) - (1 - p) sum_l N_l rho_l = 0``; then
    ``J_lk = g_l'(T) dT/drho_k`` with ``dT/drho_k = -(dF/drho_k) / (dF/dT)``.

    Parameters
    ----------
    n_layers : int >= 1
    distribution : ``"generic"`` (``g_l`` are undefined sympy functions ``g_0(T), g_1(T), ...``) or
        ``"gaussian"`` (``g_l = erfc(T / (sigma_l sqrt 2))``).

    Returns
    -------
    sympy.Matrix, (n_layers, n_layers), in the symbols ``T`` (nonnegative), ``p`` (positive),
    ``N_0, N_1, ...`` (positive) and, for Gaussian layers, ``sigma_0, sigma_1, ...`` (positive).
    """
    if n_layers < 1:
        raise InvalidParameterError(f"n_layers must be >= 1, got {n_layers}")
    T = sp.Symbol("T", nonnegative=True)
    p = sp.Symbol("p", positive=True)
    N = sp.symbols(f"N_0:{n_layers}", positive=True)
    rho = sp.symbols(f"rho_0:{n_layers}", positive=True)
    if distribution == "generic":
        g = [sp.Function(f"g_{i}")(T) for i in range(n_layers)]
    elif distribution == "gaussian":
        sig = sp.symbols(f"sigma_0:{n_layers}", positive=True)
        g = [sp.erfc(T / (sig[i] * sp.sqrt(2))) for i in range(n_layers)]
    else:
        raise InvalidParameterError(f"distribution must be 'generic' or 'gaussian', got {distribution!r}")
    F = sum(N[i] * g[i] for i in range(n_layers)) - (1 - p) * sum(N[i] * rho[i] for i in range(n_layers))
    dF_dT = sp.diff(F, T)
    dT_drho = [-sp.diff(F, rho[k]) / dF_dT for k in range(n_layers)]
    return sp.Matrix(n_layers, n_layers, lambda i, k: sp.diff(g[i], T) * dT_drho[k])


def relative_density_jacobian_symbolic(n_layers: int = 3) -> sp.Matrix:
    """The Jacobian of one data-free global round in rescaled coordinates, derived with sympy.

    Coordinates: the relative densities ``x_l = rho_l / rho`` of layers ``0 .. L-2`` (``density_rel``;
    the last layer is the reference, its ``x`` fixed by ``sum_l N_l x_l = sum_l N_l``) and the global
    density ``rho`` (``global_density``).  The state ``rho_l = rho x_l`` (``l < L-1``),
    ``rho_{L-1} = rho (N_tot - sum_{l<L-1} N_l x_l) / N_{L-1}``; the round cuts at ``T`` with
    ``sum_l N_l g_l(T) = (1 - p) sum_l N_l rho_l`` and gives ``x'_l = g_l(T) / rho'``,
    ``rho' = sum_l N_l g_l(T) / N_tot``; ``T`` is differentiated implicitly.

    Returns
    -------
    sympy.Matrix (L, L), rows and columns ``(x_0 .. x_{L-2}, rho)``, simplified: the ``x`` block is
    zero and the last row is ``(0, ..., 0, 1 - p)`` (docs/theory.md, section 9).  Symbols ``T``, ``p``,
    ``N_0 ..``, ``x_0 ..``, ``rho`` and the undefined functions ``g_0(T) ..``.
    """
    if n_layers < 2:
        raise InvalidParameterError(f"relative coordinates need n_layers >= 2, got {n_layers}")
    T = sp.Symbol("T", nonnegative=True)
    p = sp.Symbol("p", positive=True)
    rho = sp.Symbol("rho", positive=True)
    N = sp.symbols(f"N_0:{n_layers}", positive=True)
    x = sp.symbols(f"x_0:{n_layers - 1}", positive=True)
    g = [sp.Function(f"g_{i}")(T) for i in range(n_layers)]
    n_tot = sum(N)
    dens = [rho * xi for xi in x] + [rho * (n_tot - sum(N[i] * x[i] for i in range(n_layers - 1))) / N[-1]]
    F = sum(N[i] * g[i] for i in range(n_layers)) - (1 - p) * sum(N[i] * dens[i] for i in range(n_layers))
    inputs = [*x, rho]
    dT = [-sp.diff(F, v) / sp.diff(F, T) for v in inputs]
    rho_out = sum(N[i] * g[i] for i in range(n_layers)) / n_tot
    outputs = [g[i] / rho_out for i in range(n_layers - 1)] + [rho_out]
    J = sp.Matrix(n_layers, n_layers, lambda i, k: sp.diff(outputs[i], T) * dT[k])
    # on the round, sum_l N_l g_l(T) = (1 - p) rho N_tot: substitute it to show the last row is 1 - p
    G = sp.Symbol("G")
    total = sum(N[i] * g[i] for i in range(n_layers))
    return sp.simplify(J.subs(total, G).subs(G, (1 - p) * rho * n_tot))


def relative_density_jacobian(
    g: Sequence[float] | np.ndarray,
    g_prime: Sequence[float] | np.ndarray,
    sizes: Sequence[float] | np.ndarray,
    rate: float,
    reference: int | None = None,
) -> np.ndarray:
    """:func:`relative_density_jacobian_symbolic` in numbers, for any reference layer.

    Parameters
    ----------
    g, g_prime : (L,) survival ``g_l(T)`` and slopes ``g_l'(T)`` at the round's global threshold.
    sizes : (L,) layer sizes ``N_l``.
    rate : p in (0, 1).
    reference : the layer left out of the relative densities (default: the largest, the first of equals,
        as :func:`~rganalysis.fit.couplings.relative_reference_layer`).

    Returns
    -------
    (L, L) float64, rows and columns the ``density_rel`` couplings (layers but ``reference``, in order)
    then ``global_density``: ``[[0, c], [0, 1 - p]]`` with
    ``c_l = (g_l' / (n . g') - x'_l) / rho``, ``n = N / N_tot``, ``x'_l = g_l / rho'``, ``rho' = n . g``,
    ``rho = rho' / (1 - p)`` (the input's global density on the IMP manifold).
    """
    rate = check_rate(rate)
    g = np.asarray(g, float)
    gp = np.asarray(g_prime, float)
    n = np.asarray(sizes, float)
    if not (g.shape == gp.shape == n.shape) or g.ndim != 1 or g.size < 2:
        raise InvalidParameterError("g, g_prime and sizes must be equal 1-d shapes of at least 2 layers")
    n = n / n.sum()
    ref = int(np.argmax(np.asarray(sizes, float))) if reference is None else int(reference)
    rho_out = float(n @ g)
    rho_in = rho_out / (1.0 - rate)
    denom = float(n @ gp)
    if denom == 0.0 or not math.isfinite(denom) or rho_out <= 0:
        raise InvalidParameterError("no weight mass at the threshold, or nothing survives the round")
    keep = [i for i in range(g.size) if i != ref]
    c = (gp[keep] / denom - g[keep] / rho_out) / rho_in
    J = np.zeros((g.size, g.size))
    J[:-1, -1] = c
    J[-1, -1] = 1.0 - rate
    return J


def gaussian_relative_jacobian(
    sigmas: Sequence[float], sizes: Sequence[float], rate: float, T: float
) -> np.ndarray:
    """:func:`relative_density_jacobian` for Gaussian layers cut at ``T`` (on the IMP manifold)."""
    return relative_density_jacobian(
        gaussian_survival(T, sigmas), gaussian_survival_prime(T, sigmas), sizes, rate
    )


@functools.lru_cache(maxsize=1)
def _gaussian_numeric():
    g, T, sigma = gaussian_survival_symbolic()
    gp = sp.simplify(sp.diff(g, T))
    mods = ["scipy", "numpy"]
    return sp.lambdify((T, sigma), g, modules=mods), sp.lambdify((T, sigma), gp, modules=mods)


def gaussian_survival(T: float | np.ndarray, sigmas: Sequence[float] | np.ndarray) -> np.ndarray:
    """``g_l(T) = erfc(T / (sigma_l sqrt 2))``, shape broadcast of ``T`` and ``sigmas`` (lambdified)."""
    return np.asarray(_gaussian_numeric()[0](np.asarray(T, float), np.asarray(sigmas, float)), float)


def gaussian_survival_prime(T: float | np.ndarray, sigmas: Sequence[float] | np.ndarray) -> np.ndarray:
    """``g_l'(T) = -sqrt(2/pi) / sigma_l exp(-T^2 / (2 sigma_l^2))`` (per unit weight magnitude; lambdified)."""
    return np.asarray(_gaussian_numeric()[1](np.asarray(T, float), np.asarray(sigmas, float)), float)


# --- numeric theory --------------------------------------------------------------------------------------
def rank_one_density_jacobian(
    g_prime: Sequence[float] | np.ndarray, sizes: Sequence[float] | np.ndarray, rate: float
) -> np.ndarray:
    """``J_lk = (1 - p) N_k g_l' / sum_m N_m g_m'`` -- :func:`density_jacobian_symbolic` in numbers.

    Parameters
    ----------
    g_prime : (L,) slopes ``g_l'(T)`` at the round's global threshold (per unit magnitude, <= 0).
    sizes : (L,) layer sizes ``N_l``.
    rate : pruning fraction p in (0, 1).

    Returns
    -------
    (L, L) float64 array.
    """
    rate = check_rate(rate)
    gp = np.asarray(g_prime, dtype=np.float64)
    n = np.asarray(sizes, dtype=np.float64)
    if gp.shape != n.shape or gp.ndim != 1:
        raise InvalidParameterError(f"g_prime {gp.shape} and sizes {n.shape} must be equal 1-d shapes")
    denom = float(n @ gp)
    if denom == 0.0 or not math.isfinite(denom):
        raise InvalidParameterError("sum_m N_m g_m'(T) is zero: no weight mass at the threshold")
    return (1.0 - rate) * np.outer(gp, n) / denom


def gaussian_density_jacobian(
    sigmas: Sequence[float], sizes: Sequence[float], rate: float, T: float
) -> np.ndarray:
    """Exact density Jacobian (L, L) of one global round cutting at ``T`` on Gaussian layers.

    ``sigmas`` (L,) are the layers' weight standard deviations, ``sizes`` (L,) their sizes, ``T`` the
    round's global threshold (weight units).  Valid on the IMP manifold (each layer's own threshold
    below ``T``).
    """
    return rank_one_density_jacobian(gaussian_survival_prime(T, sigmas), sizes, rate)


def _solve_threshold(target: float, survival, lo: float, hi: float) -> float:
    """Root of ``survival(T) = target`` for a decreasing ``survival`` on [lo, hi]."""
    f_lo = survival(lo) - target
    if f_lo <= 0:
        return lo
    while survival(hi) - target > 0:
        hi *= 2.0
    return float(
        brentq(lambda t: survival(t) - target, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)
    )


def gaussian_threshold(sigmas: Sequence[float], sizes: Sequence[float], global_density: float) -> float:
    """The magnitude ``T`` at which dense Gaussian layers keep a global fraction ``global_density``."""
    s = np.asarray(sigmas, float)
    n = np.asarray(sizes, float)
    if not 0.0 < global_density <= 1.0:
        raise InvalidParameterError(f"global_density must be in (0, 1], got {global_density}")
    total = float(n.sum())
    return _solve_threshold(
        global_density, lambda t: float(n @ gaussian_survival(t, s)) / total, 0.0, float(s.max()) * 10.0
    )


def gaussian_trajectory(
    sigmas: Sequence[float],
    sizes: Sequence[float],
    rate: float,
    rounds: int,
    start_thresholds: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form per-layer densities of the data-free global IMP flow on Gaussian layers.

    Each round solves ``sum_l N_l min(rho_l, g_l(T)) = (1 - p) sum_l N_l rho_l`` for ``T`` (one 1-d
    root) and sets ``rho'_l = min(rho_l, g_l(T))`` -- the exact map for threshold-shaped states; on
    the IMP manifold (``T >= t_l`` for all l, always true from a dense or common-threshold start)
    this is ``rho'_l = g_l(T)``.  Starting dense, ``T_n`` solves
    ``sum_l N_l g_l(T_n) = (1 - p)^n sum_l N_l``.

    Parameters
    ----------
    sigmas, sizes : (L,) weight standard deviations and layer sizes.
    rate : p in (0, 1).
    rounds : number of rounds (>= 0).
    start_thresholds : (L,) per-layer starting thresholds t_l (default 0: dense).

    Returns
    -------
    densities : (rounds + 1, L) float64, row 0 the start.
    thresholds : (rounds + 1,) float64 global threshold of each round (entry 0: ``max_l t_l``).
    """
    rate = check_rate(rate)
    if rounds < 0:
        raise InvalidParameterError(f"rounds must be >= 0, got {rounds}")
    s = np.asarray(sigmas, float)
    n = np.asarray(sizes, float)
    if s.shape != n.shape or s.ndim != 1 or (s <= 0).any() or (n <= 0).any():
        raise InvalidParameterError("sigmas and sizes must be positive 1-d arrays of equal length")
    t0 = np.zeros_like(s) if start_thresholds is None else np.asarray(start_thresholds, float)
    rho = gaussian_survival(t0, s)
    dens = [rho]
    thr = [float(t0.max())]
    T = float(t0.max())
    for _ in range(int(rounds)):
        target = (1.0 - rate) * float(n @ rho)
        cur = rho

        def kept(t: float, cur=cur) -> float:
            return float(n @ np.minimum(cur, gaussian_survival(t, s)))

        T = _solve_threshold(target, kept, 0.0, max(T, float(s.max())) * 2.0 + 1e-12)
        rho = np.minimum(cur, gaussian_survival(T, s))
        dens.append(rho)
        thr.append(T)
    return np.vstack(dens), np.asarray(thr)


def random_perturbation_jacobian(
    g: Sequence[float],
    g_prime: Sequence[float],
    densities: Sequence[float],
    sizes: Sequence[float],
    rate: float,
) -> np.ndarray:
    """Density Jacobian of one global round measured with *random* extra pruning (L, L).

    Random pruning of a fraction f_k of layer k's survivors scales its survival function by
    ``(1 - f_k)``, so ``rho'_l = (1 - f_l) g_l(T')`` and, to first order,
    ``J = diag(s) - g' a^T / (N . g')`` with ``s_l = g_l(T)/rho_l`` (per-layer survival fraction of the
    round) and ``a_k = N_k (s_k - (1 - p))``.  ``N^T J = (1 - p) N^T`` still holds exactly.
    """
    rate = check_rate(rate)
    g = np.asarray(g, float)
    gp = np.asarray(g_prime, float)
    rho = np.asarray(densities, float)
    n = np.asarray(sizes, float)
    s = g / rho
    a = n * (s - (1.0 - rate))
    return np.diag(s) - np.outer(gp, a) / float(n @ gp)


def gaussian_random_jacobian(
    sigmas: Sequence[float], sizes: Sequence[float], rate: float, densities: Sequence[float], T: float
) -> np.ndarray:
    """:func:`random_perturbation_jacobian` for Gaussian layers at densities ``rho`` cut at ``T``."""
    return random_perturbation_jacobian(
        gaussian_survival(T, sigmas), gaussian_survival_prime(T, sigmas), densities, sizes, rate
    )


def secant_ratios(densities: Sequence[Sequence[float]] | np.ndarray, sizes: Sequence[float]) -> np.ndarray:
    """Per-layer ratios of successive increments of a recorded density flow (what a trajectory fit sees).

    ``r_{n,l} = (rho_{n+2,l} - rho_{n+1,l}) / (rho_{n+1,l} - rho_{n,l})``.  On the IMP manifold the
    increments are ``Delta_n = g(T_{n+1}) - g(T_n)``, so one step maps ``Delta_n`` to ``Delta_{n+1}``
    by the *secant* map ``diag(r_n)`` between two thresholds, not by the local Jacobian
    (spectrum ``{1 - p, 0, ...}``) at one of them.  Because every global round removes exactly
    ``p`` of the survivors, ``N . Delta_{n+1} = (1 - p) N . Delta_n``: the ratios' mean weighted by
    ``N_l Delta_{n,l}`` is exactly ``1 - p``, while a layer whose share of the removals grows has
    ``r > 1 - p`` -- up to and beyond 1 (docs/theory.md, section 9).

    Parameters
    ----------
    densities : (R, L) per-layer densities over R >= 3 rounds.
    sizes : (L,) layer sizes.

    Returns
    -------
    (R - 2, L) float64 (NaN where an increment is 0).
    """
    d = np.asarray(densities, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] < 3 or d.shape[1] != len(sizes):
        raise InvalidParameterError(f"densities must be (rounds >= 3, {len(sizes)}), got {d.shape}")
    inc = np.diff(d, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = inc[1:] / inc[:-1]
    r[~np.isfinite(r)] = np.nan
    return r


# --- empirical theory on a real state ----------------------------------------------------------------
def global_threshold(state: State, rate: float) -> float:
    """Magnitude at which one global round at ``rate`` cuts the survivors of ``state``.

    The midpoint between the largest removed and the smallest kept magnitude when
    ``round(p * n_survivors)`` are removed, as :func:`rganalysis.rg.coarse_grain` does
    (weight units).
    """
    rate = check_rate(rate)
    mags = torch.cat(
        [
            w.detach()[m].abs().reshape(-1).to(torch.float64)
            for w, m in zip(state.weights.values(), state.masks.values(), strict=True)
        ]
    )
    n = mags.numel()
    n_prune = int(round(rate * n))
    n_keep = n - n_prune
    if n_prune <= 0 or n_keep <= 0:
        raise InvalidParameterError(f"a round at rate {rate} on {n} survivors prunes nothing or everything")
    srt = torch.sort(mags).values
    return float(0.5 * (srt[n_prune - 1] + srt[n_prune]))


def empirical_survival(state: State, T: float, window: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Empirical ``g_l(T)`` and finite-difference slopes ``g_l'(T)`` of the state's weights.

    ``g_l(T)`` = fraction of layer l's weights (all of them, masked or not) with |w| > T.  The slope is
    the symmetric difference ``-(#{T-h < |w| <= T+h}) / (2 h N_l)``, where ``h`` is chosen so that the
    window holds a fraction ``window`` of all weights of the network above ``T`` (at least 200 weights):
    a box kernel whose width adapts to the weight density at the threshold.

    Returns ``(g, g_prime)``, each (L,) float64 (``g_prime`` per unit magnitude).
    """
    mags = [w.detach().abs().reshape(-1).to(torch.float64) for w in state.weights.values()]
    allm = torch.cat(mags)
    srt = torch.sort(allm).values
    pos = int(torch.searchsorted(srt, torch.tensor(T, dtype=torch.float64, device=srt.device)))
    n_above = srt.numel() - pos
    half = max(100, int(window * n_above / 2))
    lo = float(srt[max(pos - half, 0)])
    hi = float(srt[min(pos + half, srt.numel() - 1)])
    h = max(T - lo, hi - T)
    if h <= 0:
        raise InvalidParameterError("cannot estimate g'(T): no weights near the threshold")
    g = np.array([float((m > T).sum()) / m.numel() for m in mags])
    gp = np.array([-float(((m > T - h) & (m <= T + h)).sum()) / (2.0 * h * m.numel()) for m in mags])
    return g, gp


def density_jacobian_from_state(state: State, rate: float, window: float = 0.01) -> np.ndarray:
    """The manifold density Jacobian (L, L) of one global round on ``state``, with empirical ``g_l'``.

    Uses :func:`global_threshold` for ``T`` and :func:`empirical_survival` for the slopes, then
    :func:`rank_one_density_jacobian`.  Exact (up to the slope estimate) on the IMP manifold: every
    layer's mask keeps its weights above its own threshold ``t_l``, and ``t_l < T``.  Off it (e.g. a
    randomly pruned state, or a layer whose threshold exceeds the global one) this is *not* the
    Jacobian of the round -- measure it with :class:`rganalysis.fit.jacobian.ResponseEstimator`.
    """
    T = global_threshold(state, rate)
    _, gp = empirical_survival(state, T, window)
    return rank_one_density_jacobian(gp, list(state.sizes().values()), rate)
