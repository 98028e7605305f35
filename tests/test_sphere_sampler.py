import numpy as np
import pytest
import torch
import trimesh
from conftest import shared_file

import sphere_sampler as ss
from common import InputError
from mesh_kind import TargetField


def ball(radius=0.5, subdivisions=4) -> ss.Mesh:
    tm = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return ss.Mesh(np.asarray(tm.vertices), np.asarray(tm.faces, dtype=np.int64))


def field(mesh, shell=0.01):
    return TargetField.of(mesh, shell)


def test_signed_distance_of_a_sphere_is_radial():
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (2000, 3))
    expected = np.linalg.norm(points, axis=1) - 0.5
    # the icosphere is inscribed in the true sphere, so it is off by at most its sagitta (~0.001 here)
    assert np.abs(field(ball()).sdf(points) - expected).max() < 3e-3
    assert field(ball()).sdf(np.zeros((1, 3)))[0] < 0


def test_normalization_fits_ball_of_radius_0_9_and_inverts():
    rng = np.random.default_rng(1)
    vertices = rng.normal(size=(500, 3)) * [3, 1, 0.5] + [10, -4, 2]
    norm = ss.fit_normalization(vertices)
    radii = np.linalg.norm(norm.apply(vertices), axis=1)
    assert radii.max() == pytest.approx(0.9, abs=1e-9)
    assert np.allclose(norm.invert(norm.apply(vertices)), vertices)
    assert ss.Normalization.from_dict(norm.to_dict()).scale == norm.scale


def test_sn_graph_rule_picks_largest_then_spreads():
    radius = np.zeros((40, 20, 20))
    x, y, z = np.meshgrid(np.arange(40), np.arange(20), np.arange(20), indexing="ij")
    big = 8 - np.sqrt((x - 10) ** 2 + (y - 10) ** 2 + (z - 10) ** 2)
    small = 4 - np.sqrt((x - 30) ** 2 + (y - 10) ** 2 + (z - 10) ** 2)
    radius = np.maximum(np.maximum(big, small), 0)
    centres = ss.sn_graph_centres(radius, 2, min_radius=1)
    assert centres[0].tolist() == [10, 10, 10]
    assert centres[1].tolist() == [30, 10, 10]
    # each ball holds one sphere without overlap; the rest spread by farthest-point sampling
    many = ss.sn_graph_centres(radius, 50, min_radius=0.5)
    assert len(np.unique(many, axis=0)) == 50
    assert min(np.linalg.norm(many[2] - c) for c in centres) > 4


def test_key_spheres_of_a_ball_are_inside_with_exact_sdf():
    spheres = ss.extract_key_spheres(field(ball()), count=16, grid=32)
    assert spheres.shape == (16, 4)
    expected = np.linalg.norm(spheres[:, :3], axis=1) - 0.5
    assert np.allclose(spheres[:, 3], expected, atol=3e-3)
    assert (spheres[:, 3] < 0).all()
    assert np.linalg.norm(spheres[0, :3]) < 0.05  # the largest sphere sits at the centre


def test_sphere_file_round_trip(tmp_path):
    spheres = ss.extract_key_spheres(field(ball()), count=8, grid=32)
    ss.write_sphere_file(tmp_path / "s.txt", spheres, grid=32)
    back = ss.read_sphere_file(tmp_path / "s.txt", grid=32)
    assert np.allclose(back, spheres, atol=1e-5)


def test_bad_sphere_file_is_an_input_error(tmp_path):
    (tmp_path / "bad.txt").write_text("3\n1 2 3 4 0\n")
    with pytest.raises(InputError, match="bad.txt"):
        ss.read_sphere_file(tmp_path / "bad.txt")


def test_reads_the_authors_sphere_file_and_extraction_lands_near_it():
    from scipy.spatial import cKDTree

    authors = ss.read_sphere_file(shared_file("reference", "252119_insphere128.txt"))
    assert authors.shape == (128, 4)
    assert np.allclose(authors[0], [-0.03125, 0.0625, -0.140625, -6.1802 / 64], atol=1e-6)
    mesh, _ = ss.normalize_mesh(ss.load_mesh(shared_file("reference", "252119.obj")))
    ours = ss.extract_key_spheres(field(mesh), 128, 128)
    d_ours = cKDTree(authors[:, :3]).query(ours[:, :3])[0] * 64
    d_theirs = cKDTree(ours[:, :3]).query(authors[:, :3])[0] * 64
    assert np.median(d_ours) <= 3.0 and np.median(d_theirs) <= 3.0


def test_approx_surface_distance_of_a_sphere():
    mesh = ball()
    surface, normals = ss.sample_surface(mesh, 200_000, seed=0)
    points = torch.rand(5000, 3) * 2 - 1
    approx = ss.approx_surface_distance(points, surface, normals).numpy()
    exact = np.abs(np.linalg.norm(points.numpy(), axis=1) - 0.5)
    assert np.abs(approx - exact).mean() < 0.01


def test_training_points_concentrate_near_the_surface():
    points, sdf = ss.sample_training_points(field(ball()), 20_000, 20_000, 0.01, 60.0, 10_000, seed=0)
    assert points.shape == (10_000, 3) and sdf.shape == (10_000,)
    expected = torch.linalg.norm(points.double(), dim=1) - 0.5
    assert torch.allclose(sdf.double(), expected, atol=3e-3)
    assert (sdf.abs() < 0.05).float().mean() > 0.8
    again, _ = ss.sample_training_points(field(ball()), 20_000, 20_000, 0.01, 60.0, 10_000, seed=0)
    assert torch.equal(points, again)  # seeded


def test_uniform_fraction_adds_far_field_points():
    points, sdf = ss.sample_training_points(field(ball()), 20_000, 20_000, 0.01, 60.0, 10_000, seed=0,
                                            uniform_fraction=0.2)
    assert points.shape == (10_000, 3)
    assert 0.1 < (sdf.abs() > 0.2).float().mean() < 0.2  # most of the uniform share lies far from the surface


def test_an_open_sheet_still_gets_key_spheres():
    grid = np.linspace(-0.5, 0.5, 11)
    x, y = np.meshgrid(grid, grid, indexing="ij")
    tm = trimesh.Trimesh(np.stack([x.ravel(), y.ravel(), 0.1 * x.ravel() ** 2], axis=1), _grid_faces(11))
    sheet = field(ss.Mesh(np.asarray(tm.vertices), np.asarray(tm.faces)), shell=0.02)
    assert sheet.kind == "sheet"
    spheres = ss.extract_key_spheres(sheet, count=8, grid=32)
    assert spheres.shape == (8, 4)
    assert np.abs(spheres[:, 3] + 0.02).max() < 2 / 32 * 2  # centres lie on the sheet: target -shell


def _grid_faces(n: int) -> np.ndarray:
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    return np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


def test_smallest_enclosing_ball_of_many_cospherical_points():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(20000, 3))
    points = points / np.linalg.norm(points, axis=1, keepdims=True) * 2.0 + [1.0, -2.0, 0.5]
    center, radius = ss.smallest_enclosing_ball(points)  # miniball alone: minutes and gigabytes
    assert np.allclose(center, [1.0, -2.0, 0.5], atol=1e-3) and radius == pytest.approx(2.0, abs=1e-3)
    assert np.linalg.norm(points - center, axis=1).max() <= radius * (1 + 1e-9)
    few = points[:500]
    assert np.allclose(ss.smallest_enclosing_ball(few)[0], ss.miniball_of(few)[0])
