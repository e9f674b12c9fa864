"""GPU acceptance in one command: `python scripts/gpu_acceptance.py OUT_DIR [--tiny]` (see docs/gpu.md).

The sections, thresholds and reports are in llada_xdlm.gpu_acceptance; this file only runs its main().
"""

import sys

from llada_xdlm.gpu_acceptance import main

if __name__ == "__main__":
    sys.exit(main())
