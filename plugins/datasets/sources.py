"""The registry of data sources: every built-in source, by name."""

from __future__ import annotations

from gengraph.plugins.registry import PLUGIN_GROUP, Registry

from . import digits, files, generators, mnist
from .base import SHARED_FIELDS

DATASETS = Registry("data source", PLUGIN_GROUP, part=True)

for _source in (*generators.SOURCES, *digits.SOURCES, *files.SOURCES, *mnist.SOURCES):
    assert not set(_source.params) & set(SHARED_FIELDS), _source.name
    DATASETS.register(_source.name, _source)
del _source
