"""The CLI commands, one module per command group.

Every command module defines ``attach(cli)``, which adds its commands to the root click group
(:mod:`miniunlearn.cli`). Modules import heavy libraries (torch, sklearn) inside their command
functions so that ``--help`` stays fast; :mod:`miniunlearn.commands.output` holds the printing
helpers every command shares.
"""
