"""Privacy benchmark: population U-LiRA, the exactness test, MIA-efficacy and certified releases.

For Fashion-MNIST and the covtype-shaped synthetic set (seeded, 125000 x 54, 7 classes; the real
covtype file is not used) at 10 % and 50 % forgetting: original, retrain, mini (refine 0), mini
tol 1e-3, newton, finetune, neggrad on converged runs (lambda = 1e-3) and deltagrad on SGD runs;
population U-LiRA AUC with intervals and TPR at 1 % / 0.1 % FPR, the exactness test, MIA-efficacy,
and the test accuracy of certified releases at epsilon in {0.1, 0.5, 1, 5}, delta = 1e-5
(miniunlearn.experiments.privacy says what each part computes; docs/evaluation.md how to read it).

    .venv/bin/python benchmarks/privacy.py --quick                          # small data, a few minutes
    .venv/bin/python benchmarks/privacy.py --datasets covtype-shaped        # one dataset
    .venv/bin/python benchmarks/privacy.py                                  # everything (long: see below)

Results: ``benchmarks/results/privacy/`` (results.json, report.md, ROC plots per dataset and family);
``--quick`` writes to ``work-dirs/privacy-quick/``. Runs, stored models and shadow caches live in
``--work`` (default ``work-dirs/privacy``, git-ignored). Every finished part is kept, every finished
population shadow cached: rerun the same command to resume.

Cost. Each population shadow is one training of the run's configuration on half the population,
then one unlearning per method and ratio; each exactness shadow one training on the full training
set. Measured with one torch thread: a Fashion-MNIST population shadow (35,000 rows, both ratios,
every converged method) takes 441 s of CPU -- training with the exact history 210 s, retraining
93 + 50 s, the Newton step 47 + 29 s, the rest 12 s. So Fashion-MNIST needs about 16 x 441 s = 2 h
of CPU for the population shadows, about 80 min for the 8 exactness shadows (full 60,000 rows) and
half an hour for the rest: about 3.8 h of CPU, 2 h of wall time with ``--workers 2`` on two free
cores (here, on a shared 2-core machine, wall time ran about 3 x CPU time: 5-6 h). The
covtype-shaped set took 37 min of wall time here, the small synthetic set 77 s, ``--quick`` 2 min.
``--exactness-shadows 0`` saves about a third.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small synthetic data, few shadows: a check in minutes")
    parser.add_argument("--datasets", nargs="+", help="dataset specs or aliases (fashion-mnist, covtype-shaped)")
    parser.add_argument("--ratios", nargs="+", type=float, help="forget ratios (default 0.1 0.5)")
    parser.add_argument("--shadows", type=int, help="population U-LiRA shadows (even, >= 6; 0 skips)")
    parser.add_argument("--targets", type=int, help="population U-LiRA targets")
    parser.add_argument("--exactness-shadows", type=int, help="exactness-test shadows (even, >= 4; 0 skips)")
    parser.add_argument("--exactness-targets", type=int, help="exactness test: at most this many forgotten rows")
    parser.add_argument("--draws", type=int, help="noise draws per certified release")
    parser.add_argument("--replicates", type=int, help="bootstrap replicates of the U-LiRA intervals")
    parser.add_argument("--workers", type=int, help="shadow trainings in parallel processes (default 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the main process (default 1: on a shared machine more threads thrash)")
    parser.add_argument("--out", type=Path, help="results folder")
    parser.add_argument("--work", type=Path, help="runs, stored models and shadow caches")
    parser.add_argument("--fresh", action="store_true",
                        help="recompute every part of the datasets named, ignoring finished parts and cached shadows "
                             "(after a change of the methods' code)")
    parser.add_argument("--report-only", action="store_true", help="rewrite report.md from results.json and stop")
    args = parser.parse_args(argv)

    import torch

    from miniunlearn.core.errors import MiniUnlearnError
    from miniunlearn.core.storage import atomic_write_json, read_json
    from miniunlearn.experiments.privacy import FULL, QUICK, run_privacy, write_privacy_report

    config = dataclasses.replace(QUICK if args.quick else FULL)
    for name in ("datasets", "ratios", "shadows", "targets", "exactness_shadows", "exactness_targets", "draws",
                 "replicates", "workers"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    default_out = ROOT / ("work-dirs/privacy-quick" if args.quick else "benchmarks/results/privacy")
    out = args.out or default_out
    work = args.work or (ROOT / ("work-dirs/privacy-quick/work" if args.quick else "work-dirs/privacy"))
    if args.report_only:
        log(f"report: {write_privacy_report(read_json(Path(out) / 'results.json', 'results.json'), out)}")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/privacy.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    started = time.perf_counter()
    try:
        results = run_privacy(config, out, work, log=log, command=command, fresh=args.fresh,
                              provenance=_provenance())
    except MiniUnlearnError as exc:
        log(f"error: {exc}")
        raise SystemExit(exc.exit_code) from None
    provenance = {**results["provenance"], "load_average_after": os.getloadavg()}
    for entry in results["datasets"].values():
        if entry.get("command") == command:  # the datasets this invocation computed, not earlier ones
            entry["provenance"] = provenance
    atomic_write_json(Path(out) / "results.json", results)
    write_privacy_report(results, out)
    log(f"finished in {time.perf_counter() - started:.0f} s; report: {Path(out) / 'report.md'}")


def _provenance() -> dict:
    """The code that computed the numbers: the git commit (and whether the tree had changes)."""
    import subprocess

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(git("status", "--porcelain", "src")),
            "cores": os.cpu_count(), "load_average_before": os.getloadavg()}


if __name__ == "__main__":
    main()
