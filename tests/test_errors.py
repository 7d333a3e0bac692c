"""Library errors name parameters; the command line shows them as the flags the user typed."""

import pytest

from landscape import cli
from landscape.commands.common import flag_table
from landscape.errors import LandscapeError, with_flags
from landscape.grid import Grid


def test_with_flags_maps_known_names_and_keeps_others():
    flags = {"points_per_batch": "--points-per-batch", "z": "--z"}
    assert with_flags("`points_per_batch` and `z`; not `theta`", flags) == "--points-per-batch and --z; not `theta`"


def test_flag_table_uses_long_spellings_of_a_subcommand():
    parser = cli.build_parser()
    table = flag_table(cli._subparser(parser, "surface"))
    assert table["points_per_batch"] == "--points-per-batch"
    assert table["y"] == "--y"
    assert "help" not in table


def test_library_error_names_the_parameter_and_cli_names_the_flag(tmp_path, capsys):
    with pytest.raises(LandscapeError, match="`z` needs `y`"):
        Grid.from_ranges("-1:1:3", None, "-1:1:3")
    code = cli.main(["surface", "--model", "zoo:mlp", "--data", "zoo:synthetic", "--samples", "16", "--x=-1:1:3",
                     "--z=-1:1:3", "--out", str(tmp_path / "s.h5")])
    err = capsys.readouterr().err
    assert code == 2
    assert "--z needs --y as well" in err and "`" not in err
