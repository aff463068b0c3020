"""Progress output: a tqdm bar on a terminal, plain per-epoch lines otherwise, nothing with --quiet."""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, epochs: int, *, quiet=False, stream=None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.bar = None
        self.every = max(1, epochs // 20)  # plain output: about 20 lines per run
        self.epochs = epochs
        if not quiet and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=epochs, unit="epoch", file=self.stream, disable=None)

    def epoch(self, row: dict) -> None:
        if self.quiet:
            return
        shown = {k: v for k, v in row.items() if k in ("train_loss", "test_loss", "test_accuracy", "test_mse")}
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()})
            self.bar.update(1)
        elif row["epoch"] % self.every == 0 or row["epoch"] >= self.epochs or row["epoch"] <= 1:
            parts = " ".join(f"{k}={v:.5g}" for k, v in shown.items())
            print(f"epoch {row['epoch']} step {row['step']} {parts}", file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
