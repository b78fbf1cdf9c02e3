"""``miniunlearn evaluate`` and ``miniunlearn audit``: unlearned models side by side with retraining."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from miniunlearn.commands.output import CONTEXT, JSON_OPTION, console, emit
from miniunlearn.core.errors import InputError
from miniunlearn.core.progress import progress_bar
from miniunlearn.core.storage import atomic_write_json
from miniunlearn.core.text import parse_key_values
from miniunlearn.distributed import require_one_process
from miniunlearn.experiments.audit import audit as audit_request
from miniunlearn.experiments.audit import evaluate as evaluate_request
from miniunlearn.experiments.audit import load_request


def _signed(value: float, digits: int = 4) -> str:
    if value != value:
        return "nan"
    return f"{value:+.{digits}f}"


def _ci(value: float, ci, digits: int = 3) -> str:
    if value != value:
        return "nan"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _sci(value: float) -> str:
    if value != value:
        return "nan"
    return "0" if value == 0 else f"{value:.3e}"


def _columns(payload: dict) -> list[tuple[str, dict]]:
    cols = list(payload["models"].items()) + [("retrained", payload["retrained"])]
    if payload.get("original"):
        cols.append(("original", payload["original"]))
    return cols


def _print_evaluation(payload: dict) -> None:
    
    cols = _columns(payload)
    rows_n = payload["rows"]
    table = Table(title=f"evaluation against the retrained model: {payload['n_forget']} of {payload['n_train']} rows "
                        f"forgotten ({payload['ratio']:.1%})", title_justify="left")
    table.add_column("metric", style="bold")
    for name, _ in cols:
        table.add_column(name + (" (reference)" if name == "retrained" else ""), justify="right")
    spec = [
        ("test accuracy", "test_accuracy", lambda v: f"{v:.4f}"),
        ("retained accuracy", "retained_accuracy", lambda v: f"{v:.4f}"),
        ("forget accuracy", "forget_accuracy", lambda v: f"{v:.4f}"),
        ("  gap to retrained, test", "test_accuracy_gap", _signed),
        ("  gap to retrained, retained", "retained_accuracy_gap", _signed),
        ("  gap to retrained, forget", "forget_accuracy_gap", _signed),
        ("||w - w_R||", "distance_to_retrained", _sci),
        ("relative residual ||w - w_R|| / ||w_T - w_R||", "relative_residual", _sci),
        ("mean KL(p_R || p_w), test [nats]", "kl_test", _sci),
        ("mean KL(p_R || p_w), forget [nats]", "kl_forget", _sci),
        ("agreement with w_R, test", "agreement_test", lambda v: f"{v:.4f}"),
        ("agreement with w_R, forget", "agreement_forget", lambda v: f"{v:.4f}"),
    ]
    for label, key, fmt in spec:
        table.add_row(label, *[fmt(m[key]) for _, m in cols])
    out = console()
    out.print(table)
    out.print(f"[dim]rows: {rows_n['test']} test, {rows_n['retained']} retained, {rows_n['forget']} forgotten; "
              f"||w_T - w_R|| = {_sci(payload['original_to_retrained_distance'])}[/dim]")


def _print_audit(payload: dict) -> None:
    
    out = console()
    names = list(payload["loss_attack"])
    ref_loss = payload["loss_attack"]["retrained"]
    rows = payload["rows"]
    loss = Table(title=f"1. population loss attack: forgotten vs test rows ({payload['loss_attack']['retrained']['n_members']} "
                       f"each, {ref_loss['folds']}-fold CV); chance is the retrained model's value, not 0.5 alone",
                 title_justify="left")
    for col in ("model", "AUC [95% CI]", "AUC - retrained", "balanced accuracy [95% CI]", "bal. acc. - retrained"):
        loss.add_column(col, justify="left" if col == "model" else "right")
    for name in names:
        r = payload["loss_attack"][name]
        loss.add_row(name, _ci(r["auc"], r["auc_ci"]), _signed(r["auc"] - ref_loss["auc"], 3),
                     _ci(r["balanced_accuracy"], r["balanced_accuracy_ci"]),
                     _signed(r["balanced_accuracy"] - ref_loss["balanced_accuracy"], 3))
    out.print(loss)
    for feature, results in payload["svc_mia"].items():
        ref = results["retrained"]
        svc = Table(title=f"2. SVC MIA-efficacy (SalUn; feature: {feature}; shadow {rows['shadow_members']} retained "
                          f"vs {rows['test']} test rows): share of forgotten rows judged unseen", title_justify="left")
        for col in ("model", "MIA-efficacy [95% CI]", "- retrained", "unseen rate of test rows (in-sample)"):
            svc.add_column(col, justify="left" if col == "model" else "right")
        for name, r in results.items():
            svc.add_row(name, _ci(r["efficacy"], r["efficacy_ci"]), _signed(r["efficacy"] - ref["efficacy"], 3),
                        f"{r['shadow_nonmember_rate']:.3f}")
        out.print(svc)
    ulira = payload.get("ulira")
    if ulira:
        _print_population_ulira(out, ulira)
    exactness = payload.get("exactness_test")
    if exactness:
        _print_exactness_test(out, exactness)
    if payload.get("out"):
        out.print(f"[dim]wrote {payload['out']}[/dim]")


def _print_population_ulira(out, ulira: dict) -> None:
    proto = ulira["protocol"]
    for key, entry in ulira["ratios"].items():
        table = Table(title=f"3. population U-LiRA (Hayes et al.): shadows on random halves of the population, "
                            f"forget {float(key):.1%}; {proto['n_shadows']} leave-pair-out target models x "
                            f"{proto['n_targets']} targets; retraining is what \"cannot tell\" looks like here",
                      title_justify="left")
        for col in ("shadows unlearned with", "models", "AUC [95% CI]", "AUC - retrain [95% CI]", "TPR@1% FPR [CI]",
                    "TPR@0.1% FPR [CI]"):
            table.add_column(col, justify="left" if col in ("shadows unlearned with", "models") else "right")
        for label, r in entry["attacks"].items():
            names = ", ".join(ulira["models"].get(label, [])) or {"retrain": "(reference)",
                                                                  "original": "(no unlearning)"}.get(label, "")
            difference = (_ci(r["auc_minus_reference"], r["auc_minus_reference_ci"]) if "auc_minus_reference" in r
                          else "–")
            table.add_row(label, names, _ci(r["auc"], r["auc_ci"]), difference,
                          _ci(r["tpr_at_fpr"]["0.01"], r["tpr_at_fpr_ci"]["0.01"]),
                          _ci(r["tpr_at_fpr"]["0.001"], r["tpr_at_fpr_ci"]["0.001"]))
        out.print(table)
        note = f"[dim]{proto['interval']}; the attack measures the method, not one model"
        if "roc_png" in entry:
            note += f"; ROC plot: {entry['roc_png']}"
        out.print(note + "[/dim]")
    t = ulira["time"]
    out.print(f"[dim]population shadows: {t['shadows_wall_s']:.1f} s wall with {t['workers']} worker(s)[/dim]")


def _print_exactness_test(out, exactness: dict) -> None:
    proto = exactness["protocol"]
    for label, attack in exactness["attacks"].items():
        what = "no unlearning" if attack["method"] is None else f"shadows unlearned with {attack['method']}"
        table = Table(title=f"4. exactness test, NOT a privacy figure (fixed rows: does the method reproduce "
                            f"retraining bit for bit? {what}; {proto['n_shadows']} shadows, {proto['n_targets']} "
                            f"targets)", title_justify="left")
        for col in ("model", "online AUC [95% CI]", "TPR@1%", "TPR@0.1%", "offline AUC [95% CI]"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for name, r in attack["targets"].items():
            on, off = r["online"], r["offline"]
            table.add_row(name, _ci(on["auc"], on["auc_ci"]), f"{on['tpr_at_fpr']['0.01']:.3f}",
                          f"{on['tpr_at_fpr']['0.001']:.3f}", _ci(off["auc"], off["auc_ci"]))
        out.print(table)
    out.print("[dim]every shadow holds the run's own rows, so an exact method scores 0.5 by construction and any "
              "deterministic residual, however small, scores above it: read it as exact / not exact[/dim]")


def _request_options(command):
    """--against, --run and --ids: the request both evaluate and audit read."""
    for option in reversed((
            click.option("--against", "retrained_dir", required=True, type=click.Path(),
                         help="The retrained model's directory (`miniunlearn retrain`), the reference."),
            click.option("--run", "run_dir", required=True, type=click.Path(),
                         help="The run the models were unlearned from."),
            click.option("--ids", "ids_file", type=click.Path(), default=None,
                         help="The forgotten rows: one 0-based row id per line (default: every row forgotten so "
                              "far, from the run's deletion ledger)."))):
        command = option(command)
    return command


def attach(cli) -> None:
    @cli.command(context_settings=CONTEXT)
    @click.argument("model_dirs", nargs=-1, required=True, type=click.Path())
    @_request_options
    @JSON_OPTION
    def evaluate(model_dirs, retrained_dir, run_dir, ids_file, as_json):
        """Compare unlearned MODEL_DIRS with the retrained model on the same data.

        Test, retained and forget accuracy and their gaps to the retrained model; ||w - w_R|| and
        the relative residual ||w - w_R|| / ||w_T - w_R|| (w_T: the run's original model); mean
        KL(p_R || p_w) and prediction agreement with the retrained model on test and forgotten rows.
        The retrained and the original model are shown as reference columns. Without --ids the
        forgotten rows are every row forgotten so far (the run's deletion ledger).
        """
        require_one_process("evaluate")
        request = load_request(run_dir, ids_file, model_dirs, retrained_dir)
        emit(evaluate_request(request), as_json, _print_evaluation)

    @cli.command(context_settings=CONTEXT)
    @click.argument("model_dirs", nargs=-1, type=click.Path())
    @_request_options
    @click.option("--shadows", type=int, default=16, show_default=True,
                  help="Population U-LiRA shadow models (even, >= 6; 0 skips it). Each trains the run's "
                       "configuration on half the population.")
    @click.option("--targets", type=int, default=500, show_default=True,
                  help="Population U-LiRA: target examples drawn from the training and test rows.")
    @click.option("--shadow-method", default=None,
                  help="Method the shadows unlearn with (default: each MODEL_DIR's own, from its result.json).")
    @click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                  help="Option of --shadow-method (repeatable).")
    @click.option("--workers", type=int, default=1, show_default=True,
                  help="Shadow trainings in parallel processes (each gets CPUs / workers threads).")
    @click.option("--variance", type=click.Choice(["per-example", "global"]), default="per-example", show_default=True,
                  help="Per-example Gaussian variances (floored at --variance-floor x their mean), or one pooled "
                       "variance.")
    @click.option("--variance-floor", type=float, default=0.1, show_default=True,
                  help="Population U-LiRA: per-example variances are at least this share of their mean.")
    @click.option("--exactness-shadows", type=int, default=0, show_default=True,
                  help="Also run the exactness test with this many fixed-rows shadows (even, >= 4): does each "
                       "method reproduce retraining bit for bit? Not a privacy figure.")
    @click.option("--max-targets", type=int, default=None,
                  help="Exactness test: at most this many forgotten rows (and as many unseen test rows) are scored.")
    @click.option("--svc-feature", "svc_features", multiple=True, default=("confidence",), show_default=True,
                  type=click.Choice(["confidence", "entropy", "m_entropy"]), help="SVC MIA feature (repeatable).")
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed of every sampling step.")
    @click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
                  help="Directory for audit.json and the ROC plots (PNG).")
    @click.option("--tmp-dir", type=click.Path(file_okay=False), default=None,
                  help="Where shadow run directories (with their histories) live while they exist.")
    @JSON_OPTION
    def audit(model_dirs, retrained_dir, run_dir, ids_file, shadows, targets, shadow_method, settings, workers,
              variance, variance_floor, exactness_shadows, max_targets, svc_features, seed, out_dir, tmp_dir, as_json):
        """Membership-inference audit of the forget set: MODEL_DIRS, the retrained and the original model.

        \b
        1. population loss attack (forgotten vs test rows, cross-validated): AUC, balanced accuracy;
        2. SalUn's confidence-SVC MIA-efficacy: share of forgotten rows judged unseen;
        3. population U-LiRA (Hayes et al. 2024): --shadows shadow models trained on random halves
           of the training and test rows, unlearned at this request's forget ratio by each model's
           method, by retraining and not at all; every shadow scored leave-pair-out; AUC and TPR at
           1 % / 0.1 % FPR with bootstrap intervals, and each method's AUC minus retraining's;
        4. with --exactness-shadows: the exactness test (fixed rows; not a privacy figure).
        Every number is shown next to the retrained model's, which is what chance looks like here.
        Without --ids the forget set is every row forgotten so far (the run's deletion ledger).
        """
        require_one_process("audit")
        options = parse_key_values(settings, "--set")
        if options and not shadow_method:
            raise InputError("--set gives options of --shadow-method; name the method too")
        if shadows < 0 or exactness_shadows < 0:
            raise InputError("--shadows and --exactness-shadows must be 0 (skip) or even numbers of shadow models")
        request = load_request(run_dir, ids_file, model_dirs, retrained_dir)
        with progress_bar("shadow models", (shadows + exactness_shadows) or None) as advance:
            payload = audit_request(request, shadows=shadows, targets=targets, shadow_method=shadow_method,
                                    shadow_options=options, variance=variance.replace("-", "_"),
                                    relative_floor=variance_floor, exactness_shadows=exactness_shadows,
                                    max_targets=max_targets, workers=workers, seed=seed,
                                    svc_features=tuple(dict.fromkeys(svc_features)), out_dir=out_dir,
                                    tmp_dir=tmp_dir, progress=advance)
        if out_dir is not None:
            path = Path(out_dir) / "audit.json"
            payload["out"] = str(path)
            atomic_write_json(path, payload)
        emit(payload, as_json, _print_audit)
