"""The ``miniunlearn`` command line (also ``python -m miniunlearn``).

``--json`` prints machine-readable output on stdout; progress bars go to stderr. Every failure
is one line on stderr (``error: ...``) naming the problem. This list is the one definition of the
exit codes (``miniunlearn --help`` prints it; the README's quick start points here):

EXIT CODES
  0    done
  1    unexpected failure (a bug, or the operating system refused: disk full, permissions)
  2    bad input or files: an option out of range, a malformed or missing file, a run or
       ledger that does not match, a command started under torchrun that runs in one process
  3    a solver did not converge (e.g. forget --tol not reached within --max-passes); nothing
       was recorded as a deletion
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import inspect
import sys

import click

from miniunlearn.commands import bench, compact, data, evaluate, forget, ledger, methods, predict, serve, train
from miniunlearn.commands.output import CONTEXT
from miniunlearn.core.errors import MiniUnlearnError
from miniunlearn.core.progress import set_progress

# every module defines attach(cli); the order is that of `miniunlearn --help` (click sorts by name anyway)
COMMAND_MODULES = (data, train, forget, compact, predict, methods, evaluate, ledger, bench, serve)


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="miniunlearn")
@click.option("--no-progress", is_flag=True, help="Hide progress bars (they are hidden anyway when stderr is not a terminal).")
def cli(no_progress: bool):
    """miniunlearn: forget training data fast, and prove it.

    \b
    Typical session:
      miniunlearn train --dataset digits --l2 1e-3 --out runs/digits
      miniunlearn forget runs/digits --ids forget.txt --method mini --out runs/digits-mini
      miniunlearn retrain runs/digits --ids forget.txt --out runs/digits-retrain
    An ids file holds one 0-based training-row index per line.

    \b
    Your own data (docs/own-data.md):
      miniunlearn train --dataset csv:path=own.csv,target=label,id=user_id --l2 1e-3 --out runs/own
      miniunlearn forget runs/own --keys users.txt --out runs/own-mini      # one user id per line
      miniunlearn predict runs/own-mini --data csv:path=new.csv,id=user_id --out preds.csv
    """  # (the exit codes are appended from the module docstring below)
    if no_progress:
        set_progress(False)


# `miniunlearn --help` ends with the exit codes, as defined once in this module's docstring
if __doc__:  # (python -OO drops docstrings)
    cli.help = inspect.cleandoc(cli.help or "") + "\n\n\b\n" + __doc__[__doc__.index("EXIT CODES"):].rstrip()

for _module in COMMAND_MODULES:
    _module.attach(cli)


def main(argv=None) -> None:
    """Entry point: run the CLI, turning known errors into one clear line and a non-zero exit."""
    try:
        cli.main(args=argv, prog_name="miniunlearn", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MiniUnlearnError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except UnicodeError as exc:  # e.g. a path argument that is no valid text in this locale
        click.echo(f"error: an argument cannot be used as a file name or text ({exc.reason}: "
                   f"{exc.object[exc.start:exc.end]!a})", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as exc:
        click.echo(f"error: {exc.strerror or exc} ({getattr(exc, 'filename', '') or ''})", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
