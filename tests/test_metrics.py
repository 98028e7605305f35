import numpy as np
import trimesh

import eval as ev
import metrics
import sphere_sampler as ss


def test_chamfer_of_a_set_with_itself_is_zero():
    pts = np.random.default_rng(0).uniform(size=(1000, 3))
    cd = metrics.chamfer(pts, pts)
    assert cd["cd2"] == 0 and cd["cd1"] == 0
    assert metrics.fscore(cd["d_ab"], cd["d_ba"]) == 1.0


def test_chamfer_of_a_shifted_set():
    pts = np.random.default_rng(0).uniform(size=(200, 3)) * 100  # sparse: the nearest point is the shifted twin
    cd = metrics.chamfer(pts, pts + [0.01, 0, 0])
    assert np.isclose(cd["cd2"], 1e3 * 2 * 0.01 ** 2)
    assert np.isclose(cd["cd1"], 1e3 * 2 * 0.01)


def test_iou_of_a_shape_with_itself_is_100_and_disjoint_is_0():
    occ = np.random.default_rng(0).uniform(size=1000) > 0.5
    assert metrics.iou(occ, occ) == 100.0
    assert metrics.iou(occ, ~occ) == 0.0


def test_normal_consistency_of_a_set_with_itself_is_one():
    n = np.random.default_rng(0).normal(size=(100, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    idx = np.arange(100)
    assert np.isclose(metrics.normal_consistency(n, -n, idx, idx), 1.0)


def test_exact_chamfer_of_a_mesh_with_itself_is_zero():
    tm = trimesh.creation.icosphere(subdivisions=2)
    mesh = ss.Mesh(np.asarray(tm.vertices), np.asarray(tm.faces, dtype=np.int64))
    pts, _ = ss.sample_surface(mesh, 1000, seed=0)
    cd2, cd1 = metrics.exact_chamfer(pts, mesh, pts, mesh)
    assert cd2 < 1e-9 and cd1 < 1e-3


def test_markdown_table_has_mean_median_and_ratio():
    rows = [{"mesh": m, "run": r, "status": "ok", "kind": k, "cd2": c, "giou": 99.0, "floor_cd2": 0.01}
            for m, r, c, k in [("a", "ks", 0.02, "closed"), ("a", "ni", 0.04, "closed"), ("b", "ks", 0.03, "sheet"),
                               ("b", "ni", 0.03, "sheet")]]
    table = ev.markdown_table(rows, ["ks", "ni"], ["a", "b"], ratio=("ks", "ni"))
    lines = table.splitlines()
    assert lines[0].startswith("| mesh | kind | CD2 ks | CD2 ni |") and lines[0].endswith("CD2 ks/ni |")
    assert lines[2].startswith("| a | closed | 0.0200 | 0.0400 | 99.00 | 99.00 |") and lines[2].endswith("| 0.500 |")
    assert lines[3].startswith("| b | sheet | 0.0300 | 0.0300 | n/a | n/a |") and lines[3].endswith("| 1.000 |")
    assert lines[4].startswith("| **mean** |  | 0.0250 | 0.0350 |") and lines[4].endswith("| 0.750 |")
    assert lines[5].startswith("| **median** |")


def test_training_flops_count_of_the_ni_baseline():
    import architectures
    import bench
    import common

    cfg = common.TrainConfig()
    # forward and weight gradient of all layers, input gradient of all but the first, 2 FLOPs per MAC
    first, rest = 3 * 32, 7 * 32 * 32 + 32
    assert bench.training_flops_per_point(architectures.get("ni"), cfg, 0) == 2 * (2 * (first + rest) + rest)
    # keysphere: the first layer sees the 7 precomputed inputs (xyz, sphere average)
    first, rest = 7 * 32, 5 * 32 * 32 + 32
    assert bench.training_flops_per_point(architectures.get("keysphere"), cfg, 128) == 2 * (2 * (first + rest) + rest)
