"""RunContext: what plugins and the trainer may read about the run in progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gengraph.plugins.run.rundir import REPORT_RECORD, RunDirError, record_report, refuse_foreign, write_manifest


@dataclass
class RunContext:
    """The run a plugin's hooks are called in.

    The trainer fills the last three fields: its compiled programs by name, its state
    (step, epoch, history of logged metrics) and `evaluate(x, y) -> {metric: mean}`
    over a split. Outside a training run (tests, tools) they stay empty.
    """

    spec: dict
    run_dir: Path | None
    seed: int
    backend: str = "numpy"
    debug: bool = False
    plots: bool = True
    log: Callable = print
    programs: dict = field(default_factory=dict)
    train_state: object = None
    evaluate: Callable | None = None
    written: set = field(default_factory=set)  # names handed out by `path` (for --overwrite to clear)
    data_files: dict = field(default_factory=dict)  # fingerprints of the data files (data_files.py)
    foreign: set = field(default_factory=set)  # files in the run folder that are not the run's (the user's)

    def path(self, name: str) -> Path | None:
        """Where a plugin writes `name` in the run folder; the folder's list of such files (for
        --overwrite) names it before the plugin writes: a run killed in between left a file that
        no list named, and the next run's --overwrite kept it."""
        if self.run_dir is None:
            return None
        if name in self.foreign:  # the training is in the checkpoint; the user's file is kept
            raise RunDirError(f"{self.run_dir / name} was there before this run and is not a run's file, so the "
                              f"report does not write over it: move it away, then gengraph run --resume "
                              f"{self.run_dir} writes the report")
        if name not in self.written:
            refuse_foreign(self.run_dir, [name])  # one the user put there since the run started
            self.written.add(name)
            write_manifest(self.run_dir, self.written)
            # and the record says the run is writing it (a resumed run's record said "" for its old
            # file: a run killed before the report's end would leave its own file looking like the user's)
            if (self.run_dir / REPORT_RECORD).is_file():  # (a folder the run keeps a record in)
                record_report(self.run_dir, pending=[name])
        return self.run_dir / name

    @property
    def history(self) -> list[dict]:
        """The metrics logged so far (one dict per epoch); empty outside training."""
        return self.train_state.history if self.train_state is not None else []
