import numpy as np
import pytest
import torch
from conftest import ROOT, shared_file

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


def reference_keysphere(net: dict, sphere_net: dict, spheres: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The authors' forward as their NeuralImplicit.py computes it: latent = Linear(4, F)(spheres), feature =
    latent^T (d / sum d), input [x, feature], LeakyReLU(0.1) between Linear layers, tanh at the end."""
    latent = spheres @ sphere_net["model.0.weight"].T + sphere_net["model.0.bias"]
    d = torch.cdist(x, spheres[:, :3])
    h = torch.cat([x, (d / d.sum(1, keepdim=True)) @ latent], 1)
    ids = sorted(int(k.split(".")[1]) for k in net if k.endswith("weight"))
    for i in ids:
        h = h @ net[f"model.{i}.weight"].T + net[f"model.{i}.bias"]
        h = torch.tanh(h) if i == ids[-1] else torch.nn.functional.leaky_relu(h, 0.1)
    return h.squeeze(1)


@pytest.mark.parametrize("layers, width", [(4, 16), (10, 64)])
def test_an_authors_model_of_any_depth_and_width_loads_as_their_code_computes_it(tmp_path, layers, width):
    gen = torch.Generator().manual_seed(layers)
    sizes = [32] + [width] * layers + [1]
    net = {}
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        net[f"model.{2 * i}.weight"] = torch.randn(n_out, n_in, generator=gen) / n_in ** 0.5
        net[f"model.{2 * i}.bias"] = torch.randn(n_out, generator=gen) * 0.1
    sphere_net = {"model.0.weight": torch.randn(29, 4, generator=gen), "model.0.bias": torch.randn(29, generator=gen)}
    spheres = torch.rand(128, 4, generator=gen) - 0.5
    torch.save({"net": net, "sphereNet": sphere_net, "sphere32": spheres}, tmp_path / f"128_{layers}_{width}.pth")
    model, info = checkpoint.load_checkpoint(tmp_path / f"128_{layers}_{width}.pth")
    assert info["model_args"] == {"num_spheres": 128, "layers": layers, "width": width, "feature_dim": 29}
    x = torch.rand(300, 3, generator=gen) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(model(x), reference_keysphere(net, sphere_net, spheres, x), atol=1e-5)
    del net["model.2.weight"]
    torch.save({"net": net, "sphereNet": sphere_net, "sphere32": spheres}, tmp_path / "bad.pth")
    with pytest.raises(common.InputError, match="bad.pth: unexpected layout of the authors' model"):
        checkpoint.load_checkpoint(tmp_path / "bad.pth")


def write_keras_weights(path, layers: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """A Keras 2 ``save_weights`` file as NI released them: attribute layer_names, per layer a group
    <name> with weight_names and the arrays <name>/<name>/kernel:0 (in, out) and bias:0 (out,)."""
    import h5py

    with h5py.File(path, "w") as f:
        names = ["dense"] + [f"dense_{i}" for i in range(1, len(layers))]
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        for name, (kernel, bias) in zip(names, layers):
            group = f.create_group(name)
            group.attrs["weight_names"] = np.array([f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()])
            group.create_dataset(f"{name}/kernel:0", data=kernel)
            group.create_dataset(f"{name}/bias:0", data=bias)


def test_ni_released_weights_load_as_keras_computes_them_and_a_bad_file_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    sizes = [3] + [32] * 8 + [1]
    layers = [(rng.normal(0, n_in ** -0.5, (n_in, n_out)).astype(np.float32), rng.normal(0, 0.1, n_out).astype(
        np.float32)) for n_in, n_out in zip(sizes, sizes[1:])]
    write_keras_weights(tmp_path / "1_sf.h5", layers)
    model, info = checkpoint.load_checkpoint(tmp_path / "1_sf.h5")
    assert info["arch"] == "ni" and info["model_args"] == {"layers": 8, "width": 32, "slope": 0.0}
    assert checkpoint.count_numbers(model) == 7553
    x = rng.uniform(-1, 1, (300, 3))
    h = x
    for i, (kernel, bias) in enumerate(layers):  # Keras Dense: x @ kernel + bias, relu then tanh
        h = h @ kernel + bias
        h = np.tanh(h) if i == len(layers) - 1 else np.maximum(h, 0)
    with torch.no_grad():
        assert np.allclose(model(torch.as_tensor(x, dtype=torch.float32)).numpy(), h[:, 0], atol=1e-5)
    write_keras_weights(tmp_path / "wide.h5", layers[:3] + [(np.zeros((32, 2), np.float32), np.zeros(2, np.float32))])
    with pytest.raises(common.InputError, match="wide.h5: unexpected layout of an NI weight file"):
        checkpoint.load_checkpoint(tmp_path / "wide.h5")
    (tmp_path / "cut.h5").write_bytes((tmp_path / "1_sf.h5").read_bytes()[:300])
    with pytest.raises(common.InputError, match="cut.h5"):
        checkpoint.load_checkpoint(tmp_path / "cut.h5")


@pytest.mark.parametrize("released", ["authors/252119/128_8_64_252119.pth", "ni/252119_sf.h5"])
def test_the_released_thingi32_models_are_near_zero_on_their_surface(released):
    from pathlib import Path

    from sphere_sampler import load_mesh, normalize_mesh, sample_surface

    model, _ = checkpoint.load_checkpoint(shared_file("thingi32", *released.split("/")))
    mesh, _ = normalize_mesh(load_mesh(Path(shared_file("thingi32", "meshes", "252119.ply"))))
    points, _ = sample_surface(mesh, 4000, seed=0)
    with torch.no_grad():  # in the frame they were trained in (mean |SDF| 0.0008 / 0.0028; a wrong frame: > 0.02)
        assert model(torch.as_tensor(points, dtype=torch.float32)).abs().mean() < 0.005


def test_released_runs_link_both_papers_models_and_encode_them_with_our_codec(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    import released_runs

    import codec

    rng = np.random.default_rng(1)
    sizes = [3] + [16] * 3 + [1]
    (tmp_path / "thingi32" / "ni").mkdir(parents=True)
    layers = [(rng.normal(0, 0.3, (a, b)).astype(np.float32), np.zeros(b, np.float32))
              for a, b in zip(sizes, sizes[1:])]
    write_keras_weights(tmp_path / "thingi32" / "ni" / "7_sf.h5", layers)
    model = KeySphereSDF(16, layers=4, width=16, spheres=torch.rand(16, 4) - 0.5)
    authors = tmp_path / "thingi32" / "authors" / "7"
    authors.mkdir(parents=True)
    net = {k[len("mlp."):]: v for k, v in model.state_dict().items() if k.startswith("mlp.")}
    sphere_net = {"model.0." + k.rsplit(".", 1)[1]: v for k, v in model.state_dict().items() if "encoder" in k}
    torch.save({"net": net, "sphereNet": sphere_net, "sphere32": model.spheres}, authors / "128_4_16_7.pth")
    out = tmp_path / "released"
    assert released_runs.main([str(tmp_path / "thingi32"), str(out), "--encode", "8"]) == 0
    assert (out / "authors-4x16" / "7" / "128_4_16_7.pth").is_symlink()
    assert (out / "ni-released" / "7" / "7_sf.h5").is_symlink()
    x = torch.rand(200, 3) * 2 - 1
    for folder, released in (("authors-4x16", "128_4_16_7.pth"), ("ni-released", "7_sf.h5")):
        original, _ = checkpoint.load_checkpoint(out / folder / "7" / released)
        encoded, info = codec.read(out / folder / "7" / "model-8bit.ksdf")
        with torch.no_grad():  # their network in our file: the same function up to 8-bit rounding
            assert torch.allclose(original(x), encoded(x), atol=0.05)
