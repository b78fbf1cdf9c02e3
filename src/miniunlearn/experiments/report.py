"""The benchmark report: Markdown tables (medians over seeds) and PNG plots against the ratio."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from miniunlearn.core.storage import atomic_write, atomic_write_bytes

PLOTS = (("relative_residual", "relative residual ||w - w_R|| / ||w_T - w_R||", True),
         ("speedup_vs_retrain", "speedup over retraining (same run)", True),
         ("exactness_auc", "exactness-test AUC (fixed rows; 0.5 = bit-exact, not a privacy figure)", False))


def _median(values):
    values = [v for v in values if v is not None and v == v]
    return statistics.median(values) if values else None


def _fmt(value, kind: str = "g") -> str:
    if value is None:
        return "–"
    if kind == "pct":
        return f"{100 * value:.2f}"
    if kind == "sci":
        return f"{value:.1e}"
    if kind == "bytes":
        for unit in ("B", "KiB", "MiB", "GiB"):
            if value < 1024 or unit == "GiB":
                return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
            value /= 1024
    if kind == "x":
        return f"{value:.1f}×"
    if kind == "s":
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return f"{value:.3f}"


def _certified_residual(row: dict) -> float | None:
    """The certificate over ||w_T - w_R||: a proven upper bound on the row's residual."""
    certificate, distance, residual = row.get("certificate"), row.get("l2_to_retrain"), row.get("relative_residual")
    if certificate is None or not distance or not residual:
        return None
    return certificate * residual / distance  # residual / distance = 1 / ||w_T - w_R||


def summarize(rows: list[dict]) -> dict:
    """``{dataset: {(method, ratio): {key: median over seeds}}}`` plus the seeds seen."""
    groups: dict = defaultdict(lambda: defaultdict(list))
    for row in rows:
        row = {**row, "certified_residual": _certified_residual(row)}
        groups[row["dataset"]][(row["method"] if row.get("refine") is None else f"{row['method']} (refine {row['refine']})",
                                row["ratio"])].append(row)
    summary = {}
    for dataset, cells in groups.items():
        summary[dataset] = {}
        for key, members in cells.items():
            merged = {k: _median([m.get(k) for m in members]) for k in members[0] if isinstance(members[0].get(k), (int, float)) or members[0].get(k) is None}
            merged["seeds"] = len(members)
            merged["synthetic"] = members[0].get("synthetic")
            merged["n_train"] = members[0].get("n_train")
            summary[dataset][key] = merged
    return summary


TABLE = [("residual", "relative_residual", "sci"), ("certified", "certified_residual", "sci"), ("test acc %", "test_acc", "pct"),
         ("retrain test acc %", "test_acc_retrain", "pct"), ("forget acc %", "forget_acc", "pct"),
         ("time s", "time_s", "s"), ("retrain s", "retrain_time_s", "s"), ("speedup", "speedup_vs_retrain", "x"),
         ("passes R", "passes_retained", "g"), ("history", "history_bytes", "bytes"),
         ("loss-MIA AUC", "mia_loss_auc", "g"), ("(retrain)", "mia_loss_auc_retrain", "g"),
         ("MIA-eff.", "mia_efficacy", "g"), ("(retrain)", "mia_efficacy_retrain", "g"),
         ("exactness AUC", "exactness_auc", "g"), ("(retrain)", "exactness_auc_retrain", "g"),
         ("exactness TPR@1%FPR", "exactness_tpr_at_1pct_fpr", "g")]


def markdown(rows: list[dict], title: str, command: str, plots: dict[str, list[str]],
             extra: list[str] = ()) -> str:
    summary = summarize(rows)
    lines = [f"# {title}", "", f"Regenerate with `{command}`.", "",
             "Medians over seeds. Residual = ||w − w_R|| / ||w_T − w_R|| against retraining with the same "
             "configuration (converged methods: the retrained optimum; DeltaGrad: the retrained SGD trajectory). "
             "Certified = the method's certificate (a proven bound on ||w − w_R||) over ||w_T − w_R||, so the "
             "residual never exceeds it (certified methods only). Passes R = passes over the kept rows. "
             "Speedup = retraining time / method time, both measured in the same process with the same threads. "
             "Attack columns show the unlearned model next to the retrained model under the same attack. "
             "The exactness columns are the fixed-rows LiRA of miniunlearn.experiments.exactness: 0.5 means the "
             "method reproduces retraining bit for bit, anything above means it does not, however small the "
             "difference -- a test of exactness, not a privacy figure (population U-LiRA: "
             "benchmarks/results/privacy/).", ""]
    for dataset, cells in summary.items():
        first = next(iter(cells.values()))
        tag = " (synthetic)" if first.get("synthetic") else ""
        lines += [f"## {dataset}{tag}, n_train = {first['n_train']}", ""]
        loads = [r["load_1min"] for r in rows if r["dataset"] == dataset and r.get("load_1min") is not None]
        if loads:
            lines += [f"1-minute load average while these rows were measured: {min(loads):.2f} to {max(loads):.2f}.", ""]
        used = [(h, k, f) for h, k, f in TABLE if any(c.get(k) is not None for c in cells.values())]
        lines.append("| method | ratio | " + " | ".join(h for h, _, _ in used) + " |")
        lines.append("|---|---|" + "---|" * len(used))
        for (method, ratio), cell in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            lines.append(f"| {method} | {ratio:.0%} | " + " | ".join(_fmt(cell.get(k), f) for _, k, f in used) + " |")
        lines.append("")
        for png in plots.get(dataset, []):
            lines.append(f"![{Path(png).stem}]({Path(png).name})")
        lines.append("")
    lines += list(extra)
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out: Path) -> dict[str, list[str]]:
    """One PNG per dataset and metric: the metric against the ratio, one line per method."""
    import matplotlib  # imported here: matplotlib takes ~0.7 s to load and only plotting needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(rows)
    written: dict[str, list[str]] = {}
    for dataset, cells in summary.items():
        methods = sorted({m for m, _ in cells})
        for key, label, log in PLOTS:
            series = {m: sorted((r, c[key]) for (mm, r), c in cells.items() if mm == m and c.get(key) is not None)
                      for m in methods}
            series = {m: s for m, s in series.items() if s and not (key == "speedup_vs_retrain" and m == "retrain")}
            if not series:
                continue
            fig, ax = plt.subplots(figsize=(6, 4))
            for method, points in series.items():
                ax.plot([100 * r for r, _ in points], [v for _, v in points], marker="o", label=method)
            ax.set_xlabel("forgotten share of the training data (%)")
            ax.set_ylabel(label)
            if log and all(v > 0 for s in series.values() for _, v in s):
                ax.set_yscale("log")
            if key == "exactness_auc":
                ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
            ax.set_title(dataset)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = out / f"{_slug(dataset)}_{key}.png"
            atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
            plt.close(fig)
            written.setdefault(dataset, []).append(str(path))
    return written


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:60].strip("-")


def write_report(rows: list[dict], out: str | Path, title: str, command: str, extra: list[str] = ()) -> Path:
    """``out/report.md`` and its plots; ``extra`` Markdown lines close the report."""
    out = Path(out)
    plots = plot(rows, out)
    path = out / "report.md"
    atomic_write_bytes(path, markdown(rows, title, command, plots, extra).encode())
    return path
