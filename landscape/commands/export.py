"""``landscape export FILE.h5 --format vtk|npz|csv``: the numbers of a result file for other tools
(ParaView/VisIt, NumPy, spreadsheets)."""

from __future__ import annotations

from ..errors import LandscapeError
from ..parallel import world
from ..plot.vtk import export
from ..results import open_result
from .common import check_output_path


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a result file as VTK (ParaView), a mesh (STL/OBJ/PLY), npz or csv",
                       description="vtk: legacy ASCII VTK (no dependency); vts: VTK XML structured grid (binary); "
                                   "vtu, stl, obj, ply: through meshio (pip install 'landscape[mesh]'); STL/OBJ/PLY "
                                   "mesh a 2D surface as a height field (two triangles per grid cell).")
    p.add_argument("file", metavar="FILE.h5", help="result file")
    p.add_argument("--format", required=True, choices=("vtk", "vts", "vtu", "stl", "obj", "ply", "npz", "csv"))
    p.add_argument("--out", metavar="PATH", help="output file (default: FILE.<format> beside the input)")
    p.add_argument("--surface", metavar="NAME",
                   help="vtk/vts/vtu/stl/obj/ply, 2D: the surface used as height (default: train_loss)")
    p.add_argument("--log", action="store_true", help="meshes and VTK, 2D: height is log10 of the surface")
    p.add_argument("--zmax", type=float, help="meshes and VTK, 2D: clip the height at this value")
    p.set_defaults(func=run)


def run(args) -> int:
    if not world().is_root:
        return 0
    check_output_path(args.out, example=None)
    meshes = ("vtk", "vts", "vtu", "stl", "obj", "ply")
    if args.format not in meshes and (args.surface or args.log or args.zmax is not None):
        raise LandscapeError("--surface, --log and --zmax apply to --format vtk, vts, vtu, stl, obj and ply only")
    result = open_result(args.file)
    kw = {"surface": args.surface, "log": args.log, "zmax": args.zmax} if args.format in meshes else {}
    print(export(result, args.format, args.out, **kw), flush=True)
    return 0
