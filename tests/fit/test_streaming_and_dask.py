"""Scale-out: streaming couplings equal the in-memory ones and stay near one tensor's memory; the
dask paths (local processes, a distributed LocalCluster) give the serial result bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import xarray as xr

import rganalysis
from rganalysis.errors import InvalidParameterError
from rganalysis.fit.couplings import flow_couplings, register_coupling_set, unregister_coupling_set
from rganalysis.fit.streaming import stream_flow_couplings
from rganalysis.parallel import map_flows, resolve_scheduler
from rganalysis.rg.flow import compute_flow
from rganalysis.store.checkpoint import make_parameter_set, single_round
from rganalysis.store.parameter_set import ParameterSet, build_info
from rganalysis.universality.analysis import UniversalityAnalysis


def _pset(sd: dict, name: str):
    return make_parameter_set(
        [single_round(sd)], adapter="generic", architecture="generic", sources=[], name=name
    )


def _mlp(seed: int, width: int = 48) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    ).state_dict()


def _cnn(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 16, 10)
    ).state_dict()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A small sweep: 5 data-free flows of MLPs and CNNs, as stores."""
    d = tmp_path_factory.mktemp("sweep")
    paths = []
    for name, sd in [
        ("mlp0", _mlp(0)),
        ("mlp1", _mlp(1)),
        ("mlp2w", _mlp(2, 80)),
        ("cnn0", _cnn(0)),
        ("cnn1", _cnn(1)),
    ]:
        compute_flow(_pset(sd, name), 7, 0.2, progress=False, device="cpu").save(
            d / f"{name}.h5", progress=False
        )
        paths.append(str(d / f"{name}.h5"))
    return paths


# --- streaming couplings ------------------------------------------------------------------------------------
def test_streaming_equals_flow_couplings_data_free(sweep):
    sets = ("density", "magnitude", "spectral")
    with rganalysis.load(sweep[3]) as p:
        xr.testing.assert_identical(stream_flow_couplings(p, sets), flow_couplings(p, sets))
    a = stream_flow_couplings(sweep[0])  # from a path: opens and closes the store itself
    with rganalysis.load(sweep[0]) as p:
        b = flow_couplings(p)
    xr.testing.assert_identical(a, b)
    assert a.dims == ("round", "coupling") and a.shape == (8, 3)


def test_streaming_equals_flow_couplings_with_weights_per_round(tmp_path):
    """A rewinding flow with a 'training' callback stores new weights every round."""

    def train(weights, masks):
        return {k: w * (1.0 + 0.1 * i) + 0.01 * torch.sign(w) for i, (k, w) in enumerate(weights.items())}

    flow = compute_flow(
        _pset(_mlp(3), "rw"), 4, 0.3, rescaling="rewind", train=train, progress=False, device="cpu"
    )
    flow.save(tmp_path / "rw.h5", progress=False)
    with rganalysis.load(tmp_path / "rw.h5") as p:
        assert not torch.equal(p.tensor("0.weight", 2), p.tensor("0.weight", 0))
        sets = ("density", "magnitude")
        xr.testing.assert_identical(stream_flow_couplings(p, sets), flow_couplings(p, sets))
    # an in-memory (unsaved) flow streams too
    xr.testing.assert_identical(stream_flow_couplings(flow, "magnitude"), flow_couplings(flow, "magnitude"))


def test_streaming_refuses_whole_network_couplings(sweep):
    @register_coupling_set("total_l1_test")
    def total(state):
        return {"network": float(sum(float(w.abs().sum()) for _, w in state.masked()))}

    try:
        with pytest.raises(InvalidParameterError, match="cannot be streamed"):
            stream_flow_couplings(sweep[0], ("density", "total_l1_test"))
    finally:
        unregister_coupling_set("total_l1_test")


_CHILD = textwrap.dedent("""
    import gc, json, re, sys, threading, time
    import psutil
    import rganalysis
    from rganalysis.fit.couplings import flow_couplings
    from rganalysis.fit.streaming import stream_flow_couplings

    path = sys.argv[1]
    proc = psutil.Process()

    def hwm_reset():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def hwm():
        return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024

    def peak(fn):
        gc.collect()
        base = proc.memory_info().rss
        if hwm_reset():
            out = fn()
            return hwm() - base, out
        samples, stop = [base], threading.Event()
        def sample():
            while not stop.is_set():
                samples.append(proc.memory_info().rss)
                time.sleep(0.0005)
        t = threading.Thread(target=sample)
        t.start()
        try:
            out = fn()
        finally:
            stop.set()
            t.join()
        return max(samples) - base, out

    with rganalysis.load(path) as p:
        stream_flow_couplings(p, "density", names=p.pruned_names()[:1])  # warm up lazy imports and pools
        stream_peak, a = peak(lambda: stream_flow_couplings(p, "density"))
        naive_peak, b = peak(lambda: flow_couplings(p, "density"))
    print(json.dumps({"stream": stream_peak, "naive": naive_peak, "equal": bool((a.values == b.values).all())}))
""")


def test_streaming_peak_memory_stays_near_one_tensor(tmp_path):
    """16 tensors of 8 MiB (128 MiB of weights, 3 rounds of masks): streaming peaks below 4 tensors +
    16 MiB; building each round's State (flow_couplings) needs all the weights at once.

    Measured in a child process as the growth of its peak RSS (VmHWM, reset through
    /proc/self/clear_refs; else sampled), with glibc's mmap threshold pinned at 1 MiB so that freed
    tensors go back to the system and the RSS follows the live memory.
    """
    import os

    g = torch.Generator().manual_seed(0)
    n_layers, shape = 16, (1024, 2048)
    sd = {f"l{i}.weight": torch.randn(shape, generator=g) for i in range(n_layers)}
    tensor_bytes = 4 * shape[0] * shape[1]
    masks = {}
    for k in sd:  # nested masks of 3 rounds (densities 1, 0.7, 0.4)
        u = torch.rand(shape, generator=g)
        masks[k] = [torch.ones(shape, dtype=torch.bool), u > 0.3, u > 0.6]
    ParameterSet(
        build_info(sd), {0: sd}, masks, n_rounds=3, layouts=[[]] * 3, attrs={"name": "big"}, validate=False
    ).save(tmp_path / "big.h5", progress=False)
    del sd, masks
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    res = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "big.h5")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    bound = 4 * tensor_bytes + 16 * 2**20
    total = n_layers * tensor_bytes
    assert out["equal"]
    assert out["stream"] < bound, (
        f"streaming peaked at {out['stream'] / 2**20:.0f} MiB > {bound / 2**20:.0f} MiB"
    )
    assert out["naive"] > total > 2.5 * bound  # the bound is far below the model, and the test can tell


# --- dask ---------------------------------------------------------------------------------------------------
def _square(x: int) -> int:
    return x * x


def test_map_flows_sync_and_scheduler_names():
    assert map_flows(_square, [1, 2, 3], scheduler="sync") == [1, 4, 9]
    assert map_flows(_square, [], scheduler=None) == []
    assert resolve_scheduler(None) == "processes" and resolve_scheduler("sync") == "sync"
    assert resolve_scheduler("tcp://127.0.0.1:8786") == "distributed tcp://127.0.0.1:8786"


def _assert_same(a: UniversalityAnalysis, b: UniversalityAnalysis) -> None:
    np.testing.assert_array_equal(a.distance_.values, b.distance_.values)
    np.testing.assert_array_equal(a.components_.values, b.components_.values)
    assert a.classes_ == b.classes_ and a.names_ == b.names_
    for s, t in zip(a.signatures_, b.signatures_, strict=True):
        np.testing.assert_array_equal(s.eigenvalues, t.eigenvalues)
        np.testing.assert_array_equal(s.fixed_point, t.fixed_point)
        np.testing.assert_array_equal(s.koopman_eigenvalues, t.koopman_eigenvalues)


def test_dask_local_processes_and_local_cluster_equal_serial(sweep):
    from distributed import LocalCluster

    serial = UniversalityAnalysis(spectrum="koopman", scheduler="sync").fit(sweep)
    assert serial.scheduler_ == "sync"
    procs = UniversalityAnalysis(spectrum="koopman", scheduler=None, n_workers=2).fit(sweep)
    assert procs.scheduler_ == "processes"
    _assert_same(serial, procs)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        dist = UniversalityAnalysis(spectrum="koopman", scheduler=cluster.scheduler_address).fit(sweep)
        assert dist.scheduler_ == f"distributed {cluster.scheduler_address}"
        _assert_same(serial, dist)
        # the CLI path on the same cluster
        from rganalysis.cli import main

        assert (
            main(
                [
                    "compare",
                    *sweep,
                    "--spectrum",
                    "koopman",
                    "--scheduler",
                    cluster.scheduler_address,
                    "--json",
                    str(sweep[0]) + ".json",
                    "-q",
                ]
            )
            == 0
        )
    j = json.loads(open(str(sweep[0]) + ".json").read())
    np.testing.assert_array_equal(np.array(j["distance"]), serial.distance_.values)
    assert j["settings"]["scheduler"].startswith("distributed tcp://")
