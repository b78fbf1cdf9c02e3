"""Validate DeltaGrad in its own setting (Wu et al. 2020, their MNIST logistic-regression runs), on Fashion-MNIST.

Training: multinomial logistic regression, mini-batch SGD from zeros, batch 16384, 20 epochs,
learning rate 0.1 for 10 epochs then 0.05, weight decay (l2) 1e-4, DeltaGrad history recorded.
For every deletion ratio and seed: a seeded uniformly random forget set, retraining (the
original batches without the forgotten rows: the gold standard) and DeltaGrad, in alternating
order, each timed in this process. Reported: the relative residual ||w_DG - w_R|| / ||w_T - w_R||,
test accuracies, wall times, speedup = retrain time / DeltaGrad time (per pair, median over
seeds), history bytes read and passes over the data.

    .venv/bin/python benchmarks/deltagrad_validation.py                      # full grid, 3 seeds
    .venv/bin/python benchmarks/deltagrad_validation.py --ratios 0.001 --seeds 0 --no-variants

writes ``benchmarks/results/deltagrad/results.json`` and ``results.md``.

``--variants`` (on by default) also runs DeltaGrad with other (T0, j0, m) at the small ratios,
and retrains the same setting with halved learning rates, to show what the residual depends on.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from miniunlearn.data import load_dataset
from miniunlearn.evaluation.metrics import accuracy
from miniunlearn.runs import train
from miniunlearn.service import forget
from miniunlearn.service.requests import random_forget_ids
from miniunlearn.training import SGDSchedule

RESULTS = Path(__file__).resolve().parent / "results" / "deltagrad"
SETTING = {"dataset": "fashion-mnist", "l2": 1e-4, "epochs": 20, "batch_size": 16384, "lr": 0.1,
           "lr_steps": [[10, 0.05]], "seed": 0}
TARGET = 0.05  # residual the issue asks for at 0.1 % and 1 %
VARIANTS = [{"t0": 2}, {"t0": 3}, {"m": 5}, {"m": 10}, {"j0": 40}]


def train_run(dataset, out: Path, lr: float, lr_steps) -> object:
    schedule = SGDSchedule(epochs=SETTING["epochs"], batch_size=SETTING["batch_size"], lr=lr,
                           lr_steps=tuple((int(e), float(v)) for e, v in lr_steps), seed=SETTING["seed"])
    return train(dataset, SETTING["l2"], out, mode="trajectory", sgd_schedule=schedule, deltagrad_history=True)


def residual(theta: torch.Tensor, retrained: torch.Tensor, original: torch.Tensor) -> float:
    return float((theta - retrained).norm() / (original - retrained).norm())


def compare(run, dataset, ratio: float, seed: int, options: dict, order: int, retrained: dict) -> dict:
    """Retrain and DeltaGrad on one forget set; ``order`` alternates which of the two runs first.

    ``retrained`` caches the retraining of each (run, ratio, seed), so DeltaGrad variants on the
    same forget set are compared with (and timed against) the same retraining.
    """
    ids = random_forget_ids(run.n_train, ratio, seed)
    w_T = run.theta()
    key = (str(run.path), ratio, seed)
    if key in retrained:
        re, dg = retrained[key], forget(run, ids, method="deltagrad", **options)
    else:
        first, second = ("retrain", "deltagrad") if order % 2 == 0 else ("deltagrad", "retrain")
        results = {method: None for method in (first, second)}
        for method in (first, second):
            results[method] = forget(run, ids, method=method, **(options if method == "deltagrad" else {}))
        re, dg = results["retrain"], results["deltagrad"]
        retrained[key] = re
    return {
        "ratio": ratio, "seed": seed, "n_forget": int(len(ids)), "options": options,
        "residual": residual(dg.theta, re.theta, w_T),
        "distance_dg_retrain": float((dg.theta - re.theta).norm()),
        "distance_original_retrain": float((w_T - re.theta).norm()),
        "deltagrad_time_s": dg.stats["time_s"], "retrain_time_s": re.stats["time_s"],
        "speedup": re.stats["time_s"] / dg.stats["time_s"],
        "history_bytes_read": dg.stats["history_bytes_read"],
        "deltagrad_passes_retained": dg.stats["passes_retained"], "deltagrad_passes_forget": dg.stats["passes_forget"],
        "retrain_passes_retained": re.stats["passes_retained"],
        "exact_steps": dg.stats["exact_steps"], "approximate_steps": dg.stats["approximate_steps"],
        "lbfgs_relative_error_median": dg.stats.get("lbfgs_relative_error_median"),
        "test_accuracy_deltagrad": accuracy(run.model, dg.theta, dataset.X_test, dataset.y_test),
        "test_accuracy_retrain": accuracy(run.model, re.theta, dataset.X_test, dataset.y_test),
        "peak_rss_bytes_deltagrad": dg.stats["peak_rss_bytes"],
    }


def summarise(rows: list[dict]) -> list[dict]:
    """Per (ratio, options): medians over seeds (and the worst residual)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["ratio"], json.dumps(row["options"], sort_keys=True)), []).append(row)
    out = []
    for (ratio, options), group in sorted(groups.items(), key=lambda kv: (kv[0][1] != "{}", kv[0][1], kv[0][0])):
        med = lambda key: statistics.median(r[key] for r in group)  # noqa: E731
        out.append({"ratio": ratio, "options": json.loads(options), "seeds": len(group),
                    "residual_median": med("residual"), "residual_max": max(r["residual"] for r in group),
                    "deltagrad_time_s_median": med("deltagrad_time_s"), "retrain_time_s_median": med("retrain_time_s"),
                    "speedup_median": med("speedup"), "history_bytes_read": group[0]["history_bytes_read"],
                    "test_accuracy_gap_median": med("test_accuracy_deltagrad") - med("test_accuracy_retrain"),
                    "meets_target": max(r["residual"] for r in group) <= TARGET})
    return out


def write_markdown(path: Path, payload: dict) -> None:
    lines = ["# DeltaGrad validation on Fashion-MNIST (DeltaGrad's own SGD setting)", "",
             f"Generated by `{payload['command']}` on {payload['finished']} ({payload['machine']}).", "",
             "Setting: " + ", ".join(f"{k} {v}" for k, v in payload["setting"].items()) + ". "
             f"Training took {payload['training']['time_s']:.1f} s; test accuracy {payload['training']['test_accuracy']:.4f}.",
             "Residual = ||w_DG - w_R|| / ||w_T - w_R|| against the retrained trajectory (same batches without the "
             "forgotten rows). Times are wall seconds on a shared 2-core machine; speedup = retrain / DeltaGrad time "
             "of the same forget set, median over seeds.", "",
             "## Per forget set", "",
             "| ratio | seed | options | residual | ‖w_DG−w_R‖ | ‖w_T−w_R‖ | DeltaGrad s | retrain s | speedup | history bytes | exact/approx steps |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        lines.append(f"| {r['ratio']:.1%} | {r['seed']} | {fmt_options(r['options'])} | {r['residual']:.4f} | "
                     f"{r['distance_dg_retrain']:.2e} | {r['distance_original_retrain']:.2e} | "
                     f"{r['deltagrad_time_s']:.2f} | {r['retrain_time_s']:.2f} | {r['speedup']:.2f} | "
                     f"{r['history_bytes_read']:,} | {r['exact_steps']}/{r['approximate_steps']} |")
    lines += ["", "## Summary (medians over seeds)", "",
              f"| ratio | options | seeds | residual median | residual max | ≤ {TARGET}? | DeltaGrad s | retrain s | speedup | test-accuracy gap |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s in payload["summary"]:
        lines.append(f"| {s['ratio']:.1%} | {fmt_options(s['options'])} | {s['seeds']} | {s['residual_median']:.4f} | "
                     f"{s['residual_max']:.4f} | {'yes' if s['meets_target'] else 'no'} | {s['deltagrad_time_s_median']:.2f} | "
                     f"{s['retrain_time_s_median']:.2f} | {s['speedup_median']:.2f} | {s['test_accuracy_gap_median']:+.4f} |")
    if payload.get("half_lr"):
        h = payload["half_lr"]
        lines += ["", f"## Same setting, learning rates halved ({h['setting']['lr']} then {h['setting']['lr_steps']})", "",
                  "| ratio | seed | residual | speedup |", "|---|---|---|---|"]
        lines += [f"| {r['ratio']:.1%} | {r['seed']} | {r['residual']:.4f} | {r['speedup']:.2f} |" for r in h["rows"]]
    path.write_text("\n".join(lines) + "\n")


def fmt_options(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults (T0=5, j0=20, m=2)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.001, 0.01, 0.05, 0.1, 0.3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", action=argparse.BooleanOptionalAction, default=True,
                        help="also run other (T0, j0, m) and a halved-learning-rate training at 0.1 %% and 1 %%")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    dataset = load_dataset(SETTING["dataset"])
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    with tempfile.TemporaryDirectory(prefix="deltagrad-validation-") as tmp:
        run = train_run(dataset, Path(tmp) / "run", SETTING["lr"], SETTING["lr_steps"])
        training = {"time_s": run.meta["training"]["time_s"], "test_accuracy": run.meta["metrics"]["test_accuracy"],
                    "history_bytes": run.meta["history"]["deltagrad"]["bytes"]}
        rows, k, retrained = [], 0, {}
        for ratio in args.ratios:
            for seed in args.seeds:
                rows.append(compare(run, dataset, ratio, seed, {}, k, retrained))
                k += 1
                print(f"ratio {ratio:.1%} seed {seed}: residual {rows[-1]['residual']:.4f}, "
                      f"speedup {rows[-1]['speedup']:.2f}", file=sys.stderr, flush=True)
        half_lr = None
        if args.variants:
            small = [r for r in args.ratios if r <= 0.01]
            for options in VARIANTS:
                for ratio in small:
                    for seed in args.seeds:
                        rows.append(compare(run, dataset, ratio, seed, options, k, retrained))
                        k += 1
                        print(f"{options} ratio {ratio:.1%} seed {seed}: residual {rows[-1]['residual']:.4f}",
                              file=sys.stderr, flush=True)
            lr_steps = [[e, v / 2] for e, v in SETTING["lr_steps"]]
            slow = train_run(dataset, Path(tmp) / "run-half-lr", SETTING["lr"] / 2, lr_steps)
            half_rows = []
            for ratio in small:
                for seed in args.seeds:
                    half_rows.append(compare(slow, dataset, ratio, seed, {}, k, retrained))
                    k += 1
            half_lr = {"setting": {**SETTING, "lr": SETTING["lr"] / 2, "lr_steps": lr_steps}, "rows": half_rows}

    payload = {
        "command": "python " + " ".join(["benchmarks/deltagrad_validation.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "setting": SETTING, "target_residual": TARGET, "training": training,
        "rows": rows, "summary": summarise(rows), "half_lr": half_lr,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    write_markdown(args.out / "results.md", payload)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
