"""Write each workload's initial parameters and batches for bench.memory (run by `python -m bench`)."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench._pin import pin_from_argv  # noqa: E402

if __name__ == "__main__":
    pin_from_argv()

import argparse  # noqa: E402


def main(argv=None):
    from .memory import prepare

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    for w in ("mlp", "vae", "ddpm"):
        try:
            print(prepare(w, Path(a.data)))
        except Exception as exc:  # noqa: BLE001 - a missing plugin skips its workload
            print(f"{w}: not prepared: {type(exc).__name__}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    main()
