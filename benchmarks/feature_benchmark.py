"""20 seeds x every method of the feature-level negative-transfer benchmark, wall time printed.

    OMP_NUM_THREADS=1 python benchmarks/feature_benchmark.py [--out runs/feature-benchmark] [--seeds 0-19]

The work is :mod:`experiments.feature_benchmark` (run folders, results.json, paired differences, the
two validity claims); this entry point sits with the other benchmarks. Target: <= 15 minutes on 2 cores.
"""

from __future__ import annotations

import sys

from experiments.feature_benchmark import main

if __name__ == "__main__":
    sys.exit(main())
