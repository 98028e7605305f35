"""The self-check: scores of analytic surfaces and the warning rule."""

import numpy as np
import pytest
import trimesh

import selfcheck
from sphere_sampler import Mesh


def mesh(tm):
    return Mesh(np.asarray(tm.vertices, dtype=np.float64), np.asarray(tm.faces, dtype=np.int64))


@pytest.mark.parametrize("cd2, to_rec, to_gt, floaters, expected", [
    (0.03, 0.015, 0.015, 0, ""), (0.1, 0.09, 0.01, 0, ""), (0.03, 0.015, 0.015, 2, "floaters"),
    (0.5, 0.45, 0.05, 0, "parts missing"), (0.5, 0.45, 0.05, 1, "parts missing"),
    (0.5, 0.05, 0.45, 0, "extra surface"), (0.5, 0.05, 0.45, 3, "floaters"), (0.5, 0.25, 0.25, 0, "wrong shape"),
    (None, 0.0, 0.0, 0, "no surface"), (float("inf"), 0.0, 0.0, 0, "no surface")])
def test_the_warning_names_the_side_that_holds_the_error(cd2, to_rec, to_gt, floaters, expected):
    assert selfcheck.warning(cd2, to_rec, to_gt, floaters) == expected


def test_a_missing_part_and_an_extra_part_are_told_apart():
    one = trimesh.creation.icosphere(3, radius=0.3)
    two = trimesh.util.concatenate([one, one.copy().apply_translation([0.55, 0, 0])])
    samples = selfcheck.sample_surface(mesh(two), selfcheck.CHAMFER_SAMPLES, seed=0)
    exact = selfcheck.self_check(*samples, 2, mesh(two))  # another sampling of itself: the metric's floor
    assert exact["warning"] == "" and exact["self_cd2"] < 0.02 and exact["parts_out"] == 2
    missing = selfcheck.self_check(*samples, 2, mesh(one))  # the second ball did not come back
    assert missing["warning"] == "parts missing" and missing["self_cd2_gt_to_rec"] > 0.8 * missing["self_cd2"]
    extra = selfcheck.self_check(*selfcheck.sample_surface(mesh(one), selfcheck.CHAMFER_SAMPLES, seed=0), 1,
                                 mesh(two))  # a floater where nothing is
    assert extra["warning"] == "floaters" and extra["parts_out"] == 2 and extra["floaters"] == 1
    assert selfcheck.self_check(*samples, 2, None)["warning"] == "no surface"


def ball_field(floater_radius: float) -> np.ndarray:
    """The 128^3 mesher volume of a ball of radius 0.5 and, when ``floater_radius`` > 0, a small spurious ball
    0.1 beyond its surface (a zero crossing away from the input: what a fine NGLOD level grew)."""
    from grid import lattice

    axis = lattice(128)
    p = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)
    field = np.linalg.norm(p, axis=-1) - 0.5
    if floater_radius > 0:
        field = np.minimum(field, np.linalg.norm(p - [0.6 + floater_radius, 0, 0], axis=-1) - floater_radius)
    return field


@pytest.mark.parametrize("floater_radius", [0.0, 0.03])
def test_a_small_floater_away_from_the_surface_is_counted_and_warned_though_the_cd2_is_low(floater_radius):
    from modelmesher import mesh_from_volume

    gt = selfcheck.sample_surface(mesh(trimesh.creation.icosphere(5, radius=0.5)), selfcheck.CHAMFER_SAMPLES, seed=0)
    check = selfcheck.self_check(*gt, 1, Mesh(*mesh_from_volume(ball_field(floater_radius), level=0.0)))
    assert check["self_cd2"] < selfcheck.WARN_CD2  # the CD2 alone would pass it
    if floater_radius:
        assert check["floaters"] == 1 and check["parts_out"] == 2 and check["warning"] == "floaters"
        # its share of the area: (0.03 / 0.5)^2 of the ball's
        assert 0.5 * 100 * (0.03 / 0.5) ** 2 < check["far_area"] < 2 * 100 * (0.03 / 0.5) ** 2
    else:
        assert check["floaters"] == 0 and check["far_area"] == 0.0 and check["warning"] == ""


def test_parts_counts_pieces_of_a_soup_not_triangles():
    box = trimesh.creation.box()
    soup = Mesh(np.asarray(box.triangles).reshape(-1, 3), np.arange(36).reshape(12, 3))  # STL: no shared vertices
    assert selfcheck.parts(soup) == 1
    two = trimesh.util.concatenate([box, box.copy().apply_translation([3, 0, 0])])
    assert selfcheck.parts(mesh(two)) == 2


def score_of_target(tm, res, shell=0.02):
    from mesh_kind import TargetField

    field = TargetField.of(mesh(tm), shell, grid=32)
    samples = selfcheck.sample_surface(mesh(tm), selfcheck.CHAMFER_SAMPLES, seed=0)
    return field.kind, selfcheck.self_check(*samples, selfcheck.parts(mesh(tm)),
                                            selfcheck.target_reconstruction(field, res))


def test_the_target_of_a_ball_meshes_back_onto_the_ball_and_a_plate_thinner_than_a_step_does_not():
    kind, ball = score_of_target(trimesh.creation.icosphere(4, radius=0.6), 32)
    assert kind == "closed" and ball["self_cd2"] < 0.05 and ball["parts_out"] == 1
    # a plate 0.02 thick at z = 0, between two planes of the 32-point lattice (z = +-1/31): no point inside
    kind, plate = score_of_target(trimesh.creation.box([1.0, 1.0, 0.02]), 32)
    assert kind == "closed" and (plate["self_cd2"] is None or plate["self_cd2"] > 1.0)


def test_the_target_of_a_sheet_is_moved_back_onto_the_sheet():
    sheet = trimesh.Trimesh([[-0.5, -0.5, 0.01], [0.5, -0.5, 0.01], [0.5, 0.5, 0.01], [-0.5, 0.5, 0.01]],
                            [[0, 1, 2], [0, 2, 3]])
    from mesh_kind import TargetField

    field = TargetField.of(mesh(sheet), 0.05, grid=32)
    recon = selfcheck.target_reconstruction(field, 32)
    assert field.kind == "sheet" and np.abs(recon.vertices[:, 2] - 0.01).max() < 1e-9
