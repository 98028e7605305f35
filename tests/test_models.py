import numpy as np
import pytest
import torch
from conftest import shared_file

import checkpoint
import common
from NeuralImplicit import NISDF, KeySphereSDF, sphere_weights
from NeuralImplicit_1 import LatentSphereSDF


def test_stored_numbers_match_the_paper():
    assert checkpoint.count_numbers(KeySphereSDF(128, layers=6, width=32)) == 7026
    assert checkpoint.count_numbers(NISDF(layers=8, width=32)) == 7553
    assert checkpoint.count_numbers(LatentSphereSDF(128)) == 128 * 4 + 128 * 29 + 6369


def test_sphere_weights_are_proportional_to_distance():
    centres = torch.tensor([[1.0, 0, 0], [-3.0, 0, 0]])
    w = sphere_weights(torch.zeros(1, 3), centres)
    assert torch.allclose(w, torch.tensor([[0.25, 0.75]]))
    assert torch.allclose(sphere_weights(torch.zeros(1, 3), centres, "inverse"), torch.tensor([[0.75, 0.25]]))


def test_averaging_spheres_before_encoding_equals_summing_encoded_features():
    # KeySphereSDF encodes the weighted sphere average once instead of summing M encoded features
    torch.manual_seed(0)
    model = KeySphereSDF(16, layers=2, width=8, feature_dim=5, spheres=torch.rand(16, 4) - 0.5)
    x = torch.rand(50, 3) * 2 - 1
    feature = sphere_weights(x, model.spheres[:, :3]) @ model.sphere_features()
    assert torch.allclose(model(x), model.mlp(torch.cat([x, feature], dim=1)), atol=1e-6)


@pytest.mark.parametrize("model", [KeySphereSDF(16, layers=2, width=8, feature_dim=5, spheres=torch.rand(16, 4) - 0.5),
                                   LatentSphereSDF(16, layers=2, width=8, feature_dim=5, spheres=torch.rand(16, 4)),
                                   NISDF(layers=2, width=8)], ids=["keysphere", "latent", "ni"])
def test_input_layer_on_precomputed_inputs_is_the_first_layer(model):
    # training applies input_layer() to precompute(points); it must be the network's own first layer
    x = torch.rand(40, 3) * 2 - 1
    weight, bias = model.input_layer()
    hidden = torch.nn.functional.leaky_relu(model.precompute(x) @ weight.t() + bias, 0.1)
    expected = model.mlp.model[2:](hidden).squeeze(-1)
    assert torch.allclose(model(x), expected, atol=1e-6)


@pytest.mark.parametrize("arch", ["keysphere", "latent", "ni"])
def test_checkpoint_round_trip(tmp_path, arch):
    args = {"layers": 3, "width": 16} if arch == "ni" else {"num_spheres": 5, "layers": 2, "width": 16,
                                                             "feature_dim": 7}
    kwargs = args if arch == "ni" else {**args, "spheres": torch.rand(5, 4)}
    model = checkpoint.build_model(arch, kwargs)
    checkpoint.save_checkpoint(tmp_path / "m.pt", model, arch, args, {"normalization": {"center": [0, 0, 0],
                                                                                    "scale": 1.0}})
    loaded, info = checkpoint.load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(50, 3)
    assert torch.equal(model(x), loaded(x))
    assert info["arch"] == arch and info["model_args"] == args


def test_truncated_checkpoint_is_an_input_error(tmp_path):
    model = NISDF(2, 8)
    checkpoint.save_checkpoint(tmp_path / "m.pt", model, "ni", {"layers": 2, "width": 8}, {})
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(common.InputError, match="cut.pt"):
        checkpoint.load_checkpoint(tmp_path / "cut.pt")


def test_authors_model_reloads_and_scores_like_the_paper(tmp_path):
    import eval as ev

    pth = shared_file("reference", "128_6_32_252119.pth")
    model, info = checkpoint.load_checkpoint(pth)
    assert info["model_args"] == {"num_spheres": 128, "layers": 6, "width": 32, "feature_dim": 29}
    assert checkpoint.count_numbers(model) == 7026
    gt = ev.GroundTruth(shared_file("reference", "252119.obj"))
    from modelmesher import mesh_model

    tm = mesh_model(model, 128)
    recon = ev.Mesh(np.asarray(tm.vertices, dtype=np.float64), np.asarray(tm.faces, dtype=np.int64))
    points, _ = ev.sample_surface(recon, ev.CHAMFER_SAMPLES, seed=1)
    assert ev.chamfer(points, gt.points)["cd2"] <= 0.040
