"""One scheme for random streams: a name and the graph's seed give the generator."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from gengraph.engine import Graph, compile, ops
from gengraph.engine.ops.random import RandomStreams, stream_seed


def _draw(seed, stream, n=4):
    g = Graph(dtype="float64", seed=seed)
    return compile(g, ops.random_normal(shape=(n,), stream=stream, graph=g)).run()


def test_a_stream_is_seed_sequence_of_seed_and_crc32_of_its_name():
    expected = np.random.Generator(np.random.PCG64(
        np.random.SeedSequence(5, spawn_key=(zlib.crc32(b"noise"),)))).standard_normal(4)
    np.testing.assert_array_equal(_draw(5, "noise"), expected)
    # an int names the stream "n": the plugins' fixed streams and named ones are one scheme;
    # numbered streams keep the SeedSequence([seed, n]) they drew from before names existed
    np.testing.assert_array_equal(_draw(5, 3), _draw(5, "3"))
    assert stream_seed(5, 3).entropy == [5, 3] and stream_seed(5, "stream#7").entropy == [5, 7]
    old = np.random.Generator(np.random.PCG64(np.random.SeedSequence([5, 3]))).standard_normal(4)
    np.testing.assert_array_equal(_draw(5, 3), old)


def test_streams_are_reproducible_per_seed_and_differ_by_name_and_seed():
    np.testing.assert_array_equal(_draw(1, "a"), _draw(1, "a"))
    assert not np.allclose(_draw(1, "a"), _draw(1, "b"))
    assert not np.allclose(_draw(1, "a"), _draw(2, "a"))
    # a named stream is never a plain SeedSequence([seed, k]) stream (what plugins use for data and init)
    plain = np.random.Generator(np.random.PCG64(np.random.SeedSequence([1, zlib.crc32(b"a")]))).standard_normal(4)
    assert not np.allclose(_draw(1, "a"), plain)


def test_new_stream_gives_fresh_names_independent_of_use_order():
    g = Graph(seed=0)
    names = [g.new_stream() for _ in range(3)] + [g.new_stream("langevin")]
    n = 1 << 20  # above the small numbers plugins pick by hand
    assert names == [f"stream#{n}", f"stream#{n + 1}", f"stream#{n + 2}", f"langevin#{n + 3}"]
    a, b = RandomStreams(0), RandomStreams(0)
    first = a.rng(names[1]).normal(3, np.float64)
    b.rng(names[0]).normal(5, np.float64)  # another stream used first changes nothing
    np.testing.assert_array_equal(b.rng(names[1]).normal(3, np.float64), first)


def test_state_round_trip_by_name():
    s = RandomStreams(7)
    s.rng("x").normal(2, np.float64)
    state = s.state()
    assert list(state) == ["x"]
    want = s.rng("x").normal(3, np.float64)
    t = RandomStreams(7)
    t.set_state(state)
    np.testing.assert_array_equal(t.rng("x").normal(3, np.float64), want)


def test_names_sharing_a_seed_key_are_an_error():
    s = RandomStreams(0)
    s.rng("plumless")
    with pytest.raises(ValueError, match="share a seed key"):
        s.rng("buckeroo")  # crc32("plumless") == crc32("buckeroo")
