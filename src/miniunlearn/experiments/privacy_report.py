"""The privacy benchmark's Markdown report (``report.md``), written from its ``results.json``
(whatever parts :func:`~miniunlearn.experiments.privacy.run_privacy` has finished so far)."""

from __future__ import annotations

from pathlib import Path

from miniunlearn.core.storage import atomic_write_bytes
from miniunlearn.experiments.privacy_methods import MINI_TOL_OPTIONS, Family, families
from miniunlearn.experiments.ulira import ratio_key

__all__ = ["REPORT_MD", "ulira_summary", "write_privacy_report"]

REPORT_MD = "report.md"


def _ci(value, ci, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _signed_ci(value, ci) -> str:
    return f"{value:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _stand_in_note() -> str:
    stand_ins = {k: v for k, v in MINI_TOL_OPTIONS.items() if "tol" not in v}
    if not stand_ins:
        return ""
    return ("*Stand-in:* Mini-Unlearning's `--tol` option is not in this code yet; "
            + ", ".join(f"`mini tol {k}` is `mini --refine {v['refine']}`" for k, v in stand_ins.items())
            + " (`MINI_TOL_OPTIONS` in `miniunlearn.experiments.privacy_methods`).")


def _ulira_table(part: dict, family: Family, ratios: list[str]) -> list[str]:
    proto = part["protocol"]
    lines = [f"{proto['n_shadows']} shadows of about {proto['shadow_rows']} rows (population {proto['population']}), "
             f"{proto['n_targets']} targets, each shadow a leave-pair-out target model; "
             f"intervals: {proto['interval']}.", ""]
    head = "| method | " + " | ".join(f"AUC {r} [95% CI] | AUC − retrain {r} | TPR@1% FPR {r} | TPR@0.1% FPR {r}"
                                       for r in ratios) + " |"
    lines += [head, "|---|" + "---|---|---|---|" * len(ratios)]
    for label in [*family.ulira, family.original]:
        cells = []
        for r in ratios:
            a = part["ratios"][r]["attacks"][label]
            difference = _signed_ci(a["auc_minus_reference"], a["auc_minus_reference_ci"]) \
                if "auc_minus_reference" in a else "(reference)"
            cells += [_ci(a["auc"], a["auc_ci"]), difference, _ci(a["tpr_at_fpr"]["0.01"], a["tpr_at_fpr_ci"]["0.01"]),
                      _ci(a["tpr_at_fpr"]["0.001"], a["tpr_at_fpr_ci"]["0.001"], 4)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    for r in ratios:
        before = part["ratios"][r]["attacks"][family.original]
        low, high = before.get("auc_minus_reference_ci", [0.0, 0.0])
        if low <= 0.0 <= high:
            lines.append(f"At {r}: the original model itself is not distinguishable from retraining "
                         f"({before['auc_minus_reference']:+.3f} [{low:+.3f}, {high:+.3f}]): on this data the attack "
                         "cannot detect membership even before unlearning: matching retraining shows little here, and a "
                         "method above retraining leaks through its own changes.")
    lines.append("")
    for r in ratios:
        png = part["ratios"][r].get("roc_png")
        if png:
            lines.append(f"![population U-LiRA, {family.mode}, forget {r}]({png})")
    return lines + [""]


def _models_table(entry: dict, family_name: str, family: Family, ratios: list[str]) -> list[str]:
    head = "| method | " + " | ".join(f"test acc {r} | residual {r} | certificate {r} | exactness AUC {r} | "
                                       f"MIA-efficacy {r} [95% CI]" for r in ratios) + " |"
    lines = [head, "|---|" + "---|---|---|---|---|" * len(ratios)]
    for label in [m.label for m in family.models] + [family.original]:
        cells = []
        for r in ratios:
            models = entry["parts"].get(f"models/{family_name}/{r}", {}).get("models", {})
            exactness = entry["parts"].get(f"exactness/{family_name}/{r}", {}).get("methods", {})
            m = models.get(label)
            if m is None:
                cells += ["–"] * 5
                continue
            e = exactness.get(label)
            cert = m["certificate"]
            cells += [f"{100 * m['test_accuracy']:.2f} %", f"{m['relative_residual']:.1e}",
                      "–" if cert is None else f"{cert:.2e}", "–" if e is None else _ci(e["auc"], e["auc_ci"]),
                      _ci(m["mia_efficacy"], m["mia_efficacy_ci"])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def _utility_table(entry: dict, family: Family, ratios: list[str], epsilons: list[float], delta: float) -> list[str]:
    lines = [f"Test accuracy of certified releases, δ = {delta:g}: mean ± sd over the noise draws (min–max); "
             "beside it retraining released with the same σ.", ""]
    head = "| method | ε | " + " | ".join(f"σ {r} | release test acc {r} | retrain release {r}" for r in ratios) + " |"
    lines += [head, "|---|---|" + "---|---|---|" * len(ratios)]
    for label in family.utility:
        for epsilon in epsilons:
            cells = []
            for r in ratios:
                utility = entry["parts"].get(f"models/converged/{r}", {}).get("utility", {}).get(label)
                row = None if utility is None else utility["by_epsilon"].get(f"{epsilon:g}")
                if row is None:
                    cells += ["–", "no certificate" if utility is not None else "–", "–"]
                    continue
                acc, ref = row["test_accuracy"], row["retrain_test_accuracy"]
                cells += [f"{row['sigma']:.3g}",
                          f"{100 * acc['mean']:.2f} ± {100 * acc['sd']:.2f} ({100 * acc['min']:.2f}–{100 * acc['max']:.2f})",
                          f"{100 * ref['mean']:.2f} ± {100 * ref['sd']:.2f}"]
            lines.append(f"| {label} | {epsilon:g} | " + " | ".join(cells) + " |")
    exact = []
    for label in family.utility:
        for r in ratios:
            utility = entry["parts"].get(f"models/converged/{r}", {}).get("utility", {}).get(label)
            if utility and "certificate" in utility:
                exact.append(f"{label} at {r}: certificate {utility['certificate']:.3e}, exact model "
                             f"{100 * utility['exact_test_accuracy']:.2f} % (retrain "
                             f"{100 * utility['retrain_exact_test_accuracy']:.2f} %)")
            elif utility:
                exact.append(f"{label} at {r}: {utility['note']}")
    return lines + [""] + [f"- {line}" for line in exact] + [""]


def ulira_summary(results: dict, source: str) -> list[str]:
    """Markdown lines: per dataset and family of the privacy results, each method's population U-LiRA
    AUC and its paired difference to retraining, per ratio -- the summary other reports quote."""
    lines = ["## Population U-LiRA", "", f"From `{source}` (its report has the intervals of the AUCs, the TPR at low "
             "FPR and the protocol). An interval of the difference that contains 0: the attack cannot tell the "
             "method from retraining.", ""]
    for label, entry in results["datasets"].items():
        for family_name, family in families().items():
            part = entry["parts"].get(f"ulira/{family_name}")
            if not part:
                continue
            proto = part["protocol"]
            ratios = [ratio_key(r) for r in proto["ratios"]]  # each part's own: datasets may differ
            lines += [f"**{label}**, {family_name} runs: {proto['n_shadows']} shadows of {proto['shadow_rows']} rows "
                      f"(population {proto['population']}), {proto['n_targets']} targets.", "",
                      "| method | " + " | ".join(f"AUC {r} | AUC − retrain {r} [95% CI]" for r in ratios) + " |",
                      "|---|" + "---|---|" * len(ratios)]
            for method in [*family.ulira, family.original]:
                cells = []
                for r in ratios:
                    attack = part["ratios"][r]["attacks"][method]
                    cells += [f"{attack['auc']:.3f}", _signed_ci(attack["auc_minus_reference"],
                                                                 attack["auc_minus_reference_ci"])
                              if "auc_minus_reference" in attack else "(reference)"]
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def _provenance_lines(provenance: dict) -> list[str]:
    if "load_average_after" not in provenance:
        return []
    load = ", ".join(f"{v:.2f}" for v in provenance["load_average_before"])
    after = ", ".join(f"{v:.2f}" for v in provenance["load_average_after"])
    return [f"Computed by commit `{provenance.get('commit', '?')[:12]}` on {provenance.get('cores', '?')} cores; "
            f"load average (1, 5, 15 min) before {load}, after {after}.", ""]


def write_privacy_report(results: dict, out: str | Path) -> Path:
    """``out/report.md`` from the results (whatever parts exist so far)."""
    out = Path(out)
    config = results["config"]
    ratios = [ratio_key(r) for r in config["ratios"]]
    lines = ["# Privacy: population U-LiRA, exactness test, MIA-efficacy, certified releases", "",
             "Regenerate with the command under each dataset's heading (`benchmarks/privacy.py`, resumable; "
             "`--fresh` after a change of the methods' code).", "",
             "How to read it (docs/evaluation.md): population U-LiRA is the privacy figure -- each method's AUC "
             "next to retraining's, measured through the same pipeline, and their paired difference; an "
             "interval of the difference that contains 0 means the attack cannot tell the method from "
             "retraining. The exactness test (fixed rows) only says whether a method reproduces retraining "
             "bit for bit; it is not a privacy figure. MIA-efficacy: share of forgotten rows SalUn's SVC "
             "judges unseen (retraining's value is the target).", ""]
    note = _stand_in_note()
    if note:
        lines += [note, ""]
    for label, entry in results["datasets"].items():
        runs = entry.get("runs", {})
        first = next(iter(runs.values()), {})
        tag = " (synthetic)" if first.get("synthetic") else ""
        lines += [f"## {label}{tag}", "", f"`{entry['spec']}`: {first.get('n_train', '?')} training + "
                  f"{first.get('n_test', '?')} test rows, {first.get('n_features', '?')} features, "
                  f"{first.get('n_classes', '?')} classes; λ = {config['l2']:g}. Computed with "
                  f"`{entry.get('command') or results.get('command')}`.", ""]
        lines += _provenance_lines(entry.get("provenance") or {})
        for family_name, family in families().items():
            part = entry["parts"].get(f"ulira/{family_name}")
            what = ("converged runs (Newton-CG)" if family.mode == "converged"
                    else "SGD runs (DeltaGrad's setting; reference: the retrained SGD trajectory)")
            lines += [f"### Population U-LiRA, {what}", ""]
            lines += _ulira_table(part, family, ratios) if part else ["(not computed yet)", ""]
        for family_name, family in families().items():
            lines += [f"### Models on the real forget sets, {family_name}: accuracy, residual, certificate, "
                      "exactness test, MIA-efficacy", ""]
            lines += _models_table(entry, family_name, family, ratios)
        conv = families()["converged"]
        lines += ["### Privacy–utility: certified releases", ""]
        lines += _utility_table(entry, conv, ratios, config["epsilons"], config["delta"])
        timing = {k: v.get("wall_s") for k, v in entry["parts"].items()}
        lines += ["Wall time per part (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timing.items() if v), ""]
    path = out / REPORT_MD
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path
