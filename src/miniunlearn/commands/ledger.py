"""``miniunlearn ledger RUN``: list a run's deletion requests, check them, export the forgotten rows."""

from __future__ import annotations

import click
from rich.table import Table

from miniunlearn.commands.output import CONTEXT, JSON_OPTION, console, emit, fmt
from miniunlearn.core.errors import RunError
from miniunlearn.runs import open_run
from miniunlearn.service.ledger import LEDGER_FILE, SCHEMA_VERSION, Ledger
from miniunlearn.service.requests import write_ids_file, write_keys_file


def attach(cli) -> None:
    cli.add_command(ledger)


@click.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.option("--verify", is_flag=True,
              help="Check every completed request's model file against its recorded SHA-256 and the counts; "
                   "exit 2 when something is wrong.")
@click.option("--forgotten-ids", "forgotten_out", type=click.Path(dir_okay=False),
              help="Write the ids of every forgotten row to this file (one per line).")
@click.option("--forgotten-keys", "forgotten_keys_out", type=click.Path(dir_okay=False),
              help="Write the key of every forgotten row to this file (one per line, each key once).")
@JSON_OPTION
def ledger(run_dir, verify, forgotten_out, forgotten_keys_out, as_json):
    """List the deletion requests recorded for RUN_DIR (its ledger.sqlite).

    Reading writes nothing and takes no lock, so it works on a read-only copy of a run. A run that
    had a ledger which is now missing is refused (the record of forgotten rows is lost).

    \b
    Statuses: done (model written and recorded), failed (error recorded), started (running, or
    interrupted when no process holds the run's lock), abandoned (interrupted; found by a later
    request). Kinds: deletion (forgets new rows), repeat (identical request served from the
    recorded model), alternative (same rows, another method or options), recompute (identical
    request whose recorded model was gone). Rows of failed, started and abandoned requests are
    not forgotten.
    """
    run = open_run(run_dir)
    payload = {"run": str(run.path), "ledger": str(Ledger.path_for(run)), "n_train": run.n_train,
               "schema_version": SCHEMA_VERSION, "base_generation": run.generation, "forgotten_rows": 0,
               "forgotten_keys": 0, "requests": [], "compactions": []}
    problems: list[str] = []
    forgotten, keys = [], []
    if Ledger.exists(run):
        with Ledger.open(run) as book:
            busy = book.busy()
            requests = book.requests()
            forgotten = book.forgotten_ids()
            keys = book.forgotten_keys()
            payload["forgotten_rows"] = int(len(forgotten))
            payload["forgotten_keys"] = len(keys)
            payload["requests"] = [_describe(r, busy) for r in requests]
            payload["compactions"] = [c.summary() for c in book.compactions()]
            if verify:
                problems = book.verify()
    else:
        payload["note"] = f"no deletion request recorded ({LEDGER_FILE} does not exist)"
    if verify:
        payload["verify"] = {"ok": not problems, "problems": problems}
    if forgotten_out:
        write_ids_file(forgotten_out, forgotten)
        payload["forgotten_ids_file"] = str(forgotten_out)
    if forgotten_keys_out:
        write_keys_file(forgotten_keys_out, keys)
        payload["forgotten_keys_file"] = str(forgotten_keys_out)
    emit(payload, as_json, _human)
    if problems:
        raise RunError(f"ledger check failed: {len(problems)} problem(s), first: {problems[0]}")


def _describe(request, busy: bool) -> dict:
    row = request.summary()
    if request.status == "started":  # running if some process holds the run's request lock
        row["running"] = busy
    stats = request.stats
    for key in ("time_s", "n_forget", "n_forget_request", "release"):
        if key in stats:
            row[key] = stats[key]
    return row


def _human(payload: dict) -> None:
    out = console()
    since = " since the last compaction" if payload.get("base_generation") else ""
    out.print(f"[bold]{payload['ledger']}[/bold]: {len(payload['requests'])} request(s); "
              f"{payload['forgotten_rows']} of {payload['n_train']} training rows forgotten{since} "
              f"({payload['forgotten_keys']} keys forgotten in all)")
    if payload.get("note"):
        out.print(payload["note"])
    requests = payload["requests"]
    if requests:
        with_bounds = any(r["bound"] for r in requests)
        table = Table("#", "status", "kind", "requested (UTC)", "method", "by", "rows own/total", "model sha256", "output",
                      *(["bound / certificate"] if with_bounds else []))
        for r in requests:
            options = ", ".join(f"{k}={v}" for k, v in r["options"].items())
            status = r["status"] + ({True: " (running)", False: " (interrupted)"}.get(r.get("running"), ""))
            row = [str(r["id"]), status, r["kind"] + (f" of #{r['refers_to']}" if r["refers_to"] else ""),
                   r["requested_at"][:19].replace("T", " "), r["method"] + (f" ({options})" if options else ""),
                   r["requested_by"], f"{r['n_ids']}/{r['n_cumulative']}", (r["model_sha256"] or "-")[:12], r["out_dir"] or "-"]
            if with_bounds:
                row.append("; ".join(f"{k} {fmt(v)}" for k, v in (r["bound"] or {}).items()) or "-")
            table.add_row(*row)
        out.print(table)
        for r in requests:
            if r.get("note"):
                out.print(f"#{r['id']}: {r['note']}")
    for c in payload.get("compactions", []):
        out.print(f"compaction #{c['id']} ({c['status']}, {c['started_at'][:19].replace('T', ' ')}): base "
                  f"{c['generation']} after request #{c['after_request']}, {c['n_before']} -> {c['n_after']} rows, "
                  f"{len(c['removed'])} file(s) removed" + (f"; {c['note']}" if c.get("note") else ""))
    if "verify" in payload:
        if payload["verify"]["ok"]:
            out.print("verify: every completed request's model is present with its recorded SHA-256")
        for problem in payload["verify"]["problems"]:
            out.print(f"[red]problem:[/red] {problem}")
