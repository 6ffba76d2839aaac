"""Exact DMD of a (huge) snapshot sequence from its streamed ``T x T`` Gram, bagged eigenvalue
intervals and modes block by block: the numerical core of the Koopman view.  Algorithm, uncertainty
and accuracy: docs/design.md.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from numpy.typing import ArrayLike

from rganalysis.base import Estimator
from rganalysis.errors import (
    InvalidParameterError,
    NonFiniteWeightsError,
    NotFittedError,
    RankError,
    TooFewRoundsError,
)
from rganalysis.fit.fixed_points import MARGINAL_Y, exponent_interval, interval_class
from rganalysis.fit.intervals import (
    MIN_USABLE_RESAMPLES,
    DegenerateResample,
    IntervalWarning,
    draw_resamples,
    eigenvalue_intervals,
)
from rganalysis.fit.spectra import sort_eigenvalues
from rganalysis.store.state import State, resolve_device

__all__ = [
    "Block",
    "BlockProvider",
    "blocks_from_arrays",
    "blocks_from_states",
    "DEFAULT_CHUNK_ELEMENTS",
    "DEFAULT_CHUNK_ELEMENTS_CUDA",
    "GramResult",
    "KoopmanDMD",
    "RankDeficiencyWarning",
    "snapshot_gram",
    "SnapshotsLike",
]

Block = torch.Tensor | np.ndarray
BlockProvider = Callable[[], Iterable[Block]]
"""A callable returning a *fresh* iterator of column blocks of shape ``(T, n_i)``."""

SnapshotsLike = BlockProvider | torch.Tensor | np.ndarray | Sequence[Block]

#: Column chunks are cut to at most this many elements (float64: 4 MiB on CPU -- cache friendly;
#: 128 MiB on CUDA -- few large transfers), bounded memory whatever the size of the caller's blocks.
DEFAULT_CHUNK_ELEMENTS = 1 << 19
DEFAULT_CHUNK_ELEMENTS_CUDA = 1 << 24


def _chunk_elements(chunk_elements: int | None, device: torch.device) -> int:
    if chunk_elements is not None:
        return int(chunk_elements)
    return DEFAULT_CHUNK_ELEMENTS_CUDA if device.type == "cuda" else DEFAULT_CHUNK_ELEMENTS


_EPS64 = float(np.finfo(np.float64).eps)


class RankDeficiencyWarning(UserWarning):
    """The snapshots have lower numerical rank than the automatically chosen DMD rank."""


# ------------------------------------------------------------------------------------------------
# block providers
# ------------------------------------------------------------------------------------------------
def blocks_from_arrays(arrays: Sequence[Block]) -> BlockProvider:
    """A block provider over in-memory column blocks.

    Parameters
    ----------
    arrays : sequence of arrays / tensors, each of shape (T, n_i) (or (T, *shape))
        Column blocks of the snapshot matrix; all with the same ``T``.

    Returns
    -------
    provider : callable
        ``provider()`` returns a fresh iterator over the blocks (as given, not copied).
    """
    items = list(arrays)

    def provider() -> Iterator[Block]:
        return iter(items)

    return provider


def blocks_from_states(states: Sequence[State], names: Sequence[str] | None = None) -> BlockProvider:
    """A block provider over the masked weights of a sequence of :class:`State` (one per round).

    Block ``i`` is layer ``names[i]`` for all rounds: ``stack_n(weights_n * masks_n)`` flattened to
    shape ``(T, numel)``, built on demand (one layer at a time, ``T * numel`` elements).

    Parameters
    ----------
    states : sequence of State, length T
        The flow, round 0 first.
    names : sequence of str, optional
        Layers to use, in this order; default: those of ``states[0]``.
    """
    states = list(states)
    if not states:
        raise TooFewRoundsError("blocks_from_states: no states given")
    layer_names = list(states[0].names if names is None else names)

    def provider() -> Iterator[torch.Tensor]:
        for name in layer_names:
            yield torch.stack([(s.weights[name] * s.masks[name]).reshape(-1) for s in states])

    return provider


def _as_provider(snapshots: SnapshotsLike) -> BlockProvider:
    """Normalise the accepted snapshot inputs to a block provider."""
    if isinstance(snapshots, (torch.Tensor, np.ndarray)):
        if snapshots.ndim != 2:
            raise InvalidParameterError(
                f"a dense snapshot matrix must have shape (T, N), got {tuple(snapshots.shape)}"
            )
        return blocks_from_arrays([snapshots])
    if callable(snapshots):
        return snapshots
    if (
        isinstance(snapshots, (list, tuple))
        and snapshots
        and all(isinstance(b, (torch.Tensor, np.ndarray)) for b in snapshots)
    ):
        return blocks_from_arrays(snapshots)
    arr = np.asarray(snapshots, dtype=np.float64)
    if arr.ndim != 2:
        raise InvalidParameterError(
            f"snapshots must be a block provider or a (T, N) array, got shape {arr.shape}"
        )
    return blocks_from_arrays([arr])


def _as_block(block: Block, n_rounds: int | None) -> torch.Tensor:
    """A block as a real tensor of shape (T, n) (a view where possible)."""
    if isinstance(block, torch.Tensor):
        t = block
    else:
        arr = np.asarray(block)
        if any(st < 0 for st in arr.strides):
            arr = np.ascontiguousarray(arr)
        t = torch.as_tensor(arr)
    if t.is_complex():
        raise InvalidParameterError("snapshot blocks must be real")
    if t.dim() == 0:
        raise InvalidParameterError("a snapshot block must have a leading round axis, got a scalar")
    if n_rounds is not None and t.shape[0] != n_rounds:
        raise InvalidParameterError(
            f"all blocks must have the same number of rounds: got {t.shape[0]}, expected {n_rounds}"
        )
    return t.reshape(t.shape[0], -1)


def _input_eps(dtype: torch.dtype) -> float:
    if dtype.is_floating_point:
        return float(torch.finfo(dtype).eps)
    return _EPS64


def _column_chunks(block: torch.Tensor, chunk_elements: int) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(start, stop, block[:, start:stop]) with at most ``chunk_elements`` elements per chunk."""
    n_rounds, n = block.shape
    step = max(1, chunk_elements // max(n_rounds, 1))
    for start in range(0, n, step):
        stop = min(n, start + step)
        yield start, stop, block[:, start:stop]


class GramResult(NamedTuple):
    """Output of :func:`snapshot_gram`."""

    gram: np.ndarray
    """(T, T) float64, ``Z Z^T``."""
    n_features: int
    """N, total number of columns (parameters) seen."""
    n_blocks: int
    """Number of blocks the provider yielded."""
    input_eps: float
    """Largest machine epsilon among the blocks' dtypes (float32 -> 1.19e-7)."""


def snapshot_gram(
    snapshots: SnapshotsLike,
    device: str | torch.device | None = "auto",
    chunk_elements: int | None = None,
) -> GramResult:
    """One streaming pass: the ``T x T`` Gram ``K = Z Z^T`` of all snapshots, in float64.

    Each block is cut into column chunks of at most ``chunk_elements`` elements; each chunk is
    moved to ``device``, converted to float64 and accumulated as ``chunk @ chunk.T``.  Peak extra
    memory: one float64 chunk (4 MiB by default) plus the caller's block.  Partial Grams of
    disjoint column sets add up, so the pass can be split across workers.

    Parameters
    ----------
    snapshots : block provider, (T, N) array/tensor, or list of (T, n_i) blocks
    device : "auto", "cpu", "cuda", ...
    chunk_elements : int, optional
        Maximum number of elements per chunk (default 2**19 on CPU, 2**24 on CUDA).

    Returns
    -------
    GramResult
        ``gram`` (T, T) float64 numpy array, ``n_features``, ``n_blocks``, ``input_eps``.
    """
    provider = _as_provider(snapshots)
    dev = resolve_device(device)
    chunk_elements = _chunk_elements(chunk_elements, dev)
    if chunk_elements < 1:
        raise InvalidParameterError(f"chunk_elements must be >= 1, got {chunk_elements}")
    gram: torch.Tensor | None = None
    n_rounds: int | None = None
    n_features = 0
    n_blocks = 0
    eps_in = _EPS64
    for raw in provider():
        block = _as_block(raw, n_rounds)
        if n_rounds is None:
            n_rounds = int(block.shape[0])
            gram = torch.zeros((n_rounds, n_rounds), dtype=torch.float64, device=dev)
        assert gram is not None
        eps_in = max(eps_in, _input_eps(block.dtype))
        for _, _, chunk in _column_chunks(block, chunk_elements):
            c = chunk.to(device=dev, dtype=torch.float64)
            gram.addmm_(c, c.T)
        n_features += int(block.shape[1])
        n_blocks += 1
    if gram is None or n_rounds is None:
        raise InvalidParameterError("the block provider yielded no blocks")
    k = gram.cpu().numpy()
    k = 0.5 * (k + k.T)
    if not np.all(np.isfinite(k)):
        raise NonFiniteWeightsError("the snapshots hold NaN or Inf (their Gram matrix is not finite)")
    return GramResult(k, n_features, n_blocks, eps_in)


# ------------------------------------------------------------------------------------------------
# the estimator
# ------------------------------------------------------------------------------------------------
def _dmd_reduced(
    xt: np.ndarray, yt: np.ndarray, r: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact DMD on small coordinates.

    Parameters
    ----------
    xt, yt : (k, m) float64
        Snapshot pairs in an orthonormal basis (columns = snapshots).
    r : int
        Truncation rank (``r <= min(k, m)``).

    Returns
    -------
    eigenvalues : (r,) complex
    w : (r, r) complex, eigenvectors of the reduced operator (unit columns)
    coef : (m, r) complex, ``V_r S_r^{-1} W`` -- exact modes are ``Y @ coef``
    s : (min(k, m),) singular values of ``xt``
    atilde : (r, r) float, the reduced operator ``U_r^T yt V_r S_r^{-1}``
    """
    u, s, vh = np.linalg.svd(xt, full_matrices=False)
    ur, sr, vr = u[:, :r], s[:r], vh[:r].T
    atilde = (ur.T @ yt @ vr) / sr[None, :]
    lam, w = np.linalg.eig(atilde)
    coef = (vr / sr[None, :]) @ w
    return lam, w, coef, s, atilde


def _none_if_nan(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


class KoopmanDMD(Estimator):
    """Exact DMD of a (huge) snapshot sequence, streamed in column blocks, with bagged CIs.

    Parameters
    ----------
    rank : int, optional
        Truncation rank ``r``; must be ``<= T-1`` and ``<=`` the numerical rank of ``X``
        (otherwise :class:`RankError`).
    energy : float in (0, 1], optional
        Choose the smallest ``r`` whose leading singular values carry this fraction of
        ``sum s_i^2`` (e.g. 0.999).  Mutually exclusive with ``rank``.  With neither, the rank is
        ``T-1``.  An automatic rank above the numerical rank is lowered to it with a
        :class:`RankDeficiencyWarning`.
    n_bags : int
        Number of bags for the eigenvalue confidence intervals (0 disables them).
    bag_fraction : float in (0, 1)
        Fraction of the ``T-1`` snapshot pairs in each bag (sampled without replacement; at
        least ``r`` pairs).
    random_state : int, numpy Generator or None
        Seed of the bagging.
    device : str or torch.device
        Where the streaming passes run ("auto": CUDA when available).
    tol : float
        Half-width of the marginal band in the exponent ``y = ln|lambda| / ln b`` (default
        :data:`~rganalysis.fit.fixed_points.MARGINAL_Y`): a class is given only where the bagged interval
        of y lies above ``tol`` (``relevant``), below ``-tol`` (``irrelevant``) or inside the band
        (``marginal``); otherwise, and without intervals or ``b``, ``undetermined``.
    rtol : float, optional
        Numerical-rank threshold, relative to the largest singular value of ``X``.  Default
        ``10 * sqrt(T) * max(sqrt(eps64), eps_in)`` (``eps_in`` = machine epsilon of the input
        dtype: float64 -> ~5e-7, float32 -> ~4e-6 at T = 12): what the float64 Gram resolves.
    ci_method : {"percentile", "subsampling"}
        ``percentile``: the raw 2.5 / 97.5 percentiles over the bags (BOP-DMD).  ``subsampling``:
        the bag spread around the full fit widened by ``sqrt(b / (m - b))`` (``b`` pairs per bag,
        ``m = T-1``), the finite-population correction that turns the spread of size-``b``
        subsamples into the sampling spread of the size-``m`` estimate.
    chunk_elements : int, optional
        Column chunk size of the streaming passes, in elements (default 2**19 on CPU, 2**24 on
        CUDA).
    subset, scale, block_elements, shortcut, progress
        How a flow *store* given to :meth:`fit` is read: the tensors (``"prunable"``, ``"all"`` or
        name globs), their fixed scaling (``"none"`` or ``"layer-std"``), the largest block in elements,
        the exact O(T N) Gram of data-free blocks (False: the dense path, for checks), a progress bar.
        See :class:`~rganalysis.koopman.snapshots.StoreSnapshots`.

    Attributes (after ``fit``)
    --------------------------
    eigenvalues_ : (r,) complex ndarray, sorted by descending ``|lambda|`` (conjugate pairs:
        positive imaginary part first)
    singular_values_ : (min(T-1, N),) all singular values of ``X`` (not only the ``r`` kept)
    rank_ : int
    numerical_rank_ : int
    amplitudes_ : (r,) complex, ``argmin_b ||Phi b - x_0||`` (PyDMD's default)
    n_snapshots_ : int, ``T``
    n_features_ : int, ``N``
    eigenvalue_ci_ : (r, 2) float, low / high of ``|lambda|`` (NaN without bagging, or where the
        interval policy of :mod:`rganalysis.fit.intervals` reports none);  exponent_ci_ : (r, 2) the same in y
    ci_note_ : str or None, why no eigenvalue has an interval (None when some do)
    eigenvalue_ci_re_, eigenvalue_ci_im_ : (r, 2) float, same for the real / imaginary parts
    bag_eigenvalues_ : (n_bags_used_, r) complex, each bag's eigenvalues matched to the full fit
    n_bags_used_ : int, usable bags (a bag whose ``X`` has numerical rank ``< r`` is counted as degenerate)
    classes_ : (r,) str ndarray, ``relevant`` / ``irrelevant`` / ``marginal`` / ``undetermined``
    scale_factor_ : float or None, the effective ``b`` (geometric mean of per-round factors)
    exponents_ : (r,) float or None, ``ln|lambda| / ln b`` (RG scaling exponents ``y``, with
        ``lambda = b^y``)
    reduced_operator_ : (r, r) float, ``A~`` in the basis of ``U_r``
    mode_coef_ : (T, r) complex, exact modes are ``Phi = Z^T @ mode_coef_`` (row 0 is zero), so
        partial mode blocks can be computed anywhere the snapshots are
    gram_ : (T, T) float64, ``Z Z^T``
    """

    def __init__(
        self,
        rank: int | None = None,
        energy: float | None = None,
        n_bags: int = 100,
        bag_fraction: float = 0.8,
        random_state: int | np.random.Generator | None = 0,
        device: str | torch.device | None = "auto",
        tol: float = MARGINAL_Y,
        *,
        rtol: float | None = None,
        ci_method: str = "subsampling",
        chunk_elements: int | None = None,
        subset: str = "prunable",
        scale: str = "none",
        block_elements: int | None = None,
        shortcut: bool = True,
        progress: bool = False,
    ) -> None:
        self.rank = rank
        self.energy = energy
        self.n_bags = n_bags
        self.bag_fraction = bag_fraction
        self.random_state = random_state
        self.device = device
        self.tol = tol
        self.rtol = rtol
        self.ci_method = ci_method
        self.chunk_elements = chunk_elements
        self.subset = subset
        self.scale = scale
        self.block_elements = block_elements
        self.shortcut = shortcut
        self.progress = progress

    # --------------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.rank is not None and self.energy is not None:
            raise InvalidParameterError("give either rank or energy, not both")
        if self.rank is not None and (
            isinstance(self.rank, bool) or not isinstance(self.rank, (int, np.integer)) or self.rank < 1
        ):
            raise InvalidParameterError(f"rank must be a positive integer, got {self.rank!r}")
        if self.energy is not None and not (0.0 < float(self.energy) <= 1.0):
            raise InvalidParameterError(f"energy must be in (0, 1], got {self.energy!r}")
        if isinstance(self.n_bags, bool) or not isinstance(self.n_bags, (int, np.integer)) or self.n_bags < 0:
            raise InvalidParameterError(f"n_bags must be a non-negative integer, got {self.n_bags!r}")
        if not (0.0 < float(self.bag_fraction) < 1.0):
            raise InvalidParameterError(f"bag_fraction must be in (0, 1), got {self.bag_fraction!r}")
        if not (float(self.tol) >= 0.0):
            raise InvalidParameterError(f"tol must be >= 0, got {self.tol!r}")
        if self.rtol is not None and not (0.0 < float(self.rtol) < 1.0):
            raise InvalidParameterError(f"rtol must be in (0, 1), got {self.rtol!r}")
        if self.ci_method not in ("percentile", "subsampling"):
            raise InvalidParameterError(
                f"ci_method must be 'percentile' or 'subsampling', got {self.ci_method!r}"
            )
        if self.chunk_elements is not None and int(self.chunk_elements) < 1:
            raise InvalidParameterError(f"chunk_elements must be >= 1, got {self.chunk_elements!r}")

    def fit(self, snapshots: SnapshotsLike | Any, b: float | ArrayLike | None = None) -> KoopmanDMD:
        """Fit exact DMD to the snapshots (one streaming pass).

        Parameters
        ----------
        snapshots : a flow store (path or :class:`~rganalysis.store.ParameterSet`), a block provider,
            a (T, N) array/tensor, or a list of (T, n_i) blocks
            Rows are rounds ``0 .. T-1``; columns parameters (pruned entries zero).  A store is read
            tensor by tensor (``subset``, ``scale``, ``block_elements``, ``shortcut``: see
            :class:`~rganalysis.koopman.snapshots.StoreSnapshots`), and its scale factor ``b`` is the
            flow's (:func:`~rganalysis.fit.fixed_points.flow_scale`).
        b : float or array_like of shape (T-1,), optional
            RG scale factor per step (IMP: ``b_n = rho_n / rho_{n+1}``).  A per-round array is
            reduced to its geometric mean ``exp(mean(ln b_n))`` -- the constant factor with the
            same total rescaling over the flow.  Enables ``exponents_``.

        Returns
        -------
        self
        """
        from rganalysis.store.parameter_set import ParameterSet

        self._check_params()
        if isinstance(snapshots, (ParameterSet, str, os.PathLike)):
            if b is not None:
                raise InvalidParameterError("a flow store has its own scale factor: do not pass b")
            return self._fit_store(snapshots)
        if b is not None:  # fail before the (long) pass; the length is checked after it
            b_arr = np.asarray(b, dtype=np.float64)
            if b_arr.ndim > 1 or not np.all(np.isfinite(b_arr)) or np.any(b_arr <= 0):
                raise InvalidParameterError("scale factors b must be finite and positive, scalar or 1-D")
        res = snapshot_gram(snapshots, device=self.device, chunk_elements=self.chunk_elements)
        return self.fit_gram(res.gram, b=b, n_features=res.n_features, input_eps=res.input_eps)

    def _fit_store(self, flow: Any) -> KoopmanDMD:
        """:meth:`fit` on a flow store: one streaming pass over its tensors (see :meth:`fit`).

        Sets, besides the attributes of :meth:`fit_gram`: ``subset_``, ``scale_``, ``tensor_names_``,
        ``layer_scales_`` (name -> divisor), ``rate_``, ``b_`` (None when the flow does not prune),
        ``b_n_``, ``scale_note_`` (why there are no exponents, or None), ``source_`` (path or None),
        ``flow_name_``, ``modes_written_`` ([]).
        """
        from rganalysis.koopman.snapshots import flow_scale_or_note, snapshot_provider
        from rganalysis.store.hdf5 import load
        from rganalysis.store.parameter_set import ParameterSet

        opened = not isinstance(flow, ParameterSet)
        pset = load(flow) if opened else flow
        try:
            if pset.n_rounds < 2:
                raise TooFewRoundsError(
                    f"a single-round store has no flow to analyse (T = {pset.n_rounds}): run `rganalysis flow` first"
                )
            if self.rank is not None and int(self.rank) > pset.n_rounds - 1:
                raise RankError(
                    f"rank {self.rank} exceeds the number of snapshot pairs T-1 = {pset.n_rounds - 1}"
                )
            snaps = snapshot_provider(
                pset, self.subset, self.scale, block_elements=self.block_elements, progress=self.progress
            )
            rate, b, b_n, note = flow_scale_or_note(pset)
            res = snaps.gram(self.device, shortcut=self.shortcut)
            self.fit_gram(res.gram, b=b, n_features=res.n_features, input_eps=res.input_eps)
            self.subset_ = self.subset
            self.scale_ = self.scale
            self.tensor_names_ = list(snaps.names)
            self.layer_scales_ = dict(snaps.scales)
            self.rate_ = rate
            self.b_ = b
            self.b_n_ = b_n
            self.scale_note_ = note
            self.source_ = None if pset.path is None else str(pset.path)
            self.flow_name_ = str(pset.attrs.get("name", ""))
            self.modes_written_ = []
            return self
        finally:
            if opened:
                pset.close()

    def fit_gram(
        self,
        gram: ArrayLike,
        b: float | ArrayLike | None = None,
        n_features: int | None = None,
        input_eps: float = _EPS64,
    ) -> KoopmanDMD:
        """Fit from a precomputed snapshot Gram ``K = Z Z^T`` (``T x T``), e.g. summed over workers.

        ``n_features`` (N) and ``input_eps`` (machine epsilon of the snapshots' dtype) are
        optional; see :meth:`fit` for ``b``.
        """
        self._check_params()
        k = np.asarray(gram, dtype=np.float64)
        if k.ndim != 2 or k.shape[0] != k.shape[1]:
            raise InvalidParameterError(f"gram must be square (T, T), got shape {k.shape}")
        if not np.all(np.isfinite(k)):
            raise NonFiniteWeightsError("the snapshot Gram matrix is not finite")
        k = 0.5 * (k + k.T)
        n_rounds = int(k.shape[0])
        if n_rounds < 2:
            raise TooFewRoundsError(f"DMD needs at least 2 snapshots, got {n_rounds}")
        m = n_rounds - 1

        # orthonormal-basis coordinates of the snapshots: Z^T = Q Zt, Zt = D^{1/2} E^T  (k x T)
        d, e = np.linalg.eigh(k)
        d, e = d[::-1], e[:, ::-1]
        if not d[0] > 0:
            raise RankError("all snapshots are zero: the DMD has rank 0")
        keep = d > n_rounds * _EPS64 * d[0]
        zt = np.sqrt(d[keep])[:, None] * e[:, keep].T
        xt, yt = zt[:, :-1], zt[:, 1:]

        s_all = np.linalg.svd(xt, compute_uv=False)
        n_sv = m if n_features is None else min(m, int(n_features))
        singular_values = np.zeros(n_sv)
        singular_values[: min(n_sv, s_all.size)] = s_all[:n_sv]
        rtol = self.rtol
        if rtol is None:
            rtol = 10.0 * math.sqrt(n_rounds) * max(math.sqrt(_EPS64), float(input_eps))
        num_rank = int(np.sum(singular_values > rtol * singular_values[0]))
        r = self._choose_rank(singular_values, num_rank, m)

        lam, w, coef, _, atilde = _dmd_reduced(xt, yt, r)
        order = sort_eigenvalues(lam)
        lam, w, coef = lam[order], w[:, order], coef[:, order]

        phit = yt @ coef  # exact modes in the Zt coordinates, (k, r)
        amplitudes = np.linalg.lstsq(phit, zt[:, 0].astype(np.complex128), rcond=None)[0]

        self.gram_ = k
        self.n_snapshots_ = n_rounds
        self.n_features_ = None if n_features is None else int(n_features)
        self.singular_values_ = singular_values
        self.numerical_rank_ = num_rank
        self.rank_ = r
        self.rtol_ = float(rtol)
        self.eigenvalues_ = lam
        self.reduced_operator_ = atilde
        self.amplitudes_ = amplitudes
        self._eigvecs = w
        # Phi = Z^T @ mode_coef_ (row 0 is zero: Phi = Y V S^-1 W uses rounds 1..T-1)
        self.mode_coef_ = np.vstack([np.zeros((1, r), dtype=np.complex128), coef])
        self._bag(xt, yt, r, float(rtol))
        self.scale_factor_: float | None = None
        self.exponents_: np.ndarray | None = None
        if b is not None:
            self.compute_exponents(b)
        else:
            self._classify()
        return self

    def _choose_rank(self, s: np.ndarray, num_rank: int, m: int) -> int:
        if self.rank is not None:
            r = int(self.rank)
            if r > m:
                raise RankError(f"rank {r} exceeds the number of snapshot pairs T-1 = {m}")
            if r > num_rank:
                raise RankError(
                    f"rank {r} exceeds the numerical rank {num_rank} of the snapshots "
                    f"(singular values {np.array2string(s, precision=3)})"
                )
            return r
        if self.energy is not None:
            cum = np.cumsum(s**2) / np.sum(s**2)
            r = int(np.searchsorted(cum, float(self.energy) * (1.0 - 1e-12)) + 1)
            r = min(r, m)
            how = f"energy {self.energy}"
        else:
            r = m
            how = "the default rank T-1"
        if num_rank < r:
            warnings.warn(
                f"rank-deficient flow: {how} asks for rank {r}, but the snapshots have numerical rank "
                f"{num_rank}; using {num_rank}",
                RankDeficiencyWarning,
                stacklevel=4,
            )
            r = num_rank
        return r

    def _bag(self, xt: np.ndarray, yt: np.ndarray, r: int, rtol: float) -> None:
        """Bagging over snapshot pairs: fills eigenvalue_ci_* and bag_eigenvalues_ under the interval
        policy of :mod:`rganalysis.fit.intervals` (a rank-deficient bag is counted, not skipped)."""
        m = xt.shape[1]
        lam = self.eigenvalues_
        nan2 = np.full((r, 2), np.nan)
        self.eigenvalue_ci_, self.eigenvalue_ci_re_, self.eigenvalue_ci_im_ = nan2, nan2.copy(), nan2.copy()
        self.bag_eigenvalues_ = np.zeros((0, r), dtype=np.complex128)
        self.n_bags_used_ = 0
        self.bag_size_ = 0
        self.ci_note_ = "no bagging requested (--bags 0)" if self.n_bags == 0 else None
        if self.n_bags == 0:
            return
        size = max(r, int(round(float(self.bag_fraction) * m)))
        if size >= m:
            self.ci_note_ = (
                f"bagging impossible: each bag needs at least rank {r} of the {m} snapshot pairs, so every "
                "bag would be the fit itself"
            )
            exact = (
                f"; at rank T-1 = {m} the fit interpolates every snapshot pair, so its modes far inside the unit "
                "circle, and their amplitudes, are artefacts of that interpolation"
                if r == m
                else ""
            )
            warnings.warn(
                f"{self.ci_note_}; no confidence intervals, so no eigenvalue is given a class "
                f"(lower --rank, e.g. --energy 0.999, or record more rounds){exact}",
                IntervalWarning,
                stacklevel=4,
            )
            return
        distinct = math.comb(m, size)
        if distinct < MIN_USABLE_RESAMPLES:
            self.ci_note_ = (
                f"only {distinct} distinct bags of {size} of the {m} snapshot pairs, fewer than the "
                f"{MIN_USABLE_RESAMPLES} an interval needs: the bags' spread would be that of a few fits"
            )
            warnings.warn(
                f"{self.ci_note_}; no confidence intervals, so no eigenvalue is given a class (record more "
                "rounds, or lower --rank)",
                IntervalWarning,
                stacklevel=4,
            )
            return
        rng = np.random.default_rng(self.random_state)

        def draw() -> np.ndarray:
            idx = np.sort(rng.choice(m, size=size, replace=False))
            xb, yb = xt[:, idx], yt[:, idx]
            sb = np.linalg.svd(xb, compute_uv=False)
            if sb.size < r or not sb[r - 1] > rtol * sb[0]:
                raise DegenerateResample(f"bag of numerical rank < {r}")
            return _dmd_reduced(xb, yb, r)[0]

        res = draw_resamples(lam, int(self.n_bags), draw)
        self.bag_size_ = size
        self.n_bags_used_ = res.n_usable
        self.bag_eigenvalues_ = res.values
        factor = 1.0 if self.ci_method == "percentile" else math.sqrt(size / (m - size))
        what = f"KoopmanDMD bags ({size} of {m} snapshot pairs, {self.ci_method})"
        self.eigenvalue_ci_, reasons = eigenvalue_intervals(
            lam, res, what=what, factor=factor, lower_bound=0.0
        )
        # the same bags give the real / imaginary parts; their intervals are kept where |lambda|'s is
        kw = dict(what=what, factor=factor, warn=False)
        self.eigenvalue_ci_re_, _ = eigenvalue_intervals(lam, res, part=np.real, **kw)
        self.eigenvalue_ci_im_, _ = eigenvalue_intervals(lam, res, part=np.imag, **kw)
        bad = np.array([x is not None for x in reasons], dtype=bool)
        self.eigenvalue_ci_re_[bad] = np.nan
        self.eigenvalue_ci_im_[bad] = np.nan
        if bad.all():
            self.ci_note_ = reasons[0]

    def _classify(self) -> None:
        """``classes_`` from the intervals of the exponents y (``undetermined`` without b or interval)."""
        if self.scale_factor_ is None:
            self.exponent_ci_ = np.full((self.rank_, 2), np.nan)
            self.classes_ = np.array(["undetermined"] * self.rank_)
            return
        self.exponent_ci_ = exponent_interval(self.eigenvalue_ci_, self.scale_factor_)
        self.classes_ = np.array([interval_class(lo, hi, float(self.tol)) for lo, hi in self.exponent_ci_])

    def compute_exponents(self, b: float | ArrayLike) -> np.ndarray:
        """Set (and return) ``exponents_ = ln|lambda| / ln b`` for a new scale factor, no refit.

        ``b``: scalar, or per-step factors of shape (T-1,) reduced to their geometric mean.
        """
        self._check_fitted()
        arr = np.asarray(b, dtype=np.float64)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        elif arr.ndim != 1 or arr.size != self.n_snapshots_ - 1:
            raise InvalidParameterError(
                f"b must be a scalar or have one factor per step (T-1 = {self.n_snapshots_ - 1}), got shape {arr.shape}"
            )
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise InvalidParameterError("scale factors b must be finite and positive")
        log_b = float(np.mean(np.log(arr)))
        if abs(log_b) < 1e-12:
            raise InvalidParameterError("scale factor b = 1: the exponents ln|lambda| / ln b are undefined")
        self.scale_factor_ = math.exp(log_b)
        with np.errstate(divide="ignore"):
            self.exponents_ = np.log(np.abs(self.eigenvalues_)) / log_b
        self._classify()
        return self.exponents_

    def _check_fitted(self) -> None:
        if not hasattr(self, "eigenvalues_"):
            raise NotFittedError("this KoopmanDMD is not fitted yet; call fit() first")

    # --------------------------------------------------------------------------------------------
    def modes(
        self,
        snapshots: SnapshotsLike,
        indices: Sequence[int] | np.ndarray | None = None,
        dtype: torch.dtype = torch.complex128,
    ) -> Iterator[torch.Tensor]:
        """Exact DMD modes ``Phi = Y V_r S_r^{-1} W``, block by block (a second streaming pass).

        Parameters
        ----------
        snapshots : the same snapshots as given to :meth:`fit` (same blocks, same order)
        indices : sequence of int, optional
            Which modes (positions in ``eigenvalues_``); default all ``r``.
        dtype : torch.complex128 or torch.complex64
            Output dtype (complex64 halves the memory; computation is float64 either way).

        Yields
        ------
        phi : complex tensor of shape (n_i, len(indices)) on the fit device, one per block, in
            the provider's order; reshape ``phi[:, j]`` to the block's tensor shape to write it
            back.  Modes are unnormalised, as PyDMD's (``Phi @ diag(amplitudes_)`` reproduces
            ``x_0`` on the fitted subspace).
        """
        self._check_fitted()
        if dtype not in (torch.complex64, torch.complex128):
            raise InvalidParameterError(f"dtype must be complex64 or complex128, got {dtype}")
        coef = self.mode_coef_
        if indices is not None:
            idx = np.asarray(indices, dtype=np.int64).reshape(-1)
            if idx.size and (idx.min() < -self.rank_ or idx.max() >= self.rank_):
                raise InvalidParameterError(f"mode indices must be in [0, {self.rank_}), got {idx}")
            coef = coef[:, idx]
        dev = resolve_device(self.device)
        n_modes = int(coef.shape[1])
        # (2r, T): real parts then imaginary parts; p = cc @ chunk is (2r, cols)
        cc = torch.as_tensor(np.ascontiguousarray(np.vstack([coef.real.T, coef.imag.T])), device=dev)
        provider = _as_provider(snapshots)
        seen = 0
        for raw in provider():
            block = _as_block(raw, self.n_snapshots_)
            n = int(block.shape[1])
            out = torch.empty((n, n_modes), dtype=dtype, device=dev)
            out_ri = torch.view_as_real(out)  # (n, r, 2)
            for start, stop, chunk in _column_chunks(block, _chunk_elements(self.chunk_elements, dev)):
                p = cc @ chunk.to(device=dev, dtype=torch.float64)
                out_ri[start:stop] = p.view(2, n_modes, stop - start).permute(2, 1, 0)
            seen += n
            yield out
        if self.n_features_ is not None and seen != self.n_features_:
            raise InvalidParameterError(
                f"modes(): the snapshots have {seen} columns, but the fit saw {self.n_features_}"
            )

    # --------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable summary (NaN / inf become ``None``).

        Keys: ``snapshots`` (T), ``features`` (N or None), ``rank``, ``numerical_rank``,
        ``singular_values`` (all, of X), ``tol`` (marginal band in y), ``ci_method``, ``n_bags``,
        ``n_bags_used``, ``ci_note`` (why no eigenvalue has an interval, or None), ``scale_factor``,
        ``eigenvalues`` (list of ``{re, im, abs, class, ci_low, ci_high[, exponent, exponent_ci_low,
        exponent_ci_high]}``; the exponents only when ``b`` is known), ``amplitudes`` (list of ``{re, im, abs}``).
        """
        self._check_fitted()
        eigs = []
        for i, lam in enumerate(self.eigenvalues_):
            item: dict[str, Any] = {
                "re": float(lam.real),
                "im": float(lam.imag),
                "abs": float(abs(lam)),
                "class": str(self.classes_[i]),
                "ci_low": _none_if_nan(self.eigenvalue_ci_[i, 0]),
                "ci_high": _none_if_nan(self.eigenvalue_ci_[i, 1]),
            }
            if self.exponents_ is not None:
                item["exponent"] = _none_if_nan(self.exponents_[i])
                item["exponent_ci_low"] = _none_if_nan(self.exponent_ci_[i, 0])
                item["exponent_ci_high"] = _none_if_nan(self.exponent_ci_[i, 1])
            eigs.append(item)
        return {
            "snapshots": int(self.n_snapshots_),
            "features": self.n_features_,
            "rank": int(self.rank_),
            "numerical_rank": int(self.numerical_rank_),
            "singular_values": [float(x) for x in self.singular_values_],
            "tol": float(self.tol),
            "ci_method": self.ci_method,
            "n_bags_used": int(self.n_bags_used_),
            "n_bags": int(self.n_bags),
            "ci_note": self.ci_note_,
            "scale_factor": self.scale_factor_,
            "eigenvalues": eigs,
            "amplitudes": [
                {"re": float(a.real), "im": float(a.imag), "abs": float(abs(a))} for a in self.amplitudes_
            ],
        }
