import numpy as np
import pytest
import torch
import trimesh

import checkpoint
import common
import field
import modelmesher
from NeuralImplicit import NISDF


class Ball(torch.nn.Module):
    """Analytic SDF of a sphere of radius 0.5."""

    def forward(self, x):
        return x.norm(dim=1) - 0.5


def test_marching_cubes_of_a_sphere_has_its_volume_and_outward_faces():
    g = np.linspace(-1, 1, 64)
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    verts, faces = modelmesher.mesh_from_volume((np.sqrt(x**2 + y**2 + z**2) - 0.5).astype(np.float32))
    mesh = trimesh.Trimesh(verts, faces)
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * 0.125, rel=0.01)  # positive: faces point outward


def test_chunked_grid_equals_one_pass():
    model = Ball()
    assert np.array_equal(field.evaluate_grid(model, 20, chunk=400), field.evaluate_grid(model, 20))
    vol = field.evaluate_grid(model, 21)
    assert vol[10, 10, 10] == pytest.approx(-0.5) and vol[0, 10, 10] == pytest.approx(0.5)


def test_field_without_zero_crossing_is_an_input_error():
    with pytest.raises(common.InputError, match="never crosses 0"):
        modelmesher.mesh_from_volume(np.ones((8, 8, 8), dtype=np.float32))


def octahedron_network() -> NISDF:
    """A one-layer NI whose zero set is |x| + |y| + |z| = 0.5: leaky(t) + leaky(-t) = 0.9 |t|."""
    model = NISDF(layers=1, width=6)
    with torch.no_grad():
        model.mlp.model[0].weight.copy_(torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1],
                                                      [0, 0, -1]]))
        model.mlp.model[0].bias.zero_()
        model.mlp.model[2].weight.fill_(1 / 0.9)
        model.mlp.model[2].bias.fill_(-0.5)
    return model


@pytest.mark.parametrize("suffix", [".obj", ".ply", ".stl"])
def test_cli_writes_each_format_and_the_original_frame(tmp_path, suffix):
    checkpoint.save_checkpoint(tmp_path / "m.pt", octahedron_network(), "ni", {"layers": 1, "width": 6},
                           {"normalization": {"center": [10.0, 0.0, 0.0], "scale": 2.0}})
    out, orig = tmp_path / f"out{suffix}", tmp_path / f"orig{suffix}"
    modelmesher.main(["--model", str(tmp_path / "m.pt"), "--res", "65", "--out", str(out), "--quiet"])
    modelmesher.main(["--model", str(tmp_path / "m.pt"), "--res", "65", "--out", str(orig), "--original-frame",
                      "--quiet"])
    mesh, back = trimesh.load(out, force="mesh"), trimesh.load(orig, force="mesh")
    assert mesh.volume == pytest.approx(4 / 3 * 0.5**3, rel=0.02)
    assert back.volume == pytest.approx(mesh.volume / 8, rel=1e-3)  # scale 2 undone
    assert back.centroid == pytest.approx([10.0, 0.0, 0.0], abs=1e-3)


def test_cli_renders_a_picture_without_a_mesh(tmp_path):
    import matplotlib.image

    checkpoint.save_checkpoint(tmp_path / "m.pt", octahedron_network(), "ni", {"layers": 1, "width": 6}, {})
    assert modelmesher.main(["--model", str(tmp_path / "m.pt"), "--png", str(tmp_path / "m.png"), "--size", "40",
                             "--quiet"]) == 0
    image = matplotlib.image.imread(tmp_path / "m.png")
    assert image.shape[:2] == (40, 40)
    assert (image[20, 20, :3] < 0.95).any() and (image[0, 0, :3] == 1.0).all()  # the octahedron, on white
    assert not list(tmp_path.glob("*.obj")) and not list(tmp_path.glob("*.ply"))
    with pytest.raises(common.InputError, match="--out"):
        modelmesher.main(["--model", str(tmp_path / "m.pt"), "--quiet"])


def test_open_sheet_field_is_meshed_just_above_its_minimum():
    g = np.linspace(-1, 1, 33)
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    verts, faces = modelmesher.mesh_from_volume(np.abs(z).astype(np.float32))  # unsigned distance to a plane
    assert len(faces) > 0 and np.abs(verts[:, 2]).max() <= 2 / 32 + 1e-6


class PlaneShell(torch.nn.Module):
    """A sheet's shell field: distance to the square |x|, |y| <= 0.5 of the plane z = 0, minus 0.03."""

    def forward(self, p):
        outside = torch.clamp(p[:, :2].abs() - 0.5, min=0)
        return torch.sqrt((outside ** 2).sum(1) + p[:, 2] ** 2) - 0.03


def test_a_sheets_shell_is_meshed_back_onto_the_sheet():
    mesh = modelmesher.mesh_model(PlaneShell(), res=64, shell=0.03)
    v = np.asarray(mesh.vertices)
    assert np.abs(v[:, 2]).max() < 2e-3  # both sides of the shell moved onto z = 0
    assert np.abs(v[:, :2]).max() < 0.5 + 2e-3 and np.abs(v[:, :2]).max() > 0.49
    unprojected = modelmesher.mesh_model(PlaneShell(), res=64, level=0.0)
    assert np.abs(np.asarray(unprojected.vertices)[:, 2]).max() > 0.025


def test_narrow_band_grid_equals_dense_grid_near_the_surface():
    model = Ball()
    band, dense = field.evaluate_grid(model, 64, block=4), field.evaluate_grid(model, 64, block=1)
    assert (np.sign(band) == np.sign(dense)).all()
    near = np.abs(dense) < 0.2
    assert np.allclose(band[near], dense[near])
