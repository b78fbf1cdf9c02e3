"""The CLI commands, one module per command group.

Every command module defines ``attach(cli)``, which adds its commands to the root click group
(:mod:`miniunlearn.cli`). The rest of miniunlearn (which loads numpy, torch, scipy and
scikit-learn, seconds in all) and rich are imported inside the command functions that use them,
so ``miniunlearn --help`` and option errors answer without loading any of them; the standard
library and ``miniunlearn.core``'s errors, params, progress and text modules (standard library
only) are imported at the top. :mod:`miniunlearn.commands.output` holds the printing helpers
every command shares.
"""
