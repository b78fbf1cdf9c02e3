"""Certified deletions: speed at a certified tolerance, how tight the certificate is, and hard cases.

Three parts, each writing rows to ``benchmarks/results/certified/<part>.json``; ``report`` turns
them into ``results.md``.

``speed RUN`` -- for each forget ratio and seed, a seeded random forget set is removed from the
run with ``mini --tol T`` and, in the same process, retrained from scratch with the run's own
configuration (Newton-CG from zeros to its training tolerance). The retrained optimum is then
polished to ``||grad F_R|| <= 1e-11`` (untimed), so the true distance ``||w - w_R||`` is known to
within ``||grad F_R|| / lambda`` (strong convexity). Each row reports the certificate, the true
distance, their ratio (the tightness), passes over the data, times and the speedup. Beside it, the
user's alternative: scikit-learn's ``LogisticRegression(warm_start=True)`` refit on R from w_T
(lbfgs and newton-cg, the same objective: a constant feature column for the penalised intercept,
``C = 1 / (lambda |R|)``), timed at the smallest ``max_iter`` whose result is as close to w_R as
Mini-Unlearning's. ``--retrain-seeds`` limits the from-scratch retraining (the time it divides)
to some seeds; the others use the polished warm-started optimum for their distances only.

``hard`` -- the ill-conditioned cases: digits and breast_cancer at l2 1e-5, linearly separable
synthetic data at l2 1e-6, forget ratios 1 % to 90 %: ``--tol 1e-3`` must be reached, in fewer
passes over the data than retraining from scratch.

    .venv/bin/miniunlearn train --dataset fashion-mnist --l2 1e-3 --out runs/fm-1e-3
    .venv/bin/python benchmarks/certified.py speed runs/fm-1e-3 --seeds 0,1,2 --retrain-seeds 0 --sklearn-seeds 0
    .venv/bin/python benchmarks/certified.py hard
    .venv/bin/python benchmarks/certified.py report
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from miniunlearn.core.storage import atomic_write_bytes, atomic_write_json, read_json
from miniunlearn.data import load_dataset
from miniunlearn.methods import UnlearnContext
from miniunlearn.models.objective import Objective
from miniunlearn.runs import open_run, train
from miniunlearn.service import forget
from miniunlearn.service.requests import random_forget_ids
from miniunlearn.solvers.newton import newton_cg

RESULTS = Path(__file__).resolve().parent / "results" / "certified"
POLISH_TOL = 1e-11
SKLEARN_ITERS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
HARD_CASES = (
    ("digits", 1e-5), ("breast_cancer", 1e-5),
    ("synthetic:n_samples=2000,n_features=8,n_classes=2,seed=3,separation=50,label_noise=0", 1e-6),
)
HARD_RATIOS = (0.01, 0.1, 0.3, 0.5, 0.7, 0.9)


def _polished_optimum(run, ids, start: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The optimum of F_R from ``start`` to ||grad|| <= 1e-11, and its error bound ||grad F_R|| / lambda."""
    ctx = UnlearnContext(run, ids)
    objective = Objective(run.model, ctx.retained_rows, ctx.penalty)
    theta, info = newton_cg(objective, start.to(torch.float64), tol=POLISH_TOL, max_iter=30)
    theta = ctx.penalty.project(theta)
    _, grad = objective.value_grad(theta)
    return theta, float(grad.norm()) / run.l2


def _sklearn_refit(run, ids, theta_T, theta_R, target: float, solver: str) -> dict:
    """Time scikit-learn's warm-started refit on R at the smallest max_iter reaching ``target``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if not run.penalize_intercept:
        raise SystemExit("the scikit-learn comparison assumes a penalised intercept")
    ds = run.dataset
    keep = np.setdiff1d(np.arange(run.n_train), ids)
    X = np.hstack([np.asarray(ds.X_train[keep], dtype=np.float64), np.ones((len(keep), 1))])
    y = np.asarray(ds.y_train[keep])
    C = 1.0 / (run.l2 * len(keep))
    W_T = run.model.matrix(theta_T).numpy()
    W_R = run.model.matrix(theta_R).numpy()
    for max_iter in SKLEARN_ITERS:
        clf = LogisticRegression(C=C, fit_intercept=False, solver=solver, tol=1e-14, max_iter=max_iter,
                                 warm_start=True)
        clf.coef_ = W_T.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            start = time.perf_counter()
            clf.fit(X, y)
            seconds = time.perf_counter() - start
        distance = float(np.linalg.norm(clf.coef_ - W_R))
        if distance <= target:
            return {"solver": solver, "max_iter": max_iter, "n_iter": int(np.max(clf.n_iter_)), "time_s": seconds,
                    "distance": distance, "reached": True}
    return {"solver": solver, "max_iter": max_iter, "n_iter": int(np.max(clf.n_iter_)), "time_s": seconds,
            "distance": distance, "reached": False}


def speed(args) -> None:
    run = open_run(args.run)
    out = RESULTS / f"speed-{Path(args.run).name}.json"
    rows = read_json(out) if out.exists() and not args.fresh else []
    done = {(r["ratio"], r["seed"]) for r in rows}
    theta_T = run.theta().to(torch.float64)
    for seed in args.seeds:  # every ratio of the first seed first: its rows carry the retraining times
        for ratio in args.ratios:
            if (ratio, seed) in done:
                if args.retime and seed in args.retrain_seeds:
                    _retime(run, [r for r in rows if (r["ratio"], r["seed"]) == (ratio, seed)][0], args.tol)
                    atomic_write_json(out, rows)
                continue
            ids = random_forget_ids(run.n_train, ratio, seed)
            mini = forget(run, ids, method="mini", ledger=False, tol=args.tol)
            row = {"dataset": run.config.get("dataset", Path(args.run).name), "run": Path(args.run).name,
                   "l2": run.l2, "n_train": run.n_train, "n_params": run.model.n_params, "ratio": ratio, "seed": seed,
                   "tol": args.tol, "method": "mini", "time_s": mini.stats["time_s"],
                   "passes_retained": mini.stats["passes_retained"], "passes_forget": mini.stats["passes_forget"],
                   "certificate": mini.stats["certificate"], "certified_relative": mini.stats["certified_relative"],
                   "converged": mini.stats.get("converged", True), "peak_rss_bytes": mini.stats["peak_rss_bytes"]}
            if seed in args.retrain_seeds:
                retrained = forget(run, ids, method="retrain", ledger=False)
                row.update(retrain_time_s=retrained.stats["time_s"],
                           retrain_passes=retrained.stats["passes_retained"],
                           speedup_vs_retrain=retrained.stats["time_s"] / mini.stats["time_s"])
                start = retrained.theta
            else:
                start = mini.theta
            theta_R, reference_error = _polished_optimum(run, ids, start)
            true = float((mini.theta.to(torch.float64) - theta_R).norm())
            row.update(true_distance=true, reference_error_bound=reference_error,
                       relative_residual=true / float((theta_T - theta_R).norm()),
                       tightness=mini.stats["certificate"] / true if true > 0 else math.inf,
                       valid=true <= mini.stats["certificate"] + reference_error)
            if seed in args.sklearn_seeds and ratio in args.sklearn_ratios:
                row["sklearn"] = [_sklearn_refit(run, ids, theta_T, theta_R, true, solver)
                                  for solver in ("lbfgs", "newton-cg")]
            rows.append(row)
            atomic_write_json(out, rows)
            print(_line(row), flush=True)


def _retime(run, row: dict, tol: float) -> None:
    """Time a finished row's deletion and retraining again, side by side in this process."""
    if "retrain_time_s" in row:
        return
    ids = random_forget_ids(run.n_train, row["ratio"], row["seed"])
    mini = forget(run, ids, method="mini", ledger=False, tol=tol)
    retrained = forget(run, ids, method="retrain", ledger=False)
    row.update(time_s=mini.stats["time_s"], retrain_time_s=retrained.stats["time_s"],
               retrain_passes=retrained.stats["passes_retained"],
               speedup_vs_retrain=retrained.stats["time_s"] / mini.stats["time_s"])
    print(_line(row), flush=True)


def _line(row: dict) -> str:
    text = (f"{row['run']} {row['ratio']:.0%} seed {row['seed']}: mini {row['time_s']:.2f} s, "
            f"{row['passes_retained']:.0f} passes, cert {row['certificate']:.2e}, true {row['true_distance']:.2e} "
            f"(x{row['tightness']:.1f})")
    if "retrain_time_s" in row:
        text += f", retrain {row['retrain_time_s']:.1f} s ({row['speedup_vs_retrain']:.0f}x)"
    for fit in row.get("sklearn", []):
        text += f", sklearn {fit['solver']} {fit['time_s']:.1f} s"
    return text


def hard(args) -> None:
    out = RESULTS / "hard.json"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec, l2 in HARD_CASES:
            run_dir = Path(tmp) / f"run-{len(rows)}"
            train(load_dataset(spec), l2, run_dir)
            run = open_run(run_dir)
            for ratio in HARD_RATIOS:
                for seed in args.seeds:
                    ids = random_forget_ids(run.n_train, ratio, seed)
                    mini = forget(run, ids, method="mini", ledger=False, tol=args.tol)
                    retrained = forget(run, ids, method="retrain", ledger=False)
                    theta_R, reference_error = _polished_optimum(run, ids, retrained.theta)
                    true = float((mini.theta.to(torch.float64) - theta_R).norm())
                    row = {"dataset": spec, "l2": l2, "ratio": ratio, "seed": seed, "tol": args.tol,
                           "passes_retained": mini.stats["passes_retained"],
                           "passes_forget": mini.stats["passes_forget"],
                           "retrain_passes": retrained.stats["passes_retained"],
                           "certificate": mini.stats["certificate"],
                           "certified_relative": mini.stats["certified_relative"],
                           "true_distance": true, "valid": true <= mini.stats["certificate"] + reference_error,
                           "time_s": mini.stats["time_s"], "retrain_time_s": retrained.stats["time_s"]}
                    rows.append(row)
                    print(f"{spec} l2 {l2:g} {ratio:.0%} seed {seed}: {row['passes_retained']:.0f} passes "
                          f"(retrain {row['retrain_passes']:.0f}), certified {row['certified_relative']:.1e}, "
                          f"valid {row['valid']}", flush=True)
    atomic_write_json(out, rows)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def report(args) -> None:
    lines = ["# Certified deletions", "",
             "Written by `benchmarks/certified.py` (see its docstring for the commands). Machine: "
             f"{platform.machine()}, {torch.get_num_threads()} torch threads, a shared 2-core host "
             "(times are noisy; speedups are ratios measured in the same process).", ""]
    for path in sorted(RESULTS.glob("speed-*.json")):
        rows = read_json(path)
        lines += _speed_table(path.stem.removeprefix("speed-"), rows)
    if (RESULTS / "hard.json").exists():
        lines += _hard_table(read_json(RESULTS / "hard.json"))
    atomic_write_bytes(RESULTS / "results.md", ("\n".join(lines) + "\n").encode())
    print(RESULTS / "results.md")


def _fmt(value, spec):
    return "–" if value is None else format(value, spec)


def _speed_table(name: str, rows: list[dict]) -> list[str]:
    first = rows[0]
    lines = [f"## {name}: n = {first['n_train']}, p = {first['n_params']}, l2 = {first['l2']:g}, "
             f"`mini --tol {first['tol']:g}`", "",
             "Medians over seeds (seeds per column in brackets). *certificate / true*: how much larger the "
             "certified bound on ||w − w_R|| is than the true distance (1 = exact). Every row's certificate "
             "holds: " + ("yes" if all(r["valid"] for r in rows) else "**NO**") + ".", "",
             "| ratio | mini time s | passes over R | certificate / true | relative residual | retrain s | "
             "retrain passes | speedup | sklearn lbfgs s | sklearn newton-cg s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for ratio in sorted({r["ratio"] for r in rows}):
        cell = [r for r in rows if r["ratio"] == ratio]
        retr = [r for r in cell if "retrain_time_s" in r]
        sk = {s: _sklearn_cell([f for r in cell for f in r.get("sklearn", []) if f["solver"] == s])
              for s in ("lbfgs", "newton-cg")}
        lines.append(
            f"| {ratio:.0%} | {_fmt(_median([r['time_s'] for r in cell]), '.2f')} ({len(cell)}) "
            f"| {_fmt(_median([r['passes_retained'] for r in cell]), '.0f')} "
            f"| {_fmt(_median([r['tightness'] for r in cell]), '.1f')} "
            f"| {_fmt(_median([r['relative_residual'] for r in cell]), '.1e')} "
            f"| {_fmt(_median([r['retrain_time_s'] for r in retr]), '.1f')} ({len(retr)}) "
            f"| {_fmt(_median([r['retrain_passes'] for r in retr]), '.0f')} "
            f"| {_fmt(_median([r['speedup_vs_retrain'] for r in retr]), '.0f')}× "
            f"| {sk['lbfgs']} | {sk['newton-cg']} |")
    lines.append("")
    return lines


def _sklearn_cell(fits: list[dict]) -> str:
    """Median time of the refits that reached Mini-Unlearning's distance; else how far they got."""
    reached = [f["time_s"] for f in fits if f["reached"]]
    if reached:
        return f"{_median(reached):.1f}"
    if fits:
        f = fits[0]
        return f"not reached: {f['distance']:.1e} after {f['n_iter']} its, {f['time_s']:.1f} s"
    return "–"


def _hard_table(rows: list[dict]) -> list[str]:
    lines = ["## Hard cases: `mini --tol 1e-3` against retraining from scratch", "",
             "Every row: " + ("tolerance reached and certificate valid" if all(r["valid"] for r in rows)
                              else "**a violation**") + ".", "",
             "| dataset | l2 | ratio | passes over R (mini) | passes over U (mini) | passes (retrain) | "
             "certified relative | certificate / true |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['dataset'].split(':')[0]} | {r['l2']:g} | {r['ratio']:.0%} | {r['passes_retained']:.0f} "
                     f"| {r['passes_forget']:.0f} | {r['retrain_passes']:.0f} | {r['certified_relative']:.1e} "
                     f"| {r['certificate'] / r['true_distance']:.1f} |")
    lines.append("")
    return lines


def _floats(text):
    return [float(v) for v in text.split(",")]


def _ints(text):
    return [int(v) for v in text.split(",") if v != ""]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    p = sub.add_parser("speed", help="speed and tightness on one trained run")
    p.add_argument("run")
    p.add_argument("--ratios", type=_floats, default=[0.01, 0.1, 0.3, 0.5])
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--retrain-seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--sklearn-seeds", type=_ints, default=[0])
    p.add_argument("--sklearn-ratios", type=_floats, default=[0.01, 0.1, 0.3, 0.5])
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--fresh", action="store_true", help="discard earlier rows of this run")
    p.add_argument("--retime", action="store_true",
                   help="time the deletion and retraining of finished rows of --retrain-seeds that lack a retraining time")
    h = sub.add_parser("hard", help="ill-conditioned and separable cases")
    h.add_argument("--seeds", type=_ints, default=[0])
    h.add_argument("--tol", type=float, default=1e-3)
    sub.add_parser("report", help="write results.md from the JSON files")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    {"speed": speed, "hard": hard, "report": report}[args.part](args)


if __name__ == "__main__":
    sys.exit(main())
