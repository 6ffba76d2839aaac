"""The settings of a flow fit, declared once: :class:`FitOptions` is what ``fit``, ``report`` and
``compare`` share, and the command line builds its options from the field metadata."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from rganalysis.errors import InvalidParameterError

#: Half-width of the marginal band in the exponent ``y = ln|lambda| / ln b``: a direction is marginal when
#: ``|y| <= MARGINAL_Y``, relevant above, irrelevant below.  In y, not in ``|lambda|``, so that the band
#: means the same at every pruning rate (at p = 0.2, b = 1.25, it is ``|lambda|`` in [0.956, 1.046]).
MARGINAL_Y = 0.2
# (Defined here, in a module without numpy, so that ``--help`` shows it without importing the analysis;
# re-exported by rganalysis.fit.fixed_points.)

__all__ = [
    "FitOptions",
    "command_args",
    "flag_of",
    "option",
    "option_fields",
    "parse_couplings",
    "parse_depth_points",
    "parse_rank",
    "parse_samples",
    "show_value",
]


def option(
    help: str,
    *,
    flag: str | None = None,
    parse: Callable[[str], Any] | None = None,
    choices: Sequence[str] | None = None,
    metavar: str | None = None,
    response: bool = False,
    show: Callable[[Any], str] | None = None,
) -> dict[str, Any]:
    """Field metadata from which the command line makes an option.

    ``flag`` defaults to ``--field-name``; ``parse`` turns the option's text into the field's value
    (default: the type of the field's default); ``show`` turns a value back into option text (for the
    commands a report prints); ``response``: meaningful only with ``estimator="response"``.
    """
    return {
        "help": help,
        "flag": flag,
        "parse": parse,
        "choices": choices,
        "metavar": metavar,
        "response": response,
        "show": show,
    }


def parse_couplings(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"density,magnitude"`` -> ``("density", "magnitude")``."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = tuple(c.strip() for c in items if c.strip())
    if not out:
        raise InvalidParameterError("at least one coupling set is needed")
    return out


def parse_samples(text: str | int) -> int | str:
    """``"auto"`` -> ``"auto"`` (:func:`~rganalysis.fit.auto.auto_samples`), ``"256"`` -> 256."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    t = str(text).strip().lower()
    if t == "auto":
        return "auto"
    try:
        return int(t)
    except ValueError:
        raise InvalidParameterError(f"samples must be 'auto' or an integer, got {text!r}") from None


def parse_rank(text: str | int | None) -> int | str | None:
    """``"auto"`` -> ``"auto"``, ``"full"``/``"none"`` -> None (full least squares), ``"3"`` -> 3."""
    if text is None or isinstance(text, int):
        return text
    t = str(text).strip().lower()
    if t == "auto":
        return "auto"
    if t in ("full", "none"):
        return None
    try:
        return int(t)
    except ValueError:
        raise InvalidParameterError(f"rank must be 'auto', 'full' or an integer, got {text!r}") from None


def parse_depth_points(text: str | int | None) -> int | str | None:
    """``"auto"`` -> ``"auto"``, ``"none"``/``"0"``/``"off"`` -> None (per-layer couplings), ``"8"`` -> 8."""
    if text is None:
        return None
    if isinstance(text, int):
        return None if text == 0 else text
    t = str(text).strip().lower()
    if t == "auto":
        return "auto"
    if t in ("none", "0", "off"):
        return None
    if t.isdigit():
        return int(t)
    raise InvalidParameterError(f"depth_points must be 'auto', 'none' or an integer, got {text!r}")


def _show_rank(v: Any) -> str:
    return "full" if v is None else str(v)


def _show_depth_points(v: Any) -> str:
    return "0" if v is None else str(v)


@dataclass
class FitOptions:
    """How a flow is fitted (:class:`~rganalysis.fit.flowfit.FlowFit`).

    ``depth_points``: resample per-layer couplings onto this many normalised depths (None: per-layer
    couplings; ``"auto"``: chosen from the flows, :func:`~rganalysis.fit.auto.resolve_depth_points`);
    ``rank``: trajectory rank (None: full least squares; ``"auto"``: :func:`~rganalysis.fit.auto.auto_rank`).
    The defaults are those of ``fit``, ``report`` and ``compare`` alike.
    """

    couplings: tuple[str, ...] = field(
        default=("density_rel",),
        metadata=option(
            "comma-separated coupling sets: rescaled density_rel (default: per-layer density relative to the "
            "global density), unit_rel, magnitude_rel; raw density_raw, unit_raw, magnitude_raw, spectral_raw "
            "(old names density, unit, magnitude, spectral: the same raw sets); global_density (the scale)",
            parse=parse_couplings,
            metavar="SETS",
            show=",".join,
        ),
    )
    estimator: str = field(
        default="trajectory",
        metadata=option(
            "trajectory (affine fit over the flow's one-step pairs) or response (perturbations of one round)",
            choices=("trajectory", "response"),
        ),
    )
    depth_points: int | str | None = field(
        default="auto",
        metadata=option(
            "resample per-layer couplings onto N normalised depths (the cross-architecture space); auto: 8, "
            "fewer when the flows have fewer layers or too few rounds to determine the fit (one-step pairs >= "
            "2 (couplings + 1), whatever the rank: 8 pairs give 3 depths); 0 or none: per-layer couplings",
            parse=parse_depth_points,
            metavar="N",
            show=_show_depth_points,
        ),
    )
    rank: int | str | None = field(
        default="auto",
        metadata=option(
            "trajectory rank: N (truncated fit, exact DMD), full (no truncation) or auto (each extra direction "
            "needs a singular value >= 2% of the largest and must halve the one-step residual; at most 3, and at "
            "most what the pairs determine: pairs // 2 - 1)",
            parse=parse_rank,
            metavar="RANK",
            show=_show_rank,
        ),
    )
    ridge: float = field(default=0.0, metadata=option("trajectory: ridge penalty (standardised units)"))
    n_bootstrap: int = field(
        default=200,
        metadata=option("bootstrap resamples for eigenvalue intervals", flag="--bootstrap", metavar="N"),
    )
    round: int | None = field(
        default=None,
        metadata=option("response: the round linearised; none: the last", parse=int, response=True),
    )
    perturbation: str = field(
        default="threshold",
        metadata=option(
            "response: perturbation family", choices=("threshold", "random", "rescale"), response=True
        ),
    )
    n_samples: int | str = field(
        default="auto",
        metadata=option(
            "response: number of perturbed states; auto: 6 per regression parameter (live couplings + 1), "
            "at least 64",
            flag="--samples",
            metavar="N",
            parse=parse_samples,
            response=True,
        ),
    )
    tol: float = field(
        default=0.05,
        metadata=option(
            "near-fixed-point tolerance: the last round is near K* when ||K - K*|| / ||K*|| <= tol (the "
            f"classes use the marginal band |y| <= {MARGINAL_Y} in the exponent y = ln|lambda| / ln b)"
        ),
    )
    device: str = field(default="auto", metadata=option("auto (CUDA when present), cpu or cuda"))

    def __post_init__(self) -> None:
        self.couplings = parse_couplings(self.couplings)
        self.depth_points = parse_depth_points(self.depth_points)
        self.rank = parse_rank(self.rank)
        self.n_samples = parse_samples(self.n_samples)

    def flowfit(self, depth_points: int | str | None = "options"):
        """The :class:`~rganalysis.fit.flowfit.FlowFit` these options describe (``depth_points``: another
        value, e.g. one resolved for several flows at once)."""
        from rganalysis.fit.flowfit import FlowFit

        dp = self.depth_points if depth_points == "options" else depth_points
        return FlowFit(
            list(self.couplings),
            self.estimator,
            depth_points=dp,
            rank=self.rank,
            ridge=self.ridge,
            n_bootstrap=self.n_bootstrap,
            round=self.round,
            perturbation=self.perturbation,
            n_samples=self.n_samples,
            tol=self.tol,
            device=self.device,
        )


def option_fields(cls: type) -> list[Any]:
    """The dataclass fields of ``cls`` that carry :func:`option` metadata, in declaration order."""
    return [f for f in fields(cls) if "help" in f.metadata]


def flag_of(f: Any) -> str:
    """The command-line flag of an option field."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def show_value(f: Any, value: Any) -> str:
    """The option text of a field's value (inverse of its ``parse``)."""
    show = f.metadata.get("show")
    return show(value) if show else (repr(value) if isinstance(value, float) else str(value))


def command_args(options: Any, reference: Any, only: Sequence[str] | None = None) -> list[str]:
    """Flags and values of the option fields where ``options`` differs from ``reference`` (an instance
    with the command's defaults), in declaration order: what a printed command needs to reproduce
    ``options``.  Response-only fields count only with the response estimator."""
    out: list[str] = []
    response = getattr(options, "estimator", None) == "response"
    for f in option_fields(type(options)):
        if only is not None and f.name not in only:
            continue
        if f.metadata.get("response") and not response:
            continue
        v = getattr(options, f.name)
        if v != getattr(reference, f.name):
            if isinstance(v, bool):
                out.append(flag_of(f))
            else:
                out += [flag_of(f), show_value(f, v)]
    return out
