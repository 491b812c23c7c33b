"""Set-based payment reconciliation on N synthetic payments, against a plain COPY of the same
rows (the same as `dotshop bench reconcile --payments N`; see core/reconcile_bench.py).

    python bench/reconcile.py --payments 1000000
"""

from __future__ import annotations

import argparse
import sys

from core.reconcile_bench import DEFAULT_PAYMENTS, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=DEFAULT_PAYMENTS)
    sys.exit(main(parser.parse_args().payments))
