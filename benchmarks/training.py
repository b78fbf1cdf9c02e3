"""Training against scikit-learn: ``train`` from scratch, and ``LogisticRegression`` fitted from scratch
to the same distance from the optimum.

For each l2: one ``train`` of the converged configuration (Newton-CG until ||grad F|| <= 1e-9, then
the history build, reported apart), the optimum w* polished from its result until
||grad F|| <= 1e-11 (untimed: w* is then within 1e-11 / l2 of the true optimum, F being l2-strongly
convex), and scikit-learn's newton-cg and lbfgs on the same objective (a constant feature column for
the penalised intercept, C = 1 / (l2 n)) started from zero, the start of a cold fit, each timed at the
smallest ``max_iter`` whose result is as close to w* as ``train``'s, or within 1e-9 ||w*|| where ``train``
lands closer than that (``sklearn_refit.warm_refit``).
Every time is measured in this one process, so the ratios are fair.

    .venv/bin/python benchmarks/training.py                              # Fashion-MNIST, l2 1e-3 and 1e-4
    .venv/bin/python benchmarks/training.py --dataset digits --l2 1e-3 --out /tmp/training

writes ``results.json`` and ``results.md`` under ``--out`` (default ``benchmarks/results/training``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from miniunlearn.core.storage import atomic_write_bytes, atomic_write_json
from miniunlearn.data import load_dataset
from miniunlearn.runs import train
from sklearn_refit import polished_optimum, warm_refit

ROOT = Path(__file__).resolve().parent


def one_l2(dataset, l2: float, work: Path, max_iter_cap: int) -> dict:
    start = time.perf_counter()
    run = train(dataset, l2, work / f"run-{l2:g}", overwrite=True)
    wall = time.perf_counter() - start
    theta_T = run.theta().to(torch.float64)
    optimum, error = polished_optimum(run, np.arange(run.n_train), theta_T)
    distance = float((theta_T - optimum).norm())
    W_opt = run.model.matrix(optimum).numpy()
    zeros = np.zeros_like(W_opt)
    nothing = np.array([], dtype=np.int64)
    # as close as train lands, but no closer than round-off lets a distance be told apart (1e-9 relative)
    target = max(distance, error, 1e-9 * float(optimum.norm()))
    row = {"l2": l2, "target": target, "n_train": run.n_train, "n_params": run.model.n_params,
           "train": {"wall_s": wall, "solve_s": run.meta["training"]["time_s"],
                     "history_s": run.meta["history"]["mini"]["time_s"],
                     "passes": run.meta["training"].get("passes"), "distance": distance},
           "optimum_error_bound": error, "sklearn": []}
    print(f"l2 {l2:g}: train {wall:.1f} s (solve {row['train']['solve_s']:.1f} s), {distance:.2e} from the optimum",
          flush=True)
    for solver in ("newton-cg", "lbfgs"):
        fit = warm_refit(run, nothing, zeros, W_opt, target, solver, max_iter_cap)
        fit["vs_train_solve"] = fit["time_s"] / row["train"]["solve_s"]
        row["sklearn"].append(fit)
        print(f"  scikit-learn {solver}: {fit['time_s']:.1f} s, max_iter {fit['max_iter']}, "
              f"{fit['distance']:.2e} ({'reached' if fit['reached'] else 'not reached'})", flush=True)
    return row


def markdown(payload: dict) -> str:
    lines = ["# Training against scikit-learn", "",
             f"`{payload['command']}` on {payload['dataset']}: {payload['machine']}; load average (1, 5, 15 min) "
             "before " + ", ".join(f"{v:.2f}" for v in payload["load_average"]["before"]) + ", after "
             + ", ".join(f"{v:.2f}" for v in payload["load_average"]["after"]) + ".", "",
             "*train solve*: Newton-CG from zero to ||grad F|| <= 1e-9; *history*: the curvature record built after "
             "it (what unlearning needs; scikit-learn builds none). scikit-learn: `LogisticRegression` on the same "
             "objective from zero, timed at the smallest `max_iter` that lands within *target* of the optimum: as close "
             "as `train` lands, or 1e-9 of the optimum's norm where train lands closer. "
             "Ratio = scikit-learn time / train's solve time (above 1: train is faster).", "",
             "| l2 | train solve s | history s | train distance to optimum | target | newton-cg s (max_iter) | × | "
             "lbfgs s (max_iter) | × |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in payload["rows"]:
        cells = []
        for fit in row["sklearn"]:
            reached = "" if fit["reached"] else f", not reached: {fit['distance']:.1e}"
            cells += [f"{fit['time_s']:.1f} ({fit['max_iter']}{reached})", f"{fit['vs_train_solve']:.2f}"]
        lines.append(f"| {row['l2']:g} | {row['train']['solve_s']:.1f} | {row['train']['history_s']:.1f} | "
                     f"{row['train']['distance']:.1e} | {row['target']:.1e} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--l2", default="1e-3,1e-4", help="comma-separated")
    parser.add_argument("--max-iter-cap", type=int, default=1024, help="scikit-learn fits at most this max_iter")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "training")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    dataset = load_dataset(args.dataset)
    payload = {"dataset": args.dataset, "command": "python benchmarks/training.py "
               + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores",
               "load_average": {"before": load_before}, "rows": []}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="training-") as tmp:
        for l2 in (float(v) for v in args.l2.split(",") if v.strip()):
            payload["rows"].append(one_l2(dataset, l2, Path(tmp), args.max_iter_cap))
    payload["load_average"]["after"] = os.getloadavg()
    atomic_write_json(args.out / "results.json", payload)
    atomic_write_bytes(args.out / "results.md", markdown(payload).encode())
    print(markdown(payload))


if __name__ == "__main__":
    main()
