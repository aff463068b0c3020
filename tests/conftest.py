"""Test-wide settings: one BLAS thread, so timings and results do not depend on a shared machine's load.

(Set before NumPy is imported by any test module; multi-threaded OpenBLAS on the small
matrices of these tests is slower, and on a loaded 2-core machine much slower.)
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
