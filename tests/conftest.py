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
    return make_tiny_series(tmp_path / "meshes")


# a training budget that takes a second or two per mesh and still learns a ball or a box roughly (a ball sits on
# the early plateau, field about 0 near the surface, for the first 6 epochs; small batches leave it soonest)
TINY = ["--num_samples=4000", "--pool_uniform=8000", "--pool_surface=8000", "--uniform_fraction=0.1",
        "--epochs=8", "--batch_size=64", "--lr=0.005", "--num_spheres=8", "--sphere_grid=32", "--mesh_res=32",
        "--workers=1", "--qat_epochs=1", "--threads=1", "--retry_epochs=0"]  # a second try: its own tests


def make_tiny_series(folder: Path) -> Path:
    folder.mkdir(parents=True)
    trimesh.creation.icosphere(subdivisions=3, radius=1.0).export(folder / "ball.obj")
    trimesh.creation.box(extents=(1.0, 0.6, 0.4)).export(folder / "box.stl")
    return folder


def train(mesh_dir: Path, out: Path, *extra: str, arch: str = "keysphere") -> int:
    """train_series.main on ``mesh_dir`` with the TINY budget, the keys of it that apply to ``arch`` (later flags
    win)."""
    import architectures
    import train_series

    return train_series.main(["--mesh-dir", str(mesh_dir), "--out", str(out), "--arch", arch, "--quiet",
                              "--cache-dir", str(out.parent / "cache"),
                              *architectures.get(arch).overrides_for(TINY), *extra])


@pytest.fixture(scope="session")
def trained_series(tmp_path_factory) -> tuple[Path, Path]:
    """(mesh folder, run folder): ball, box and three bad files, trained once with the TINY budget (keysphere,
    8-bit codec after quantization-aware fine-tuning, one epoch per stage, and a 4-bit operating point).
    Tests must not modify it."""
    root = tmp_path_factory.mktemp("trained")
    folder = make_tiny_series(root / "meshes")
    (folder / "broken.obj").write_text("this is not a mesh\n")
    (folder / "cloud.ply").write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                                      "property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n")
    (folder / "nan.obj").write_text("v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n")
    train(folder, root / "ks", "--codec_bits=8", "--rd_bits=4")
    return folder, root / "ks"
