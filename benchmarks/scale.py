"""Scale: HIGGS-size data in bounded memory, in one process and split across two (torch.distributed).

Every step runs as its own command, exactly as a user would run it, under ``/usr/bin/time -v``
(one measurement per process: with two processes, torchrun starts each worker through
``time -v``), so the peak RSS reported is the kernel's maximum resident set size of each process
(data pages of the float32 memory map included), not an estimate:

    miniunlearn train   --dataset SPEC --l2 L2 --out RUN                              (one process)
    [torchrun --standalone --nproc_per_node P] miniunlearn retrain RUN --ids F --out DIR
    [torchrun --standalone --nproc_per_node P] miniunlearn forget  RUN --ids F --method mini --refine K --out DIR
    miniunlearn evaluate MINI_DIR --against RETRAIN_DIR --run RUN --ids F                  (one process)

Each forget / retrain request gets a fresh copy of the run directory (model, history, run.json:
a few kB), so every request forgets exactly its own random rows rather than the union recorded
in a shared deletion ledger.

    .venv/bin/python benchmarks/scale.py                                  # 11M rows, ratios 1/10/30 %
    .venv/bin/python benchmarks/scale.py --n-rows 1000000 --ratios 0.1    # a quick look

writes ``benchmarks/results/scale/results.json`` and ``results.md``. The data are the seeded
synthetic HIGGS stand-in (``higgs-synthetic``, labelled synthetic) unless ``--higgs-csv`` names
the real HIGGS.csv(.gz). ``time_s`` is the method's own time (measured inside the command, data
already loaded); ``command_wall_s`` is the whole command, start-up, data fingerprint and (for
torchrun) rendezvous included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "scale"
HIGGS_TEST_ROWS = 500_000


def parse_time_v(path: Path) -> dict:
    """Peak RSS (bytes), wall seconds and exit status from a ``/usr/bin/time -v`` report."""
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.strip().rpartition(": ")
        if key == "Maximum resident set size (kbytes)":
            out["peak_rss_bytes"] = int(value) * 1024
        elif key.startswith("Elapsed (wall clock) time"):
            parts = [float(p) for p in value.split(":")]
            out["wall_s"] = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
        elif key == "Exit status":
            out["exit_status"] = int(value)
    return out


class Runner:
    """Runs miniunlearn commands in 1 or P processes, each process under ``/usr/bin/time -v``."""

    def __init__(self, work: Path, env: dict, log):
        self.work, self.env, self.log = work, env, log
        self.bin = Path(sys.executable).with_name("miniunlearn")
        self.torchrun = Path(sys.executable).with_name("torchrun")
        self.time = shutil.which("time", path="/usr/bin") or "/usr/bin/time"
        if not Path(self.time).exists():
            sys.exit("benchmarks/scale.py needs GNU time: apt-get install -y time")

    def __call__(self, tag: str, args: list[str], processes: int = 1) -> dict:
        report = self.work / "time" / tag
        report.parent.mkdir(parents=True, exist_ok=True)
        if processes == 1:
            cmd = [self.time, "-v", "-o", f"{report}.0", str(self.bin), *args]
        else:
            # each worker runs `time -v -o REPORT.$LOCAL_RANK miniunlearn ARGS` ($0 = REPORT)
            cmd = [str(self.torchrun), "--standalone", "--nproc_per_node", str(processes), "--no-python",
                   "bash", "-c", f'exec {self.time} -v -o "$0.$LOCAL_RANK" "$@"', str(report), str(self.bin), *args]
        self.log(f"$ {' '.join(cmd)}")
        start = time.perf_counter()
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"command failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-4000:]}")
        per_process = [parse_time_v(Path(f"{report}.{k}")) for k in range(processes)]
        payload = json.loads(done.stdout) if "--json" in args else {}
        return {"payload": payload, "command_wall_s": wall, "per_process": per_process,
                "peak_rss_bytes": max(p["peak_rss_bytes"] for p in per_process)}


def load_theta(directory: Path) -> np.ndarray:
    from miniunlearn.runs import load_model

    return load_model(directory)[1].numpy()


def fresh_run(run: Path, target: Path) -> Path:
    """A copy of the run directory without its deletion ledger (a few kB: the data are not copied)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("run.json", "model.safetensors", "history.safetensors"):
        shutil.copy2(run / name, target / name)
    return target


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-rows", type=int, default=11_000_000, help="rows in all (train + test), HIGGS: 11000000")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--higgs-csv", default=None, help="the real HIGGS.csv(.gz) instead of the synthetic set")
    parser.add_argument("--l2", type=float, default=1e-4)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.01, 0.1, 0.3])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--refine", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--threads", type=int, default=1, help="OMP/torch threads per process")
    parser.add_argument("--evaluate-ratio", type=float, default=0.3, help="also run `evaluate` at this ratio")
    parser.add_argument("--work", default=None, help="scratch folder (runs, models); default a temporary one")
    parser.add_argument("--cache", default=None, help="MINIUNLEARN_CACHE for the memory-mapped data")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)

    from miniunlearn.core.storage import atomic_write_bytes, atomic_write_json
    from miniunlearn.service.requests import random_forget_ids, write_ids_file

    work = Path(args.work or tempfile.mkdtemp(prefix="miniunlearn-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MINIUNLEARN_NO_PROGRESS": "1",
           "MINIUNLEARN_DIST_BACKEND": "gloo"}
    if args.cache:
        env["MINIUNLEARN_CACHE"] = args.cache

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    run_cmd = Runner(work, env, log)
    spec = (f"higgs:path={Path(args.higgs_csv).resolve()},n_rows={args.n_rows}" if args.higgs_csv
            else f"higgs-synthetic:n_rows={args.n_rows},seed={args.seed}")
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    load_before = os.getloadavg()

    run = work / "run"
    if (run / "run.json").exists():
        log(f"reusing {run}")
        trained = {"payload": json.loads((run / "run.json").read_text()), "reused": True}
    else:
        trained = run_cmd("train", ["train", "--dataset", spec, "--l2", str(args.l2), "--out", str(run),
                                    "--overwrite", "--json"])
    meta = json.loads((run / "run.json").read_text())
    n_train = int(meta["dataset"]["n_train"])
    theta_T = load_theta(run)
    rows = []
    if not trained.get("reused"):
        rows.append({"n_train": n_train, "processes": 1, "ratio": None, "method": "train", "refine": None,
                     "time_s": meta["training"]["time_s"], "retrain_time_s": None, "speedup_vs_retrain": None,
                     "peak_rss_bytes": trained["peak_rss_bytes"], "relative_residual": None,
                     "command_wall_s": trained["command_wall_s"], "passes": meta["training"]["passes"],
                     "history_time_s": meta["history"]["mini"]["time_s"],
                     "test_accuracy": meta["metrics"]["test_accuracy"]})

    evaluation = None
    for ratio in args.ratios:
        ids_file = work / f"ids-{ratio}.txt"
        write_ids_file(ids_file, random_forget_ids(n_train, ratio, seed=0))
        models: dict[tuple, Path] = {}
        results: dict[tuple, dict] = {}
        for processes in args.processes:
            jobs = [("retrain", None)] + [("mini", k) for k in args.refine]
            for method, refine in jobs:
                tag = f"{method}{'' if refine is None else f'-r{refine}'}-{ratio}-p{processes}"
                copy = fresh_run(run, work / "runs" / tag)
                out = work / "models" / tag
                extra = [] if method == "retrain" else ["--method", "mini", "--refine", str(refine)]
                command = "retrain" if method == "retrain" else "forget"
                result = run_cmd(tag, [command, str(copy), "--ids", str(ids_file), "--out", str(out),
                                       "--overwrite", "--json", *extra], processes)
                models[(method, refine, processes)] = out
                results[(method, refine, processes)] = result
                log(f"{tag}: {result['payload']['time_s']:.2f} s, peak RSS "
                    f"{[round(p['peak_rss_bytes'] / 2**30, 2) for p in result['per_process']]} GiB")
        theta_R = load_theta(models[("retrain", None, min(args.processes))])  # the gold standard
        for (method, refine, processes), result in results.items():
            theta = load_theta(models[(method, refine, processes)])
            one = load_theta(models[(method, refine, min(args.processes))])
            retrain_time = results[("retrain", None, processes)]["payload"]["time_s"]
            p = result["payload"]
            row = {"n_train": n_train, "processes": processes, "ratio": ratio, "method": method, "refine": refine,
                   "time_s": p["time_s"], "retrain_time_s": retrain_time,
                   "speedup_vs_retrain": None if method == "retrain" else retrain_time / p["time_s"],
                   "peak_rss_bytes": result["peak_rss_bytes"],
                   "peak_rss_bytes_per_process": [q["peak_rss_bytes"] for q in result["per_process"]],
                   "relative_residual": float(np.linalg.norm(theta - theta_R) / np.linalg.norm(theta_T - theta_R)),
                   "relative_difference_vs_one_process": float(np.linalg.norm(theta - one) / np.linalg.norm(one)),
                   "command_wall_s": result["command_wall_s"], "n_forget": p["n_forget"],
                   "passes_forget": p["passes_forget"], "passes_retained": p["passes_retained"]}
            for key in ("iterations", "contraction_factor", "certificate"):
                if key in p:
                    row[key] = p[key]
            if method == "retrain":
                row["solver"] = p["solver"]
            rows.append(row)
        if args.evaluate_ratio is not None and abs(ratio - args.evaluate_ratio) < 1e-12:
            p1 = min(args.processes)
            minis = [str(models[("mini", k, p1)]) for k in args.refine]
            evaluated = run_cmd(f"evaluate-{ratio}", ["evaluate", *minis, "--against",
                                                      str(models[("retrain", None, p1)]), "--run", str(run),
                                                      "--ids", str(ids_file), "--json"])
            evaluation = {"ratio": ratio, "n_train": n_train, "peak_rss_bytes": evaluated["peak_rss_bytes"],
                          "command_wall_s": evaluated["command_wall_s"],
                          "models": {f"mini refine={k}": evaluated["payload"]["models"][name]
                                     for k, name in zip(args.refine, evaluated["payload"]["models"])},
                          "retrained": evaluated["payload"]["retrained"]}
            log(f"evaluate at {ratio}: peak RSS {evaluated['peak_rss_bytes'] / 2**30:.2f} GiB")

    payload = {
        "benchmark": "scale", "started": started, "dataset": meta["dataset"]["spec"],
        "synthetic": bool(meta["dataset"].get("synthetic", args.higgs_csv is None)), "n_train": n_train,
        "n_features": meta["model"]["n_features"], "l2": args.l2, "threads_per_process": args.threads,
        "machine": {"cpus": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
                    "platform": platform.platform(), "python": platform.python_version()},
        "notes": ["peak_rss_bytes: /usr/bin/time -v maximum resident set size, the largest of the processes "
                  "(per process in peak_rss_bytes_per_process); the float32 memory map's pages count",
                  "relative_residual: ||w - w_R|| / ||w_T - w_R|| with w_R the one-process retrained model",
                  "time_s: the method's time inside the command; speedup_vs_retrain: retrain time_s / time_s "
                  "at the same number of processes",
                  "this machine has 2 cores shared with other jobs: 2 processes cannot show a real speedup "
                  "here, they show that the split is exact and halves the per-process data"],
        "rows": rows, "evaluation": evaluation,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", payload)
    atomic_write_bytes(out / "results.md", render_markdown(payload).encode())
    log(f"wrote {out / 'results.json'} and results.md")


def _gib(n) -> str:
    return "" if n is None else f"{n / 2**30:.2f}"


def _num(v, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def render_markdown(p: dict) -> str:
    lines = [f"# Scale: {p['dataset']} ({'synthetic' if p['synthetic'] else 'real'} data), "
             f"{p['n_train']:,} training rows x {p['n_features']}",
             "", f"l2 = {p['l2']:g}, {p['threads_per_process']} thread(s) per process, "
             f"{p['machine']['cpus']} CPUs (load average before: "
             f"{', '.join(f'{x:.1f}' for x in p['machine']['load_average_before'])}). Started {p['started']}.", "",
             "| processes | ratio | method | refine | time [s] | retrain [s] | speedup | peak RSS / process [GiB] "
             "| relative residual | vs 1 process | command wall [s] |",
             "|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in p["rows"]:
        per = r.get("peak_rss_bytes_per_process") or [r["peak_rss_bytes"]]
        lines.append(
            f"| {r['processes']} | {_num(r['ratio'], '.0%')} | {r['method']} | {_num(r['refine'], 'd')} "
            f"| {r['time_s']:.2f} | {_num(r['retrain_time_s'], '.2f')} | {_num(r['speedup_vs_retrain'], '.1f')} "
            f"| {' / '.join(_gib(x) for x in per)} | {_num(r['relative_residual'], '.2e')} "
            f"| {_num(r.get('relative_difference_vs_one_process'), '.1e')} | {r['command_wall_s']:.1f} |")
    if p.get("evaluation"):
        e = p["evaluation"]
        lines += ["", f"`evaluate` at {e['ratio']:.0%}: peak RSS {_gib(e['peak_rss_bytes'])} GiB, "
                      f"{e['command_wall_s']:.1f} s.", "",
                  "| model | test acc | gap to retrain (test) | forget acc | relative residual |",
                  "|---|---:|---:|---:|---:|"]
        for name, m in [*e["models"].items(), ("retrained", e["retrained"])]:
            lines.append(f"| {name} | {m['test_accuracy']:.5f} | {m['test_accuracy_gap']:+.5f} "
                         f"| {m['forget_accuracy']:.5f} | {m['relative_residual']:.2e} |")
    lines += ["", "Notes:", *[f"- {n}" for n in p["notes"]], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
