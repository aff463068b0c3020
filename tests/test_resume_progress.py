"""A resumed run's progress bar starts at its checkpoint's epoch (tqdm's initial): it never shows
0/N first, and every count it draws stands beside that epoch's own losses, from the first draw on."""

import io
import json
import re

import gengraph
from gengraph.plugins.run.api import prepare_run
from gengraph.plugins.run.loading import load
from gengraph.plugins.run.progress import Progress
from gengraph.plugins.run.runner import execute
from test_api import TINY  # a 3-epoch mlp on 60 rows


class Terminal(io.StringIO):
    """What the CLI's Progress draws its tqdm bar on: a terminal."""

    def isatty(self):
        return True


def draws(text: str, total: int) -> list[tuple[int, str | None]]:
    """(count, train_loss shown or None) of every bar tqdm drew."""
    out = []
    for frame in re.split(r"[\r\n]", text):
        count = re.search(rf"\b(\d+)/{total}\b", frame)
        if count:
            loss = re.search(r"train_loss=([-+.\deE]+)", frame)
            out.append((int(count[1]), loss[1] if loss else None))
    return out


def losses(run_dir) -> dict[int, str]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["epoch"]: f"{r['train_loss']:.4g}" for r in rows}


def check_aligned(shown, run_dir):
    logged = losses(run_dir)
    for count, loss in shown:
        assert loss is None or loss == logged[count], (count, loss, logged)


def test_the_clis_bar_starts_at_the_checkpoint_beside_its_losses(tmp_path):
    out = tmp_path / "r"
    gengraph.run(TINY, out=out, progress=None)
    stream = Terminal()
    bar = Progress(6, stream=stream)  # as the CLI makes it, before the run, knowing only train.epochs
    execute(load(out / "spec.toml", ["train.epochs=6"]), out, resume=True, on_epoch=bar.epoch, on_start=bar.start,
            log=lambda *a: None)  # as cli/main.py calls it
    bar.finish()
    bar.close()
    shown = draws(stream.getvalue(), 6)
    assert shown[0] == (3, losses(out)[3])  # the first draw: the checkpoint's epoch and its losses
    assert min(c for c, _ in shown) == 3 and shown[-1][0] == 6, shown
    assert [c for c, _ in shown] == sorted(c for c, _ in shown)
    check_aligned(shown, out)
    assert {c for c, loss in shown if loss is not None} == {3, 4, 5, 6}


def test_the_api_bar_of_a_resumed_run_never_draws_below_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "r"
    gengraph.run(TINY, out=out, progress=None)
    capsys.readouterr()
    gengraph.run(None, {"train.epochs": 5}, out=out, resume=True, progress="bar")
    shown = draws(capsys.readouterr().err, 5)
    assert shown and min(c for c, _ in shown) == 3 and shown[-1][0] == 5, shown
    check_aligned(shown, out)


def test_a_new_runs_bar_starts_at_zero_and_counts_beside_each_epochs_losses(tmp_path):
    out = tmp_path / "r"
    stream = Terminal()
    bar = Progress(3, stream=stream)
    spec, run_dir, _ = prepare_run(TINY, out=out)
    execute(spec, run_dir, on_epoch=bar.epoch, log=lambda *a: None)
    bar.close()
    shown = draws(stream.getvalue(), 3)
    assert shown[0] == (0, None) and shown[-1][0] == 3, shown
    check_aligned(shown, out)
    assert {c for c, loss in shown if loss is not None} == {1, 2, 3}


def test_a_bar_without_a_start_begins_at_the_epoch_before_its_first_row():
    # a caller that does not pass on_start (an older one): the bar is made at the first row
    stream = Terminal()
    bar = Progress(6, stream=stream)
    assert bar.bar is None and stream.getvalue() == ""  # nothing drawn before the run says where it starts
    bar.epoch({"epoch": 4, "step": 40, "train_loss": 0.5})
    assert bar.bar.initial == 3 and bar.bar.n == 4
    assert draws(stream.getvalue(), 6)[-1] == (4, "0.5")
    bar.close()

