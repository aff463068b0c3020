"""A spec never imports or executes code: expressions are whitelisted, kinds must be installed."""

import pytest
from click.testing import CliRunner

from gengraph.cli.main import main

BASE = """spec_version = 1
[data]
source = "digits"
binarize = 8.0
[model]
kind = "{kind}"
{key} = {value}
"""

ATTEMPTS = [
    "__import__('os').system('echo pwned')",
    "x.__class__",
    "(lambda: x)()",
    "[a for a in x]",
    "open('/etc/passwd')",
    "eval('1')",
    "x[0]",
    "'text'",
]


@pytest.mark.parametrize("kind, key", [("rbm", "energy"), ("ebm", "energy")])
@pytest.mark.parametrize("attempt", ATTEMPTS)
def test_malicious_expressions_in_a_spec_are_spec_errors(tmp_path, kind, key, attempt, capfd):
    spec = tmp_path / "evil.toml"
    spec.write_text(BASE.format(kind=kind, key=key, value='"' + attempt.replace('"', '\\"') + '"'))
    result = CliRunner().invoke(main, ["validate", str(spec)])
    assert result.exit_code == 2, result.output
    assert "model.energy" in result.output and "expression" in result.output
    assert "Traceback" not in result.output
    assert "pwned" not in capfd.readouterr().out


def test_a_spec_cannot_name_a_module_to_import(tmp_path):
    spec = tmp_path / "evil.toml"
    spec.write_text(BASE.format(kind="os:system", key="n_hidden", value="4"))
    result = CliRunner().invoke(main, ["validate", str(spec)])
    assert result.exit_code == 2
    assert 'unknown model kind "os:system"' in result.output
