import math

import numpy as np
import pytest
import trimesh

import rate_distortion as rd
from sphere_sampler import Mesh, sample_surface


def test_pareto_keeps_only_points_nothing_beats():
    pts = [{"bytes": 100, "cd2": 1.0}, {"bytes": 200, "cd2": 2.0}, {"bytes": 300, "cd2": 0.5},
           {"bytes": 400, "cd2": 0.5}]
    assert [p["bytes"] for p in rd.pareto(pts)] == [100, 300]


def test_bytes_at_cd2_interpolates_in_log_log_and_flags_bounds():
    # on a power law bytes = 1000 / cd2 the log-log interpolation is exact
    pts = [{"bytes": 1000 / c, "cd2": c} for c in (1.0, 0.1, 0.01)]
    b, flag = rd.bytes_at_cd2(pts, 0.03)
    assert flag == "=" and b == pytest.approx(1000 / 0.03)
    assert rd.bytes_at_cd2(pts, 5.0) == (1000.0, "<=")    # worse than Draco's smallest file
    assert rd.bytes_at_cd2(pts, 0.001) == (100000.0, ">=")  # better than Draco's largest file
    assert rd.ratio_flag("<=") == ">="
    assert math.isnan(rd.bytes_at_cd2(pts, math.inf)[0])


def test_draco_points_shrink_with_faces_and_the_full_mesh_is_nearly_exact():
    tm = trimesh.creation.icosphere(subdivisions=4, radius=0.9)
    mesh = Mesh(np.asarray(tm.vertices), np.asarray(tm.faces, dtype=np.int64))
    gt = sample_surface(mesh, 20000, seed=0)[0]
    pts = rd.draco_points(mesh, gt, 20000, faces_list=(100, 1000), bits_list=(10,))
    assert [p["setting"].split()[0] for p in pts] == ["100", "1000", str(len(mesh.faces))]
    assert pts[0]["bytes"] < pts[1]["bytes"] < pts[2]["bytes"]
    assert pts[0]["cd2"] > pts[1]["cd2"] > pts[2]["cd2"]
    # full mesh at 10 bits: only the sampling floor of 20k points remains (~0.1 here)
    assert pts[2]["cd2"] < 1.5 * rd.surface_cd2(mesh, gt, 20000)
    # the decode shown beside our file: Draco's best point within a byte budget, decoded again
    decoded, point = rd.draco_mesh_within(mesh, pts, pts[1]["bytes"], faces_list=(100, 1000))
    assert point == pts[1] and len(decoded.faces) == 1000
    assert rd.surface_cd2(decoded, gt, 20000) == pytest.approx(pts[1]["cd2"])
    assert rd.draco_mesh_within(mesh, pts, pts[0]["bytes"] - 1, faces_list=(100, 1000)) is None


def test_joined_runs_form_one_front_with_one_shipped_file():
    import eval as evaluate

    curves = {"w32": [{"setting": "6-bit (shipped)", "bytes": 3900, "cd2": 0.030},
                      {"setting": "8-bit", "bytes": 5300, "cd2": 0.028}],
              "w24": [{"setting": "5-bit", "bytes": 2100, "cd2": 0.032},
                      {"setting": "6-bit (shipped)", "bytes": 2450, "cd2": 0.031}]}
    joined = evaluate.joined_points(curves, ["w32", "w24"])
    assert [p["setting"] for p in joined] == ["w24: 5-bit", "w24: 6-bit", "w32: 6-bit (shipped)", "w32: 8-bit"]
    assert [p["bytes"] for p in rd.pareto(joined)] == [2100, 2450, 3900, 5300]
