"""How the ``classblock`` profile's build choices precondition the Newton system of a deletion.

The model of ``large_model.py`` (100,000 seeded synthetic rows, 80,000 of them for training, x 1,000
features x 100 classes, p = 100,100, l2 1e-3) is trained once; a random 10 % is forgotten, and
preconditioned CG solves the Newton system ``H_R(w_T) D = -grad F_R(w_T)`` that the first certified
Newton step solves. The table gives ``||D_k - D|| / ||D||`` after k products (D from plain CG to 1e-10) for:

* ``classblock`` as the profile builds it (``build_mini_history``, what the budget stores);
* the same blocks without the shift term (P v = blockdiag(B_c + lambda I)^-1 v: no class mean);
* blocks from the same number of rows per class, evenly spaced instead of the heaviest;
* blocks from every row (``rows=None``);
* ``kron:k=28``, what the 1 GiB budget chose before ``classblock`` existed.

    PYTHONPATH=src .venv/bin/python benchmarks/classblock_study.py        # about 5 minutes on 2 cores

writes ``benchmarks/results/classblock_study.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from large_model import add_model_arguments, model_spec  # the same model (this script's folder is on sys.path)
from miniunlearn.data import load_dataset
from miniunlearn.history import build_mini_history
from miniunlearn.models import LogisticRegression, Objective, Rows
from miniunlearn.service.requests import random_forget_ids
from miniunlearn.training import TrainConfig, fit

RESULTS = Path(__file__).resolve().parent / "results"
PRODUCTS = (2, 4, 6, 8, 12)
F64 = torch.float64


def pcg(hvp, precondition, b: torch.Tensor, iterations: int, tol: float = 0.0) -> torch.Tensor:
    x, r = torch.zeros_like(b), b.clone()
    z = precondition(r)
    p, rz = z.clone(), float(r @ z)
    for _ in range(iterations):
        Hp = hvp(p)
        alpha = rz / float(p @ Hp)
        x += alpha * p
        r -= alpha * Hp
        if float(r.norm()) <= tol * float(b.norm()):
            break
        z = precondition(r)
        rz, rz_old = float(r @ z), rz
        p = z + (rz / rz_old) * p
    return x


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--block-rows", type=int, default=16384)
    parser.add_argument("--out", default=str(RESULTS / "classblock_study"))
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    spec = model_spec(args)
    ds = load_dataset(spec)
    C, d1, l2 = ds.n_classes, ds.n_features + 1, args.l2
    model = LogisticRegression(ds.n_features, C)
    objective = Objective(model, Rows(ds.X_train, ds.y_train), l2)
    theta, _, _ = fit(model, objective.rows, TrainConfig(l2))

    # the Newton system of the deletion, written here in dense torch (independent of the package's passes)
    X = torch.from_numpy(np.asarray(ds.X_train, dtype=np.float64))
    Xa = torch.cat([X, torch.ones(len(X), 1, dtype=F64)], dim=1)
    y = torch.from_numpy(np.asarray(ds.y_train)).long()
    forget = random_forget_ids(len(X), args.ratio, 1000)
    keep = torch.ones(len(X), dtype=torch.bool)
    keep[torch.from_numpy(forget)] = False
    XR, yR = Xa[keep], y[keep]
    W = theta.view(C, d1)
    P = torch.softmax(XR @ W.T, dim=1)
    g = ((P - torch.nn.functional.one_hot(yR, C).to(F64)).T @ XR / len(XR) + l2 * W).reshape(-1)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        Z = XR @ v.view(C, d1).T
        M = P * Z - P * (P * Z).sum(dim=1, keepdim=True)
        return (M.T @ XR / len(XR)).reshape(-1) + l2 * v

    exact = pcg(hvp, lambda v: v, -g, 400, tol=1e-10)

    def blocks_from(chosen) -> torch.Tensor:
        """(B_c + l2 I)^-1 from the rows ``chosen(c)`` of each class, scaled to the trace of all rows'."""
        PD = torch.softmax(Xa @ W.T, dim=1)
        weights = (PD * (1 - PD)).float()
        norms = Xa.square().sum(dim=1).float()
        Xf = Xa.float()
        out = torch.empty(C, d1, d1, dtype=F64)
        for c in range(C):
            rows = chosen(weights[:, c])
            Z = Xf[rows] * weights[rows, c, None].sqrt()
            scale = float(weights[:, c] @ norms) / float(weights[rows, c] @ norms[rows])
            block = (Z.T @ Z).to(F64) * scale / len(Xa) + l2 * torch.eye(d1, dtype=F64)
            out[c] = torch.cholesky_inverse(torch.linalg.cholesky(block))
        return out

    def with_shift(blocks):
        def apply(v):
            V = v.view(C, d1)
            shared = V.mean(dim=0, keepdim=True)
            out = torch.bmm(blocks, (V - shared).unsqueeze(2)).squeeze(2)
            return (out - out.mean(dim=0, keepdim=True) + shared / l2).reshape(-1)
        return apply

    def without_shift(blocks):
        return lambda v: torch.bmm(blocks, v.view(C, d1, 1)).reshape(-1)

    def profile(spec):
        history = build_mini_history(objective, theta, spec, "study")
        return history.preconditioner(objective.penalty), history.profile_bytes

    stride = max(1, len(Xa) // args.block_rows)
    heaviest = blocks_from(lambda w: w.topk(args.block_rows).indices)
    variants = []
    start = time.perf_counter()
    built, nbytes = profile(f"classblock:rows={args.block_rows}")
    variants.append((f"classblock (rows={args.block_rows}, as stored)", built, nbytes, time.perf_counter() - start))
    variants.append(("the same blocks without the shift term", without_shift(heaviest), None, None))
    variants.append((f"{len(range(0, len(Xa), stride))} evenly spaced rows per block",
                     with_shift(blocks_from(lambda w: torch.arange(0, len(w), stride))), None, None))
    variants.append(("every row per block", with_shift(blocks_from(lambda w: torch.arange(len(w)))), None, None))
    start = time.perf_counter()
    kron, kron_bytes = profile("kron:k=28")
    variants.append(("kron:k=28", kron, kron_bytes, time.perf_counter() - start))

    rows = []
    for name, apply, nbytes, build_s in variants:
        errors = {k: float((pcg(hvp, apply, -g, k) - exact).norm() / exact.norm()) for k in PRODUCTS}
        rows.append({"preconditioner": name, "bytes": nbytes, "build_s": build_s, "errors": errors})
        print(name, " ".join(f"{k}:{e:.1e}" for k, e in errors.items()), flush=True)
    payload = {"spec": spec, "l2": l2, "ratio": args.ratio, "n_params": model.n_params, "rows": rows,
               "load_average_before": load_before, "load_average_after": os.getloadavg(),
               "threads": torch.get_num_threads()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [f"# Preconditioning a deletion's Newton system: {spec}, l2 {l2:g}, {args.ratio:.0%} forgotten", "",
             "Relative error ||D_k - D|| / ||D|| of preconditioned CG after k Hessian-vector products on "
             "H_R(w_T) D = -grad F_R(w_T). Generated by `benchmarks/classblock_study.py`; load average before "
             f"{load_before[0]:.2f}, after {payload['load_average_after'][0]:.2f}.", "",
             "| preconditioner | stored bytes | build (s) | " + " | ".join(f"k = {k}" for k in PRODUCTS) + " |",
             "|---|---:|---:|" + "---:|" * len(PRODUCTS)]
    for r in rows:
        size = "" if r["bytes"] is None else f"{r['bytes'] / 2**20:.1f} MiB"
        build = "" if r["build_s"] is None else f"{r['build_s']:.1f}"
        lines.append(f"| {r['preconditioner']} | {size} | {build} | "
                     + " | ".join(f"{r['errors'][k]:.1e}" for k in PRODUCTS) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
