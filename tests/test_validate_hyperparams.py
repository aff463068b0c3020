"""`gengraph validate` reports an optimizer's or schedule's hyper-parameter out of its range in the
same pass as the spec's key and type errors, at its file:line:col and key.

The ranges are declared once, in the engine's hyper-parameter rows (engine.schedules.Hyper); the
engine checks them for its own callers and the spec schema's fields are built from the same rows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.engine.optimizers import OPTIMIZERS, make_optimizer
from gengraph.engine.schedules import REQUIRED, SCHEDULES, Hyper, make_schedule

ROOT = Path(__file__).resolve().parents[1]
DIGITS = (ROOT / "specs" / "mlp_digits.toml").read_text()
OPTIMIZER_LINE = 'optimizer = { kind = "adam", lr = 1e-3 }'


def _inside(row):
    """A value the row takes."""
    typ, default, _help = row
    if default is not REQUIRED:
        return default
    b = row.bounds
    lo = 0 if b is None or b.lo is None else b.lo
    return typ(lo + 1 if b is not None and b.lo_open else lo) if typ in (int, float) else default


def _outside(row):
    """Values the row refuses: one past each end of its bounds, or a string not among its choices."""
    if row.choices is not None:
        return ["fast"]
    b, typ = row.bounds, row[0]
    out = []
    if b.lo is not None:
        out.append(b.lo if b.lo_open else b.lo - 1)
    if b.hi is not None:
        out.append(b.hi if b.hi_open else b.hi + 1)
    return [typ(v) for v in out]


def _toml(v) -> str:
    return f'"{v}"' if isinstance(v, str) else repr(v)


def _cases(registry, skip=()):
    for kind, cls in registry.items():
        for key, row in cls.schema.items():
            if key in skip or not isinstance(row, Hyper) or (row.bounds is None and row.choices is None):
                continue
            for bad in _outside(row):
                yield kind, key, bad


OPTIMIZER_CASES = list(_cases(OPTIMIZERS))
SCHEDULE_CASES = list(_cases(SCHEDULES, skip=("lr",)))  # a schedule scales the optimizer's lr


def test_every_number_of_every_optimizer_and_schedule_has_its_range():
    for registry in (OPTIMIZERS, SCHEDULES):
        for kind, cls in registry.items():
            for key, row in cls.schema.items():
                assert isinstance(row, Hyper), (kind, key)
                typ, default, help_ = row  # still unpacks as (type, default, help)
                if typ in (int, float):
                    assert row.bounds is not None, (kind, key)
                if typ is str:
                    assert row.choices is not None, (kind, key)
    kinds = {kind for kind, _key, _bad in OPTIMIZER_CASES} | {kind for kind, _key, _bad in SCHEDULE_CASES}
    assert kinds == set(OPTIMIZERS) | (set(SCHEDULES) - {"constant"})  # constant has only lr


def _write(tmp_path, optimizer: str, schedule: str | None = None) -> tuple[Path, str]:
    # a type error elsewhere in the spec: it used to hide every range error until it was fixed
    text = DIGITS.replace(OPTIMIZER_LINE, optimizer + (f"\nschedule = {schedule}" if schedule else ""))
    text = text.replace("epochs = 40", 'epochs = "forty"')
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path, text


def _line(text: str, needle: str) -> tuple[int, int]:
    for i, row in enumerate(text.splitlines(), 1):
        if needle in row:
            return i, row.index(needle) + 1
    raise AssertionError(needle)


def _assert_reported_together(result, path, text, key, needle):
    assert result.exit_code == 2, result.output
    line, col = _line(text, needle)
    issues = result.output.removeprefix("error: ").splitlines()
    ranged = [i for i in issues if i.startswith(f"{path}:{line}:{col}: {key}: ")]
    assert ranged and ("must be" in ranged[0] or "is not one of" in ranged[0]), result.output
    epochs_line, _ = _line(text, 'epochs = "forty"')
    assert f'{path}:{epochs_line}:1: train.epochs: expected integer, found string "forty"' in issues, result.output


@pytest.mark.parametrize("kind, key, bad", OPTIMIZER_CASES, ids=lambda v: str(v))
def test_an_optimizer_value_out_of_range_is_reported_with_the_type_errors(tmp_path, kind, key, bad):
    table = f'{{ kind = "{kind}", {key} = {_toml(bad)} }}'
    path, text = _write(tmp_path, f"optimizer = {table}")
    result = CliRunner().invoke(main, ["validate", str(path)])
    _assert_reported_together(result, path, text, f"train.optimizer.{key}", f"{key} = {_toml(bad)}")
    owner = OPTIMIZERS[kind].kind  # sgd is gd
    with pytest.raises(ValueError, match=rf'optimizer "{owner}": {key} must be '):  # the engine: the same row
        make_optimizer(kind, **{key: bad})


@pytest.mark.parametrize("kind, key, bad", SCHEDULE_CASES, ids=lambda v: str(v))
def test_a_schedule_value_out_of_range_is_reported_with_the_type_errors(tmp_path, kind, key, bad):
    cls = SCHEDULES[kind]
    values = {k: _inside(row) for k, row in cls.schema.items() if k != "lr" and row[1] is REQUIRED}
    values[key] = bad
    table = "{ " + ", ".join([f'kind = "{kind}"'] + [f"{k} = {_toml(v)}" for k, v in values.items()]) + " }"
    path, text = _write(tmp_path, OPTIMIZER_LINE, table)
    result = CliRunner().invoke(main, ["validate", str(path)])
    _assert_reported_together(result, path, text, f"train.schedule.{key}", f"{key} = {_toml(bad)}")
    with pytest.raises(ValueError, match=rf'schedule "{kind}": {key} must be '):
        make_schedule(kind, lr=0.1, **values)


def test_several_range_errors_and_a_type_error_in_one_pass(tmp_path):
    path, text = _write(tmp_path, 'optimizer = { kind = "adam", lr = -1, beta1 = 1.5, weight_decay = -0.1 }',
                        '{ kind = "step", step_size = 0 }')
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    needles = {"lr": "lr = -1", "beta1": "beta1 = 1.5", "wd": "weight_decay = -0.1", "step": "step_size = 0",
               "epochs": 'epochs = "forty"'}
    where = {name: "{}:{}:{}".format(path, *_line(text, needle)) for name, needle in needles.items()}
    assert result.output == (f"error: {where['lr']}: train.optimizer.lr: must be >= 0, found -1\n"
                             f"{where['beta1']}: train.optimizer.beta1: must be < 1, found 1.5\n"
                             f"{where['wd']}: train.optimizer.weight_decay: must be >= 0, found -0.1\n"
                             f"{where['step']}: train.schedule.step_size: must be >= 1, found 0\n"
                             f'{where["epochs"]}: train.epochs: expected integer, found string "forty"\n'), \
        result.output


def test_overrides_and_json_say_the_same():
    import json

    result = CliRunner().invoke(main, ["validate", "mlp_digits", "--json", "--set",
                                       'train.optimizer={kind="momentum", momentum=-1.0, lr=-1}',
                                       "--set", "train.epochs=-2"])
    assert result.exit_code == 2
    assert json.loads(result.output) == {"error": "--set: train.optimizer.lr: must be >= 0, found -1\n"
                                                  "--set: train.optimizer.momentum: must be >= 0, found -1.0\n"
                                                  "--set: train.epochs: must be >= 0, found -2", "exit_code": 2}


def test_values_that_depend_on_each_other_are_still_checked_once_the_model_is_built():
    for sets, said in ((['train.schedule={kind="cosine", total_steps=100, min_lr=0.5}'],
                        "train.schedule.min_lr: schedule \"cosine\": need 0 <= min_lr <= lr"),
                       (['train.optimizer={kind="momentum", nesterov=true, momentum=0.0}'],
                        'train.optimizer.momentum: optimizer "momentum": nesterov needs momentum > 0')):
        result = CliRunner().invoke(main, ["validate", "mlp_digits"] + [a for s in sets for a in ("--set", s)])
        assert result.exit_code == 2 and said in result.output, result.output


def test_values_inside_the_ranges_pass_both():
    for kind, cls in OPTIMIZERS.items():
        hyper = {k: _inside(row) for k, row in cls.schema.items()}
        assert make_optimizer(kind, **hyper).hyper == hyper
    for kind, cls in SCHEDULES.items():
        hyper = {k: _inside(row) for k, row in cls.schema.items()}
        if kind == "cosine":
            hyper["total_steps"] = 10
        assert make_schedule(kind, **hyper).hyper == hyper
    edges = CliRunner().invoke(main, ["validate", "mlp_digits", "--set",
                                      'train.optimizer={kind="rmsprop", lr=0, alpha=1.0, momentum=0.0, eps=0}',
                                      "--set", 'train.schedule={kind="exponential", gamma=1e-9}'])
    assert edges.exit_code == 0, edges.output


def test_validate_help_says_ranges_come_with_the_other_errors():
    result = CliRunner().invoke(main, ["validate", "--help"])
    text = " ".join(result.output.split())
    assert ("report every problem of its keys and values at once (unknown keys, types, values out of range, an "
            "optimizer's or schedule's hyper-parameters among them)") in text, text


def test_every_shipped_spec_passes_the_schema(tmp_path):
    from mnist_util import mnist_overrides

    from gengraph.plugins.run.loading import load

    for spec in sorted((ROOT / "specs").glob("*.toml")):
        load(spec, mnist_overrides(spec, tmp_path / spec.stem))  # raises SpecError on any range error


def test_momentum_takes_what_pytorch_takes():
    # momentum >= 1 was refused for momentum and rmsprop; torch.optim.SGD and RMSprop check only >= 0
    from gengraph.engine.optimizers import make_optimizer

    for kind in ("momentum", "rmsprop"):
        assert make_optimizer(kind, lr=0.1, momentum=1.0).hyper["momentum"] == 1.0
        with pytest.raises(ValueError, match="momentum must be >= 0, not -0.5"):
            make_optimizer(kind, lr=0.1, momentum=-0.5)


@pytest.mark.parametrize("kind, key, bad", [("adam", "lr", float("inf")), ("adam", "beta1", float("nan")),
                                            ("momentum", "momentum", float("inf")), ("rmsprop", "eps", float("-inf"))])
def test_the_engine_refuses_a_non_finite_hyper_parameter(kind, key, bad):
    # the spec schema refuses inf and nan; make_optimizer took lr = inf (inf >= 0) and trained to NaN
    with pytest.raises(ValueError, match=rf"{key} must be a finite number, not {bad}"):
        make_optimizer(kind, **{key: bad})
    with pytest.raises(ValueError, match=r"gamma must be a finite number, not inf"):
        make_schedule("exponential", lr=0.1, gamma=float("inf"))
