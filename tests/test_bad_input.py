"""Bad input ends in one clear line naming the file, a non-zero exit, and nothing half-written."""

import subprocess
import sys

import pytest
from conftest import ROOT

import checkpoint
import common
from NeuralImplicit import NISDF


def cli(*args):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return result.returncode, result.stderr.strip()


def write_bad(tmp_path, kind):
    path = tmp_path / {"missing": "nope.obj", "not_mesh": "junk.obj", "points": "cloud.ply", "empty": "empty.obj",
                       "nan": "nan.obj"}[kind]
    if kind == "not_mesh":
        path.write_bytes(b"\x00\x01binary junk\xff" * 50)
    elif kind == "points":
        path.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                        "property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n")
    elif kind == "empty":
        path.write_text("")
    elif kind == "nan":
        path.write_text("v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n")
    return path


@pytest.mark.parametrize("kind", ["missing", "not_mesh", "points", "empty", "nan"])
def test_bad_mesh_in_load_mesh(tmp_path, kind):
    from sphere_sampler import load_mesh

    path = write_bad(tmp_path, kind)
    with pytest.raises(common.InputError) as exc:
        load_mesh(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_bad_meshes_through_the_cli(tmp_path):
    folder = tmp_path / "meshes"
    folder.mkdir()
    for kind in ("not_mesh", "points", "empty", "nan"):
        write_bad(folder, kind)
    code, err = cli("eval.py", "--mesh-dir", str(folder), "--results", str(tmp_path), "--csv", str(tmp_path / "e.csv"))
    assert code != 0 and len(err.splitlines()) == 1 and err.startswith("error:")
    code, err = cli("train_series.py", "--mesh-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert code == 2 and err.splitlines() == [f"error: {tmp_path / 'nowhere'}: mesh folder not found"]


def test_truncated_and_missing_checkpoints_through_modelmesher(tmp_path):
    checkpoint.save_checkpoint(tmp_path / "m.pt", NISDF(2, 8), "ni", {"layers": 2, "width": 8}, {})
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:100])
    out = tmp_path / "out.ply"
    out.write_text("keep me")
    code, err = cli("modelmesher.py", "--model", str(tmp_path / "cut.pt"), "--out", str(out))
    assert code == 2 and len(err.splitlines()) == 1 and "cut.pt" in err and "truncated" in err
    assert out.read_text() == "keep me"  # nothing already written is lost
    code, err = cli("modelmesher.py", "--model", str(tmp_path / "absent.pt"), "--out", str(out))
    assert code == 2 and "absent.pt: file not found" in err


def test_network_without_surface_is_one_line(tmp_path):
    model = NISDF(1, 4)
    for p in model.parameters():
        p.data.zero_()
    model.mlp.model[2].bias.data.fill_(0.3)  # constant positive field
    checkpoint.save_checkpoint(tmp_path / "flat.pt", model, "ni", {"layers": 1, "width": 4}, {})
    code, err = cli("modelmesher.py", "--model", str(tmp_path / "flat.pt"), "--out", str(tmp_path / "x.obj"),
                    "--res", "16")
    assert code == 2 and len(err.splitlines()) == 1 and "never crosses 0" in err and "flat.pt" in err
    assert not (tmp_path / "x.obj").exists()


def test_atomic_write_leaves_ordinary_permissions_and_no_temporary_file(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        common.atomic_write_text(tmp_path / "table.md", "| a |\n")
    finally:
        os.umask(mask)
    assert (tmp_path / "table.md").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]
    with pytest.raises(ZeroDivisionError):
        common.atomic_write(tmp_path / "table.md", lambda tmp: 1 / 0)
    assert (tmp_path / "table.md").read_text() == "| a |\n" and len(list(tmp_path.iterdir())) == 1
