"""Progress output: a tqdm bar on a terminal, plain per-epoch lines otherwise, nothing with --quiet."""

from __future__ import annotations

import numbers
import os
import sys


def to_devnull(stream) -> None:
    """`stream` (its file descriptor) goes nowhere from now on: its reader stopped reading (| head),
    and the interpreter's last flush would raise BrokenPipeError again. A stream without a file
    descriptor (a test's buffer) is left as it is."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


SHOWN = ("train_loss", "test_loss", "test_accuracy", "test_mse")  # a row's metrics the progress shows


class Progress:
    """The run's progress. The bar is drawn from `start(epoch)`, as training begins (a resumed run's
    from its checkpoint's epoch: tqdm's initial), or else from the first epoch's row; made earlier it
    showed 0/N until a resumed run's first epoch ended."""

    def __init__(self, epochs: int, *, quiet=False, stream=None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.bar = None
        self.every = max(1, epochs // 20)  # plain output: about 20 lines per run
        self.epochs = epochs
        self.make_bar = None  # initial -> a tqdm bar; None: no bar (plain lines, or quiet)
        if not quiet and self.stream.isatty():
            self.make_bar = self.tqdm_bar

    def tqdm_bar(self, initial: int, postfix: dict | None = None):
        from tqdm import tqdm

        return tqdm(total=self.epochs, initial=initial, unit="epoch", file=self.stream, disable=None,
                    postfix=postfix)

    def start(self, epoch: int = 0, row: dict | None = None) -> None:
        """Training begins after `epoch` epochs (0 for a new run): the bar is drawn at epoch/N, beside
        that epoch's losses (`row`, the checkpoint's last metrics row) where given, from its first draw."""
        if self.quiet or self.bar is not None or self.make_bar is None:
            return
        self.bar = self.make_bar(epoch, self._shown(row) if row is not None else None)

    @staticmethod
    def _shown(row: dict) -> dict:
        return {k: f"{v:.4g}" for k, v in row.items() if k in SHOWN and isinstance(v, numbers.Real)}

    def epoch(self, row: dict) -> None:
        if self.quiet:
            return
        if self.bar is None and self.make_bar is not None:  # not started: from the epoch before this row
            self.start(max(int(row["epoch"]) - 1, 0))
        if self.bar is not None:
            done = max(int(row["epoch"]), self.bar.n + 1)  # a closed form's one row is epoch 0
            self.bar.update(max(done - self.bar.n, 0))
            # after the count, whose own redraw tqdm may skip: the postfix's redraw shows both (set
            # first, it drew this epoch's losses beside the last epoch's count)
            self.bar.set_postfix(self._shown(row))
        elif row["epoch"] % self.every == 0 or row["epoch"] >= self.epochs or row["epoch"] <= 1:
            shown = {k: v for k, v in row.items() if k in SHOWN}
            parts = " ".join(f"{k}={v:.5g}" for k, v in shown.items())
            try:
                print(f"epoch {row['epoch']} step {row['step']} {parts}", file=self.stream, flush=True)
            except BrokenPipeError:  # its reader went away (2>&1 | head): the lines stop, not the run
                self.quiet = True
                to_devnull(self.stream)

    def finish(self) -> None:
        """The run ended well: a full bar at the epochs it ran (a closed form's one, an early stop's),
        never one left short, which reads as a failure (and which tqdm's notebook bar paints red)."""
        bar = self.bar
        if bar is None or bar.n == bar.total:
            return
        bar.total = bar.n
        widgets = getattr(getattr(bar, "container", None), "children", None)
        if widgets:  # tqdm.notebook's widget keeps its own bound: (label, bar, text)
            widgets[1].max = bar.n
        bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()
