"""Process-parallel paths from a plain script and with closures (rganalysis.parallel, issue 25).

A real script without an ``if __name__ == "__main__":`` guard runs ``response_jacobian`` (a closure as
``train``), ``map_flows`` (a lambda) and ``ingest_many`` on local processes: workers are forked, so the
script is not re-run and the numbers are the serial ones.  Where workers must be spawned
(``RGANALYSIS_START_METHOD=spawn`` stands in for macOS, Windows or an initialised CUDA), the same script
is refused up front with one ProcessStartError line, never a BrokenProcessPool traceback; a guarded
script still runs there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from rganalysis.errors import ProcessStartError
from rganalysis.parallel import START_METHOD_VARIABLE, check_start, start_method

UNGUARDED = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import numpy as np
    import torch

    import rganalysis
    from rganalysis.adapters import ingest_many
    from rganalysis.parallel import map_flows
    from rganalysis.rg.flow import compute_flow
    from rganalysis.store.checkpoint import make_parameter_set, single_round

    out = Path(sys.argv[1])
    torch.set_num_threads(2)
    torch.randn(10**6).abs().sum()  # this process's OpenMP pool is started
    g = torch.Generator().manual_seed(0)
    sd = {"a.weight": torch.randn(60, 80, generator=g), "b.weight": torch.randn(50, 90, generator=g) * 2}
    pset = make_parameter_set([single_round(sd)], adapter="generic", architecture="t", sources=[], name="t")
    flow = compute_flow(pset, 2, 0.2, device="cpu", progress=False)
    flow.save(out / "flow.h5", progress=False)


    def make_train(scale):
        def train(weights, masks, seed):  # a closure: not importable by name anywhere
            return {k: v * scale for k, v in weights.items()}

        return train


    kw = dict(couplings="density", directions=2, epsilon=0.05, seeds=1, progress=False, write=False)
    # threads=2: a forked worker asking for 2 threads would hang (this process used its OpenMP pool)
    par = rganalysis.response_jacobian(
        str(out / "flow.h5"), make_train(1.0), scheduler="processes", n_workers=2, threads=2, **kw
    )
    ser = rganalysis.response_jacobian(str(out / "flow.h5"), make_train(1.0), scheduler="sync", **kw)
    assert np.array_equal(par.jacobian_, ser.jacobian_), (par.jacobian_, ser.jacobian_)
    print("response", par.scheduler_, " ".join(f"{m:.4f}" for m in np.abs(par.eigenvalues_)))

    print("map_flows", map_flows(lambda x: x * x, [1, 2, 3], n_workers=2))

    for i in range(2):
        torch.save({"a.weight": torch.full((5, 6), i + 1.0), "b.weight": torch.ones(2, 5)}, out / f"m{i}.pt")
    res = ingest_many([out / "m0.pt", out / "m1.pt"], [out / "m0.h5", out / "m1.h5"], workers=2)
    print("ingest_many", [r.get("parameters", r.get("error")) for r in res])
    """
)


def _run(script: str, tmp_path, **env: str) -> subprocess.CompletedProcess:
    path = tmp_path / "plain_script.py"
    path.write_text(script)
    e = {k: v for k, v in os.environ.items() if k != START_METHOD_VARIABLE}
    e.update(env, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(path), str(tmp_path)], capture_output=True, text=True, env=e, timeout=180
    )


@pytest.mark.skipif(start_method()[0] != "fork", reason="workers are forked only where that is safe")
def test_unguarded_script_with_a_closure_runs_on_processes(tmp_path):
    r = _run(UNGUARDED, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    sched, *mods = lines["response"].split()
    assert sched == "processes"
    # identity training on a data-free flow: the data-free theory, 1 - p then ~0
    assert abs(float(mods[0]) - 0.8) < 0.02 and float(mods[1]) < 0.1
    assert lines["map_flows"] == "[1, 4, 9]"
    assert lines["ingest_many"] == "[40, 40]"
    assert "threads=2 per task is run as 1 in forked worker processes" in r.stderr


def test_unguarded_script_is_refused_up_front_where_workers_spawn_a_guarded_one_runs(tmp_path):
    r = _run(UNGUARDED, tmp_path, **{START_METHOD_VARIABLE: "spawn"})
    assert r.returncode != 0
    assert "BrokenProcessPool" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "rganalysis.errors.ProcessStartError: response_jacobian: worker processes start by spawn"
    )
    assert (
        'Fix: put the script\'s top-level calls under `if __name__ == "__main__":`, or scheduler="sync".'
        in last
    )
    line = next(i for i, t in enumerate(UNGUARDED.splitlines(), 1) if t.startswith("par = "))
    assert f"whose line {line} is not under" in last  # the unguarded statement that made the call
    assert not (tmp_path / "m0.h5").exists()  # nothing after it ran

    # the same call under the guard runs there
    script = textwrap.dedent(
        """
        import math

        from rganalysis.parallel import map_flows

        if __name__ == "__main__":
            print(map_flows(math.sqrt, [1.0, 4.0, 9.0], n_workers=2))
        """
    )
    r = _run(script, tmp_path, **{START_METHOD_VARIABLE: "spawn"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "[1.0, 2.0, 3.0]"

    # and so does `python -m package` (a package's __main__ is not re-run by spawned workers)
    pkg = tmp_path / "plainpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(
        "import math\nfrom rganalysis.parallel import map_flows\nprint(map_flows(math.sqrt, [4.0, 9.0], n_workers=2))\n"
    )
    e = {**os.environ, START_METHOD_VARIABLE: "spawn", "PYTHONPATH": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "plainpkg"], capture_output=True, text=True, env=e, timeout=180)
    assert r.returncode == 0 and r.stdout.strip() == "[2.0, 3.0]", r.stderr[-3000:]


def test_start_method_override_is_checked(monkeypatch):
    monkeypatch.setenv(START_METHOD_VARIABLE, "telepathy")
    from rganalysis.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="telepathy"):
        check_start("x")
    monkeypatch.setenv(START_METHOD_VARIABLE, "spawn")
    assert check_start("x") == "spawn"  # pytest's own main module is not this call's script
    assert issubclass(ProcessStartError, Exception)


def test_forked_workers_run_one_torch_thread(monkeypatch):
    from rganalysis.parallel import worker_threads

    monkeypatch.setenv(START_METHOD_VARIABLE, "fork")
    with pytest.warns(UserWarning, match="threads=4 per task is run as 1"):
        assert worker_threads(4, "x") == 1
    assert worker_threads(1, "x") == 1 and worker_threads(None, "x") is None
    monkeypatch.setenv(START_METHOD_VARIABLE, "spawn")
    assert worker_threads(4, "x") == 4
