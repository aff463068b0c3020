"""A latent-variable model's networks are checked each on its own: an encoder's and a decoder's
layer misfits are reported in one pass (as the spec's key and type errors are), each at its key."""

from __future__ import annotations

from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.plugins.model import ModelConfigError

VAE = """spec_version = 1
[data]
source = "digits"
[model]
kind = "vae"
latent = 4
encoder = [
  { type = "conv2d", channels = 8, kernel = 3, padding = 1 },
  { type = "pool", mode = "max", kernel = 16, stride = 16 },
  { type = "flatten" },
]
decoder = [
  { units = 32 },
  { type = "reshape", shape = [2, 5, 5] },
]
[train]
epochs = 1
"""


def _validate(tmp_path, text):
    path = tmp_path / "s.toml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    return path, result.output.removeprefix("error: ").splitlines()


def test_an_encoder_and_a_decoder_that_do_not_fit_are_reported_together(tmp_path):
    # only the encoder's misfit was reported; fixing it revealed the decoder's on the next run
    path, lines = _validate(tmp_path, VAE)
    assert lines == [f"{path}:9:3: model.encoder[1]: pool layer: window 16x16 is larger than the input 8x8x8",
                     f"{path}:14:3: model.decoder[1]: reshape layer: input 32 (32 values) does not fit shape 2x5x5 "
                     "(50 values)"]


def test_one_misfit_alone_is_still_one_line(tmp_path):
    path, lines = _validate(tmp_path, VAE.replace("kernel = 16, stride = 16", "kernel = 2, stride = 2"))
    assert lines == [f"{path}:14:3: model.decoder[1]: reshape layer: input 32 (32 values) does not fit shape 2x5x5 "
                     "(50 values)"]


def test_a_template_list_failing_alike_at_every_level_is_said_once(tmp_path):
    text = ('spec_version = 1\n[data]\nsource = "digits"\n[model]\nkind = "hvae"\n'
            'encoder = [{ units = 16 }, { type = "reshape", shape = [3, 3, 3] }]\ndecoder = [{ units = 16 }]\n'
            'levels = [{ size = 8 }, { size = 4 }]\n[train]\nepochs = 1\n')
    path, lines = _validate(tmp_path, text)
    assert lines == [f"{path}:6:28: model.encoder[1]: reshape layer: input 16 (16 values) does not fit shape 3x3x3 "
                     "(27 values)"]


def test_together_carries_every_complaint_once_in_order():
    a, b, c = ModelConfigError("a", "1"), ModelConfigError("b", "2"), ModelConfigError("c", "3")
    b.more = (c,)
    first = ModelConfigError.together([a, b])
    assert first is a and [(e.path, e.message) for e in first.all()] == [("a", "1"), ("b", "2"), ("c", "3")]
    assert [e.path for e in ModelConfigError("d", "4").all()] == ["d"]
