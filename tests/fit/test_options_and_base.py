"""The estimator base (parameters from the __init__ signature) and the fit options declared once."""

from __future__ import annotations

import pytest

from rganalysis.cli import build_parser, main
from rganalysis.errors import InvalidParameterError
from rganalysis.fit.flowfit import FlowFit
from rganalysis.fit.jacobian import ResponseEstimator, TrajectoryEstimator
from rganalysis.fit.options import FitOptions, command_args, parse_depth_points, parse_rank
from rganalysis.koopman.dmd import KoopmanDMD
from rganalysis.universality.analysis import UniversalityAnalysis


@pytest.mark.parametrize("cls", [FlowFit, TrajectoryEstimator, KoopmanDMD, UniversalityAnalysis])
def test_params_come_from_the_signature(cls):
    import inspect

    est = cls()
    names = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    assert list(est.get_params()) == names
    text = repr(est)
    assert text.startswith(f"{cls.__name__}(") and all(f"{n}=" in text for n in names)
    assert est.set_params(**{names[1]: "changed"}) is est and est.get_params()[names[1]] == "changed"
    with pytest.raises(InvalidParameterError, match="no parameter"):
        est.set_params(bogus=1)


def test_response_estimator_repr_lists_its_rate():
    assert repr(ResponseEstimator(0.3)).startswith("ResponseEstimator(rate=0.3, scope='global'")


def test_option_parsers():
    assert parse_rank("auto") == "auto" and parse_rank("full") is None and parse_rank("3") == 3
    assert (
        parse_depth_points("0") is None and parse_depth_points("none") is None and parse_depth_points(8) == 8
    )
    with pytest.raises(InvalidParameterError, match="rank"):
        parse_rank("many")
    o = FitOptions(couplings="density, magnitude", rank="2")
    assert o.couplings == ("density", "magnitude") and o.rank == 2
    assert command_args(o, FitOptions()) == ["--couplings", "density,magnitude", "--rank", "2"]
    assert command_args(FitOptions(n_samples=9), FitOptions()) == []  # response-only, trajectory estimator
    f = FitOptions(depth_points=4).flowfit()
    assert isinstance(f, FlowFit) and f.depth_points == 4


def test_commands_generate_their_options_with_defaults(capsys):
    commands = build_parser().get_default("commands")
    for cmd, default_dp in (("fit", "auto"), ("report", "auto"), ("compare", "auto")):  # one definition
        helps = {a.dest: a.help for a in commands[cmd]._actions}
        assert helps["couplings"].startswith("comma-separated coupling sets: rescaled density_rel"), cmd
        assert helps["couplings"].endswith("(default: density_rel)"), cmd
        assert helps["depth_points"].endswith(f"(default: {default_dp})"), cmd
    assert main(["fit", "x.h5", "--rank", "lots"]) == 2
    assert "[InvalidParameterError] --rank: rank must be" in capsys.readouterr().err
