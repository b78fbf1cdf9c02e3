"""Membership-inference audit on Fashion-MNIST: unlearned models side by side with retraining.

Two runs of multinomial logistic regression on Fashion-MNIST (60000 x 784, 10 classes):

* ``converged``: Newton-CG to ||grad F|| <= 1e-9, lambda = 1e-3, with the
  Mini-Unlearning history (``--profile``); methods ``--converged-methods`` (default mini, finetune);
* ``trajectory``: seeded mini-batch SGD (20 epochs, batch 16384, lr 0.1 then 0.05 from epoch 10,
  lambda = 1e-4, DeltaGrad's setting) with DeltaGrad's history; methods ``--trajectory-methods``
  (default deltagrad).

For every forget ratio (default 10 % and 50 %, a seeded uniformly random forget set shared by both
runs) each method's model and the retrained model (same configuration, the gold standard) are
computed, then ``evaluate`` (accuracy gaps, residual, KL, agreement) and ``audit`` (loss attack,
SalUn's SVC MIA-efficacy, U-LiRA with ``--shadows`` shadows unlearned by each method, plus classic
LiRA on the original model) run on the unlearned, retrained and original models side by side.

    .venv/bin/python benchmarks/audit_fmnist.py                       # the full audit (long: see below)
    .venv/bin/python benchmarks/audit_fmnist.py --shadows 8 --workers 2
    .venv/bin/python benchmarks/audit_fmnist.py --ratios 0.1 --shadows 4 --max-targets 1000   # a smoke run

Runs, forget outputs and shadow scratch space live in ``--work`` (default ``work-dirs/audit-fmnist``,
git-ignored) and are reused when present (``--recompute`` redoes the forget outputs). Results: ``benchmarks/results/audit/`` --
``<run>_r<ratio>/evaluation.json``, ``audit.json``, ``ulira_<method>.png`` and ``summary.md``.

Cost: each U-LiRA shadow is one training of the run's configuration plus one unlearning per method.
Measured on this shared 2-core machine with ``--workers 2`` (one torch thread per worker): a
converged shadow took 104 s CPU (Newton-CG + the *minimal* history; the exact profile adds the
dense Hessian, roughly another 60-100 s), a trajectory shadow 11 s CPU plus DeltaGrad 5 s; the
population attacks take 2-3 min per run and ratio (SalUn's SVC on 20000 rows). So the default
(16 shadows, 10 % and 50 %) needs about 16 x 2 x 200 s / 2 workers ~ 55 min for the converged
shadows, ~ 1.2 h in all on two free cores; ``--shadows 8`` halves the shadow part.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from miniunlearn.core.progress import progress_bar
from miniunlearn.core.storage import atomic_write_bytes, atomic_write_json
from miniunlearn.data import load_dataset
from miniunlearn.experiments.audit import audit, evaluate, load_request
from miniunlearn.runs import train
from miniunlearn.runs.run import RESULT_JSON, RUN_JSON, open_run
from miniunlearn.service import forget
from miniunlearn.service.requests import random_forget_ids, write_ids_file
from miniunlearn.training import SGDSchedule

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "audit"
WORK = ROOT / "work-dirs" / "audit-fmnist"
RUNS = {
    "converged": {"l2": 1e-3, "mode": "converged"},
    "trajectory": {"l2": 1e-4, "mode": "trajectory",
                   "sgd": {"epochs": 20, "batch_size": 16384, "lr": 0.1, "lr_steps": [[10, 0.05]], "seed": 0}},
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def get_run(kind: str, dataset, work: Path, profile: str):
    path = work / kind
    if (path / RUN_JSON).is_file():
        run = open_run(path)
        used = run.meta.get("history", {}).get("mini", {}).get("profile")
        log(f"reusing {kind} run {path}" + (f" (history profile {used})" if used else ""))
        if kind == "converged" and profile != "auto" and used != profile:
            log(f"warning: --profile {profile} asked, but the reused run has {used}; delete {path} to retrain")
        return run
    setting = RUNS[kind]
    log(f"training the {kind} run (lambda {setting['l2']:g}) into {path}")
    if kind == "converged":
        return train(dataset, setting["l2"], path, mode="converged", profile=profile)
    sgd = setting["sgd"]
    schedule = SGDSchedule(sgd["epochs"], sgd["batch_size"], sgd["lr"], tuple(map(tuple, sgd["lr_steps"])), sgd["seed"])
    return train(dataset, setting["l2"], path, mode="trajectory", sgd_schedule=schedule, deltagrad_history=True)


def unlearned_dir(run, ids: np.ndarray, method: str, out: Path, reuse: bool = True) -> Path:
    """``forget`` into ``out`` unless (``reuse``) a finished result for the same ids is already there."""
    from miniunlearn.service.ledger import ids_sha256 as ids_digest

    result = out / RESULT_JSON
    if reuse and result.is_file() and json.loads(result.read_text()).get("forget_ids_sha256") == ids_digest(ids):
        log(f"reusing {out}")
        return out
    extra = {"ledger": False} if "ledger" in inspect.signature(forget).parameters else {}  # experiments, not requests
    log(f"{method}: forgetting {len(ids)} rows -> {out}")
    done = forget(run, ids, method=method, out=out, overwrite=True, **extra)
    log(f"{method}: {done.stats['time_s']:.1f} s")
    return out


def summary_rows(name: str, evaluation: dict, report: dict) -> list[str]:
    rows = []
    ulira = report.get("ulira", {}).get("attacks", {})
    models = list(evaluation["models"]) + ["retrained", "original"]
    for model in models:
        metrics = evaluation["models"].get(model) or evaluation[model]
        loss = report["loss_attack"][model]
        svc = report["svc_mia"]["confidence"][model]
        # an unlearned model under its own method's attack; the references under every attack
        attacks = [(label, a) for label, a in ulira.items() if model in a["targets"]]
        cells = [f"{label}: {a['targets'][model]['online']['auc']:.3f} / "
                 f"{a['targets'][model]['online']['tpr_at_fpr']['0.01']:.3f} / "
                 f"{a['targets'][model]['offline']['auc']:.3f}" for label, a in attacks]
        rows.append(f"| {name} | {model} | {metrics['test_accuracy']:.4f} | {metrics['forget_accuracy']:.4f} | "
                    f"{metrics['relative_residual']:.2e} | {metrics['kl_test']:.2e} | "
                    f"{loss['auc']:.3f} [{loss['auc_ci'][0]:.3f}, {loss['auc_ci'][1]:.3f}] | "
                    f"{svc['efficacy']:.3f} [{svc['efficacy_ci'][0]:.3f}, {svc['efficacy_ci'][1]:.3f}] | "
                    + ("<br>".join(cells) or "-") + " |")
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=["converged", "trajectory"])
    parser.add_argument("--converged-methods", default="mini,finetune")
    parser.add_argument("--trajectory-methods", default="deltagrad")
    parser.add_argument("--shadows", type=int, default=16, help="U-LiRA shadows per run and ratio (0: skip U-LiRA)")
    parser.add_argument("--workers", type=int, default=2, help="parallel shadow trainings")
    parser.add_argument("--max-targets", type=int, default=None, help="U-LiRA: at most this many forgotten rows scored")
    parser.add_argument("--profile", choices=["auto", "exact", "minimal"], default="auto",
                        help="Mini-Unlearning history of the converged run (auto: exact, 493 MB on Fashion-MNIST)")
    parser.add_argument("--recompute", action="store_true",
                        help="recompute the unlearned and retrained models even if --work holds them (runs are kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    dataset = load_dataset(args.dataset)
    methods = {"converged": [m for m in args.converged_methods.split(",") if m],
               "trajectory": [m for m in args.trajectory_methods.split(",") if m]}
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = ["# Membership-inference audit on Fashion-MNIST", "",
               f"{args.shadows} U-LiRA shadows per run and ratio, seed {args.seed}; "
               f"`python benchmarks/audit_fmnist.py {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
               "Columns: test accuracy; forget accuracy; relative residual ||w - w_R|| / ||w_T - w_R||; mean "
               "KL(p_R || p_w) on test rows; loss-attack AUC [95 % CI]; SVC MIA-efficacy [95 % CI]; U-LiRA "
               "`attack: online AUC / TPR at 1 % FPR / offline AUC` (the retrained and original rows under every "
               "method's attack; `lira` = shadows not unlearned). Read each model against the `retrained` row of "
               "the same run and ratio.", ""]
    timings = {}
    for ratio in args.ratios:
        ids = random_forget_ids(dataset.n_train, ratio, args.seed)
        ids_file = args.work / f"forget_r{ratio:g}.txt"
        write_ids_file(ids_file, ids)
        summary += [f"## {ratio:.0%} forgotten ({len(ids)} of {dataset.n_train} rows)", "",
                    "| run | model | test acc | forget acc | residual | KL test | loss AUC | MIA-efficacy | U-LiRA |",
                    "|---|---|---|---|---|---|---|---|---|"]
        for kind in args.runs:
            t0 = time.perf_counter()
            run = get_run(kind, dataset, args.work, args.profile)
            base = args.work / f"{kind}_r{ratio:g}"
            dirs = [unlearned_dir(run, ids, m, base / m, not args.recompute) for m in methods[kind]]
            retrained = unlearned_dir(run, ids, "retrain", base / "retrain", not args.recompute)
            request = load_request(run, ids, dirs, retrained)
            out = args.out / f"{kind}_r{ratio:g}"
            out.mkdir(parents=True, exist_ok=True)
            evaluation = evaluate(request)
            atomic_write_json(out / "evaluation.json", evaluation)
            log(f"{kind} {ratio:.0%}: audit with {args.shadows} shadows, {args.workers} worker(s)")
            with progress_bar(f"U-LiRA shadows ({kind}, {ratio:.0%})", args.shadows or None) as advance:
                report = audit(request, shadows=args.shadows, max_targets=args.max_targets, workers=args.workers,
                               seed=args.seed, out_dir=out, tmp_dir=args.work, save_scores=False, progress=advance)
            atomic_write_json(out / "audit.json", report)
            timings[f"{kind}_r{ratio:g}"] = time.perf_counter() - t0
            summary += summary_rows(kind, evaluation, report)
            log(f"{kind} {ratio:.0%}: done in {timings[f'{kind}_r{ratio:g}']:.0f} s")
        summary.append("")
    summary += ["## Time", "", *(f"- {k}: {v:.0f} s" for k, v in timings.items()),
                f"- total: {time.perf_counter() - start:.0f} s on {platform.machine()} with "
                f"{torch.get_num_threads()} torch threads, {args.workers} shadow worker(s)", ""]
    atomic_write_bytes(args.out / "summary.md", "\n".join(summary).encode())
    log(f"wrote {args.out / 'summary.md'}")


if __name__ == "__main__":
    main()
