"""``python3 -m wgpy.proxy ...`` until ``wgpy proxy`` dispatches here."""

import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
