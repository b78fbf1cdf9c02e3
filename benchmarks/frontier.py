"""The minimal-history frontier on Fashion-MNIST: relative residual against history bytes, per profile.

One converged training (l2 1e-3) records the exact profile; every other profile is recorded at the
same w_T (the exact variants cast or pack the same inverse; ``kron`` and ``minimal`` are built from
the rows). For each forget ratio (a seeded random forget set) and profile, Mini-Unlearning runs with
``refine = 0 .. 5`` passes over R and with ``tol = 1e-3`` (certified), and its distance to w_R is
measured against a judge: Mini-Unlearning with the exact profile certified to ``tol = 1e-9``
(||judge - w_R|| <= 1e-9 ||judge - w_T||, proven by the certificate, so independent of any profile).
Retraining from scratch (the run's own Newton-CG) is timed on each forget set for the speedup.

DeltaGrad needs an SGD-trained run: its point is DeltaGrad's own setting (batch 16384, 20 epochs,
lr 0.1 then 0.05) at the same l2, its residual measured against retraining that SGD schedule on R
(its gold standard), at the same ratios.

    PYTHONPATH=src .venv/bin/python benchmarks/frontier.py                     # writes results/frontier.*
    PYTHONPATH=src .venv/bin/python benchmarks/frontier.py --ratios 0.1 --profiles "kron:k=280;minimal"

writes ``benchmarks/results/frontier.json``, ``frontier.md`` and ``frontier.png``. ``--work DIR`` keeps
the run directories (about 1.5 GB) so a second invocation reuses them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from miniunlearn.core.text import slug
from miniunlearn.data import load_dataset
from miniunlearn.history import MiniHistory, build_mini_history
from miniunlearn.history.profiles import make_profile
from miniunlearn.history.profiles.interface import pack_symmetric
from miniunlearn.models import Objective, Rows
from miniunlearn.runs import train
from miniunlearn.runs import HISTORY_FILE, Run, update_run_meta
from miniunlearn.service import forget
from miniunlearn.service.requests import random_forget_ids
from miniunlearn.training import SGDSchedule

RESULTS = Path(__file__).resolve().parent / "results"
PROFILES = ("exact;exact:dtype=float32;exact:packed=1;exact:dtype=float32,packed=1;"
            "classblock;kron:k=280;kron:k=190;kron:k=100;kron:k=0;minimal")
DELTAGRAD_SGD = {"epochs": 20, "batch_size": 16384, "lr": 0.1, "lr_steps": ((10, 0.05),), "seed": 0}


def profile_run(base: Run, spec: str, work: Path, dataset) -> tuple[Run, dict]:
    """A copy of the base run whose history holds profile ``spec`` at the same w_T."""
    target = work / slug(spec)
    if (target / "run.json").is_file() and (target / HISTORY_FILE).is_file():
        run = Run(target)
        return run, run.meta["history"]["mini"]
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(base.path, target, ignore=shutil.ignore_patterns(HISTORY_FILE, "ledger.sqlite*"))
    profile = make_profile(spec)
    exact = base.mini_history()
    loss_sum = exact.loss_sum
    if loss_sum is None:  # a history from an older version: record L_D(w_T) as training now does
        rows = Rows(dataset.X_train, dataset.y_train)
        loss_sum = float(rows.map_reduce(lambda X, y: base.model.loss_grad_sum(exact.theta, X, y))[0])
    start = time.perf_counter()
    if profile.name == "exact":  # the build casts / packs the float64 inverse: do exactly that, once
        P = exact.tensors["precond"]
        dtype = getattr(torch, profile.options["dtype"])
        tensors = {"precond": pack_symmetric(P, dtype) if profile.options["packed"] else P.to(dtype)}
        history = MiniHistory("exact", exact.theta, exact.grad_sum, exact.n, exact.l2, exact.fingerprint, tensors,
                              penalize_intercept=exact.penalize_intercept, loss_sum=loss_sum,
                              options=dict(profile.options))
    else:
        objective = Objective(base.model, Rows(dataset.X_train, dataset.y_train), base.l2)
        history = build_mini_history(objective, exact.theta, profile, exact.fingerprint)
    build_s = time.perf_counter() - start
    file_bytes = history.save(target / HISTORY_FILE)
    meta = {**base.meta["history"]["mini"], "profile": profile.name, "profile_spec": profile.spec(),
            "profile_options": dict(profile.options), "profile_bytes": history.profile_bytes,
            "tensor_bytes": history.nbytes, "bytes": file_bytes, "time_s": build_s}
    update_run_meta(target, history={"mini": meta})
    return Run(target), meta


def relative(theta: torch.Tensor, w_R: torch.Tensor, w_T: torch.Tensor) -> float:
    return float((theta - w_R).norm() / (w_R - w_T).norm())


def row(dataset, method, ratio, profile, n_params, history_bytes, stats, residual, retrain_s, **extra):
    return {"dataset": dataset, "method": method, "ratio": ratio, "profile": profile, "n_params": n_params,
            "history_bytes": history_bytes, "passes_retained": stats["passes_retained"],
            "relative_residual": residual, "time_s": stats["time_s"],
            "speedup_vs_retrain": retrain_s / stats["time_s"] if retrain_s and stats["time_s"] > 0 else None,
            "peak_rss_bytes": stats.get("peak_rss_bytes"), "passes_forget": stats.get("passes_forget"), **extra}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--l2", type=float, default=1e-3)
    parser.add_argument("--ratios", default="0.01,0.1,0.5")
    parser.add_argument("--profiles", default=PROFILES, help="history profiles, separated by ';'")
    parser.add_argument("--max-refine", type=int, default=5)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--no-deltagrad", action="store_true")
    parser.add_argument("--retrain-ratios", default=None,
                        help="time retraining from scratch at these ratios only (default: every ratio; 'none': "
                             "compare with the base run's recorded training time instead)")
    parser.add_argument("--work", default=None, help="keep run directories here (default: a temporary one)")
    parser.add_argument("--out", default=str(RESULTS / "frontier"), help="output path without extension")
    parser.add_argument("--judge-tol", type=float, default=1e-9, help="the judge's certified relative tolerance")
    parser.add_argument("--report-only", action="store_true", help="rewrite the .md and .png from the .json")
    parser.add_argument("--note", default="", help="a line for the report (e.g. where the base run came from)")
    args = parser.parse_args(argv)
    if args.report_only:
        payload = json.loads(Path(args.out).with_suffix(".json").read_text())
        payload["note"] = args.note or payload.get("note", "")
        Path(args.out).with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
        write_markdown(payload, Path(args.out).with_suffix(".md"))
        plot(payload, Path(args.out).with_suffix(".png"))
        return
    load_before = os.getloadavg()  # before this benchmark's own work: the load it starts under
    ratios = [float(r) for r in args.ratios.split(",")]
    retrain_ratios = (None if args.retrain_ratios is None else []
                      if args.retrain_ratios == "none" else [float(r) for r in args.retrain_ratios.split(",")])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    specs = [s.strip() for s in args.profiles.split(";") if s.strip()]
    tmp = None if args.work else tempfile.TemporaryDirectory()
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(args.dataset)
    base_dir = work / "base"
    if not (base_dir / "run.json").is_file():
        train(dataset, args.l2, base_dir, profile="exact", overwrite=True)
    base = Run(base_dir)
    w_T, n_params = base.theta(), base.model.n_params
    rows, log = [], []
    payload = {"dataset": args.dataset, "l2": args.l2, "tol": args.tol, "n_train": dataset.n_train,
               "n_params": n_params, "training": base.meta["training"], "exact_build": base.meta["history"]["mini"],
               "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                           "cores": os.cpu_count(), "load_average_before": load_before},
               "rows": rows, "judges": log, "profiles": {}, "note": args.note}

    def save():
        Path(args.out).with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")

    forget_sets, judges, retrain_s = {}, {}, {}
    for ratio in ratios:
        ids = random_forget_ids(dataset.n_train, ratio, 1000)
        forget_sets[ratio] = ids
        judge = forget(base, ids, "mini", tol=args.judge_tol, ledger=False)
        judges[ratio] = judge.theta
        log.append({"ratio": ratio, "n_forget": len(ids), "judge_certified_relative": judge.stats["certified_relative"],
                    "judge_passes": judge.stats["passes_retained"]})
        if retrain_ratios is None or ratio in retrain_ratios:
            retrain = forget(base, ids, "retrain", ledger=False)
            retrain_s[ratio] = retrain.stats["time_s"]
            log[-1].update(retrain_passes=retrain.stats["passes_retained"], retrain_time_s=retrain_s[ratio],
                           retrain_vs_judge=relative(retrain.theta, judge.theta, w_T))
            rows.append(row(args.dataset, "retrain", ratio, None, n_params, 0, retrain.stats,
                            relative(retrain.theta, judge.theta, w_T), retrain_s[ratio]))
        else:  # training from scratch on all rows: the same solver and configuration as retraining on R
            retrain_s[ratio] = base.meta["training"]["time_s"]
            log[-1].update(retrain_time_s=retrain_s[ratio], retrain_time_source="base run's recorded training time")
        print(f"judge {ratio:.0%}: {log[-1]}", flush=True)
        save()
    if not args.no_deltagrad:
        deltagrad(args, dataset, ratios, rows, work)
        save()
    for spec in specs:
        run, meta = profile_run(base, spec, work, dataset)
        payload["profiles"][meta["profile_spec"]] = {"profile_bytes": meta["profile_bytes"], "build_s": meta["time_s"]}
        for ratio in ratios:
            ids, w_R = forget_sets[ratio], judges[ratio]
            residuals = []
            for k in range(args.max_refine + 1):
                result = forget(run, ids, "mini", refine=k, ledger=False)
                residuals.append(relative(result.theta, w_R, w_T))
                rows.append(row(args.dataset, "mini", ratio, meta["profile_spec"], n_params, meta["profile_bytes"],
                                result.stats, residuals[-1], retrain_s[ratio], refine=k, tol=None))
            result = forget(run, ids, "mini", tol=args.tol, ledger=False)
            rows.append(row(args.dataset, "mini", ratio, meta["profile_spec"], n_params, meta["profile_bytes"],
                            result.stats, relative(result.theta, w_R, w_T), retrain_s[ratio], refine=None,
                            tol=args.tol, certified=result.stats["converged"],
                            certified_relative=result.stats["certified_relative"]))
            print(f"{meta['profile_spec']} {ratio:.0%}: " + " ".join(f"{r:.2e}" for r in residuals)
                  + f" | tol {args.tol:g}: {result.stats['passes_retained']:.0f} passes", flush=True)
            save()
    payload["machine"]["load_average_after"] = os.getloadavg()
    save()
    write_markdown(payload, Path(args.out).with_suffix(".md"))
    plot(payload, Path(args.out).with_suffix(".png"))
    if tmp is not None:
        tmp.cleanup()


def deltagrad(args, dataset, ratios, rows, work: Path) -> None:
    """DeltaGrad on its own SGD run, against retraining that SGD schedule on R."""
    sgd_dir = work / "sgd"
    if not (sgd_dir / "run.json").is_file():
        train(dataset, args.l2, sgd_dir, mode="trajectory", sgd_schedule=SGDSchedule(**DELTAGRAD_SGD),
              deltagrad_history=True, overwrite=True)
    run = Run(sgd_dir)
    w_T = run.theta()
    history_bytes = run.meta["history"]["deltagrad"]["bytes"]
    for ratio in ratios:
        ids = random_forget_ids(dataset.n_train, ratio, 1000)
        retrain = forget(run, ids, "retrain", ledger=False)
        dg = forget(run, ids, "deltagrad", ledger=False)
        residual = relative(dg.theta, retrain.theta, w_T)
        rows.append(row(args.dataset, "deltagrad", ratio, "deltagrad (SGD trajectory)", run.model.n_params,
                        history_bytes, dg.stats, residual, retrain.stats["time_s"], refine=None, tol=None,
                        judge="SGD retrain on R"))
        print(f"deltagrad {ratio:.0%}: residual {residual:.3f}, {history_bytes} bytes", flush=True)


def speedup(r: dict) -> str:
    return "" if r.get("speedup_vs_retrain") is None else f"{r['speedup_vs_retrain']:.1f}x"


def _machine_note(machine: dict) -> str:
    if "load_average_after" not in machine:
        return "times are on a shared 2-core machine."
    return (f"{machine.get('cores')} cores, {machine['threads']} torch threads; load average (1, 5, 15 min) before "
            + ", ".join(f"{v:.2f}" for v in machine["load_average_before"]) + ", after "
            + ", ".join(f"{v:.2f}" for v in machine["load_average_after"]) + ".")


def write_markdown(payload: dict, path: Path) -> None:
    rows = payload["rows"]
    ratios = sorted({r["ratio"] for r in rows})
    lines = [f"# History frontier: {payload['dataset']}, l2 {payload['l2']:g}", "",
             "Relative residual ||w - w_R|| / ||w_R - w_T|| after `refine` passes over R, and the passes a "
             f"certified `tol {payload['tol']:g}` run needed (with its true residual). Bytes: the profile's "
             "stored tensors (w_T and G_D(w_T), 2 p float64, come on top for every profile). Generated by "
             f"`benchmarks/frontier.py`; {_machine_note(payload['machine'])}", ""]
    if payload.get("note"):
        lines += [payload["note"], ""]
    for ratio in ratios:
        lines += [f"## forget {ratio:.0%}", "",
                  "| profile | bytes | refine 0 | 1 | 2 | 3 | 4 | 5 | tol: passes | tol: residual | tol: time (s) "
                  "| speedup vs retrain |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        profiles = [p for p in dict.fromkeys(r["profile"] for r in rows if r["method"] == "mini")]
        for profile in profiles:
            mine = [r for r in rows if r["method"] == "mini" and r["profile"] == profile and r["ratio"] == ratio]
            if not mine:
                continue
            refine = {r["refine"]: r["relative_residual"] for r in mine if r["refine"] is not None}
            tol = next((r for r in mine if r["tol"] is not None), None)
            if tol is None:
                continue
            cells = [f"{refine[k]:.1e}" if k in refine else "" for k in range(6)]
            lines.append(f"| `{profile}` | {mine[0]['history_bytes'] / 1e6:.1f} MB | " + " | ".join(cells)
                         + f" | {tol['passes_retained']:.0f} | {tol['relative_residual']:.1e} | {tol['time_s']:.1f} "
                         f"| {speedup(tol)} |")
        for r in rows:
            if r["ratio"] == ratio and r["method"] == "deltagrad":
                lines.append(f"| DeltaGrad (SGD run) | {r['history_bytes'] / 1e6:.1f} MB | {r['relative_residual']:.1e} "
                             f"| | | | | | {r['passes_retained']:.1f} | | {r['time_s']:.1f} | {speedup(r)} |")
            if r["ratio"] == ratio and r["method"] == "retrain":
                lines.append(f"| retrain from scratch | 0 | | | | | | | {r['passes_retained']:.0f} "
                             f"| {r['relative_residual']:.1e} | {r['time_s']:.1f} | 1.0x |")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


def plot(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload["rows"]
    ratios = sorted({r["ratio"] for r in rows})
    fig, axes = plt.subplots(1, len(ratios), figsize=(5.5 * len(ratios), 4.5), squeeze=False, sharey=True)
    cmap = plt.get_cmap("viridis")
    markers = {"exact": "s", "kron": "o", "minimal": "^"}
    for ax, ratio in zip(axes[0], ratios):
        for r in rows:
            if r["ratio"] != ratio or r["method"] != "mini" or r["refine"] is None:
                continue
            ax.scatter(r["history_bytes"], max(r["relative_residual"], 1e-10), color=cmap(r["refine"] / 5),
                       marker=markers.get(r["profile"].split(":")[0], "x"), s=28)
        for r in rows:
            if r["ratio"] == ratio and r["method"] == "deltagrad":
                ax.scatter(r["history_bytes"], r["relative_residual"], marker="*", s=180, color="red",
                           label="DeltaGrad (SGD run)")
        ax.axhline(1e-2, ls="--", color="grey", lw=0.8)
        ax.axhline(1e-3, ls=":", color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("history bytes (curvature profile)")
        ax.set_title(f"{payload['dataset']}, forget {ratio:.0%}")
    axes[0][0].set_ylabel("relative residual ||w - w_R|| / ||w_R - w_T||")
    handles = [plt.Line2D([], [], marker=m, ls="", color="k", label=name) for name, m in markers.items()]
    handles += [plt.Line2D([], [], marker="o", ls="", color=cmap(k / 5), label=f"refine {k}") for k in range(6)]
    handles.append(plt.Line2D([], [], marker="*", ls="", color="red", markersize=12, label="DeltaGrad"))
    axes[0][-1].legend(handles=handles, fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
