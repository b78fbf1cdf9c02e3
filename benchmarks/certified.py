"""Certified deletions: speed at a certified tolerance, how tight the certificate is, and hard cases.

Three parts, each writing rows to ``benchmarks/results/certified/<part>.json``; ``report`` turns
them into ``results.md``.

``speed RUN`` -- for each forget ratio and seed a seeded random forget set, and each whole class
(``--classes``), is removed from the run with ``mini --tol T`` and, in the same process, retrained
from scratch (for the requests in ``--retrain-requests``) with the run's own
configuration (Newton-CG from zeros to its training tolerance). The retrained optimum is then
polished to ``||grad F_R|| <= 1e-11`` (untimed), so the true distance ``||w - w_R||`` is known to
within ``||grad F_R|| / lambda`` (strong convexity). Each row reports the certificate, the true
distance, their ratio (the tightness), passes over the data, times and the speedup. Beside it, the
user's alternative: scikit-learn's ``LogisticRegression(warm_start=True)`` refit on R from w_T
(lbfgs and newton-cg, the same objective: a constant feature column for the penalised intercept,
``C = 1 / (lambda |R|)``), timed at the smallest ``max_iter`` whose result is as close to w_R as
Mini-Unlearning's. ``--retrain-seeds`` limits the from-scratch retraining (the time it divides)
to some seeds; the others use the polished warm-started optimum for their distances only. Each
row records the passes over R by kind (gradient, Hessian-vector product, line search,
certificate) and the time spent loading the history (``compute`` = the rest); mini runs ``--repeats``
times per request in the same process and the row keeps the median time (and every run's); so does
retraining with ``--retrain-repeats``.

``nopass RUN`` -- requests of a few random rows: is step 0 certified to ``--tol`` without a pass
over R (the largest such size is the table's answer)?

``passes RUN`` -- what one pass over R costs, certified against training: the gradient pass
(training's value and gradient, against the certified solver's value, gradient and cached softmax)
and the Hessian-vector product (training's, against the certified solver's, which also keeps the
product's per-row logit changes and evaluates the logit span the certificate needs; also in float32, as CG
runs it with ``products=float32``, the first call casting the rows once). Medians of
``--repeats`` interleaved timings on the retained rows of a 10 % request.

``hard`` -- the ill-conditioned cases: digits and breast_cancer at l2 1e-5, linearly separable
synthetic data at l2 1e-6, forget ratios 1 % to 90 %: ``--tol 1e-3`` must be reached, in fewer
passes over the data than retraining from scratch.

    .venv/bin/miniunlearn train --dataset fashion-mnist --l2 1e-3 --out runs/fm-1e-3
    .venv/bin/python benchmarks/certified.py speed runs/fm-1e-3 --seeds 0,1,2 --retrain-seeds 0 --sklearn-seeds 0
    # no pass over R needs P in float64 with its measured defect (the auto history has neither at this size)
    .venv/bin/miniunlearn train --dataset fashion-mnist --l2 1e-3 --out runs/fm64-1e-3 \
        --history exact:fast_build=0,defect=1
    .venv/bin/python benchmarks/certified.py nopass runs/fm64-1e-3 --sizes 1,2,5,10
    .venv/bin/python benchmarks/certified.py passes runs/fm-1e-3
    .venv/bin/python benchmarks/certified.py passes --dataset \
        synthetic:n_samples=25000,n_features=1000,n_classes=100,seed=0 --repeats 3
    .venv/bin/python benchmarks/certified.py hard
    .venv/bin/python benchmarks/certified.py report
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from miniunlearn.core.storage import atomic_write_bytes, atomic_write_json, read_json
from miniunlearn.data import load_dataset
from miniunlearn.runs import open_run, train
from miniunlearn.service import forget
from miniunlearn.models.rows import retained_ids
from miniunlearn.service.requests import random_forget_ids
from sklearn_refit import polished_optimum, warm_refit

RESULTS = Path(__file__).resolve().parent / "results" / "certified"
HARD_CASES = (
    ("digits", 1e-5), ("breast_cancer", 1e-5),
    ("synthetic:n_samples=2000,n_features=8,n_classes=2,seed=3,separation=50,label_noise=0", 1e-6),
)
HARD_RATIOS = (0.01, 0.1, 0.3, 0.5, 0.7, 0.9)
TOL_NOPASS = 1e-3


def _polished_optimum(run, ids, start: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The optimum of F_R from ``start`` to ||grad|| <= 1e-11, and its error bound ||grad F_R|| / lambda."""
    return polished_optimum(run, retained_ids(run.n_train, ids), start)


def _sklearn_refit(run, ids, theta_T, theta_R, target: float, solver: str, max_iter_cap: int = 2048) -> dict:
    """Time scikit-learn's warm-started refit on R from w_T at the smallest max_iter within ``target`` of w_R."""
    return warm_refit(run, ids, run.model.matrix(theta_T).numpy(), run.model.matrix(theta_R).numpy(), target,
                      solver, max_iter_cap)


def _requests(run, args):
    """(label, sort key, seed, forget ids) for every requested ratio x seed and whole class."""
    out = []
    for seed in args.seeds:  # every request of the first seed first: its rows carry the retraining times
        for ratio in args.ratios:
            out.append((f"{ratio:.0%}", ratio, seed, random_forget_ids(run.n_train, ratio, seed)))
    y = np.asarray(run.dataset.y_train)
    for c in args.classes:
        out.append((f"class {c}", 2.0 + c, 0, np.flatnonzero(y == c)))
    return out


def speed(args) -> None:
    run = open_run(args.run)
    out = RESULTS / f"speed-{Path(args.run).name}.json"
    rows = read_json(out) if out.exists() and not args.fresh else []
    done = {(r.get("request", f"{r['ratio']:.0%}"), r["seed"]) for r in rows}
    theta_T = run.theta().to(torch.float64)
    for label, key, seed, ids in _requests(run, args):
        if (label, seed) in done:
            continue
        mini, times, loads = _timed_mini(run, ids, args)
        s = mini.stats
        row = {"dataset": run.config.get("dataset", Path(args.run).name), "run": Path(args.run).name,
               "l2": run.l2, "n_train": run.n_train, "n_params": run.model.n_params, "request": label,
               "ratio": key if key < 1 else len(ids) / run.n_train, "order": key, "seed": seed, "forgotten": len(ids),
               "tol": args.tol, "method": "mini", "time_s": _median(times), "time_s_runs": times,
               "passes_retained": s["passes_retained"],
               "passes_forget": s["passes_forget"], "passes_by_kind": s.get("passes_by_kind"),
               "step0_certificate": s.get("step0_certificate"), "start": s.get("start"),
               "history_load_s": _median(loads), "history_load_s_runs": loads,
               "certificate": s["certificate"], "certified_relative": s["certified_relative"],
               "converged": s.get("converged", True), "peak_rss_bytes": s["peak_rss_bytes"]}
        if seed in args.retrain_seeds and label in args.retrain_requests:
            retrains = [forget(run, ids, method="retrain", ledger=False) for _ in range(args.retrain_repeats)]
            retrained, retrain_times = retrains[0], [r.stats["time_s"] for r in retrains]
            row.update(retrain_time_s=_median(retrain_times), retrain_time_s_runs=retrain_times,
                       retrain_passes=retrained.stats["passes_retained"],
                       speedup_vs_retrain=_median(retrain_times) / row["time_s"])
            start = retrained.theta
        else:
            start = mini.theta
        theta_R, reference_error = _polished_optimum(run, ids, start)
        true = float((mini.theta.to(torch.float64) - theta_R).norm())
        row.update(true_distance=true, reference_error_bound=reference_error,
                   relative_residual=true / float((theta_T - theta_R).norm()),
                   tightness=s["certificate"] / true if true > 0 else math.inf,
                   valid=true <= s["certificate"] + reference_error)
        if seed in args.sklearn_seeds:
            solvers = [sv for sv, wanted in (("newton-cg", args.newton_cg_requests), ("lbfgs", args.lbfgs_requests))
                       if label in wanted]
            row["sklearn"] = [_sklearn_refit(run, ids, theta_T, theta_R, true, solver, args.sklearn_max_iter)
                              for solver in solvers]
            for fit in row["sklearn"]:
                fit["speedup"] = fit["time_s"] / row["time_s"]
        rows.append(row)
        atomic_write_json(out, rows)
        print(_line(row), flush=True)


def _timed_mini(run, ids, args):
    """Mini on ``ids`` ``args.repeats`` times in this process: the first result, and every run's seconds
    and history-load seconds (the passes and the point do not change between runs; the time does)."""
    results = [forget(run, ids, method="mini", ledger=False, tol=args.tol) for _ in range(args.repeats)]
    return (results[0], [r.stats["time_s"] for r in results],
            [r.stats.get("history_load_s", 0.0) for r in results])


def nopass(args) -> None:
    """The largest request that step 0 certifies to ``--tol`` without a pass over R (random rows, per size)."""
    run = open_run(args.run)
    out = RESULTS / f"nopass-{Path(args.run).name}.json"
    rows = []
    for size in args.sizes:
        for seed in args.seeds:
            ids = random_forget_ids(run.n_train, size / run.n_train, seed)
            step0 = forget(run, ids, method="mini", ledger=False, refine=0)
            s = step0.stats
            moved = float((step0.theta - run.theta()).norm())
            certificate = s.get("step0_certificate")
            relative = certificate / moved if certificate is not None and math.isfinite(certificate) else None
            rows.append({"run": Path(args.run).name, "l2": run.l2, "rows": size, "seed": seed, "time_s": s["time_s"],
                         "compute_s": s["time_s"] - s.get("history_load_s", 0.0), "certificate": certificate,
                         "certified_relative": relative,
                         "certified": relative is not None and relative <= args.tol})
            print(f"{Path(args.run).name} {size} rows seed {seed}: step-0 certificate / move = {relative}, "
                  f"{s['time_s']:.3f} s", flush=True)
    atomic_write_json(out, rows)


def passes(args) -> None:
    """Seconds per pass over R by kind, training's against the certified solver's."""
    from miniunlearn.models import LogisticRegression, Objective, Penalty, Rows
    from miniunlearn.models.curvature import LogitSpan
    if not (args.run or args.dataset):
        raise SystemExit("passes: give a trained run or --dataset SPEC")
    if args.dataset:  # no trained run: the cost of a pass does not depend on where it is taken
        ds, name = load_dataset(args.dataset), args.dataset
        model, l2, chunk_rows = LogisticRegression(ds.n_features, ds.n_classes), args.l2, 8192
        theta = torch.zeros(model.n_params, dtype=torch.float64)
    else:
        run = open_run(args.run)
        ds, name, model, l2 = run.dataset, Path(args.run).name, run.model, run.l2
        chunk_rows, theta = int(run.config.get("chunk_rows", 8192)), run.theta().to(torch.float64)
    keep = retained_ids(ds.n_train, random_forget_ids(ds.n_train, 0.1, 0))
    objective = Objective(model, Rows(ds.X_train, ds.y_train, keep, chunk_rows=chunk_rows), l2)
    v = torch.from_numpy(np.random.default_rng(0).normal(size=model.n_params))
    here = objective.curvature(theta, diag=False, value=True)  # warm: first-touch copies of the rows
    training = objective.curvature(theta)
    span = LogitSpan(here.cache)  # one per Newton iteration in the solver, not per product

    def certified_product(single: bool = False):  # what CG does per product besides the preconditioner
        _, logits = here.hvp_with_logits(v, single=single)
        span.accumulate(logits, 1.0)
        span.span()

    kinds = {"training gradient": lambda: objective.value_grad(theta),
             "certified gradient": lambda: objective.curvature(theta, diag=False, value=True),
             "training product": lambda: training.hvp(v),
             "certified product": certified_product,
             # CG's products with products=float32 (the float64 check of a certified point is one more product)
             "certified product in float32": lambda: certified_product(single=True)}
    if not args.dataset:  # the history's preconditioner: one product per CG iteration (not a pass over R)
        apply = run.mini_history().preconditioner(Penalty(model, l2, run.penalize_intercept))
        kinds["preconditioner (history)"] = lambda: apply(v)
    seconds = {kind: [] for kind in kinds}
    for _ in range(args.repeats):
        for kind, fn in kinds.items():
            start = time.perf_counter()
            fn()
            seconds[kind].append(time.perf_counter() - start)
    row = {"run": name, "rows": len(objective.rows), "n_params": model.n_params,
           "repeats": args.repeats, "load_1min": os.getloadavg()[0],
           "seconds": {kind: statistics.median(times) for kind, times in seconds.items()}}
    atomic_write_json(RESULTS / f"passes-{'p' + str(model.n_params) if args.dataset else name}.json", row)
    print(row, flush=True)


def _passes_table(row: dict) -> list[str]:
    s = row["seconds"]
    return [f"## {row['run']}: one pass over R ({row['rows']} rows, p = {row['n_params']}), median of "
            f"{row['repeats']}", "",
            "| kind | training s | certified s | certified / training |", "|---|---:|---:|---:|",
            *(f"| {kind} | {s['training ' + kind]:.3f} | {s['certified ' + kind]:.3f} "
              f"| {s['certified ' + kind] / s['training ' + kind]:.2f} |" for kind in ("gradient", "product")),
            *([f"| product in float32 (CG's, `products=float32`) | {s['training product']:.3f} "
               f"| {s['certified product in float32']:.3f} "
               f"| {s['certified product in float32'] / s['training product']:.2f} |"]
              if "certified product in float32" in s else []),
            "", *([f"A CG iteration of the certified solver also applies the history's preconditioner: "
                   f"{s['preconditioner (history)']:.3f} s."] if "preconditioner (history)" in s else []),
            f"Load (1 min) at the end: {row['load_1min']:.2f}.", ""]


def _line(row: dict) -> str:
    text = (f"{row['run']} {row.get('request', format(row['ratio'], '.0%'))} seed {row['seed']}: mini {row['time_s']:.2f} s, "
            f"{row['passes_retained']:.0f} passes, cert {row['certificate']:.2e}, true {row['true_distance']:.2e} "
            f"(x{row['tightness']:.1f})")
    if "retrain_time_s" in row:
        text += f", retrain {row['retrain_time_s']:.1f} s ({row['speedup_vs_retrain']:.0f}x)"
    for fit in row.get("sklearn", []):
        text += f", sklearn {fit['solver']} {fit['time_s']:.1f} s ({'reached' if fit['reached'] else 'not reached'})"
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
             f"{platform.machine()}, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores; speedups are "
             "ratios measured in the same process (the load each part ran under: the last section).", ""]
    for path in sorted(RESULTS.glob("speed-*.json")):
        rows = read_json(path)
        lines += _speed_table(path.stem.removeprefix("speed-"), rows)
    for path in sorted(RESULTS.glob("passes-*.json")):
        lines += _passes_table(read_json(path))
    for path in sorted(RESULTS.glob("nopass-*.json")):
        lines += _nopass_table(path.stem.removeprefix("nopass-"), read_json(path))
    if (RESULTS / "hard.json").exists():
        lines += _hard_table(read_json(RESULTS / "hard.json"))
    if (RESULTS / "conditions.md").exists():  # kept by hand: each part's command and the load it ran under
        lines += ["## How these were run", "", (RESULTS / "conditions.md").read_text().strip(), ""]
    atomic_write_bytes(RESULTS / "results.md", ("\n".join(lines) + "\n").encode())
    print(RESULTS / "results.md")


def _runs_note(rows: list[dict]) -> str:
    """How many runs each row's mini and retraining times are the median of (rows written before runs
    were kept count as one)."""
    def counts(key: str, rows: list[dict]) -> str:
        return "/".join(str(n) for n in sorted({len(r.get(key) or [0]) for r in rows}))
    retrained = [r for r in rows if "retrain_time_s" in r]
    note = f"Runs per row: mini {counts('time_s_runs', rows)}"
    return note + (f", retraining {counts('retrain_time_s_runs', retrained)} (medians)." if retrained else " (medians).")


def _fmt(value, spec):
    return "–" if value is None else format(value, spec)


def _speed_table(name: str, rows: list[dict]) -> list[str]:
    first = rows[0]
    lines = [f"## {name}: n = {first['n_train']}, p = {first['n_params']}, l2 = {first['l2']:g}, "
             f"`mini --tol {first['tol']:g}`", "",
             "Medians over seeds (seeds in brackets). Passes over R split by kind: gradient / Hessian-vector "
             "product / line search / certificate. *cert / true*: the certified bound on ||w − w_R|| over the "
             "true distance (1 = exact). *compute*: the deletion without loading the history file, as a running "
             "`miniunlearn serve` pays it (it holds the history in memory). Ratios are times measured in the same "
             "process: retraining or scikit-learn over mini's wall time, and in brackets over its compute. Every "
             "certificate holds: " + ("yes" if all(r["valid"] for r in rows) else "**NO**") + ". " + _runs_note(rows),
             "",
             "| request | rows | passes over R (g / hvp / ls / cert) | cert / true | rel. residual | mini s (compute) "
             "| retrain s (passes) | × retrain (compute) | newton-cg s (its) | × newton-cg (compute) | lbfgs s (its) "
             "| × lbfgs (compute) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label in sorted({r.get("request", f"{r['ratio']:.0%}") for r in rows},
                        key=lambda lab: min(r.get("order", r["ratio"]) for r in rows
                                            if r.get("request", f"{r['ratio']:.0%}") == lab)):
        cell = [r for r in rows if r.get("request", f"{r['ratio']:.0%}") == label]
        retr = [r for r in cell if "retrain_time_s" in r]
        kinds = [r.get("passes_by_kind") or {} for r in cell]
        split = " / ".join(_fmt(_median([k.get(kind, 0.0) for k in kinds]), ".0f")
                           for kind in ("gradient", "hvp", "line_search", "certificate"))
        compute = _median([_compute(r) for r in cell])
        sk = {sv: _sklearn_cell([dict(f, compute_speedup=f["time_s"] / _compute(r)) for r in cell
                                 for f in r.get("sklearn", []) if f["solver"] == sv])
              for sv in ("newton-cg", "lbfgs")}
        lines.append(
            f"| {label} | {cell[0].get('forgotten', '–')} "
            f"| {_fmt(_median([r['passes_retained'] for r in cell]), '.0f')} ({split}) ({len(cell)}) "
            f"| {_fmt(_median([r['tightness'] for r in cell]), '.2f')} "
            f"| {_fmt(_median([r['relative_residual'] for r in cell]), '.1e')} "
            f"| {_fmt(_median([r['time_s'] for r in cell]), '.2f')} ({_fmt(compute, '.2f')}) "
            f"| {_fmt(_median([r['retrain_time_s'] for r in retr]), '.1f')} "
            f"({_fmt(_median([r['retrain_passes'] for r in retr]), '.0f')}) "
            f"| {_fmt(_median([r['speedup_vs_retrain'] for r in retr]), '.0f')}× "
            f"({_fmt(_median([r['retrain_time_s'] / _compute(r) for r in retr]), '.0f')}×) "
            f"| {sk['newton-cg'][0]} | {sk['newton-cg'][1]} | {sk['lbfgs'][0]} | {sk['lbfgs'][1]} |")
    lines.append("")
    return lines


def _compute(row: dict) -> float:
    """Mini's seconds without loading the history file: the median over its runs of each run's own
    difference where the row keeps them (rows written before that: the two medians' difference)."""
    times, loads = row.get("time_s_runs"), row.get("history_load_s_runs")
    if times and loads and len(times) == len(loads):
        return _median([t - load for t, load in zip(times, loads)])
    return row["time_s"] - row.get("history_load_s", 0.0)


def _sklearn_cell(fits: list[dict]) -> tuple[str, str]:
    """Median time (iterations) of the refits that reached Mini-Unlearning's distance and the median
    ratio to mini's time; else how far they got."""
    reached = [f for f in fits if f["reached"]]
    if reached:
        return (f"{_median([f['time_s'] for f in reached]):.2f} ({_median([f['n_iter'] for f in reached]):.0f})",
                f"{_fmt(_median([f.get('speedup') for f in reached]), '.1f')}× "
                f"({_fmt(_median([f.get('compute_speedup') for f in reached]), '.1f')}×)")
    if fits:
        f = fits[0]
        return f"not reached: {f['distance']:.1e} after {f['n_iter']} its, {f['time_s']:.1f} s", "–"
    return "–", "–"


def _nopass_table(name: str, rows: list[dict]) -> list[str]:
    lines = [f"## {name}: step 0 certified without a pass over R (random rows, `--tol {TOL_NOPASS:g}`)", "",
             "| rows forgotten | certified (seeds) | median certificate / move | median time s |",
             "|---:|---:|---:|---:|"]
    for size in sorted({r["rows"] for r in rows}):
        cell = [r for r in rows if r["rows"] == size]
        lines.append(f"| {size} | {sum(r['certified'] for r in cell)} of {len(cell)} "
                     f"| {_fmt(_median([r['certified_relative'] for r in cell]), '.2e')} "
                     f"| {_fmt(_median([r['time_s'] for r in cell]), '.3f')} |")
    lines.append("")
    return lines


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
    return [float(v) for v in text.split(",") if v.strip()]


def _labels(text):
    return [v.strip() for v in text.split(",") if v.strip()]


def _ints(text):
    return [int(v) for v in text.split(",") if v != ""]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    p = sub.add_parser("speed", help="speed and tightness on one trained run")
    p.add_argument("run")
    p.add_argument("--ratios", type=_floats, default=[0.01, 0.1, 0.5])
    p.add_argument("--classes", type=_ints, default=[0], help="whole classes to forget (one request each)")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--retrain-seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--retrain-requests", type=_labels, default=["1%", "10%", "50%", "class 0"],
                   help="requests (labels like 10%%, 'class 0') retrained from scratch")
    p.add_argument("--sklearn-seeds", type=_ints, default=[0])
    # (not a whole class: scikit-learn drops a class without rows, a different objective from ours)
    p.add_argument("--newton-cg-requests", type=_labels, default=["1%", "10%", "50%"])
    p.add_argument("--lbfgs-requests", type=_labels, default=["1%", "10%", "50%"])
    p.add_argument("--sklearn-max-iter", type=int, default=2048, help="scikit-learn refits at most this max_iter")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--repeats", type=int, default=3, choices=range(1, 101), metavar="N",
                   help="time mini N times per request, in this process, and report the median (1-100)")
    p.add_argument("--retrain-repeats", type=int, default=1, choices=range(1, 11), metavar="N",
                   help="retrain N times per request and report the median time (1-10; its time varies by up to "
                        "a third between runs on a 2-core host)")
    p.add_argument("--fresh", action="store_true", help="discard earlier rows of this run")
    n = sub.add_parser("nopass", help="the largest request certified by step 0 without a pass over R")
    n.add_argument("run")
    n.add_argument("--sizes", type=_ints, default=[1, 2, 5, 10, 20, 50, 100])
    n.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    n.add_argument("--tol", type=float, default=1e-3)
    c = sub.add_parser("passes", help="seconds per pass over R, training's against the certified solver's")
    c.add_argument("run", nargs="?", help="a trained run (or --dataset)")
    c.add_argument("--dataset", help="a dataset spec instead of a run: passes at w = 0")
    c.add_argument("--l2", type=float, default=1e-3)
    c.add_argument("--repeats", type=int, default=7)
    h = sub.add_parser("hard", help="ill-conditioned and separable cases")
    h.add_argument("--seeds", type=_ints, default=[0])
    h.add_argument("--tol", type=float, default=1e-3)
    sub.add_parser("report", help="write results.md from the JSON files")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    {"speed": speed, "hard": hard, "report": report, "nopass": nopass, "passes": passes}[args.part](args)


if __name__ == "__main__":
    sys.exit(main())
