import numpy as np
import pytest

from symmetry.streams import STREAMS, rng, seed_of, torch_generator


def test_streams_reproduce_and_differ():
    assert np.array_equal(rng(5, "null", 3).integers(0, 2**32, 8), rng(5, "null", 3).integers(0, 2**32, 8))
    draws = {name: tuple(rng(5, name, 3).integers(0, 2**32, 4)) for name in STREAMS}
    assert len(set(draws.values())) == len(STREAMS)  # no two purposes share a sequence
    assert seed_of(5, "init") != seed_of(6, "init")
    assert torch_generator(1, "noise").initial_seed() == seed_of(1, "noise")


def test_window_stream_keeps_the_historical_layout():
    assert np.array_equal(rng(4, "windows", 9).uniform(size=5), np.random.default_rng([4, 9]).uniform(size=5))


def test_unknown_stream_is_refused():
    with pytest.raises(KeyError, match="unknown random stream"):
        rng(0, "nope")
