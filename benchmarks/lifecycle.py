"""Successive deletion requests: serve fast, compact exactly -- three compaction policies compared.

One converged run (history included) receives REQUESTS deletion requests of SHARE of the original
training rows each (a seeded permutation, cut in blocks; 20 x 2.5 % reaches 50 %), recorded in its
ledger and served by Mini-Unlearning (``tol`` 1e-3), under three policies:

    never      every request computes from the original base with the cumulative forgotten set
    every-5    ``compact`` after requests 5, 10, 15
    auto       ``forget(..., compact="auto")``: compact once 10 % of the base's rows are forgotten since it
               was made (miniunlearn.service.compact)

Measured per request: the request's wall time (the compaction it triggers is reported apart), and
the relative residual ``||w - w_R|| / ||w_T - w_R||`` against w_R, the optimum of F on the rows kept
after that request, w_T the original model. Per compaction: its wall time, split into the exact
solve and the history rebuild, against the wall time of ``train`` from scratch (history included).

How the references are computed (CPU budget): F_R is strongly convex, so its optimum is unique; the
benchmark computes each w_R by Newton-CG warm-started from the previous one, to ||grad F_R|| <= 1e-11.
Retraining from scratch (the ``retrain`` method: Newton-CG from zeros to the training tolerance) is
timed on three unions -- the first, middle and last request's -- in the same process; the other
requests' retraining times are interpolated linearly in the number of kept rows. Under ``never``
each request is, by construction, the single request of the union's size on the fresh run, so its
residual is the "single request of that size" that the compacting policies are held to.

    .venv/bin/python benchmarks/lifecycle.py                              # Fashion-MNIST, l2 1e-3
    .venv/bin/python benchmarks/lifecycle.py --dataset digits-raw --out benchmarks/results/lifecycle-digits

writes results.json, results.md and lifecycle.png under --out. ``fashion-mnist-14x14`` is Fashion-MNIST
with every image average-pooled 2x2 (60,000 training rows of 196 pixels: the dense curvature is 16x
smaller than the full set's), trained from memory. ``digits-raw`` is scikit-learn's 8x8
digits, pixels / 16 (no standardisation), trained from memory, so its run stores its own rows; a
built-in spec (fashion-mnist) is re-read from its files. Data whose standardisation is fitted on the
training rows is refused: compaction refits it, so w_R would depend on the policy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from miniunlearn import load_dataset  # noqa: E402
from miniunlearn.core.progress import set_progress  # noqa: E402
from miniunlearn.core.storage import atomic_write_bytes, atomic_write_json, to_json  # noqa: E402
from miniunlearn.data import Dataset  # noqa: E402
from miniunlearn.data.preprocessing import STANDARDIZE  # noqa: E402
from miniunlearn.models import Objective, Rows  # noqa: E402
from miniunlearn.models.penalty import Penalty  # noqa: E402
from miniunlearn.models.rows import retained_ids  # noqa: E402
from miniunlearn.runs import Run, train  # noqa: E402
from miniunlearn.service import forget  # noqa: E402
from miniunlearn.service.compact import AUTO_SHARE, compact  # noqa: E402
from miniunlearn.training import TrainConfig, fit  # noqa: E402

POLICIES = ("never", "every-5", "auto")
SPEED_TARGET = 50.0
COMPACT_TARGET = 0.5
REFERENCE_TOL = 1e-9


def load(name: str):
    if name == "fashion-mnist-14x14":  # Fashion-MNIST's 70,000 images pooled 2x2: 196 pixels, 1,970 parameters
        full = load_dataset("fashion-mnist")

        def pool(X):
            return np.asarray(X, dtype=np.float64).reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(-1, 196)

        return Dataset.from_arrays(pool(full.X_train), full.y_train, X_test=pool(full.X_test), y_test=full.y_test,
                                   standardize=False, name=name)
    if name == "digits-raw":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        return Dataset.from_arrays(X / 16.0, y, standardize=False, name="digits-raw")
    dataset = load_dataset(name)
    if dataset.preprocessing.scaled and dataset.preprocessing.description.startswith(STANDARDIZE):
        raise SystemExit(f"{name}: its standardisation is fitted on the training rows; choose data without it")
    return dataset


def references(run: Run, unions: list[np.ndarray], n: int) -> list[dict]:
    """w_R for every union: Newton-CG on F_R, warm-started from the previous optimum (w_T for the
    first), preconditioned by the original run's curvature, until the self-concordance certificate
    proves ||w - w_R|| <= REFERENCE_TOL ||w - w_T|| (solvers.certified_newton)."""
    from miniunlearn.methods.mini import HistoryPreconditioner
    from miniunlearn.solvers.certificate import self_concordance_constant
    from miniunlearn.solvers.certified_newton import certified_newton_cg

    ds, penalty = run.dataset, Penalty(run.model, run.l2, run.penalize_intercept)
    theta_T = run.theta()
    precondition = HistoryPreconditioner(run.mini_history(), penalty).apply
    theta = theta_T
    out = []
    for k, union in enumerate(unions, start=1):
        objective = Objective(run.model, Rows(ds.X_train, ds.y_train, retained_ids(n, union), chunk_rows=8192),
                              penalty)
        start = time.perf_counter()
        here = objective.curvature(theta, diag=False, value=True, row_norm=True)
        result = certified_newton_cg(objective, precondition, theta, theta_T,
                                     R=self_concordance_constant(here.cache.max_row_norm), tol=REFERENCE_TOL,
                                     max_passes=2000, start=here)
        if not result.converged:
            raise SystemExit(f"reference {k}: certificate {result.certificate:.2e} not below the tolerance")
        theta = result.w
        out.append({"theta": theta, "seconds": time.perf_counter() - start, "certificate": result.certificate,
                    "passes": objective.passes})
        print(f"reference {k}: {out[-1]['seconds']:.1f} s, {objective.passes:.0f} passes, certificate "
              f"{result.certificate:.1e}", flush=True)
    return out


def retrain_times(run: Run, blocks: list[np.ndarray], n: int, which: list[int]) -> dict[int, float]:
    """Wall time of retraining from scratch (the retrain method's solve) on the union after request k."""
    ds = run.dataset
    config = TrainConfig.from_dict(run.config)
    times = {}
    for k in which:
        union = np.sort(np.concatenate(blocks[:k]))
        rows = Rows(ds.X_train, ds.y_train, retained_ids(n, union), chunk_rows=config.chunk_rows)
        start = time.perf_counter()
        fit(run.model, rows, config)
        times[k] = time.perf_counter() - start
        print(f"retrain from scratch after request {k}: {times[k]:.1f} s", flush=True)
    return times


def interpolate(times: dict[int, float], k: int) -> float:
    known = sorted(times)
    return float(np.interp(k, known, [times[j] for j in known]))


class Policy:
    """One policy's copy of the run, kept open across requests as a deletion service would keep it."""

    def __init__(self, name: str, base: Path, work: Path, dataset):
        self.name, self.work = name, work
        self.dir = work / f"run-{name}"
        shutil.copytree(base, self.dir, ignore=shutil.ignore_patterns("ledger.*"))
        self.run = Run(self.dir)
        self.run.use_dataset(dataset)
        self.requests, self.compactions = [], []

    def request(self, k: int, block: np.ndarray, n_requests: int, ref: torch.Tensor, theta_T: torch.Tensor,
                retrain_s: float, measured: bool) -> None:
        run = self.run
        ids = np.searchsorted(run.keys(), block)  # the block's rows, numbered in the current base
        assert np.array_equal(run.keys()[ids], block)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = forget(run, ids, out=self.work / f"{self.name}-{k:02d}",
                            compact="auto" if self.name == "auto" else "never")
        wall = time.perf_counter() - start
        compaction = result.stats.get("compaction")
        request_s = wall - (compaction["time_s"] if compaction else 0.0)  # (auto: it ran inside forget)
        if self.name == "every-5" and k % 5 == 0 and k < n_requests:
            compaction = compact(run)
            compaction["reason"] = "every 5 requests"
            result.theta = run.theta()
        residual = float((result.theta - ref).norm() / (theta_T - ref).norm())
        entry = {"request": k, "n_forget_since_base": result.stats["n_forget"], "base_rows": result.stats["n_train"],
                 "request_s": request_s, "method_s": result.stats["time_s"],
                 "passes_retained": result.stats["passes_retained"], "certificate": result.stats.get("certificate"),
                 "relative_residual": residual, "retrain_s": retrain_s, "retrain_measured": measured,
                 "speedup": retrain_s / request_s}
        if compaction is not None:
            self.compactions.append({
                "after_request": k, "reason": compaction["reason"], "time_s": compaction["time_s"],
                "solve_s": compaction["solve"]["time_s"], "newton_iterations": compaction["solve"]["iterations"],
                "history_s": (compaction.get("history") or {}).get("time_s"), "n_after": compaction["n_after"],
                "removed_files": len(compaction["removed"])})
            entry["compacted"] = True
        self.requests.append(entry)
        print(f"{self.name} request {k}: {request_s:.2f} s, residual {residual:.2e}"
              + (f", compaction {compaction['time_s']:.1f} s" if compaction else ""), flush=True)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "compactions": self.compactions}


def single_requests(run: Run, dataset, blocks: list[np.ndarray], which: list[int], work: Path, n: int,
                    theta_T: torch.Tensor) -> dict[int, float]:
    """The relative residual of block k forgotten alone, in one request on the fresh run."""
    refs = references(run, [blocks[k - 1] for k in which], n) if which else []
    out = {}
    for k, ref in zip(which, refs):
        fresh = Run(shutil.copytree(run.path, work / f"single-{k}", ignore=shutil.ignore_patterns("ledger.*")))
        fresh.use_dataset(dataset)
        theta = forget(fresh, blocks[k - 1], ledger=False).theta
        out[k] = float((theta - ref["theta"]).norm() / (theta_T - ref["theta"]).norm())
        print(f"single request of block {k} on the fresh run: residual {out[k]:.2e}", flush=True)
    return out


def _load_note(p: dict) -> str:
    load = p.get("load_average")
    if not load or "after" not in load:
        return ""
    return (" Load average (1, 5, 15 min) before " + ", ".join(f"{v:.2f}" for v in load["before"])
            + ", after " + ", ".join(f"{v:.2f}" for v in load["after"]) + ".")


def markdown(payload: dict) -> str:
    p = payload
    lines = [f"# Successive deletion requests: {p['dataset']}", "",
             f"{p['n_train']} training rows, {p['n_params']} parameters, l2 {p['l2']:g}; {p['n_requests']} requests "
             f"of {p['share']:.1%} each (to {p['n_requests'] * p['share']:.0%}); Mini-Unlearning with tol 1e-3. "
             f"Machine: {p['machine']}.{_load_note(p)} Command: `{p['command']}`.", "",
             f"* `train` from scratch, history included: **{p['train_s']:.1f} s** "
             f"(solve {p['train_solve_s']:.1f} s, history {p['train_history_s']:.1f} s).",
             f"* Retraining from scratch measured after requests {', '.join(map(str, sorted(p['retrain_measured'])))}: "
             + ", ".join(f"{v:.1f} s" for _, v in sorted(p["retrain_measured"].items()))
             + "; other requests interpolated linearly. References w_R: Newton-CG on F_R warm-started from the "
               "previous union's optimum, preconditioned by the run's curvature, until the self-concordance "
               f"certificate proves ||w - w_R|| <= {p.get('reference_tol', REFERENCE_TOL):g} ||w - w_T|| (the optimum "
               f"is unique), {p['reference_s']:.1f} s in all.",
             "* Under `never` every request computes from the original base with the union, which is exactly a "
             "single request of the union's size on the fresh run. A single request of one block "
             f"({p['share']:.1%}) on the fresh run: residual "
             + ", ".join(f"{v:.2e} (block {k})" for k, v in sorted(p["single_request_residuals"].items())) + ".",
             "* Latency: wall time of `forget` on a run kept open across requests (as a deletion service keeps it: "
             "`Run.use_dataset`), ledger and files included, the compaction it triggers excluded; policies "
             "interleaved request by request, so they share the machine's load.", ""]
    header = "| request | forgotten | " + " | ".join(f"{pol}: latency s / speed-up / residual" for pol in POLICIES) + " |"
    lines += [header, "|---|---|" + "---|" * len(POLICIES)]
    for k in range(p["n_requests"]):
        cells = []
        for pol in POLICIES:
            r = p["policies"][pol]["requests"][k]
            mark = " (C)" if r.get("compacted") else ""
            cells.append(f"{r['request_s']:.2f} / {r['speedup']:.0f}x / {r['relative_residual']:.1e}{mark}")
        lines.append(f"| {k + 1} | {(k + 1) * p['share']:.1%} | " + " | ".join(cells) + " |")
    lines += ["", "(C): a compaction followed the request (the residual is then the new base's, the exact optimum).", "",
              "## Compactions", "", "| policy | after request | rows kept | time s | solve s (Newton its) | history s | "
              "/ train | removed files |", "|---|---|---|---|---|---|---|---|"]
    for pol in POLICIES:
        for c in p["policies"][pol]["compactions"]:
            lines.append(f"| {pol} | {c['after_request']} | {c['n_after']} | {c['time_s']:.1f} | {c['solve_s']:.1f} "
                         f"({c['newton_iterations']}) | {(c['history_s'] or 0):.1f} | {c['time_s'] / p['train_s']:.2f} | "
                         f"{c['removed_files']} |")
    lines += ["", "## Targets", ""]
    for line in p["targets"]:
        lines.append(f"* {line}")
    lines += ["", "Regenerate: `" + p["command"] + "`", ""]
    return "\n".join(lines)


def targets(payload: dict) -> list[str]:
    out = []
    never = payload["policies"]["never"]["requests"]
    single = max(payload["single_request_residuals"].values())
    for pol in POLICIES:
        reqs = payload["policies"][pol]["requests"]
        slow = [r["request"] for r in reqs if r["speedup"] < SPEED_TARGET]
        out.append(f"{pol}: speed-up >= {SPEED_TARGET:g}x on {len(reqs) - len(slow)} of {len(reqs)} requests"
                   + (f" (missed on {slow})" if slow else "") + f"; min {min(r['speedup'] for r in reqs):.0f}x, "
                   f"median {np.median([r['speedup'] for r in reqs]):.0f}x")
        above = [r["request"] for r in reqs if r["relative_residual"] > single]
        out.append(f"{pol}: residual <= {single:.2e} (the worst single {payload['share']:.1%} request on the fresh "
                   f"run) after {len(reqs) - len(above)} of {len(reqs)} requests"
                   + (f" (above after {above})" if above else ""))
        if pol != "never":
            worse = [r["request"] for r, bar in zip(reqs, never) if r["relative_residual"] > bar["relative_residual"]]
            out.append(f"{pol}: residual <= a single request of the union's size (= never) after "
                       f"{len(reqs) - len(worse)} of {len(reqs)} requests" + (f" (above after {worse})" if worse else ""))
        for c in payload["policies"][pol]["compactions"]:
            ratio = c["time_s"] / payload["train_s"]
            out.append(f"{pol}: compaction after request {c['after_request']}: {ratio:.2f} x train "
                       f"({'met' if ratio <= COMPACT_TARGET else 'MISSED'}: target <= {COMPACT_TARGET})")
    return out


def plot(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for pol in POLICIES:
        reqs = payload["policies"][pol]["requests"]
        k = [r["request"] for r in reqs]
        axes[0].plot(k, [r["request_s"] for r in reqs], marker="o", label=pol)
        axes[1].plot(k, [r["relative_residual"] for r in reqs], marker="o", label=pol)
        done = [r["request"] for r in reqs if r.get("compacted")]
        axes[1].scatter(done, [reqs[d - 1]["relative_residual"] for d in done], s=90, facecolors="none",
                        edgecolors="k")
    axes[0].plot(k, [r["retrain_s"] for r in payload["policies"]["never"]["requests"]], "k--",
                 label="retrain from scratch")
    axes[0].set(yscale="log", xlabel="request", ylabel="wall time (s)", title="per-request latency")
    axes[1].set(yscale="log", xlabel="request", ylabel="||w - w_R|| / ||w_T - w_R||",
                title="distance to retraining on the union (circles: compacted)")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"{payload['dataset']}: {payload['n_requests']} requests of {payload['share']:.1%}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--l2", type=float, default=1e-3)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--share", type=float, default=0.025)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lifecycle"))
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--report", action="store_true", help="rewrite results.md and the plot from results.json")
    args = parser.parse_args(argv)
    if args.report:
        out = Path(args.out)
        payload = json.loads((out / "results.json").read_text())
        payload["retrain_measured"] = {int(k): v for k, v in payload["retrain_measured"].items()}
        payload["single_request_residuals"] = {int(k): v for k, v in payload["single_request_residuals"].items()}
        payload["targets"] = targets(payload)
        atomic_write_json(out / "results.json", payload)
        atomic_write_bytes(out / "results.md", markdown(payload).encode())
        plot(payload, out / "lifecycle.png")
        return
    set_progress(False)
    load_before = os.getloadavg()  # the report states the load it ran under
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load(args.dataset)
    n = dataset.n_train
    size = int(round(args.share * n))
    order = np.random.default_rng([args.seed, 16]).permutation(n)
    blocks = [np.sort(order[k * size:(k + 1) * size]) for k in range(args.requests)]
    with tempfile.TemporaryDirectory(prefix="lifecycle-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        run = train(dataset, args.l2, work / "base")
        train_s = time.perf_counter() - start
        print(f"train: {train_s:.1f} s", flush=True)
        meta = run.meta
        theta_T = run.theta()
        unions = [np.sort(np.concatenate(blocks[:k])) for k in range(1, args.requests + 1)]
        refs = references(run, unions, n)
        middle = (args.requests + 1) // 2
        measured = sorted({1, middle, args.requests})
        retrain = retrain_times(run, blocks, n, measured)
        singles = single_requests(run, dataset, blocks, measured, work, n, theta_T)
        payload = {
            "dataset": args.dataset, "n_train": n, "n_params": run.model.n_params, "l2": args.l2,
            "n_requests": args.requests, "share": args.share, "request_rows": size, "seed": args.seed,
            "auto_share": AUTO_SHARE, "train_s": train_s, "train_solve_s": meta["training"]["time_s"],
            "train_history_s": meta["history"]["mini"]["time_s"],
            "reference_s": sum(r["seconds"] for r in refs), "reference_tol": REFERENCE_TOL,
            "retrain_measured": retrain, "single_request_residuals": singles,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores",
            "load_average": {"before": load_before},
            "command": "python benchmarks/lifecycle.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "policies": {},
        }
        chosen = [Policy(p, run.path, work, dataset) for p in POLICIES if p in args.policies.split(",")]
        for k, block in enumerate(blocks, start=1):  # interleaved: every policy sees the same machine load
            for policy in chosen:
                policy.request(k, block, args.requests, refs[k - 1]["theta"], theta_T, interpolate(retrain, k),
                               k in retrain)
            payload["policies"] = {p.name: p.as_dict() for p in chosen}
            atomic_write_json(out / "results.json", payload)
    payload["load_average"]["after"] = os.getloadavg()
    atomic_write_json(out / "results.json", payload)
    if set(payload["policies"]) == set(POLICIES):
        payload["targets"] = targets(payload)
        atomic_write_json(out / "results.json", payload)
        atomic_write_bytes(out / "results.md", markdown(payload).encode())
        plot(payload, out / "lifecycle.png")
    print(to_json(payload.get("targets", [])))


if __name__ == "__main__":
    main()
