"""The response Jacobian of real IMP (rganalysis.fit.response): known answers.

* identity training on a data-free flow -> the data-free theory (1 - p, then ~0);
* exact least-squares retraining of a linear model with equicorrelated features -> the IMP map's
  Jacobian derived with sympy (implicit-function theorem);
* seed noise alone -> eigenvalues inside the reported noise floor;
* local processes and a dask.distributed cluster give the serial numbers bit for bit;
* frozen couplings (dead or near-empty layers) are left out, in both response estimators.
"""

from __future__ import annotations

import sys
import warnings
from functools import partial

import numpy as np
import pytest
import sympy as sp
import torch
import xarray as xr

import rganalysis
from rganalysis.errors import InvalidParameterError, StoreInUseError
from rganalysis.fit import ResponseEstimator, ResponseJacobian, read_response
from rganalysis.fit.theory import gaussian_density_jacobian, gaussian_threshold
from rganalysis.rg.coarse_graining import coarse_grain
from rganalysis.rg.flow import compute_flow
from rganalysis.store.checkpoint import make_parameter_set, single_round
from rganalysis.store.state import State


def _store(sd: dict, name: str):
    return make_parameter_set(
        [single_round(sd)], adapter="generic", architecture="test", sources=[], name=name
    )


def identity_train(weights, masks, seed):
    """No training: the rewind weights as they are (the data-free map)."""
    return weights


# ------------------------------------------------------------------------------------------------
# 1. identity training on a data-free flow = the data-free map
# ------------------------------------------------------------------------------------------------
GAUSS_SIGMAS = (0.5, 1.0, 2.0)
GAUSS_SHAPES = ((200, 500), (300, 1000), (600, 1000))
P = 0.2


@pytest.fixture(scope="module")
def gaussian_flow_store():
    g = torch.Generator().manual_seed(0)
    sd = {
        f"l{i}.weight": torch.randn(*sh, generator=g) * s
        for i, (s, sh) in enumerate(zip(GAUSS_SIGMAS, GAUSS_SHAPES, strict=True))
    }
    return compute_flow(_store(sd, "gauss"), 2, P, device="cpu", progress=False)


def test_identity_train_on_data_free_flow_is_the_data_free_theory(gaussian_flow_store):
    flow = gaussian_flow_store
    est = ResponseJacobian(
        identity_train,
        couplings="density",
        directions=3,
        epsilon=0.02,
        seeds=2,
        scheduler="sync",
        progress=False,
    ).fit(flow)
    mods = np.abs(est.eigenvalues_)
    assert abs(mods[0] - (1 - P)) < 0.02  # measured 0.79998
    assert np.all(mods[1:] < 0.1)  # measured 0.0076, 0.0053
    assert est.n_retrains_ == 7 * 2 and est.n_states_ == 7
    assert est.rewind_source_.startswith("round 0")
    assert est.noise_floor_ == 0.0  # identity training: no seed noise at all
    assert est.b_ == pytest.approx(1 / (1 - P), rel=1e-4)
    assert est.exponents_[0] == pytest.approx(-1.0, abs=0.02)
    assert est.classes_ == ["irrelevant"] * 3
    # the whole matrix: the Gaussian rank-one formula at the state's threshold
    sizes = [a * b for a, b in GAUSS_SHAPES]
    rho = flow.global_density().values[-1]
    J_theory = gaussian_density_jacobian(
        GAUSS_SIGMAS, sizes, P, gaussian_threshold(GAUSS_SIGMAS, sizes, rho * (1 - P))
    )
    assert np.abs(est.coupling_jacobian() - J_theory).max() < 0.02


# ------------------------------------------------------------------------------------------------
# 2. a closed-form retraining: least squares on the surviving features of a linear model
# ------------------------------------------------------------------------------------------------
LS_SIGMAS = (0.5, 1.0, 2.0)
LS_SHAPES = ((40, 100), (60, 100), (80, 100))
LS_CORR = 0.5
LS_P = 0.3


def _betas() -> dict[str, torch.Tensor]:
    """True coefficients: layer l holds the N_l survival quantiles of Exp(sigma_l), in a fixed random order."""
    out = {}
    for i, (s, sh) in enumerate(zip(LS_SIGMAS, LS_SHAPES, strict=True)):
        n = sh[0] * sh[1]
        q = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(i))
        out[f"l{i}.weight"] = (-s * torch.log(q))[perm].reshape(sh)
    return out


BETA = _betas()


def least_squares_train(weights, masks, seed=0, noise=0.0, beta=None, corr=LS_CORR):
    """Exact least squares of ``y = x . beta`` on the surviving features, population covariance
    ``Sigma`` block-diagonal over layers with ``(1 - c) I + c 1 1^T`` in each block (the closed form of
    ``Sigma_SS^-1 Sigma_S: beta``: ``beta_S + c B / (1 - c + c k)``, ``B`` the pruned coefficients' sum,
    ``k`` the survivors); ``noise``: a seeded Gaussian error on each survivor (a finite sample)."""
    beta = BETA if beta is None else beta
    out = {}
    for i, (k, m) in enumerate(masks.items()):
        b = beta[k].reshape(-1)
        s = m.reshape(-1).to(b.device)
        a = corr * b[~s].sum() / (1 - corr + corr * s.sum())
        w = torch.where(s, b + a, torch.zeros_like(b))
        if noise:
            g = torch.Generator().manual_seed(int(seed) * 7919 + i)
            w = w + noise * torch.randn(b.shape, generator=g, dtype=b.dtype) * s
        out[k] = w.reshape(m.shape)
    return out


def test_least_squares_train_is_least_squares():
    """The closed form is the least-squares solution of the normal equations (torch.linalg.solve)."""
    g = torch.Generator().manual_seed(3)
    beta = {"a.weight": torch.rand(5, 6, generator=g, dtype=torch.float64)}
    mask = {"a.weight": torch.rand(5, 6, generator=g) > 0.4}
    n = 30
    Sigma = (1 - LS_CORR) * torch.eye(n, dtype=torch.float64) + LS_CORR
    s = mask["a.weight"].reshape(-1)
    w_s = torch.linalg.solve(Sigma[s][:, s], Sigma[s] @ beta["a.weight"].reshape(-1))
    got = least_squares_train({}, mask, beta=beta)["a.weight"].reshape(-1)
    torch.testing.assert_close(got[s], w_s)
    assert torch.all(got[~s] == 0)


def least_squares_theory(rho: np.ndarray) -> tuple[np.ndarray, float]:
    """The IMP map's density Jacobian for :func:`least_squares_train`, continuum limit in beta.

    On the IMP manifold layer l keeps ``beta > t_l`` (``rho_l = exp(-t_l / sigma_l)``); retraining shifts
    every survivor by ``a_l = c N_l m_l(t_l) / (1 - c + c N_l rho_l)`` with ``m(t) = int_0^t beta g(beta)``
    the pruned mass per weight; the global prune at rate p then keeps ``beta > T - a_l``:
    ``rho'_l = exp(-(T - a_l) / sigma_l)`` with ``sum_l N_l rho'_l = (1 - p) sum_l N_l rho_l``.
    Differentiated with sympy (implicit-function theorem for T).  Returns (J, T)."""
    from scipy.optimize import brentq

    L = len(LS_SIGMAS)
    r = sp.symbols(f"r0:{L}", positive=True)
    T = sp.Symbol("T")
    N = [a * b for a, b in LS_SHAPES]
    shift = []
    for i in range(L):
        s = LS_SIGMAS[i]
        t = -s * sp.log(r[i])
        m = s - (t + s) * sp.exp(-t / s)
        shift.append(LS_CORR * N[i] * m / (1 - LS_CORR + LS_CORR * N[i] * r[i]))
    rp = [sp.exp(-(T - shift[i]) / LS_SIGMAS[i]) for i in range(L)]
    F = sum(N[i] * rp[i] for i in range(L)) - (1 - LS_P) * sum(N[i] * r[i] for i in range(L))
    subs = dict(zip(r, (float(x) for x in rho), strict=True))
    T0 = brentq(sp.lambdify(T, F.subs(subs)), 0.0, 50.0)
    subs[T] = T0
    dT = [-sp.diff(F, r[k]) / sp.diff(F, T) for k in range(L)]
    J = np.array(
        [
            [float((sp.diff(rp[i], r[k]) + sp.diff(rp[i], T) * dT[k]).subs(subs)) for k in range(L)]
            for i in range(L)
        ]
    )
    return J, T0


@pytest.fixture(scope="module")
def least_squares_flow():
    base = _store({k: v.float() for k, v in BETA.items()}, "least-squares")
    return compute_flow(
        base,
        3,
        LS_P,
        rescaling="rewind",
        train=partial(least_squares_train, seed=0),
        device="cpu",
        progress=False,
    )


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_closed_form_retraining_recovers_the_derived_jacobian(least_squares_flow, noise):
    flow = least_squares_flow
    rho = flow.densities().values[-1]
    J_theory, _ = least_squares_theory(rho)
    lam_theory = np.sort(np.abs(np.linalg.eigvals(J_theory)))[::-1]
    np.testing.assert_allclose(lam_theory, [1.6734, 1.2327, 0.7], atol=1e-3)  # 1 - p survives retraining
    est = ResponseJacobian(
        partial(least_squares_train, noise=noise),
        couplings="density",
        directions=3,
        epsilon=0.02,
        seeds=3,
        scheduler="sync",
        progress=False,
    ).fit(flow)
    mods = np.abs(est.eigenvalues_)
    ci = est.eigenvalue_ci_
    # the two retraining eigenvalues lie in their 95 % intervals (the seed-noise bootstrap with noise, the
    # state bootstrap without: no seed noise to resample)
    assert np.all(ci[:2, 0] <= lam_theory[:2]) and np.all(lam_theory[:2] <= ci[:2, 1])
    # 1 - p: the design measures 0.7022 with and without noise (the integer prune count against moves of
    # 26-49 weights: a bias of the finite design, not sampling error, docs/theory.md section 8); the
    # seed-noise interval is that sharp, the state bootstrap's is not
    assert abs(mods[2] - (1 - LS_P)) < 0.005
    assert est.bootstrap_method_.startswith("seed-cluster" if noise else "bootstrap over 7 states")
    if noise:
        assert ci[2, 1] - ci[2, 0] < 0.002
    # measured: 1.665, 1.218, 0.702 (noise 0); 1.689, 1.247, 0.702 (noise 0.01)
    np.testing.assert_allclose(mods, lam_theory, atol=0.03)
    # the whole matrix, to the bias of finite perturbations (epsilon = 0.02) and finite N (4000-8000)
    assert np.abs(est.coupling_jacobian() - J_theory).max() < 0.05
    assert est.classes_[:2] == ["relevant", "relevant"] and est.classes_[2] == "irrelevant"
    assert (est.noise_floor_ < 1e-12) if noise == 0 else (0 < est.noise_floor_ < 0.1)  # measured 0.052
    assert not est.in_noise_.any()


# ------------------------------------------------------------------------------------------------
# 3. seed noise alone
# ------------------------------------------------------------------------------------------------
def test_seed_noise_alone_is_inside_the_noise_floor(least_squares_flow):
    """epsilon = 0: every state is the unperturbed one, the regressors the design's nominal coordinates.
    With independent seeds per state the Jacobian is pure seed noise: its largest |lambda| falls inside
    the floor (its 95 % quantile, from sign-flipped residuals) in 11 of 12 repetitions measured."""
    inside = 0
    for rep in range(8):
        est = ResponseJacobian(
            partial(least_squares_train, noise=0.05),
            couplings="density",
            directions=3,
            epsilon=0.0,
            seeds=[100 * rep + s for s in range(3)],
            common_seeds=False,
            scheduler="sync",
            progress=False,
            random_state=rep,
        ).fit(least_squares_flow)
        assert est.noise_floor_ > 0
        inside += bool(np.abs(est.eigenvalues_).max() <= est.noise_floor_)
        # one eigenvalue is 0 to rounding (structural); where it is 0 in every resample its interval has zero
        # width, which the interval policy never reports (NaN, undetermined); every other one is irrelevant
        ci = np.asarray(est.eigenvalue_ci_)
        for lam, c, lo in zip(est.eigenvalues_, est.classes_, ci[:, 0], strict=True):
            assert c == "irrelevant" or (abs(lam) < 1e-12 and np.isnan(lo) and c == "undetermined")
        assert est.classes_[:2] == ["irrelevant"] * 2
    assert inside >= 6
    # with common seeds, the noise of a seed is shared by every state and drops out exactly
    est = ResponseJacobian(
        partial(least_squares_train, noise=0.05),
        couplings="density",
        directions=3,
        epsilon=0.0,
        seeds=3,
        scheduler="sync",
        progress=False,
    ).fit(least_squares_flow)
    assert np.abs(est.eigenvalues_).max() < 1e-12 and est.in_noise_.all()


# ------------------------------------------------------------------------------------------------
# 4. parallel = serial
# ------------------------------------------------------------------------------------------------
def test_processes_and_distributed_equal_serial(least_squares_flow, tmp_path):
    import cloudpickle
    from distributed import LocalCluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test module is not importable there
    try:
        path = tmp_path / "ls.h5"
        least_squares_flow.save(path, progress=False)
        kw = dict(couplings="density", directions=3, epsilon=0.02, seeds=2, progress=False)
        train = partial(least_squares_train, noise=0.01)
        serial = ResponseJacobian(train, scheduler="sync", **kw).fit(str(path))
        procs = ResponseJacobian(train, scheduler="processes", n_workers=2, **kw).fit(str(path))
        with LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster:
            dist = ResponseJacobian(train, scheduler=cluster.scheduler_address, **kw).fit(str(path))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    for other in (procs, dist):
        np.testing.assert_array_equal(other.jacobian_, serial.jacobian_)
        np.testing.assert_array_equal(other.eigenvalues_, serial.eigenvalues_)
        np.testing.assert_array_equal(other.eigenvalue_ci_, serial.eigenvalue_ci_)
        assert other.noise_floor_ == serial.noise_floor_
    assert procs.scheduler_ == "processes" and dist.scheduler_.startswith("distributed")


# ------------------------------------------------------------------------------------------------
# 5. frozen couplings, store, API
# ------------------------------------------------------------------------------------------------
def _sparse_state():
    g = torch.Generator().manual_seed(0)
    w = {
        "a": torch.randn(20000, generator=g),
        "b": torch.randn(30000, generator=g) * 2,
        "c": torch.randn(10000, generator=g) * 0.05,  # pruned away by the global rounds
        "d": torch.randn(5000, generator=g),
    }
    st = State.dense(w)
    for _ in range(4):
        st = coarse_grain(st, 0.4)
    m = dict(st.masks)
    m["d"] = torch.zeros_like(m["d"])
    m["d"][:3] = True  # near-empty: 3 of 5000 (density 6e-4); a 2 % perturbation rounds to no weight
    return st.with_masks(m)


def test_response_estimator_leaves_frozen_couplings_out():
    """A dead layer and a near-empty one do not move under the perturbations: reported, not a failure
    (it raised DegenerateRegressionError before)."""
    st = _sparse_state()
    assert st.densities()["c"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = ResponseEstimator(rate=0.4, device="cpu", n_bootstrap=20).fit(st)
    assert est.couplings_ == ["density[a]", "density[b]"]
    assert est.all_couplings_ == ["density[a]", "density[b]", "density[c]", "density[d]"]
    assert est.frozen_couplings_["density[c]"].startswith("dead layer (density 0)")
    assert est.frozen_couplings_["density[d]"].startswith("near-empty layer (density 0.0006)")
    mods = np.abs(est.eigenvalues_)
    assert abs(mods[0] - 0.6) < 0.01 and mods[1] < 0.05  # the data-free theory on the other two


def test_response_jacobian_leaves_a_dead_layer_out(tmp_path):
    g = torch.Generator().manual_seed(1)
    sd = {
        "a.weight": torch.randn(100, 200, generator=g),
        "b.weight": torch.randn(100, 300, generator=g) * 2,
        "c.weight": torch.randn(50, 100, generator=g) * 1e-3,  # dead after two rounds
    }
    flow = compute_flow(_store(sd, "dead"), 2, 0.5, device="cpu", progress=False)
    assert flow.densities().values[-1][2] == 0.0
    est = ResponseJacobian(
        identity_train, couplings="density", directions=3, seeds=1, scheduler="sync", progress=False
    )
    with pytest.warns(rganalysis.fit.jacobian.IllConditionedWarning, match="reach only 2"):
        est.fit(flow)
    assert "density[c.weight]" in est.frozen_couplings_ and len(est.couplings_) == 2
    assert abs(abs(est.eigenvalues_[0]) - 0.5) < 0.02


def test_store_round_trip_and_verb(least_squares_flow, tmp_path):
    path = tmp_path / "ls.h5"
    least_squares_flow.save(path, progress=False)
    assert read_response(path) is None
    est = rganalysis.response_jacobian(
        str(path),
        partial(least_squares_train, noise=0.01),
        couplings="density",
        directions=2,
        epsilon=0.02,
        seeds=2,
        scheduler="sync",
        progress=False,
        n_bootstrap=50,
    )
    j = read_response(path)
    assert j["round"] == 3 and j["n_directions"] == 2 and j["n_retrains"] == est.n_retrains_ == 5 * 2
    assert [e["abs"] for e in j["eigenvalues"]] == pytest.approx(np.abs(est.eigenvalues_).tolist())
    assert j["bootstrap_method"] == est.bootstrap_method_ and j["bootstrap_method"].startswith("seed-cluster")
    ds = xr.open_dataset(path, group="response", engine="h5netcdf")
    np.testing.assert_array_equal(ds["jacobian"].values, est.jacobian_)
    assert list(ds["coupling"].values) == est.couplings_
    ds.close()
    with rganalysis.load(path) as p:  # the store still loads, flows and all
        assert p.n_rounds == 4
    # a second measurement replaces the first, and no partial group is left behind
    rganalysis.response_jacobian(
        str(path),
        partial(least_squares_train, noise=0.01),
        couplings="density",
        directions=3,
        epsilon=0.02,
        seeds=2,
        scheduler="sync",
        progress=False,
        n_bootstrap=0,
    )
    import h5py

    with h5py.File(path, "r") as f:
        assert "partial_response" not in f and "response" in f
    assert read_response(path)["n_directions"] == 3
    # write=True on a set still open: refused before any retraining, not after all of them
    calls = []

    def counted(*a, **k):
        calls.append(1)
        return least_squares_train(*a, **k)

    with rganalysis.load(path) as p, pytest.raises(StoreInUseError, match="nothing was trained"):
        rganalysis.response_jacobian(p, counted, couplings="density", directions=2, seeds=2, write=True)
    with pytest.raises(InvalidParameterError, match="stored in a file"):
        rganalysis.response_jacobian(least_squares_flow, counted, couplings="density", write=True)
    assert calls == []


def test_weight_couplings_retrain_twice(least_squares_flow):
    """Magnitude couplings read the weights: each state is retrained, measured, pruned and retrained again.
    The 4 targeted directions are realised in 3 (the 4th singular value of the realised moves is 0.0006 of
    the first): the regression runs in the realised span, with a warning."""
    est = ResponseJacobian(
        partial(least_squares_train, noise=0.0),
        couplings=("density", "magnitude"),
        directions=4,
        epsilon=0.02,
        seeds=1,
        scheduler="sync",
        progress=False,
        n_bootstrap=0,
    )
    with pytest.warns(rganalysis.fit.jacobian.IllConditionedWarning, match="realise 3 of the 4"):
        est.fit(least_squares_flow)
    assert est.weights_needed_ and est.n_retrains_ == 2 * est.n_states_
    assert est.inputs_.shape == (9, 1, len(est.couplings_)) and np.isfinite(est.jacobian_).all()
    assert est.directions_.shape == (3, len(est.couplings_)) and est.target_directions_.shape[0] == 4
    assert est.direction_overlap_[0] > 0.9  # cosines of the principal angles, measured 0.93, 0.79, 0.30


@pytest.mark.parametrize(
    ("couplings", "noise", "common", "method"),
    [
        ("density", 0.01, True, "seed-cluster bootstrap over 2 common seeds"),
        ("density", 0.01, False, "fixed-design bootstrap of the seed noise"),
        ("density", 0.0, True, "bootstrap over 7 states (no seed noise)"),
        (("density", "magnitude"), 0.01, True, "bootstrap over 9 states (inputs with seed noise)"),
    ],
)
def test_bootstrap_follows_the_design(least_squares_flow, couplings, noise, common, method):
    """The seed noise is resampled on the fixed design only where there is seed noise and the inputs are
    exact (mask couplings), by seed where the seeds are common to all states; otherwise the states are
    resampled."""
    est = ResponseJacobian(
        partial(least_squares_train, noise=noise),
        couplings=couplings,
        directions=3 if couplings == "density" else 4,
        epsilon=0.02,
        seeds=2,
        common_seeds=common,
        scheduler="sync",
        progress=False,
        n_bootstrap=40,
        noise_draws=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(least_squares_flow)
    assert est.bootstrap_method_.startswith(method)


def test_train_without_seed_needs_one_seed(least_squares_flow):
    with pytest.raises(InvalidParameterError, match="seed"):
        ResponseJacobian(lambda w, m: w, couplings="density", seeds=3, scheduler="sync").fit(
            least_squares_flow
        )
    est = ResponseJacobian(
        lambda w, m: w,
        couplings="density",
        directions=2,
        seeds=1,
        scheduler="sync",
        progress=False,
        n_bootstrap=0,
    ).fit(least_squares_flow)
    assert est.n_retrains_ == 5
    with pytest.raises(InvalidParameterError, match="epsilon"):
        ResponseJacobian(identity_train, epsilon=1.5).fit(least_squares_flow)
    assert "seeds=3" in repr(ResponseJacobian(identity_train))


# ------------------------------------------------------------------------------------------------
# 6. fit, compare and report read the stored response
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def response_stores(least_squares_flow, tmp_path_factory):
    """Two copies of the least-squares flow with a stored response (noise 0.01 and 0.02), one without."""
    d = tmp_path_factory.mktemp("response_stores")
    paths = []
    for i, noise in enumerate((0.01, 0.02, None)):
        p = d / f"ls{i}.h5"
        least_squares_flow.save(p, progress=False)
        if noise is not None:
            rganalysis.response_jacobian(
                str(p),
                partial(least_squares_train, noise=noise),
                couplings="density",
                directions=3,
                epsilon=0.02,
                seeds=2,
                scheduler="sync",
                progress=False,
                n_bootstrap=20,
            )
        paths.append(p)
    return paths


def test_fit_cli_embeds_and_prints_the_stored_response(response_stores, tmp_path, capsys):
    import json

    from rganalysis.cli import main

    out = tmp_path / "fit.json"
    assert main(["fit", str(response_stores[0]), "--rank", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "response Jacobian at round 3" in text and "real IMP step" in text
    j = json.loads(out.read_text())
    (resp,) = j["response"].values()
    assert resp == read_response(response_stores[0])
    out2 = tmp_path / "fit-without.json"
    assert main(["fit", str(response_stores[2]), "--rank", "1", "--json", str(out2)]) == 0
    assert "response" not in json.loads(out2.read_text())


def test_compare_reports_response_spectrum_only_when_every_flow_has_one(response_stores):
    from rganalysis.universality import UniversalityAnalysis

    ua = UniversalityAnalysis().fit([str(p) for p in response_stores[:2]], names=["a", "b"])
    comps = list(ua.components_["component"].values)
    assert "response_spectrum" in comps and ua.weights_["response_spectrum"] == 0.0
    d = float(ua.components_.sel(component="response_spectrum", model="a", model_other="b"))
    a, b = (read_response(p) for p in response_stores[:2])
    from rganalysis.fit.fixed_points import EXPONENT_FLOOR, exponent_points
    from rganalysis.fit.spectra import spectral_wasserstein

    # the distance compares exponents log(lambda) / ln b, each flow at its own stored b
    ea = [complex(e["re"], e["im"]) for e in a["eigenvalues"]]
    eb = [complex(e["re"], e["im"]) for e in b["eigenvalues"]]
    za, zb = exponent_points(ea, float(a["b"])), exponent_points(eb, float(b["b"]))
    assert d == pytest.approx(spectral_wasserstein(za, zb, pad=EXPONENT_FLOOR)) and d > 0
    ua = UniversalityAnalysis().fit([str(p) for p in response_stores], names=["a", "b", "c"])
    assert "response_spectrum" not in list(ua.components_["component"].values)
    # asked for by weight while a flow has none: refused, not a total of nothing (0 for every pair)
    with pytest.raises(InvalidParameterError, match="2 of 3 have one"):
        UniversalityAnalysis(weights={"response_spectrum": 1.0}).fit([str(p) for p in response_stores])


def test_report_draws_the_response_spectrum_beside_the_trajectory_one(response_stores):
    from rganalysis.report.build import build_report
    from rganalysis.report.options import ReportOptions

    rep = build_report([str(response_stores[0])], ReportOptions(rank=1), compare=False)
    try:
        (sec,) = rep.models
        ids = [f.id for f in sec.figures]
        i = next(k for k, x in enumerate(ids) if x.startswith("fig-spectrum-"))
        assert ids[i + 1].startswith("fig-response-")
        assert (
            "real IMP step" in sec.figures[i + 1].caption and "trajectory fit" in sec.figures[i + 1].caption
        )
        assert "response Jacobian" in sec.figures[i].caption
        assert "seed-cluster bootstrap" in sec.figures[i + 1].caption  # which bars
        assert "response" in sec.fit_json
    finally:
        rep.close()


def test_a_flow_with_a_stored_response_still_checks_and_loads(response_stores, capsys):
    from rganalysis.cli import main

    assert main(["check", str(response_stores[0])]) == 0
    assert main(["info", str(response_stores[0])]) == 0
    with rganalysis.load(response_stores[0]) as flow:
        assert flow.n_rounds == 4  # states 0..3


def test_the_stored_spectrum_table_says_no_interval():
    """A stored response eigenvalue without an interval prints "no interval" (as the trajectory table and
    koopman do), and a missing exponent keeps its column."""
    from rganalysis.fit.response_store import format_response

    j = {
        "round": 2, "rate": 0.2, "b": 1.25, "n_directions": 2, "couplings": ["a", "b"],
        "coupling_sets": ["density"], "n_retrains": 6, "retrain_seconds": 1.0, "noise_floor": 1e-3,
        "eigenvalues": [
            {"abs": 0.8, "re": 0.8, "im": 0.0, "exponent": -1.0, "class": "irrelevant", "ci_low": 0.79, "ci_high": 0.81},
            {"abs": 0.0, "re": 0.0, "im": 0.0, "exponent": None, "class": "undetermined", "in_noise": True,
             "ci_low": None, "ci_high": None},
        ],
    }  # fmt: skip
    rows = format_response(j).splitlines()[2:]
    assert rows[0].endswith("[0.7900, 0.8100]") and rows[1].endswith("no interval")
    assert rows[0].index("-1.000") + len("-1.000") == rows[1].index("n/a") + len("n/a")  # aligned columns
