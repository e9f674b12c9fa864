"""`python -m llada_xdlm COMMAND ...`: the `xdlm` command."""

import sys

from .cli import main

sys.exit(main())
