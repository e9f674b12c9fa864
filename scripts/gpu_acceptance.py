"""`python scripts/gpu_acceptance.py OUT_DIR [--tiny]`: the same as `xdlm check-gpu OUT_DIR [--tiny]` (docs/gpu.md),
for a checkout where the package's console scripts are not installed.

The sections, thresholds and reports are in llada_xdlm.gpu_acceptance; this file only runs its main().
"""

import sys

from llada_xdlm.gpu_acceptance import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/gpu_acceptance.py"))
