"""Landmark files: Slicer markups (.mrk.json, .fcsv) and plain lists, all read as RAS millimetres."""

import json

import numpy as np
import pytest

from toporeg.errors import InputError
from toporeg.io.points import read_points

RAS = np.array([[10.0, -20.0, 30.0], [-1.5, 2.5, -3.5]])


def test_markups_json_in_lps_and_ras_come_back_as_ras(tmp_path):
    for system, factor in (("LPS", np.array([-1.0, -1.0, 1.0])), ("RAS", np.ones(3))):
        doc = {"markups": [{"type": "Fiducial", "coordinateSystem": system,
                            "controlPoints": [{"label": f"F-{i}", "position": list(p * factor)}
                                              for i, p in enumerate(RAS)]}]}
        path = tmp_path / f"{system}.mrk.json"
        path.write_text(json.dumps(doc))
        assert np.allclose(read_points(path), RAS)


def test_fcsv_lps_and_plain_csv(tmp_path):
    fcsv = tmp_path / "p.fcsv"
    fcsv.write_text("# Markups fiducial file version = 4.11\n# CoordinateSystem = LPS\n"
                    "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
                    + "".join(f"{i},{-p[0]},{-p[1]},{p[2]},0,0,0,1,1,1,0,F-{i},,\n" for i, p in enumerate(RAS)))
    assert np.allclose(read_points(fcsv), RAS)
    plain = tmp_path / "p.csv"
    plain.write_text("".join(f"{p[0]}, {p[1]}, {p[2]}\n" for p in RAS))
    assert np.allclose(read_points(plain), RAS)
    two_d = tmp_path / "p2.txt"
    two_d.write_text("1 2\n3 4\n")
    assert np.allclose(read_points(two_d), [[1, 2, 0], [3, 4, 0]])


@pytest.mark.parametrize("name, text, problem", [
    ("empty.csv", "# nothing\n", "no points"),
    ("nan.csv", "1 2 nan\n", "NaN"),
    ("bad.csv", "1 2 3 4\n", "could not read"),
    ("p.xyz", "1 2 3\n", "unsupported"),
])
def test_bad_point_files_are_refused_clearly(tmp_path, name, text, problem):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=problem):
        read_points(path)
