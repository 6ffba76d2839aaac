"""Outputs never destroy inputs: every output of every command is refused when it is an input (same path
after symlinks, same inode), with or without --force, and when it exists unless --force; written
atomically, with the umask's permissions, created exclusively."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from rganalysis.cli import main
from rganalysis.errors import ConcurrentWriteError, OutputExistsError, UnsafeLoadWarning
from rganalysis.store.output import AtomicOutput, remove_stale_temp_files


def refused(capsys, argv: list[str], name: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"[{name}]" in lines[0] and "Traceback" not in err, err


@pytest.fixture
def flow_copy(flows, tmp_path):
    """A private copy of a small flow store (tests compare its bytes before and after)."""
    p = tmp_path / "alpha_flow.h5"
    p.write_bytes(flows["alpha"].read_bytes())
    return p


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_outputs_that_are_inputs_are_refused(flow_copy, tmp_path, capsys, force):
    before = flow_copy.read_bytes()
    f = str(flow_copy)
    refused(capsys, ["report", f, "-o", f, "-q", *force], "OutputIsInputError")
    refused(
        capsys, ["report", f, "-o", str(tmp_path / "r.html"), "--pdf", f, "-q", *force], "OutputIsInputError"
    )
    refused(capsys, ["fit", f, "--json", f, "-q", *force], "OutputIsInputError")
    refused(capsys, ["koopman", f, "--json", f, "-q", *force], "OutputIsInputError")
    refused(capsys, ["compare", f, f, "--json", f, "-q", *force], "OutputIsInputError")
    refused(
        capsys, ["flow", f, "-o", f, "--rounds", "2", "--rate", "0.2", "-q", *force], "OutputIsInputError"
    )
    # the same file under another name: a symlink, and a hard link
    (tmp_path / "link.h5").symlink_to(flow_copy)
    os.link(flow_copy, tmp_path / "hard.h5")
    refused(capsys, ["fit", f, "--json", str(tmp_path / "link.h5"), "-q", *force], "OutputIsInputError")
    refused(capsys, ["report", f, "-o", str(tmp_path / "hard.h5"), "-q", *force], "OutputIsInputError")
    assert flow_copy.read_bytes() == before


def test_ingest_never_replaces_its_checkpoint(tmp_path, capsys):
    sd = {"fc.weight": torch.randn(3, 4)}
    torch.save(sd, tmp_path / "x.pth")
    before = (tmp_path / "x.pth").read_bytes()
    for force in ([], ["--force"]):
        refused(
            capsys,
            ["ingest", str(tmp_path / "x.pth"), "-o", str(tmp_path / "x.pth"), "-q", *force],
            "OutputIsInputError",
        )
    assert (tmp_path / "x.pth").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pth"]


def test_two_outputs_on_one_file(flow_copy, tmp_path, capsys):
    out = str(tmp_path / "r.html")
    refused(capsys, ["report", str(flow_copy), "-o", out, "--pdf", out, "-q"], "DuplicateOutputError")


def test_existing_outputs_need_force(flow_copy, tmp_path, capsys):
    js = tmp_path / "fit.json"
    js.write_text("precious")
    refused(capsys, ["fit", str(flow_copy), "--json", str(js), "-q"], "OutputExistsError")
    refused(capsys, ["koopman", str(flow_copy), "--json", str(js), "-q"], "OutputExistsError")
    refused(capsys, ["compare", str(flow_copy), str(flow_copy), "--json", str(js), "-q"], "OutputExistsError")
    refused(capsys, ["report", str(flow_copy), "-o", str(js), "-q"], "OutputExistsError")
    assert js.read_text() == "precious"
    assert main(["fit", str(flow_copy), "--json", str(js), "--bootstrap", "5", "-q", "--force"]) == 0
    assert js.read_text().startswith("{")


def test_demo_folder_is_checked_before_anything_runs(tmp_path, capsys):
    from rganalysis.demo import minilm_path

    refused(capsys, ["demo", "-o", str(minilm_path()), "-q"], "OutputIsInputError")
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "mine.txt").write_text("keep")
    refused(capsys, ["demo", "-o", str(tmp_path / "demo"), "-q"], "OutputExistsError")
    assert (tmp_path / "demo" / "mine.txt").read_text() == "keep"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_follow_the_umask(flow_copy, tmp_path, umask):
    torch.save({"fc.weight": torch.randn(3, 4)}, tmp_path / "m.pt")
    old = os.umask(umask)
    try:
        assert main(["ingest", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.h5"), "-q"]) == 0
        assert (
            main(["fit", str(flow_copy), "--json", str(tmp_path / "f.json"), "--bootstrap", "5", "-q"]) == 0
        )
    finally:
        os.umask(old)
    for name in ("m.h5", "f.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_creation_is_exclusive(tmp_path):
    out = tmp_path / "out.json"
    first, second = AtomicOutput(out), AtomicOutput(out)
    a, b = first.__enter__(), second.__enter__()  # both start while the output does not exist
    a.write_text("first")
    b.write_text("second")
    first.__exit__(None, None, None)
    with pytest.raises(ConcurrentWriteError, match="another writer"):
        second.__exit__(None, None, None)
    assert out.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # the loser's temporary file is gone
    with pytest.raises(OutputExistsError):
        AtomicOutput(out).__enter__()


def test_two_flow_runs_to_one_new_output(flows, tmp_path):
    """Two `rganalysis flow` processes started together on one new output: exactly one writes it."""
    out = tmp_path / "flow.h5"
    cmd = [sys.executable, "-m", "rganalysis", "flow", str(flows["model_only"]), "-o", str(out)]
    cmd += ["--rounds", "30", "--rate", "0.1", "-q", "--device", "cpu"]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    err = next(e for c, e in results if c == 2)
    assert "[ConcurrentWriteError]" in err or "[OutputExistsError]" in err
    assert len(err.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["flow.h5"]


def test_stale_temporary_files_are_removed(tmp_path):
    out = tmp_path / "out.h5"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".out.h5.rganalysis-partial-{int(dead.stdout)}-00ff00ff"
    live = tmp_path / f".out.h5.rganalysis-partial-{os.getpid()}-00ff00ff"
    other = tmp_path / f".other.h5.rganalysis-partial-{int(dead.stdout)}-00ff00ff"
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    assert remove_stale_temp_files(out) == [stale]
    assert live.exists() and other.exists()


def test_quiet_never_hides_the_pickle_warning(tmp_path, capsys):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    torch.save(model, tmp_path / "model.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        assert (
            main(["ingest", str(tmp_path / "model.pt"), "-o", str(tmp_path / "m.h5"), "--allow-pickle", "-q"])
            == 0
        )
    assert any(issubclass(w.category, UnsafeLoadWarning) and "can run code" in str(w.message) for w in caught)


_SIGNAL_MID_WRITE = """
import os, signal, sys
import rganalysis.store.hdf5 as hdf5
from rganalysis.cli import main

put = hdf5._put_tensor
def put_then_signal(*a, **k):  # the first tensor is written, then the signal arrives
    out = put(*a, **k)
    os.kill(os.getpid(), signal.{sig})
    return out
hdf5._put_tensor = put_then_signal
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_mid_write_leaves_nothing(stores, tmp_path, sig):
    """`kill` / `timeout` (SIGTERM) and Ctrl-C (SIGINT) mid-write: one line, no partial file, the shell's
    status for the signal (128 + 15 = 143, 128 + 2 = 130)."""
    out = tmp_path / "out"
    argv = ["flow", str(stores["mlp0"]), "-o", str(out / "f.h5"), "--rounds", "2", "-q"]
    r = subprocess.run(
        [sys.executable, "-c", _SIGNAL_MID_WRITE.format(sig=sig), *argv], capture_output=True, text=True
    )
    assert r.returncode == {"SIGTERM": 143, "SIGINT": 130}[sig], r.stderr
    assert r.stderr.strip() == "rganalysis flow: interrupted; no partial output is left", r.stderr
    assert list(out.iterdir()) == []


def test_a_closed_pipe_is_not_an_error(tmp_path):
    """`rganalysis info x.h5 | head -c 1` on a store whose listing overflows the pipe: no traceback."""
    torch.save({f"l{i}.weight": torch.ones(2, 2) for i in range(3000)}, tmp_path / "many.pth")
    assert main(["ingest", str(tmp_path / "many.pth"), "-o", str(tmp_path / "many.h5"), "-q"]) == 0
    run = "import sys; from rganalysis.cli import main; sys.exit(main())"
    cmd = f"{sys.executable} -c '{run}' info {tmp_path / 'many.h5'} | head -c 8"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    assert r.stdout == "many: ge" and r.stderr == "", r.stderr


def test_quiet_hides_progress_not_warnings_about_the_data(tmp_path):
    """-q: no progress bars; a warning about the data (here: depth inferred from sorted keys) still prints."""
    from safetensors.torch import save_file

    save_file({f"l{i}.weight": torch.randn(4, 4) for i in (10, 2, 1)}, str(tmp_path / "m.safetensors"))
    argv = ["ingest", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "m.h5"), "-q"]
    r = subprocess.run([sys.executable, "-m", "rganalysis", *argv], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "layer depth is inferred" in r.stderr and "%|" not in r.stderr
