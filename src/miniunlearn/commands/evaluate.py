"""``miniunlearn evaluate`` and ``miniunlearn audit``: unlearned models side by side with retraining."""

from __future__ import annotations

import click

from miniunlearn.commands.output import CONTEXT, JSON_OPTION, console, emit


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
    from rich.table import Table

    
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
    from rich.table import Table

    
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
        proto = ulira["protocol"]
        for label, attack in ulira["attacks"].items():
            what = "no unlearning: classic LiRA" if attack["method"] is None else f"shadows unlearned with {attack['method']}"
            table = Table(title=f"3. U-LiRA ({what}; {proto['n_shadows']} shadows, {proto['n_targets']} targets = "
                                f"{proto['n_slots']} forgotten + {proto['n_slots']} unseen; {proto['variance']} variance)",
                          title_justify="left")
            for col in ("model", "online AUC [95% CI]", "TPR@1%", "TPR@0.1%", "offline AUC [95% CI]", "TPR@1%",
                        "TPR@0.1%"):
                table.add_column(col, justify="left" if col == "model" else "right")
            for name, r in attack["targets"].items():
                on, off = r["online"], r["offline"]
                table.add_row(name, _ci(on["auc"], on["auc_ci"]), f"{on['tpr_at_fpr']['0.01']:.3f}",
                              f"{on['tpr_at_fpr']['0.001']:.3f}", _ci(off["auc"], off["auc_ci"]),
                              f"{off['tpr_at_fpr']['0.01']:.3f}", f"{off['tpr_at_fpr']['0.001']:.3f}")
            out.print(table)
            sep = attack["shadow_separation"]["median_abs_mean_gap_over_sd_out"]
            note = f"[dim]median |mu_in - mu_out| / sd_out over examples: {sep:.3g}"
            if "roc_png" in attack:
                note += f"; ROC plot: {attack['roc_png']}"
            out.print(note + "[/dim]")
        t = ulira["time"]
        out.print(f"[dim]shadows: {t['shadows_wall_s']:.1f} s wall with {t['workers']} worker(s); per shadow "
                  + ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.1f} s"
                             for k, v in t["mean_per_shadow_s"].items()) + "[/dim]")
    if payload.get("out"):
        out.print(f"[dim]wrote {payload['out']}[/dim]")


def attach(cli) -> None:
    @cli.command(context_settings=CONTEXT)
    @click.argument("model_dirs", nargs=-1, required=True, type=click.Path())
    @click.option("--against", "retrained_dir", required=True, type=click.Path(),
                  help="The retrained model's directory (`miniunlearn retrain`), the reference.")
    @click.option("--run", "run_dir", required=True, type=click.Path(), help="The run the models were unlearned from.")
    @click.option("--ids", "ids_file", type=click.Path(), default=None,
                  help="The forgotten rows: one 0-based row id per line (default: every row forgotten so far, "
                       "from the run's deletion ledger).")
    @JSON_OPTION
    def evaluate(model_dirs, retrained_dir, run_dir, ids_file, as_json):
        """Compare unlearned MODEL_DIRS with the retrained model on the same data.

        Test, retained and forget accuracy and their gaps to the retrained model; ||w - w_R|| and
        the relative residual ||w - w_R|| / ||w_T - w_R|| (w_T: the run's original model); mean
        KL(p_R || p_w) and prediction agreement with the retrained model on test and forgotten rows.
        The retrained and the original model are shown as reference columns. Without --ids the
        forgotten rows are every row forgotten so far (the run's deletion ledger).
        """
        from miniunlearn.experiments.audit import evaluate as evaluate_request
        from miniunlearn.experiments.audit import load_request

        request = load_request(run_dir, ids_file, model_dirs, retrained_dir)
        emit(evaluate_request(request), as_json, _print_evaluation)

    @cli.command(context_settings=CONTEXT)
    @click.argument("model_dirs", nargs=-1, type=click.Path())
    @click.option("--against", "retrained_dir", required=True, type=click.Path(),
                  help="The retrained model's directory (`miniunlearn retrain`), the reference.")
    @click.option("--run", "run_dir", required=True, type=click.Path(), help="The run the models were unlearned from.")
    @click.option("--ids", "ids_file", type=click.Path(), default=None,
                  help="The forgotten rows: one 0-based row id per line (default: every row forgotten so far, "
                       "from the run's deletion ledger).")
    @click.option("--shadows", type=int, default=16, show_default=True,
                  help="U-LiRA shadow models (even, >= 4; 0 skips U-LiRA). Each is one training run like the original.")
    @click.option("--shadow-method", default=None,
                  help="Method the shadows unlearn with (default: each MODEL_DIR's own, from its result.json).")
    @click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                  help="Option of --shadow-method (repeatable).")
    @click.option("--workers", type=int, default=1, show_default=True,
                  help="Shadow trainings in parallel processes (each gets CPUs / workers threads).")
    @click.option("--max-targets", type=int, default=None,
                  help="U-LiRA: at most this many forgotten rows (and as many unseen test rows) are scored.")
    @click.option("--variance", type=click.Choice(["per-example", "global"]), default="per-example", show_default=True,
                  help="U-LiRA: per-example Gaussian variances, or one pooled variance (steadier with few shadows).")
    @click.option("--no-lira", is_flag=True, help="Skip classic LiRA (shadows not unlearned) on the original model.")
    @click.option("--svc-feature", "svc_features", multiple=True, default=("confidence",), show_default=True,
                  type=click.Choice(["confidence", "entropy", "m_entropy"]), help="SVC MIA feature (repeatable).")
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed of every sampling step.")
    @click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
                  help="Directory for audit.json, the U-LiRA ROC plots (PNG) and scores (npz).")
    @click.option("--tmp-dir", type=click.Path(file_okay=False), default=None,
                  help="Where shadow run directories (with their histories) live while they exist.")
    @JSON_OPTION
    def audit(model_dirs, retrained_dir, run_dir, ids_file, shadows, shadow_method, settings, workers, max_targets,
              variance, no_lira, svc_features, seed, out_dir, tmp_dir, as_json):
        """Membership-inference audit of the forget set: MODEL_DIRS, the retrained and the original model.

        \b
        1. population loss attack (forgotten vs test rows, cross-validated): AUC, balanced accuracy;
        2. SalUn's confidence-SVC MIA-efficacy: share of forgotten rows judged unseen;
        3. U-LiRA with --shadows shadow models unlearned by the method under test: AUC and TPR at
           1 % / 0.1 % FPR, online and offline, log-log ROC plots in --out.
        Every number is shown next to the retrained model's, which is what chance looks like here.
        Without --ids the forget set is every row forgotten so far (the run's deletion ledger).
        """
        from pathlib import Path

        from miniunlearn.core.errors import InputError
        from miniunlearn.core.progress import progress_bar
        from miniunlearn.core.storage import atomic_write_json
        from miniunlearn.core.text import parse_key_values
        from miniunlearn.experiments.audit import audit as audit_request
        from miniunlearn.experiments.audit import load_request

        options = parse_key_values(settings, "--set")
        if options and not shadow_method:
            raise InputError("--set gives options of --shadow-method; name the method too")
        if shadows < 0:
            raise InputError(f"--shadows must be 0 (no U-LiRA) or an even number >= 4, got {shadows}")
        request = load_request(run_dir, ids_file, model_dirs, retrained_dir)
        with progress_bar("U-LiRA shadow models", shadows or None) as advance:
            payload = audit_request(request, shadows=shadows, shadow_method=shadow_method, shadow_options=options,
                                    lira=not no_lira, max_targets=max_targets, variance=variance.replace("-", "_"),
                                    workers=workers, seed=seed, svc_features=tuple(dict.fromkeys(svc_features)),
                                    out_dir=out_dir, tmp_dir=tmp_dir, progress=advance)
        if out_dir is not None:
            path = Path(out_dir) / "audit.json"
            payload["out"] = str(path)
            atomic_write_json(path, payload)
        emit(payload, as_json, _print_audit)
