"""Further CLI command groups, one module each.

Every module here defines ``attach(cli)``, which adds its commands to the root click group;
:mod:`miniunlearn.cli` calls it for every module at start-up. Modules must import heavy
libraries (torch, sklearn) inside their command functions so that ``--help`` stays fast.
"""
