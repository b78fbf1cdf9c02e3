"""Population U-LiRA: how well can an attacker tell that a forgotten example was ever trained on?

U-LiRA as Hayes, Shumailov, Triantafillou, Khalifa & Papernot define it ("Inexact Unlearning
Needs More Careful Evaluations to Avoid a False Sense of Privacy", 2024), after LiRA (Carlini,
Chien, Nasr, Song, Terzis & Tramer, IEEE S&P 2022). Unlike the exactness test of
:mod:`miniunlearn.experiments.exactness`, every shadow trains on an independent random half of
the population, so the shadows vary the way real training sets do and the attack measures
privacy, not bit-exactness. Retraining is measured through the same pipeline.

Protocol (the exact one; docs/evaluation.md explains it)
--------------------------------------------------------
1. **Population** P = the dataset's training rows, then its test rows (ids ``0..n_train-1`` and
   ``n_train..n_train+n_test-1``). **Targets**: T examples drawn from P (seeded).
2. **Shadows** k = 0..N-1 (N even) in complementary pairs: pair p draws a random half of the
   targets, shadow 2p holds them and shadow 2p+1 the others, so every target is in exactly N/2
   shadows. Every shadow also holds an independent random half of the non-target rows,
   ``floor((|P| - T) / 2)`` of them: its training set D_k varies with k beyond the targets.
3. Each shadow is **trained** with the run's exact configuration (mode, lambda, solver and
   tolerance or SGD schedule, history profile).
4. For every forget ratio rho, shadow k **unlearns** ``U_k`` = its in-targets plus random further
   rows of its own non-target rows, ``|U_k| = round(rho |D_k|)``, with every method under test and
   its options (T is shrunk until the in-targets alone fit in ``U_k``). ``original`` is the
   trained shadow itself (classic LiRA: no unlearning).
5. **Scores**: ``phi = log(p_y / (1 - p_y))`` of every target in every shadow, per method. A
   target held by shadow k was *trained on and then unlearned*; one not held was *never seen*.
6. **Leave-one-out targets**: every shadow is also a target model. Target model k is scored with
   per-example Gaussians fitted on the shadows outside its complementary pair (N - 2 of them, so
   every target has as many in- as out-samples in the fit; variances floored at
   ``relative_floor`` times their mean over targets), by the online likelihood ratio
   ``log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)``; its positives are its
   in-targets, its negatives its out-targets.
7. **Metrics**: the N target models' scores are pooled into one ROC: AUC, TPR at 1 % and 0.1 %
   FPR; 95 % intervals by a percentile bootstrap over the targets, and every method's AUC minus
   retraining's with a paired interval (the same resampled targets for both).

The same shadows serve every method: each is trained once and unlearned with every method at
every ratio. Shadows run in worker processes; with ``cache_dir`` each finished shadow's scores
are kept (``shadow_<k>.npz`` + ``.json``, keyed by a digest of everything that determines them),
so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from miniunlearn.core.errors import InputError
from miniunlearn.core.storage import atomic_write_json, canonical_json, read_json
from miniunlearn.evaluation.lira import VARIANCES, bootstrap_roc_metrics, leave_one_out_scores, logit_confidence
from miniunlearn.experiments.exactness import check_shadow_count
from miniunlearn.experiments.plots import plot_roc
from miniunlearn.experiments.shadows import (
    TRAINED,
    ShadowMethod,
    check_methods,
    run_jobs,
    save_arrays,
    shadow_training_kwargs,
    train_shadow,
    unlearn_and_score,
    worker_dataset,
)

__all__ = ["DEFAULT_SHADOWS", "DEFAULT_TARGETS", "MIN_SHADOWS", "DEFAULT_RELATIVE_FLOOR", "PopulationPlan",
           "make_population_plan", "population_rows", "run_population_shadows", "attack_scores", "population_ulira",
           "ratio_key"]

DEFAULT_SHADOWS = 16
DEFAULT_TARGETS = 500
MIN_SHADOWS = 6               # leaving a pair out keeps >= 2 in- and 2 out-samples per target
DEFAULT_RELATIVE_FLOOR = 0.1  # per-example variances >= 0.1 x their mean over the targets


def ratio_key(ratio: float) -> str:
    """The key of a forget ratio in reports and caches: ``0.1`` -> ``"0.1"``."""
    return f"{float(ratio):g}"


def population_rows(dataset, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features (float64) and labels of population rows: training rows first, then test rows."""
    ids = np.asarray(ids, dtype=np.int64)
    train = ids < dataset.n_train
    X = np.empty((len(ids), dataset.n_features), dtype=np.float64)
    y = np.empty(len(ids), dtype=np.int64)
    X[train], y[train] = dataset.X_train[ids[train]], dataset.y_train[ids[train]]
    X[~train], y[~train] = dataset.X_test[ids[~train] - dataset.n_train], dataset.y_test[ids[~train] - dataset.n_train]
    return X, y


# --------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class PopulationPlan:
    """Which population rows every shadow holds and forgets (module docstring, steps 1-4)."""

    n_train: int
    n_test: int
    targets: np.ndarray     # (T,) population ids
    member: np.ndarray      # (N, T) bool: target t is in shadow k's training set
    others: np.ndarray      # (N, H) sorted population ids of shadow k's non-target rows
    ratios: tuple[float, ...]
    seed: int
    requested_targets: int

    @property
    def n_shadows(self) -> int:
        return int(self.member.shape[0])

    @property
    def n_targets(self) -> int:
        return int(self.member.shape[1])

    def shadow_rows(self, k: int) -> np.ndarray:
        """Shadow k's training rows (population ids, sorted)."""
        return np.sort(np.concatenate([self.targets[self.member[k]], self.others[k]]))

    def forget_positions(self, k: int, ratio: float) -> np.ndarray:
        """Positions in :meth:`shadow_rows` that shadow k unlearns at ``ratio``: its in-targets and
        seeded random further rows, ``round(ratio * |D_k|)`` in all."""
        rows = self.shadow_rows(k)
        held = self.targets[self.member[k]]
        extra = _forget_size(len(rows), ratio) - len(held)
        rng = np.random.default_rng([self.seed, 23, k, int(round(ratio * 1e9))])
        chosen = np.union1d(held, rng.choice(self.others[k], extra, replace=False))
        return np.searchsorted(rows, chosen)

    def describe(self) -> dict:
        return {"protocol": "population (Hayes et al. 2024)", "n_shadows": self.n_shadows,
                "n_targets": self.n_targets, "n_targets_requested": self.requested_targets,
                "population": self.n_train + self.n_test, "shadow_rows": int(self.others.shape[1])
                + self.n_targets // 2, "in_per_target": self.n_shadows // 2,
                "ratios": [float(r) for r in self.ratios], "seed": self.seed}


def _forget_size(n_rows: int, ratio: float) -> int:
    return int(round(ratio * n_rows))


def _fits(n_targets: int, population: int, ratios) -> bool:
    """Do the in-targets of every shadow fit in its forget set at every ratio?"""
    half = (population - n_targets) // 2
    if half < 1:
        return False
    for held in {n_targets // 2, (n_targets + 1) // 2}:
        if any(held > _forget_size(held + half, ratio) for ratio in ratios):
            return False
    return True


def make_population_plan(n_train: int, n_test: int, ratios, n_shadows: int = DEFAULT_SHADOWS,
                         n_targets: int = DEFAULT_TARGETS, seed: int = 0) -> PopulationPlan:
    """Draw the targets, their balanced membership and every shadow's non-target half (seeded)."""
    check_shadow_count(n_shadows, minimum=MIN_SHADOWS)
    ratios = tuple(float(r) for r in ratios)
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise InputError(f"forget ratios must be fractions in (0, 1), got {list(ratios)}")
    if isinstance(n_targets, bool) or int(n_targets) < 2:
        raise InputError(f"population U-LiRA needs at least 2 targets, got {n_targets}")
    population = int(n_train) + int(n_test)
    count = min(int(n_targets), population - 2)
    while count >= 2 and not _fits(count, population, ratios):
        count -= 1
    if count < 2:
        raise InputError(f"a population of {population} rows is too small for population U-LiRA at forget ratio "
                         f"{min(ratios):g}")
    rng = np.random.default_rng([int(seed), 19])
    targets = np.sort(rng.choice(population, count, replace=False))
    member = np.zeros((int(n_shadows), count), dtype=bool)
    for pair in range(int(n_shadows) // 2):
        half = rng.permutation(count) < count // 2 + (pair % 2) * (count % 2)  # alternate the odd target out
        member[2 * pair], member[2 * pair + 1] = half, ~half
    rest = np.setdiff1d(np.arange(population), targets)
    others = np.stack([np.sort(rng.choice(rest, (population - count) // 2, replace=False))
                       for _ in range(int(n_shadows))])
    return PopulationPlan(int(n_train), int(n_test), targets, member, others, ratios, int(seed), int(n_targets))


# ----------------------------------------------------------------------------------- shadows
def _population_job(job: dict) -> dict:
    """Train shadow ``job["k"]`` on its rows, unlearn at every ratio with every method, score the targets."""
    population = worker_dataset(job["spec"], job["fingerprint"], job.get("run_dir"))
    X, y = population_rows(population, job["rows"])
    X_t, y_t = population_rows(population, job["targets"])
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="miniunlearn-shadow-", dir=job.get("tmp_dir")) as tmp:
        run = train_shadow(population, X, y, f"population-shadow{job['k']}", job["train"], Path(tmp) / "run", times)
        phi = {TRAINED: logit_confidence(run.model, run.theta(), X_t, y_t)}
        for key, positions in job["forget"].items():
            scored = unlearn_and_score(run, positions, job["methods"], X_t, y_t, times, suffix=f"@{key}")
            phi.update({f"{label}@{key}": values for label, values in scored.items()})
    return {"k": job["k"], "phi": phi, "times": times, "digest": job["digest"]}


def _job_digest(job: dict) -> str:
    """SHA-256 over everything that determines a shadow's scores."""
    digest = hashlib.sha256()
    settings = {k: job[k] for k in ("spec", "fingerprint", "train", "methods", "k")}
    digest.update(canonical_json(settings).encode())
    for array in (job["rows"], job["targets"], *[job["forget"][key] for key in sorted(job["forget"])]):
        digest.update(np.ascontiguousarray(array, dtype="<i8").tobytes())
    digest.update(",".join(sorted(job["forget"])).encode())
    return digest.hexdigest()


def _cached(cache_dir: Path | None, job: dict) -> dict | None:
    if cache_dir is None:
        return None
    meta_path, arrays_path = cache_dir / f"shadow_{job['k']:03d}.json", cache_dir / f"shadow_{job['k']:03d}.npz"
    if not (meta_path.is_file() and arrays_path.is_file()):
        return None
    meta = read_json(meta_path, "shadow cache")
    if meta.get("digest") != job["digest"]:
        return None
    with np.load(arrays_path, allow_pickle=False) as arrays:
        phi = {key: arrays[f"phi_{i}"] for i, key in enumerate(meta["keys"])}
    return {"k": job["k"], "phi": phi, "times": meta["times"], "digest": job["digest"]}


def _store(cache_dir: Path | None, result: dict) -> None:
    """Keep a finished shadow: arrays first, then the JSON that names them (it marks the entry complete)."""
    if cache_dir is None:
        return
    keys = sorted(result["phi"])
    save_arrays(cache_dir / f"shadow_{result['k']:03d}.npz", {f"phi_{i}": result["phi"][k] for i, k in enumerate(keys)})
    atomic_write_json(cache_dir / f"shadow_{result['k']:03d}.json",
                      {"digest": result["digest"], "keys": keys, "times": result["times"]})


@dataclass
class PopulationScores:
    """phi of the T targets in every shadow: ``phi[ratio_key][label]`` is (N, T)."""

    plan: PopulationPlan
    phi: dict[str, dict[str, np.ndarray]]
    times: list[dict]
    wall_s: float
    cached: int


def run_population_shadows(run, plan: PopulationPlan, methods: list[ShadowMethod], *, workers: int = 1,
                           threads: int | None = None, tmp_dir: str | Path | None = None,
                           cache_dir: str | Path | None = None, progress=None) -> PopulationScores:
    """Train every shadow of ``plan`` with ``run``'s configuration and unlearn it with ``methods``
    at every ratio; ``cache_dir`` keeps finished shadows and reuses them."""
    check_methods(methods, run)
    dataset = run.dataset
    if (dataset.n_train, dataset.n_test) != (plan.n_train, plan.n_test):
        raise InputError(f"the plan is for {plan.n_train} + {plan.n_test} rows, the run's data has "
                         f"{dataset.n_train} + {dataset.n_test}")
    cache = None if cache_dir is None else Path(cache_dir)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    base_job = {"spec": run.meta["dataset"]["spec"], "fingerprint": run.fingerprint,
                "run_dir": str(run.path), "targets": plan.targets,
                "train": shadow_training_kwargs(run, methods), "tmp_dir": None if tmp_dir is None else str(tmp_dir),
                "methods": [[m.label, m.method, dict(m.options)] for m in methods]}
    results: dict[int, dict] = {}
    pending = []
    for k in range(plan.n_shadows):
        job = {**base_job, "k": k, "rows": plan.shadow_rows(k),
               "forget": {ratio_key(r): plan.forget_positions(k, r) for r in plan.ratios}}
        job["digest"] = _job_digest(job)
        found = _cached(cache, job)
        if found is None:
            pending.append(job)
        else:
            results[k] = found
            if progress:
                progress(1)
    start = time.perf_counter()
    for result in run_jobs(_population_job, pending, dataset, workers=workers, threads=threads, progress=progress,
                           on_result=lambda result: _store(cache, result)):
        results[result["k"]] = result
    wall = time.perf_counter() - start
    ordered = [results[k] for k in range(plan.n_shadows)]
    phi: dict[str, dict[str, np.ndarray]] = {}
    trained = np.stack([r["phi"][TRAINED] for r in ordered])
    for r in plan.ratios:
        key = ratio_key(r)
        phi[key] = {m.label: trained if m.method is None else np.stack([o["phi"][f"{m.label}@{key}"] for o in ordered])
                    for m in methods}
    return PopulationScores(plan, phi, [r["times"] for r in ordered], wall, plan.n_shadows - len(pending))


# ---------------------------------------------------------------------------------------- the attack
def attack_scores(phi: np.ndarray, member: np.ndarray, *, variance: str = "per_example",
                  relative_floor: float = DEFAULT_RELATIVE_FLOOR) -> np.ndarray:
    """Step 6: (N, T) online LiRA scores, target model k against the shadows outside its pair."""
    groups = np.arange(member.shape[0]) // 2
    return leave_one_out_scores(phi, member, variance, relative_floor, groups=groups)



def population_ulira(run, ratios, methods: list[ShadowMethod], *, n_shadows: int = DEFAULT_SHADOWS,
                     n_targets: int = DEFAULT_TARGETS, variance: str = "per_example",
                     relative_floor: float = DEFAULT_RELATIVE_FLOOR, replicates: int = 1000, seed: int = 0,
                     workers: int = 1, threads: int | None = None, tmp_dir: str | Path | None = None,
                     cache_dir: str | Path | None = None, out_dir: str | Path | None = None, confidence: float = 0.95,
                     reference: str | None = "retrain", title: str = "", progress=None) -> dict:
    """The population U-LiRA of every method at every ratio (module docstring); a JSON-ready dict.

    ``methods`` should include retraining (labelled ``reference``: every other method's AUC is
    also given minus its AUC, with a paired interval) and ``ShadowMethod("original", None)``: the
    first is what "cannot tell" looks like here, the second the attack's power before
    unlearning. With ``out_dir``, writes ``ulira_r<ratio>.png`` (pooled log-log ROC of every
    method); ``title`` heads the plots.
    """
    if variance not in VARIANCES:
        raise InputError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
    if not 0 <= relative_floor <= 1:
        raise InputError(f"the relative variance floor must lie in [0, 1], got {relative_floor}")
    check_methods(methods, run)
    if reference is not None and reference not in {m.label for m in methods}:
        raise InputError(f"the reference {reference!r} is not among the shadow methods")
    dataset = run.dataset
    plan = make_population_plan(dataset.n_train, dataset.n_test, ratios, n_shadows, n_targets, seed)
    shadows = run_population_shadows(run, plan, methods, workers=workers, threads=threads, tmp_dir=tmp_dir,
                                     cache_dir=cache_dir, progress=progress)
    by_ratio = {}
    for key, per_label in shadows.phi.items():
        attacks, curves = {}, {}
        scores = {m.label: attack_scores(per_label[m.label], plan.member, variance=variance,
                                         relative_floor=relative_floor) for m in methods}
        for m in methods:
            against = None if reference is None or m.label == reference else scores[reference]
            metrics = bootstrap_roc_metrics(scores[m.label], plan.member, against, confidence=confidence,
                                            replicates=replicates, seed=seed)
            curves[f"{m.label} (AUC {metrics['auc']:.3f})"] = metrics.pop("_roc")
            attacks[m.label] = {"method": m.method, "options": dict(m.options), **metrics}
        entry = {"attacks": attacks}
        if out_dir is not None:
            png = Path(out_dir) / f"ulira_r{key}.png"
            negatives = next(iter(attacks.values()))["n_negative"]
            heading = f"population U-LiRA, forget {float(key):.0%}" + (f"\n{title}" if title else "")
            plot_roc(curves, png, f"{heading}\n{plan.n_shadows} leave-pair-out target models x {plan.n_targets} targets",
                     negatives)
            entry["roc_png"] = str(png)
        by_ratio[key] = entry
    per_shadow = {k: float(np.mean([t[k] for t in shadows.times if k in t])) for k in shadows.times[0]}
    return {"protocol": {**plan.describe(), "variance": variance, "relative_variance_floor": relative_floor,
                         "score": "online LiRA on phi = log(p_y / (1 - p_y))",
                         "interval": f"{confidence:.0%} percentile bootstrap over the targets, {replicates} "
                                     "replicates; differences to the reference paired",
                         "reference": reference, "target_models": "leave-pair-out: each shadow scored against the "
                                                                  "shadows outside its complementary pair",
                         "shadow_training": shadow_training_kwargs(run, methods)},
            "ratios": by_ratio,
            "time": {"shadows_wall_s": shadows.wall_s, "shadows_from_cache": shadows.cached,
                     "mean_per_shadow_s": per_shadow, "workers": int(workers)}}

