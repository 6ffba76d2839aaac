"""The three findings of Redman, Chen, Wang & Dogra (ICML 2022) measured at laptop scale, one table:
docs/paper-findings.md (its design section, written before the held-out run, is kept; everything below
its results marker is regenerated) and the figures docs/figures/paper-*.png.

1. Tickets that transfer have flows that share properties: retrained IMP flows of one BERT (the shipped
   all-MiniLM-L6-v2's first layers) on four generated token tasks; every ticket trained on every task;
   does the distance of ``compare`` (:class:`rganalysis.UniversalityAnalysis`) rank the transfer gaps?
2. BERT flows sit near fixed points: at every level of the BERT flow the response Jacobian of one real IMP
   step (:func:`rganalysis.response_jacobian`) and the step ratio (one more step moves the couplings x
   times as far as the last); the same on digits MLP and CNN flows for contrast.
3. Smaller ResNets have more uniform flows, which complicates transfer between sizes: residual CNNs of
   several depths and widths on digits (:mod:`rganalysis.train.resnets`), the block spread of each flow
   against model size, tickets moved across depth (:func:`rganalysis.rg.depth_mapping.map_masks`) with
   their gaps and whether the cross-architecture distance ranks them.

Run (full, about 35-50 min on 2 shared CPU cores; ``--quick``: seconds, for the test suite)::

    nice -n 10 python examples/paper_findings.py --out paper-out
    python examples/paper_findings.py --quick --out /tmp/pf --doc /tmp/pf/doc.md --figures /tmp/pf/fig
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import rganalysis
from rganalysis.demo.digits import _mlp, digits_tasks
from rganalysis.errors import RGAnalysisError
from rganalysis.rg.depth_mapping import block_of, map_masks
from rganalysis.train import (
    MaskedTrainer,
    TokenVocab,
    bert_prunable,
    bert_trainer,
    digits_resnet,
    make_text_tasks,
    minilm_classifier,
    resnet_prunable,
    retrained_flow,
    tiny_bert,
)
from rganalysis.train.text_tasks import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- results: everything below is written by examples/paper_findings.py -->"

#: The pre-registered settings (docs/paper-findings.md, "Design").  ``quick`` only exercises the code.
SCALES: dict[str, dict[str, Any]] = {
    "full": dict(
        seeds=[1, 2, 3],
        rounds=6,
        rate=0.3,
        bert="minilm",
        bert_layers=2,
        bert_tasks=["sentiment", "sentiment-plain", "negation", "topic"],
        jacobian_task="sentiment",
        n_train=128,
        n_test=256,
        bert_epochs=4,
        bert_lr=3e-4,
        bert_batch=8,
        digits_epochs=10,
        directions=2,
        train_seeds=2,
        n_bootstrap=200,
        depths=[2, 3, 4],
        widths=[4, 8],
    ),
    "quick": dict(
        seeds=[1, 2],
        rounds=2,
        rate=0.5,
        bert="tiny",
        bert_layers=2,
        bert_tasks=["sentiment", "topic"],
        jacobian_task="sentiment",
        n_train=48,
        n_test=48,
        bert_epochs=1,
        bert_lr=1e-3,
        bert_batch=16,
        digits_epochs=1,
        directions=1,
        train_seeds=2,
        n_bootstrap=20,
        depths=[2, 3],
        widths=[4],
    ),
}
# the scale run for docs/paper-findings.md on the shared 2-core machine (the full one did not fit the time
# left): 3 BERT tasks instead of 4, one response direction and one training seed per Jacobian (so no
# seed-noise floor) instead of two and two, 6 digits epochs instead of 10
SCALES["reduced"] = {
    **SCALES["full"],
    "bert_tasks": ["sentiment", "negation", "topic"],
    "digits_epochs": 6,
    "directions": 1,
    "train_seeds": 1,
}

NEAR = 0.5  # "near a fixed point": the step ratio's interval lies below this (see the design)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


# ----------------------------------------------------------------------------------------------------
# statistics (chosen before the held-out run: docs/paper-findings.md, "Design")
# ----------------------------------------------------------------------------------------------------
def mean_ci(x: Any, log: bool = False, fisher: bool = False) -> tuple[float, float, float]:
    """Mean over seeds and its 95 % t interval; NaN-safe.  ``log``: of the log, back-transformed (positive
    ratios).  ``fisher``: of Fisher's z = atanh(rho), back-transformed (correlations), so the interval stays
    inside (-1, 1), which a t interval of rho itself over 2-3 seeds does not."""
    v = np.asarray([a for a in np.asarray(x, dtype=float).ravel() if np.isfinite(a) and (not log or a > 0)])
    if v.size == 0:
        return (math.nan,) * 3
    if log:
        v = np.log(v)
    elif fisher:
        v = np.arctanh(np.clip(v, -1 + 1e-12, 1 - 1e-12))
    m = float(v.mean())
    h = T95.get(v.size - 1, 1.96) * float(v.std(ddof=1)) / math.sqrt(v.size) if v.size > 1 else math.inf
    out = (m, m - h, m + h)
    if log:
        return tuple(float(np.exp(a)) for a in out)
    return tuple(float(np.tanh(a)) for a in out) if fisher else out


def verdict(lo: float, hi: float, consistent_if: str, bound: float = 0.0) -> str:
    """consistent / not consistent / undetermined from an interval: ``consistent_if`` is ``"below"`` or
    ``"above"`` ``bound`` (the whole interval on that side), the opposite side is "not consistent"."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "undetermined"
    below, above = hi < bound, lo > bound
    if consistent_if == "below":
        return "consistent" if below else ("not consistent" if above else "undetermined")
    return "consistent" if above else ("not consistent" if below else "undetermined")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return math.nan
    return float(spearmanr(a[ok], b[ok]).statistic)


def block_spread(flow: Any, round: int) -> float:
    """Coefficient of variation over residual blocks of the per-block log-density change from round 0 to
    ``round`` (std / |mean| of ``ln(rho_b(round) / rho_b(0))``): 0 when every block thins alike."""
    names, table = flow.density_table()
    alive: dict[Any, list[float]] = {}
    for j, n in enumerate(names):
        b = block_of(n)
        if b is None:
            continue
        size = flow.info[n].numel
        a = alive.setdefault(b, [0.0, 0.0, 0.0])
        a[0] += table[0, j] * size
        a[1] += table[round, j] * size
        a[2] += size
    c = np.array([math.log(max(v[1], 0.5) / v[0]) for v in alive.values()])
    return float(c.std(ddof=0) / abs(c.mean())) if c.size > 1 and c.mean() != 0 else math.nan


# ----------------------------------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------------------------------
def round_accuracy(tr: MaskedTrainer, flow: Any, r: int) -> float:
    """Test accuracy of the flow's round-``r`` weights (no retraining)."""
    from rganalysis.train import accuracy

    sd = dict(tr.init)
    sd.update({k: flow.tensor(k, r) * flow.mask(k, r) for k in flow.pruned_names()})
    tr.model.load_state_dict(sd)
    return accuracy(tr.model, tr.task.x_test, tr.task.y_test)


def ticket(flow: Any, r: int) -> dict[str, torch.Tensor]:
    return {k: flow.mask(k, r).clone() for k in flow.pruned_names()}


def jacobians(path: Path, tr: MaskedTrainer, cfg: dict[str, Any], log: Any) -> list[dict[str, Any]]:
    """The response Jacobian at every level 1..rounds of the flow: leading |lambda| with its bootstrap
    interval, the noise floor, and the step ratio ||step|| / ||flow step||."""
    out = []
    for n in range(1, cfg["rounds"] + 1):
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est = rganalysis.response_jacobian(
                    str(path),
                    tr,
                    round=n,
                    directions=cfg["directions"],
                    seeds=cfg["train_seeds"],
                    scheduler="sync",
                    device="cpu",
                    write=False,
                    progress=False,
                    n_bootstrap=cfg["n_bootstrap"],
                    noise_draws=cfg["n_bootstrap"],
                )
        except RGAnalysisError as e:
            out.append({"level": n, "error": f"{type(e).__name__}: {e}"})
            log(f"    level {n}: {type(e).__name__}")
            continue
        lead = int(np.argmax(np.abs(est.eigenvalues_)))
        step, flow_step = float(np.linalg.norm(est.step_)), float(np.linalg.norm(est.flow_step_))
        rec = {
            "level": n,
            "lead_abs": float(abs(est.eigenvalues_[lead])),
            "lead_ci": [float(x) for x in est.eigenvalue_ci_[lead]],
            "lead_class": est.classes_[lead],
            "noise_floor": float(est.noise_floor_),
            "step_ratio": step / flow_step if flow_step > 0 else math.nan,
            "n_directions": int(est.directions_.shape[0]),
            "seconds": time.perf_counter() - t0,
        }
        out.append(rec)
        log(f"    level {n}: |lambda| {rec['lead_abs']:.3f}, step ratio {rec['step_ratio']:.3f}")
    return out


def bert_seed(
    seed: int, cfg: dict[str, Any], out: Path, tok: Any, vocab: TokenVocab, log: Any
) -> dict[str, Any]:
    tasks = make_text_tasks(
        cfg["bert_tasks"], n_train=cfg["n_train"], n_test=cfg["n_test"], seed=seed, tokenizer=tok, vocab=vocab
    )
    if cfg["bert"] == "minilm":
        model = minilm_classifier(vocab, layers=cfg["bert_layers"], seed=seed)
        arch = f"all-MiniLM-L6-v2, first {cfg['bert_layers']} layers"
    else:
        model = tiny_bert(
            len(vocab), hidden=16, layers=cfg["bert_layers"], heads=2, intermediate=32, seed=seed
        )
        arch = "tiny BERT (16 wide)"
    init = {k: v.clone() for k, v in model.state_dict().items()}
    names = bert_prunable(model)
    trainers = {
        t: bert_trainer(
            model,
            tasks[t],
            init=init,
            epochs=cfg["bert_epochs"],
            lr=cfg["bert_lr"],
            batch_size=cfg["bert_batch"],
            name=f"bert/{t}/{seed}",
        )
        for t in cfg["bert_tasks"]
    }
    paths, tickets, own, dense = {}, {}, {}, {}
    for t in cfg["bert_tasks"]:
        p = retrained_flow(
            trainers[t],
            names,
            cfg["rounds"],
            cfg["rate"],
            name=f"bert-{t}",
            architecture=arch,
            out=out / f"bert-{t}.h5",
        )
        with rganalysis.load(p) as f:
            tickets[t] = ticket(f, cfg["rounds"])
            own[t] = round_accuracy(trainers[t], f, cfg["rounds"])
            dense[t] = round_accuracy(trainers[t], f, 0)
        paths[t] = p
        log(f"  bert seed {seed} {t}: dense {dense[t]:.3f}, ticket {own[t]:.3f}")
    T = cfg["bert_tasks"]
    acc = np.array([[own[j] if i == j else trainers[j].evaluate(tickets[i]) for j in T] for i in T])
    gap = acc - np.diag(acc)[None, :]
    D = distances([paths[t] for t in T], T)
    off = ~np.eye(len(T), dtype=bool)
    rho = spearman(D[off], gap[off])
    log(f"  bert seed {seed}: rho(distance, gap) {rho:+.2f}")
    jac = jacobians(paths[cfg["jacobian_task"]], trainers[cfg["jacobian_task"]], cfg, log)
    with rganalysis.load(paths[T[0]]) as f:
        _, dens = f.density_table()
        sizes = np.array([f.info[k].numel for k in names])
        glob = (dens @ sizes / sizes.sum()).tolist()
        layer_dens = dens.tolist()
    return {
        "architecture": arch,
        "tasks": T,
        "dense_accuracy": dense,
        "ticket_accuracy": own,
        "accuracy": acc.tolist(),
        "gap": gap.tolist(),
        "distance": D.tolist(),
        "rho": rho,
        "jacobian": jac,
        "global_density": glob,
        "layer_density": layer_dens,
        "layers": names,
        "n_prunable": int(sizes.sum()),
    }


def distances(paths: list[Path], names: list[str]) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ua = rganalysis.UniversalityAnalysis(device="cpu").fit([str(p) for p in paths], names=names)
    return np.asarray(ua.distance_.values, dtype=float)


def digits_seed(seed: int, cfg: dict[str, Any], out: Path, log: Any) -> dict[str, Any]:
    task = digits_tasks(["all digits"], seed=0)["all digits"]
    res: dict[str, Any] = {"contrast": {}, "family": {}}
    # the contrast: an MLP here, and the smallest CNN of the family below, response Jacobians at every level
    for label, make in (("MLP", lambda: _mlp()),):
        torch.manual_seed(seed)
        model = make()
        tr = MaskedTrainer(
            model, model.state_dict(), task, epochs=cfg["digits_epochs"], name=f"digits/{label}/{seed}"
        )
        names = [k for k, p in model.named_parameters() if k.endswith("weight") and p.dim() > 1]
        p = retrained_flow(
            tr,
            names,
            cfg["rounds"],
            cfg["rate"],
            name=f"digits-{label}",
            architecture=label,
            out=out / f"digits-{label}.h5",
        )
        log(f"  digits seed {seed} {label}: flow")
        res["contrast"][label] = {"jacobian": jacobians(p, tr, cfg, log)}
    # the family: flows, tickets, transfers across depth, block spread
    fam = {}
    for w in cfg["widths"]:
        trs, paths, tickets, own = {}, {}, {}, {}
        for d in cfg["depths"]:
            model = digits_resnet(d, w, seed=seed)
            names = resnet_prunable(model)
            tr = MaskedTrainer(
                model, model.state_dict(), task, epochs=cfg["digits_epochs"], name=f"resnet/{d}x{w}/{seed}"
            )
            p = retrained_flow(
                tr,
                names,
                cfg["rounds"],
                cfg["rate"],
                name=f"resnet-{d}x{w}",
                architecture=f"DigitsResNet({d}, {w})",
                out=out / f"resnet-{d}x{w}.h5",
            )
            with rganalysis.load(p) as f:
                tickets[d], own[d] = ticket(f, cfg["rounds"]), round_accuracy(tr, f, cfg["rounds"])
                spread = block_spread(f, cfg["rounds"])
                _, dens = f.density_table()
            fam[f"{d}x{w}"] = {
                "blocks": d,
                "width": w,
                "params": int(sum(model.get_parameter(k).numel() for k in names)),
                "block_spread": spread,
                "ticket_accuracy": own[d],
                "layer_density": dens[-1].tolist(),
                "layers": names,
            }
            trs[d], paths[d] = tr, p
            if d == cfg["depths"][0] and w == cfg["widths"][0]:
                cnn0 = tr
            log(f"  digits seed {seed} resnet {d}x{w}: ticket {own[d]:.3f}, block spread {spread:.3f}")
        ds = cfg["depths"]
        acc = np.zeros((len(ds), len(ds)))
        for i, a in enumerate(ds):
            for j, b in enumerate(ds):
                if i == j:
                    acc[i, j] = own[b]
                    continue
                shapes = {k: tuple(trs[b].init[k].shape) for k in tickets[b]}
                acc[i, j] = trs[b].evaluate(map_masks(tickets[a], shapes))
        gap = acc - np.diag(acc)[None, :]
        D = distances([paths[d] for d in ds], [f"{d}x{w}" for d in ds])
        res["family"][str(w)] = {
            "depths": ds,
            "accuracy": acc.tolist(),
            "gap": gap.tolist(),
            "distance": D.tolist(),
        }
    res["models"] = fam
    d0, w0 = cfg["depths"][0], cfg["widths"][0]
    res["contrast"]["CNN"] = {"jacobian": jacobians(out / f"resnet-{d0}x{w0}.h5", cnn0, cfg, log)}
    off_d, off_g = [], []
    for v in res["family"].values():
        n = len(v["depths"])
        off = ~np.eye(n, dtype=bool)
        off_d += list(np.asarray(v["distance"])[off])
        off_g += list(np.asarray(v["gap"])[off])
    res["depth_rho"] = spearman(np.array(off_d), np.array(off_g))
    res["depth_gap_mean"] = float(np.mean(off_g))
    sizes = np.log2([m["params"] for m in fam.values()])
    spreads = np.array([m["block_spread"] for m in fam.values()])
    ok = np.isfinite(spreads)
    res["spread_slope"] = float(np.polyfit(sizes[ok], spreads[ok], 1)[0]) if ok.sum() >= 2 else math.nan
    log(f"  digits seed {seed}: depth rho {res['depth_rho']:+.2f}, spread slope {res['spread_slope']:+.4f}")
    return res


# ----------------------------------------------------------------------------------------------------
# aggregation, figures, the doc
# ----------------------------------------------------------------------------------------------------
def fmt(m: tuple[float, float, float], spec: str = ".3f") -> str:
    if not math.isfinite(m[0]):
        return "n/a"
    return f"{m[0]:{spec}} [{m[1]:{spec}}, {m[2]:{spec}}]"


def near_text(ci: tuple[float, float, float]) -> str:
    """The fixed-point verdict of a step-ratio interval, always with the interval."""
    lo, hi = ci[1], ci[2]
    if math.isfinite(hi) and hi < NEAR:
        word = "near a fixed point"
    elif math.isfinite(lo) and lo > NEAR:
        word = "not near a fixed point"
    else:
        word = "undetermined"
    return f"{word} (step ratio {fmt(ci)})"


def per_level(
    jacs: list[list[dict[str, Any]]], key: str, log: bool = False
) -> list[tuple[float, float, float]]:
    levels = max(len(j) for j in jacs)
    return [mean_ci([j[n].get(key, math.nan) for j in jacs if n < len(j)], log=log) for n in range(levels)]


def aggregate(res: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    seeds = [str(s) for s in cfg["seeds"]]
    bert = [res["bert"][s] for s in seeds]
    dig = [res["digits"][s] for s in seeds]
    flows = {"BERT": [b["jacobian"] for b in bert]}
    for lab in ("MLP", "CNN"):
        flows[lab] = [d["contrast"][lab]["jacobian"] for d in dig]
    agg: dict[str, Any] = {"levels": {}}
    for lab, jacs in flows.items():
        ratio = per_level(jacs, "step_ratio", log=True)
        lead = per_level(jacs, "lead_abs")
        floor = per_level(jacs, "noise_floor")
        agg["levels"][lab] = {"step_ratio": ratio, "lead_abs": lead, "noise_floor": floor}
    last = {lab: v["step_ratio"][-1] for lab, v in agg["levels"].items()}
    bert_rho = mean_ci([b["rho"] for b in bert], fisher=True)
    spread_slope = mean_ci([d["spread_slope"] for d in dig])
    depth_gap = mean_ci([d["depth_gap_mean"] for d in dig])
    depth_rho = mean_ci([d["depth_rho"] for d in dig], fisher=True)
    agg["claims"] = [
        {
            "claim": "(1) flows of tickets that transfer share properties",
            "measurement": f"BERT tickets of {len(cfg['bert_tasks'])} token tasks trained on every task: Spearman "
            "rho of compare's distance against the transfer gap over the off-diagonal pairs, per seed",
            "number": bert_rho,
            "verdict": verdict(*bert_rho[1:], "below"),
        },
        {
            "claim": "(2) BERT flows sit near fixed points",
            "measurement": f"step ratio (one more IMP step / the last step, unit couplings) at the ticket (level "
            f"{cfg['rounds']}) of the BERT '{cfg['jacobian_task']}' flow; near means the interval < {NEAR}",
            "number": last["BERT"],
            "verdict": verdict(*last["BERT"][1:], "below", NEAR),
        },
        {
            "claim": "(3a) smaller ResNets have more uniform flows",
            "measurement": "slope of the block spread (CV over residual blocks of the per-block log-density "
            "change) against log2(prunable parameters), over the CNN family, per seed",
            "number": spread_slope,
            "verdict": verdict(*spread_slope[1:], "above"),
        },
        {
            "claim": "(3b) ... complicating transfer between them",
            "measurement": "mean transfer gap of tickets moved across depth (nearest-depth block rule) against "
            "the target's own ticket, per seed",
            "number": depth_gap,
            "verdict": verdict(*depth_gap[1:], "below"),
        },
        {
            "claim": "(3c) the cross-architecture distance ranks those transfers",
            "measurement": "Spearman rho of compare's distance (normalised depth) against the cross-depth gap, "
            "per seed",
            "number": depth_rho,
            "verdict": verdict(*depth_rho[1:], "below"),
        },
    ]
    agg["contrast"] = {lab: near_text(v) for lab, v in last.items()}
    models: dict[str, list[dict[str, Any]]] = {}
    for d in dig:
        for k, m in d["models"].items():
            models.setdefault(k, []).append(m)
    agg["models"] = {
        k: {
            "params": v[0]["params"],
            "block_spread": mean_ci([m["block_spread"] for m in v]),
            "ticket_accuracy": mean_ci([m["ticket_accuracy"] for m in v]),
        }
        for k, v in models.items()
    }
    return agg


def figures(res: dict[str, Any], agg: dict[str, Any], cfg: dict[str, Any], fig_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    out = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for lab, v in agg["levels"].items():
        lv = np.arange(1, len(v["step_ratio"]) + 1)
        for ax, key in zip(axes, ("step_ratio", "lead_abs"), strict=True):
            m = np.array(v[key])
            ax.errorbar(
                lv, m[:, 0], yerr=[m[:, 0] - m[:, 1], m[:, 2] - m[:, 0]], marker="o", capsize=3, label=lab
            )
    axes[0].axhline(NEAR, color="k", ls=":", lw=1)
    axes[0].set(
        xlabel="IMP level",
        ylabel="step ratio ||dK_{n+1}|| / ||dK_n||",
        yscale="log",
        title="one more step vs the last",
    )
    axes[1].axhline(1.0, color="k", ls=":", lw=1)
    axes[1].set(xlabel="IMP level", ylabel="leading |lambda| (response Jacobian)", title="response Jacobian")
    axes[0].legend()
    fig.tight_layout()
    out.append(fig_dir / "paper-step-ratio.png")
    fig.savefig(out[-1], dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for w in cfg["widths"]:
        ks = [k for k in agg["models"] if k.endswith(f"x{w}")]
        x = [agg["models"][k]["params"] for k in ks]
        m = np.array([agg["models"][k]["block_spread"] for k in ks])
        ax.errorbar(
            x, m[:, 0], yerr=[m[:, 0] - m[:, 1], m[:, 2] - m[:, 0]], marker="o", capsize=3, label=f"width {w}"
        )
        for xi, k, yi in zip(x, ks, m[:, 0], strict=True):
            ax.annotate(k, (xi, yi), fontsize=7)
    ax.set(
        xscale="log",
        xlabel="prunable parameters",
        ylabel="block spread",
        title="flow uniformity against size",
    )
    ax.legend()
    fig.tight_layout()
    out.append(fig_dir / "paper-uniformity.png")
    fig.savefig(out[-1], dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for s in cfg["seeds"]:
        b = res["bert"][str(s)]
        D, G = np.array(b["distance"]), np.array(b["gap"])
        off = ~np.eye(len(D), dtype=bool)
        axes[0].scatter(D[off], G[off], label=f"seed {s}")
        for v in res["digits"][str(s)]["family"].values():
            D, G = np.array(v["distance"]), np.array(v["gap"])
            off = ~np.eye(len(D), dtype=bool)
            axes[1].scatter(D[off], G[off], label=f"seed {s}")
    axes[0].set(
        xlabel="compare distance", ylabel="transfer gap (accuracy)", title="BERT tickets across tasks"
    )
    axes[1].set(
        xlabel="compare distance (normalised depth)",
        ylabel="transfer gap (accuracy)",
        title="CNN tickets across depth",
    )
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out.append(fig_dir / "paper-transfer.png")
    fig.savefig(out[-1], dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    b = res["bert"][str(cfg["seeds"][0])]
    dens = np.array(b["layer_density"])
    for j in range(len(b["layers"])):
        ax.plot(dens[:, j], color=plt.cm.viridis(j / max(1, len(b["layers"]) - 1)), lw=1)
    ax.plot(b["global_density"], "k--", lw=2, label="global")
    ax.set(
        yscale="log",
        xlabel="IMP level",
        ylabel="layer density",
        title=f"BERT flow ({b['tasks'][0]}, seed {cfg['seeds'][0]}), one line per layer",
    )
    ax.legend()
    fig.tight_layout()
    out.append(fig_dir / "paper-flows.png")
    fig.savefig(out[-1], dpi=110)
    plt.close(fig)
    return out


def results_markdown(
    res: dict[str, Any],
    agg: dict[str, Any],
    cfg: dict[str, Any],
    scale: str,
    figs: list[Path],
    doc: Path,
    command: str,
) -> str:
    L = [MARKER, "", f"## Results ({scale} scale, seeds {', '.join(map(str, cfg['seeds']))})", ""]
    L += [f"Command: `{command}`", ""]
    L += [
        "| claim of the paper | measurement here | number [95 % interval over seeds] | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for c in agg["claims"]:
        L.append(f"| {c['claim']} | {c['measurement']} | {fmt(c['number'])} | {c['verdict']} |")
    L += [
        "",
        "Fixed points at the ticket (level " + str(cfg["rounds"]) + "), each printed with its interval:",
        "",
    ]
    L += [f"* {lab}: {txt}" for lab, txt in agg["contrast"].items()]
    L += [
        "",
        "### Per level (geometric mean of the step ratio, mean leading |lambda| and noise floor; 95 % intervals over seeds)",
        "",
    ]
    L += [
        "| flow | level | step ratio | verdict | leading abs(lambda) | noise floor |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for lab, v in agg["levels"].items():
        for n, (r, lead, f) in enumerate(zip(v["step_ratio"], v["lead_abs"], v["noise_floor"], strict=True)):
            L.append(
                f"| {lab} | {n + 1} | {fmt(r)} | {near_text(r).split(' (')[0]} | {fmt(lead)} | {fmt(f)} |"
            )
    L += ["", "### BERT tickets (per seed)", ""]
    for s in cfg["seeds"]:
        b = res["bert"][str(s)]
        acc = ", ".join(
            f"{t} {b['dense_accuracy'][t]:.3f} -> {b['ticket_accuracy'][t]:.3f}" for t in b["tasks"]
        )
        L.append(
            f"* seed {s} ({b['architecture']}, {b['n_prunable']:,} prunable weights, ticket density "
            f"{b['global_density'][-1]:.3f}): dense -> ticket accuracy {acc}; rho(distance, gap) {b['rho']:+.2f}; "
            f"mean off-diagonal gap {np.mean(np.array(b['gap'])[~np.eye(len(b['tasks']), dtype=bool)]):+.3f}"
        )
    L += ["", "### The CNN family (means over seeds)", ""]
    L += ["| model | prunable params | block spread | ticket accuracy |", "| --- | --- | --- | --- |"]
    for k, m in agg["models"].items():
        L.append(
            f"| DigitsResNet {k} | {m['params']:,} | {fmt(m['block_spread'])} | {fmt(m['ticket_accuracy'])} |"
        )
    L += ["", "Cross-depth gaps (row: source depth, column: target depth), per seed and width:", ""]
    for s in cfg["seeds"]:
        for w, v in res["digits"][str(s)]["family"].items():
            rows = "; ".join(
                f"{a}: " + " ".join(f"{g:+.3f}" for g in row)
                for a, row in zip(v["depths"], v["gap"], strict=True)
            )
            L.append(f"* seed {s}, width {w}: {rows}")
    L += ["", "### Costs", ""]
    for k, v in res["seconds"].items():
        L.append(f"* {k}: {v:.0f} s")
    L += [f"* total: {sum(res['seconds'].values()):.0f} s wall, {res['machine']}", ""]
    L += ["### Figures", ""]
    for f in figs:
        try:
            rel = f.relative_to(doc.parent)
        except ValueError:
            rel = f
        L.append(f"![{f.stem}]({rel})")
    return "\n".join(L) + "\n"


def write_doc(doc: Path, text: str) -> None:
    from rganalysis.store.output import AtomicOutput

    head = doc.read_text().split(MARKER)[0] if doc.exists() else "# The paper's findings at laptop scale\n\n"
    with AtomicOutput(doc, force=True) as tmp:
        tmp.write_text(head.rstrip() + "\n\n" + text)


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds; for the test suite)")
    p.add_argument("--scale", choices=sorted(SCALES), default=None, help="a named scale (default full)")
    p.add_argument("--out", type=Path, default=Path("paper-out"), help="flows and results.json")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "paper-findings.md")
    p.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    p.add_argument("--seeds", default=None, help="comma-separated flow seeds (default: the scale's)")
    p.add_argument("--no-doc", action="store_true", help="only OUT/results.json (e.g. one process per seed)")
    p.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        default=None,
        help="results folders of --no-doc runs: write the doc",
    )
    a = p.parse_args(argv)
    scale = "quick" if a.quick else (a.scale or "full")
    cfg = json.loads(json.dumps(SCALES[scale]))
    if a.seeds:
        cfg["seeds"] = [int(s) for s in a.seeds.split(",")]
        scale += f" (seeds {a.seeds})"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t_all = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_all:6.0f} s] {msg}", flush=True)

    if a.combine:
        parts = [json.loads((d / "results.json").read_text())["results"] for d in a.combine]
        res = {"config": dict(parts[0]["config"]), "bert": {}, "digits": {}, "seconds": {}}
        for r in parts:
            res["bert"].update(r["bert"])
            res["digits"].update(r["digits"])
            for k, v in r["seconds"].items():
                res["seconds"][f"{k}, seeds {', '.join(r['bert'])}"] = v
        res["machine"] = parts[0]["machine"] + f"; {len(parts)} processes in parallel, niced"
        res["config"]["seeds"] = sorted(int(s) for s in res["bert"])
        cfg = res["config"]
        nan = lambda x: math.nan if x is None else x  # noqa: E731
        for b in res["bert"].values():
            b["rho"] = nan(b["rho"])
            for j in b["jacobian"]:
                for k in ("step_ratio", "lead_abs", "noise_floor"):
                    if k in j:
                        j[k] = nan(j[k])
        for d in res["digits"].values():
            for k in ("depth_rho", "spread_slope", "depth_gap_mean"):
                d[k] = nan(d[k])
            for m in d["models"].values():
                m["block_spread"] = nan(m["block_spread"])
            for c in d["contrast"].values():
                for j in c["jacobian"]:
                    for k in ("step_ratio", "lead_abs", "noise_floor"):
                        if k in j:
                            j[k] = nan(j[k])
        agg = aggregate(res, cfg)
        figs = figures(res, agg, cfg, a.figures)
        scale = a.scale or "full"
        cmd = (
            f"nice -n 10 python examples/paper_findings.py --scale {scale} --no-doc --seeds S --out OUT/seedS "
            f"(S = {', '.join(map(str, cfg['seeds']))}, in parallel), then --combine OUT/seed*"
        )
        write_doc(a.doc, results_markdown(res, agg, cfg, scale, figs, a.doc, cmd))
        for c in agg["claims"]:
            print(f"{c['claim']}: {fmt(c['number'])} -> {c['verdict']}")
        for lab, txt in agg["contrast"].items():
            print(f"{lab}: {txt}")
        return 0
    try:
        tok = load_tokenizer()
        vocab = TokenVocab.for_grammar(tok)
        res: dict[str, Any] = {
            "config": cfg,
            "bert": {},
            "digits": {},
            "seconds": {"BERT": 0.0, "digits": 0.0},
        }
        for s in cfg["seeds"]:
            t0 = time.perf_counter()
            res["bert"][str(s)] = bert_seed(s, cfg, a.out / f"seed{s}", tok, vocab, log)
            res["seconds"]["BERT"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            res["digits"][str(s)] = digits_seed(s, cfg, a.out / f"seed{s}", log)
            res["seconds"]["digits"] += time.perf_counter() - t0
        import os

        res["machine"] = f"{os.cpu_count()} CPU cores, 1 torch thread, device cpu"
        from rganalysis.store.output import write_json

        if a.no_doc:
            write_json(_json_safe({"results": res}), a.out / "results.json")
            log(f"wrote {a.out / 'results.json'}")
            return 0
        agg = aggregate(res, cfg)
        figs = figures(res, agg, cfg, a.figures)
        cmd = (
            "nice -n 10 python examples/paper_findings.py"
            + (" --quick" if a.quick else "")
            + (f" --scale {a.scale}" if a.scale and not a.quick else "")
            + (f" --seeds {a.seeds}" if a.seeds else "")
        )
        write_doc(a.doc, results_markdown(res, agg, cfg, scale, figs, a.doc, cmd))
        write_json(_json_safe({"results": res, "aggregate": agg}), a.out / "results.json")
        for c in agg["claims"]:
            print(f"{c['claim']}: {fmt(c['number'])} -> {c['verdict']}")
        for lab, txt in agg["contrast"].items():
            print(f"{lab}: {txt}")
        log(f"wrote {a.doc}")
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
