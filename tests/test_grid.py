import numpy as np
import pytest

from landscape.errors import LandscapeError
from landscape.grid import Grid, parse_range


def test_ranges_and_one_sided():
    assert parse_range("-1:1:5").values().tolist() == [-1, -0.5, 0, 0.5, 1]
    assert parse_range("0:1:11").values()[0] == 0.0
    assert parse_range("0.2:0.8:4").values().tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert parse_range("0:0:1").values().tolist() == [0.0]


@pytest.mark.parametrize("bad", ["1:-1:5", "a:b:c", "0:1:0", "0:1", "0:1:2.5", "nan:1:3", "1:1:3", "0:1:-3"])
def test_malformed_ranges(bad):
    with pytest.raises(LandscapeError, match="`x`"):
        parse_range(bad, "x")


def test_point_indexing_non_square():
    g = Grid.from_ranges("-1:1:5", "0:1:3", "0:2:2")
    assert g.shape == (5, 3, 2) and g.size == 30
    for flat in range(g.size):
        i, j, k = np.unravel_index(flat, g.shape)
        assert g.points(np.array([flat]))[0].tolist() == [g.coords[0][i], g.coords[1][j], g.coords[2][k]]


def test_z_needs_y():
    with pytest.raises(LandscapeError, match="`z` needs `y`"):
        Grid.from_ranges("-1:1:3", None, "-1:1:3")
