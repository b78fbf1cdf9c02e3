"""``miniunlearn serve RUN``, ``miniunlearn tokens ...`` and ``miniunlearn receipt verify``: the deletion service."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from miniunlearn.commands.output import CONTEXT, JSON_OPTION, console, emit
from miniunlearn.core.errors import InputError
from miniunlearn.server.auth import TokenStore, load_store, parse_scopes
from miniunlearn.server.config import LIMITS, ServeConfig
from miniunlearn.server.receipts import FORMAT as RECEIPT_FORMAT
from miniunlearn.server.receipts import load_public_key, run_public_key, verify


def attach(cli) -> None:
    cli.add_command(serve)
    cli.add_command(tokens)
    cli.add_command(receipt)


def _limit(name: str, flag: str):
    param = LIMITS[name]
    return click.option(flag, name, type=float if name == "default_tol" else int, default=None,
                        help=f"{param.help[0].upper()}{param.help[1:]} ({'; '.join(map(str, param.constraints))}; "
                             f"default {param.default}).")


@click.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Without --tokens only loopback addresses are allowed.")
@click.option("--port", default=8000, show_default=True, type=int, help="TCP port (0..65535).")
@click.option("--tokens", "tokens_file", type=click.Path(), default=None,
              help="Tokens file (`miniunlearn tokens add`). Without it every request is served, on loopback only.")
@click.option("--ssl-certfile", type=click.Path(), default=None, help="Serve HTTPS with this certificate (PEM).")
@click.option("--ssl-keyfile", type=click.Path(), default=None, help="The certificate's private key (PEM).")
@_limit("max_body_bytes", "--max-body-bytes")
@_limit("max_names", "--max-names")
@_limit("max_batch", "--max-batch")
@_limit("max_predict_rows", "--max-predict-rows")
@_limit("threads", "--threads")
@_limit("default_tol", "--tol")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="Server log level (tokens and request bodies are never logged).")
def serve(run_dir, host, port, tokens_file, ssl_certfile, ssl_keyfile, log_level, **limits):
    """Serve RUN_DIR's deletions and predictions over HTTP (docs/service.md), keeping the run warm.

    \b
    Deletion requests (POST /v1/deletions) are acknowledged once durable, solved in coalesced
    batches by certified Mini-Unlearning, recorded in the run's ledger and answered with signed
    receipts; predictions (POST /v1/predict) always use the ledger's latest model. The CLI and the
    Python API keep working on a served run. Stop with SIGTERM or Ctrl-C: the running solve finishes.
    """
    # FastAPI and uvicorn (~0.3 s) load only for `serve`, not at every command's start-up
    from miniunlearn.server.runner import check_address
    from miniunlearn.server.runner import serve as run_server

    config = ServeConfig.build(run_dir, tokens_file, **limits)
    check_address(host, port, config.tokens)
    if config.tokens is not None:
        load_store(config.tokens)  # a bad tokens file is refused before the run is loaded
    run_server(config, host, port, ssl_certfile, ssl_keyfile, log_level)


@click.group(context_settings=CONTEXT)
def tokens():
    """Bearer tokens of `miniunlearn serve`: only their SHA-256 hashes are stored."""


@tokens.command("add", context_settings=CONTEXT)
@click.argument("tokens_file", type=click.Path())
@click.option("--name", required=True, help="Who holds the token (shown in logs and receipts; the token never is).")
@click.option("--scopes", required=True, help="Comma-separated: delete, predict, read, admin (admin allows all).")
def tokens_add(tokens_file, name, scopes):
    """Create a token, store its hash in TOKENS_FILE (created with mode 0600) and print it once.

    The token is the last line of the output; it cannot be shown again (add another if it is lost).
    """
    store = TokenStore.load(tokens_file, missing_ok=True)
    token = store.add(name, parse_scopes(scopes))
    store.save(tokens_file)
    click.echo(f"token {name!r} ({scopes}) added to {tokens_file}; store it now, it is not shown again:", err=True)
    click.echo(token)


@tokens.command("list", context_settings=CONTEXT)
@click.argument("tokens_file", type=click.Path())
@JSON_OPTION
def tokens_list(tokens_file, as_json):
    """Names, scopes and creation times of the tokens in TOKENS_FILE (never the tokens)."""
    entries = TokenStore.load(tokens_file).listing()
    emit({"tokens": entries}, as_json,
         lambda p: [console().print(f"{e['name']}: {', '.join(e['scopes'])} (created {e['created']})")
                    for e in p["tokens"]])


@tokens.command("remove", context_settings=CONTEXT)
@click.argument("tokens_file", type=click.Path())
@click.option("--name", required=True, help="The token to revoke (a running server reads the file at start).")
def tokens_remove(tokens_file, name):
    """Revoke a token; restart the server for it to take effect."""
    store = TokenStore.load(tokens_file)
    store.remove(name)
    store.save(tokens_file)
    click.echo(f"token {name!r} removed from {tokens_file}")


@click.group(context_settings=CONTEXT)
def receipt():
    """Deletion receipts signed by `miniunlearn serve`."""


@receipt.command("verify", context_settings=CONTEXT)
@click.argument("receipt_file", type=click.Path())
@click.option("--run", "run_dir", type=click.Path(), default=None, help="Verify with this run's public key.")
@click.option("--public-key", type=click.Path(), default=None,
              help="Verify with this PEM public key (RUN/serve/receipt-key.pub.pem), e.g. on an auditor's machine.")
@JSON_OPTION
def receipt_verify(receipt_file, run_dir, public_key, as_json):
    """Check RECEIPT_FILE's Ed25519 signature offline: exit 0 when valid, 1 when it is not.

    Exit 2 for unusable input (no such file, not JSON, not a receipt, no key given).
    """
    if (run_dir is None) == (public_key is None):
        raise InputError("give the key: --run RUN or --public-key FILE (exactly one)")
    path = Path(receipt_file)
    if not path.is_file():
        raise InputError(f"receipt file not found: {path}")
    try:
        document = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"receipt {path} is not JSON ({exc})") from None
    signed = isinstance(document, dict) and isinstance(document.get("signature"), dict)
    if not signed and (not isinstance(document, dict) or document.get("format") != RECEIPT_FORMAT):
        # no receipt at all; a signed document (even with its format altered) is judged by its signature
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise InputError(f"{path} is not a deletion receipt (format {found!r}, expected {RECEIPT_FORMAT!r})")
    key = run_public_key(run_dir) if run_dir is not None else load_public_key(public_key)
    problem = verify(document, key)
    payload = {"receipt": str(path), "valid": problem is None, "problem": problem,
               "request_id": document.get("request_id") if isinstance(document, dict) else None}
    emit(payload, as_json, lambda p: click.echo(f"valid: receipt of request {p['request_id']}" if p["valid"]
                                                else f"INVALID: {p['problem']}"))
    if problem is not None:
        sys.exit(1)
