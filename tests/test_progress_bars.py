"""Progress bars end full on a run that ended well: a resumed run's bar starts at its checkpoint,
a closed form's (one row for train.epochs) and an early stop's end at the epochs they ran."""

import io
import re
import types

from tqdm import tqdm

import gengraph
from gengraph.plugins.run.progress import Progress
from test_api import TINY  # a 3-epoch mlp on 60 rows


def last_bar(text: str) -> str:
    return re.split(r"[\r\n]", text.strip())[-1]


def test_a_resumed_run_starts_at_its_checkpoint_and_ends_full(tmp_path, capsys):
    gengraph.run(TINY, out=tmp_path / "r", progress=None)
    gengraph.run(None, {"train.epochs": 6}, out=tmp_path / "r", resume=True, progress="bar")
    bars = re.split(r"[\r\n]", capsys.readouterr().err.strip())
    assert "3/6" not in bars[-1] and "6/6" in bars[-1] and "100%" in bars[-1], bars[-1]
    assert not any(re.search(r"\b[12]/6\b", b) for b in bars)  # never drawn below the checkpoint


def test_a_closed_form_run_ends_with_a_full_bar(tmp_path, capsys):
    gengraph.run("ols_franke", out=tmp_path / "ols", progress="bar")
    bar = last_bar(capsys.readouterr().err)
    assert "100%" in bar and "1/1" in bar, bar


def test_a_run_that_fails_is_not_shown_finished(tmp_path, capsys, monkeypatch):
    from gengraph.plugins.run import api

    def one_epoch_then_fail(spec, run_dir, *, on_epoch, **kwargs):
        on_epoch({"epoch": 1, "step": 3, "train_loss": 1.0})
        raise RuntimeError("the run failed in epoch 2")

    monkeypatch.setattr(api, "execute", one_epoch_then_fail)
    try:
        gengraph.run(TINY, out=tmp_path / "r", progress="bar")
    except RuntimeError:
        pass
    bar = last_bar(capsys.readouterr().err)
    assert "1/3" in bar and "100%" not in bar, bar


def test_the_notebook_widget_bound_follows_the_bar():
    widget = types.SimpleNamespace(max=10)
    bar = types.SimpleNamespace(n=1, total=10, container=types.SimpleNamespace(children=(None, widget, None)),
                                refresh=lambda: None)
    p = Progress(10, quiet=True)
    p.bar = bar
    p.finish()
    assert (bar.total, widget.max) == (1, 1)


def test_the_bar_draws_an_epochs_losses_beside_its_own_count():
    # the postfix was set (and drawn) before the count moved: "0/3 ... train_loss=1", one epoch behind
    buf = io.StringIO()
    progress = Progress(3, stream=buf)
    progress.bar = tqdm(total=3, unit="epoch", file=buf, mininterval=10)  # tqdm skips the count's own redraw
    for epoch in (1, 2, 3):
        progress.epoch({"epoch": epoch, "step": epoch, "train_loss": float(epoch)})
        last = buf.getvalue().split("\r")[-1]
        assert f"{epoch}/3" in last and f"train_loss={epoch}" in last, last
    progress.close()
