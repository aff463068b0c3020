"""The examples in `gengraph <command> --help` work from any folder (they named specs/... paths,
which exist only in a checkout), and a folder named like a shipped spec (a run's --out) does not
hide the spec."""

from __future__ import annotations

import re
import shlex

import pytest

from click.testing import CliRunner

import gengraph
from gengraph.cli.main import main
from gengraph.plugins.run.loading import resolve_spec


def test_every_help_example_names_a_spec_found_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no specs/ here
    seen = 0
    for command in ("run", "validate", "graph", "gradcheck", "sweep"):
        text = CliRunner().invoke(main, [command, "--help"]).output
        for line in text.splitlines():
            m = re.match(rf"\s+gengraph {command} (\S+)", line)
            if not m or m.group(1).startswith("-"):
                continue
            words = shlex.split(line.split("  #")[0])  # quoted --set values parse as a shell would
            spec = words[2]
            assert resolve_spec(spec).endswith(".toml") and not spec.startswith("specs/"), line
            seen += 1
    assert seen >= 15


def test_a_folder_named_like_a_shipped_spec_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlp_digits").mkdir()  # e.g. gengraph run mlp_digits --out mlp_digits
    result = CliRunner().invoke(main, ["validate", "mlp_digits"])
    assert result.exit_code == 0 and "valid (mlp on digits)" in result.output, result.output


def test_debug_shows_the_traceback_and_keeps_the_exit_code_and_json():
    result = CliRunner().invoke(main, ["validate", "mlp_digits", "--set", "train.epoch=3", "--debug"])
    assert result.exit_code == 2  # it was 1: the error re-raised as a crash
    assert "Traceback" in result.stderr and 'error: --set: train.epoch: unknown key' in result.stderr
    as_json = CliRunner().invoke(main, ["validate", "mlp_digits", "--set", "train.epoch=3", "--debug", "--json"])
    assert as_json.exit_code == 2 and '"exit_code": 2' in as_json.stdout


def test_a_quoted_table_or_list_value_that_is_not_toml_says_why():
    # a broken table became the string "{kind=...}" and the message never said why it was no table
    for value, why in (('train.optimizer={kind="adam", lr=}', "which is not valid TOML: Invalid value (at column 18)"),
                       ("model.layers=[{units=8}", "which is not valid TOML: ")):
        result = CliRunner().invoke(main, ["validate", "mlp_digits", "--set", value])
        assert result.exit_code == 2 and why in result.output, result.output
    # a string field takes the text as it always did ([draft] run is a name, not a broken list), as a str
    for value in ("run.name=[draft] run", "run.name=plain_word"):
        assert CliRunner().invoke(main, ["validate", "mlp_digits", "--set", value]).exit_code == 0
    assert type(gengraph.validate("ols_franke", ["run.name=[x"])["run"]["name"]) is str
    # an unclosed quote is a typo, never a name (it made a folder `"unclosed`)
    for value in ('run.name="unclosed', "train.optimizer.kind='adam"):
        result = CliRunner().invoke(main, ["validate", "mlp_digits", "--set", value])
        assert result.exit_code == 2 and "is not valid TOML: " in result.output, result.output


def test_set_messages_say_how_toml_spells_it():
    for setting, said in (("data.shuffle=False", 'found string "False" (TOML writes false)'),
                          ("train.optimizer.lr=.5", "(TOML writes numbers with a digit on each side of the point: "
                                                    "0.5)"),
                          ("model.layers[-1].units=3", "a list index counts from 0 (negative indices are not taken)"),
                          ("train.optimizer.lr=-0.5", "--set: train.optimizer.lr: must be >= 0, found -0.5")):
        result = CliRunner().invoke(main, ["validate", "mlp_digits", "--set", setting])
        assert result.exit_code == 2 and said in result.output, result.output
    for setting in ("train.optimizer=False", "train.epochs=.5", "run.seed=1."):  # no bool or float wanted: no hint
        result = CliRunner().invoke(main, ["validate", "mlp_digits", "--set", setting])
        assert result.exit_code == 2 and "TOML writes" not in result.output, result.output


def test_an_empty_path_is_refused_by_every_command():
    # graph and sweep ignored --out "", sample read "" as the working directory
    for args in (["run", ""], ["run", "ols_franke", "--out", ""], ["graph", "mlp_digits", "--out", ""],
                 ["sweep", "sweep_ridge_franke", "--out", ""], ["sample", ""], ["validate", ""]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and "the name is empty" in result.output, (args, result.output)


def test_a_run_name_cannot_leave_output_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("../escape", "a/../../b", "/abs"):
        for command in ("run", "validate"):  # validate says what run would
            result = CliRunner().invoke(main, [command, "ols_franke", "--set", f'run.name="{name}"'])
            assert result.exit_code == 2 and "would put the run outside output.dir" in result.output, result.output
    # the name is no folder with --out (nor in a sweep's trials): nothing refused; ~draft is a plain folder
    assert CliRunner().invoke(main, ["run", "ols_franke", "--set", 'run.name="../x"', "--out", "o", "-q"]).exit_code == 0
    assert CliRunner().invoke(main, ["run", "ols_franke", "--set", 'run.name="~draft"', "-q"]).exit_code == 0
    assert (tmp_path / "runs" / "~draft" / "summary.json").is_file() and not (tmp_path / "escape").exists()


def test_a_path_of_spaces_is_an_empty_name_before_anything_is_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["sweep", "sweep_ridge_franke", "--out", " "])
    assert result.exit_code == 2 and "the name is empty" in result.output and not (tmp_path / " ").exists()


def test_a_sweep_axis_that_is_not_toml_says_why():
    result = CliRunner().invoke(main, ["validate", "sweep_ridge_franke", "--set", 'sweep.axes."model.lam"=[1e-3, 1e-2'])
    assert result.exit_code == 2 and "which is not valid TOML: " in result.output, result.output


def test_a_union_field_type_names_its_types():
    from gengraph.plugins.spec.schema import Field, Table, validate

    with pytest.raises(gengraph.SpecError, match=r"k: expected integer or float, found string"):
        validate(Table({"k": Field(int | float, 1)}), {"k": "x"})
