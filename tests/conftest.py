"""Shared fixtures: small meshes made on the fly, and the optional ../shared folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trimesh

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))


def shared_file(*parts: str) -> Path:
    """A file of ../shared, or skip the test with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared is outside the project)")
    return path


@pytest.fixture
def sphere_mesh_file(tmp_path) -> Path:
    """A closed sphere of radius 0.5 (an icosphere) as an OBJ file."""
    path = tmp_path / "ball.obj"
    trimesh.creation.icosphere(subdivisions=4, radius=0.5).export(path)
    return path


@pytest.fixture
def tiny_series(tmp_path) -> Path:
    """A mesh folder with two small closed shapes."""
    folder = tmp_path / "meshes"
    folder.mkdir()
    trimesh.creation.icosphere(subdivisions=3, radius=1.0).export(folder / "ball.obj")
    trimesh.creation.box(extents=(1.0, 0.6, 0.4)).export(folder / "box.stl")
    return folder


TINY = ["--num_samples=20000", "--pool_uniform=20000", "--pool_surface=20000", "--uniform_fraction=0.1",
        "--epochs=8", "--batch_size=128", "--lr=0.01", "--restarts=2", "--restart_epochs=1",
        "--num_spheres=8", "--sphere_grid=32", "--mesh_res=32", "--workers=1"]
