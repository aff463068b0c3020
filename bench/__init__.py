"""gengraph benchmarks against hand-written NumPy and PyTorch CPU eager.

Run ``python -m bench`` (full, about 5 minutes on 2 cores) or ``python -m bench --quick``
from the repository root; see bench/README.md. Nothing here imports NumPy at package
import time, so the thread-count variables can be set before NumPy loads.
"""
