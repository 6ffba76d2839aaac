"""Command start-up: ``rganalysis --help`` and every command's ``--help`` import neither torch nor numpy
(issue 21: start-up under 0.3 s; measured by modules, not by time), and ``rganalysis --help`` imports
no command's module (the summaries are read from the sources)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rganalysis.cli import build_parser, command_names

# runs `python -m rganalysis ARGS...` in a fresh interpreter, then prints the modules it imported
_WRAPPER = """
import json, runpy, sys
sys.argv = ["rganalysis", *sys.argv[1:]]
try:
    runpy.run_module("rganalysis", run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
print("\\nMODULES " + json.dumps([code, sorted(sys.modules)]))
"""


def _modules(*args: str) -> tuple[int, list[str], str]:
    r = subprocess.run([sys.executable, "-c", _WRAPPER, *args], capture_output=True, text=True, timeout=120)
    line = next(x for x in r.stdout.splitlines() if x.startswith("MODULES "))
    code, mods = json.loads(line.removeprefix("MODULES "))
    return code, mods, r.stdout


HEAVY = ("torch", "numpy", "xarray", "scipy", "h5py", "matplotlib")


def test_top_level_help_imports_no_command_module():
    code, mods, out = _modules("--help")
    assert code == 0
    assert [m for m in HEAVY if m in mods] == []
    assert [m for m in mods if m.startswith("rganalysis.cli.") and m != "rganalysis.cli._options"] == []
    assert "rganalysis.cli._options" not in mods
    for name in command_names():
        assert name in out


@pytest.mark.parametrize("command", command_names())
def test_command_help_imports_neither_torch_nor_numpy(command):
    code, mods, out = _modules(command, "--help")
    assert code == 0
    assert f"usage: rganalysis {command}" in out
    assert [m for m in HEAVY if m in mods] == []


def test_summaries_are_the_commands_own_help():
    from rganalysis.cli import command_help

    full = build_parser()
    sub = next(a for a in full._actions if isinstance(a, type(full._subparsers._group_actions[0])))
    shown = {a.dest: a.help for a in sub._choices_actions}
    assert shown == {name: command_help(name) for name in command_names()}
    assert all(shown.values())


def test_adapter_names_are_the_registered_ones():
    from rganalysis import adapters

    assert adapters.names() == sorted(adapters.available())
