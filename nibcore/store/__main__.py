"""``python -m nibcore.store ...``: the command line's ``store`` commands (``nib store ...``),
kept because the store's sidecars, the README and the chapters print it."""

import sys

from ..cli import main

sys.exit(main(["store", *sys.argv[1:]]))
