"""Benchmark torchbp against torch.nn + torch.optim and NumPy: ``python scripts/bench.py [--json out.json]``.

The same as ``torchbp bench``; see ``torchbp bench --help`` for the options.
"""

import sys

from torchbp.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
