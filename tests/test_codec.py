import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import checkpoint
import codec
import common
from NeuralImplicit import NISDF, KeySphereSDF
from NeuralImplicit_1 import LatentSphereSDF
from nglod import NGLODSDF, occupied_voxels

DATA = Path(__file__).parent / "data"


def model_with_spheres():
    torch.manual_seed(0)
    spheres = torch.cat([(torch.randint(0, 128, (16, 3)) - 64) / 64, -torch.rand(16, 1) * 0.2], dim=1)
    return KeySphereSDF(16, layers=3, width=16, feature_dim=5, spheres=spheres), \
        {"num_spheres": 16, "layers": 3, "width": 16, "feature_dim": 5}


def models():
    """One small model of each architecture: (model, arch, model_args)."""
    keysphere, args = model_with_spheres()
    torch.manual_seed(1)
    latent = LatentSphereSDF(16, layers=3, width=16, feature_dim=5, spheres=keysphere.spheres)
    with torch.no_grad():
        latent.latents.normal_()
    torch.manual_seed(2)
    ni = NISDF(3, 16)
    surface = np.random.default_rng(0).normal(size=(2000, 3))
    surface = 0.6 * surface / np.linalg.norm(surface, axis=1, keepdims=True)
    nglod_args = {"lods": 3, "base_res": 2, "feature_dim": 4, "hidden": 8}
    ngl = NGLODSDF(occupied_voxels(surface, 8, 1), **nglod_args)
    return [(keysphere, "keysphere", args), (latent, "latent", args), (ni, "ni", {"layers": 3, "width": 16}),
            (ngl, "nglod", nglod_args)]


def test_folding_the_sphere_encoder_keeps_the_function():
    model, args = model_with_spheres()
    folded, folded_args = codec.coded_form("keysphere", args, model)
    x = torch.rand(500, 3) * 2 - 1
    assert folded_args["feature_dim"] == 4 and folded.is_folded() and not model.is_folded()
    assert torch.allclose(folded(x), model(x), atol=1e-6)
    assert checkpoint.count_numbers(folded) < checkpoint.count_numbers(model)
    again, _ = codec.coded_form("keysphere", folded_args, folded)  # idempotent
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), folded.state_dict().values()))


@pytest.mark.parametrize("bits", codec.SUPPORTED_BITS)
@pytest.mark.parametrize("index", range(4))
def test_round_trip_at_every_bit_depth_and_architecture(bits, index):
    model, arch, args = models()[index]
    data = codec.encode(model, arch, args, bits, {"center": [1.0, 2.0, 3.0], "scale": 0.5})
    back, info = codec.decode(data)
    assert info["bits"] == bits and info["normalization"] == {"center": [1.0, 2.0, 3.0], "scale": 0.5}
    assert info["bytes"] == len(data) and info["version"] == codec.VERSION
    if bits == 32:
        for name, value in model.state_dict().items():
            assert torch.equal(back.state_dict()[name], value)
        return
    coded, _ = codec.coded_form(arch, args, model)
    for name, value in coded.state_dict().items():
        restored = back.state_dict()[name]
        if name == "voxels":  # NGLOD's octree: exact
            assert torch.equal(restored, value)
        elif name == "spheres":  # centres on their 1/64 grid exactly, SDFs within half of 1/256
            assert torch.equal(restored[:, :3], value[:, :3])
            assert (restored[:, 3] - value[:, 3]).abs().max() <= 2 ** -9 + 1e-7
        else:  # within half a step of the tensor's own (float16) step
            step = codec.tensor_steps(value, bits, name)
            assert (restored - value).abs().max() <= step / 2 * (1 + 1e-5) + 1e-7, name


@pytest.mark.parametrize("bits", (3, 6, 8, 12))
@pytest.mark.parametrize("index", range(4))
def test_the_quantizer_is_what_the_decoder_returns(bits, index):
    # quantization-aware training rounds through tensor_steps / quantize / quantize_spheres: what it trains
    # must be exactly what a reader of the file gets
    model, arch, args = models()[index]
    coded, _ = codec.coded_form(arch, args, model)
    back, _ = codec.decode(codec.encode(model, arch, args, bits, None))
    for name, value in coded.state_dict().items():
        expected = codec.quantize_spheres(value) if name == "spheres" else \
            value if name.startswith("sphere_encoder") or name == "voxels" else \
            codec.quantize(value, codec.tensor_steps(value, bits, name))
        assert torch.equal(back.state_dict()[name], expected), name
    # stacked networks get one step each, equal to their step alone
    weight = next(v for k, v in coded.state_dict().items() if k.endswith(".weight") and v.dim() == 2)
    stacked = torch.stack([weight, 3 * weight])
    steps = codec.tensor_steps(stacked, bits, stacked=True)
    assert steps[0] == codec.tensor_steps(stacked[0], bits) and steps[1] == codec.tensor_steps(stacked[1], bits)
    assert torch.equal(codec.quantize(stacked, steps)[1], codec.quantize(stacked[1], steps[1]))


def test_given_steps_are_kept_and_the_integers_come_back():
    model, args = model_with_spheres()
    coded, folded_args = codec.coded_form("keysphere", args, model)
    steps = {name: 0.01 for name in codec.stored_tensors("keysphere", coded.state_dict()) if name != "spheres"}
    with torch.no_grad():
        for name, p in coded.named_parameters():
            if name in steps:
                p.copy_(codec.quantize(p, torch.tensor(0.01).half().float()))
    back, _ = codec.decode(codec.encode(coded, "keysphere", folded_args, 6, None, steps=steps))
    for name in steps:
        assert torch.equal(back.state_dict()[name], coded.state_dict()[name]), name


@pytest.mark.parametrize("seed", range(3))
def test_the_entropy_coder_round_trips_random_and_adversarial_streams(seed):
    rng = np.random.default_rng(seed)
    streams = [
        codec.Stream(rng.laplace(0, 3, 1000).round().astype(np.int64), -500, 500),
        codec.Stream(np.full(300, 40), -50, 50),                       # far from its model's mean 0, one value
        codec.Stream(rng.integers(-1000, 1001, 500), -1000, 1000),     # uniform over the whole range
        codec.Stream(np.array([-1000, 1000] * 50), -1000, 1000, mean=0, scale_code=0),  # the tails, tiny scale
        codec.Stream(np.zeros(0, dtype=np.int64), -3, 3),              # empty
        codec.Stream(rng.integers(0, 5, 200), 0, 8, mean=2),
    ]
    words = codec.range_encode(streams)
    decoder = codec.constriction.stream.queue.RangeDecoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
    for s in streams:
        family, mean, scale = codec.laplace(*s.model_args())
        back = decoder.decode(family, np.full(len(s.values), mean), np.full(len(s.values), scale)) \
            if len(s.values) else np.zeros(0)
        assert np.array_equal(back, s.values)
    with pytest.raises(common.InputError, match="outside"):
        codec.Stream(np.array([7]), -3, 3)


def test_a_usual_file_is_small():
    # the header costs a few bytes (preset dictionary), the folded encoder none, the spheres ~2.5 bytes each
    model, args = model_with_spheres()
    data = codec.encode(model, "keysphere", args, 6, {"center": [0.0, 0.0, 0.0], "scale": 1.0})
    coded, _ = codec.coded_form("keysphere", args, model)
    numbers = sum(v.numel() for k, v in coded.state_dict().items() if not k.startswith("sphere_encoder"))
    assert len(data) < 10 + 4 + 16 + 40 + numbers * 6 / 8


def test_file_round_trip_through_load_model(tmp_path):
    model, args = model_with_spheres()
    size = codec.write(tmp_path / "m.ksdf", model, "keysphere", args, 8, None)
    assert size == (tmp_path / "m.ksdf").stat().st_size
    loaded, info = codec.load_model(tmp_path / "m.ksdf")
    x = torch.rand(100, 3) * 2 - 1
    assert (loaded(x) - model(x)).abs().max() < 0.05
    assert info["arch"] == "keysphere"


def test_nglod_files_hold_the_octree_and_one_lod_each():
    model, arch, args = models()[3]
    x = torch.rand(400, 3) * 2 - 1
    for lod in range(3):
        coarse = model.truncated(lod)
        assert torch.equal(coarse(x), model(x, lod))  # the same function, with fewer numbers
        data = codec.encode(coarse, arch, {**args, "lods": lod + 1, "decoders_from": lod}, 32, None)
        back, info = codec.decode(data)
        assert torch.equal(back(x), model(x, lod)) and back.stored_numbers() == model.stored_numbers(lod)
        assert sum(p.numel() for p in back.parameters()) == model.stored_numbers(lod)
    full = codec.encode(model, arch, args, 8, None)
    assert len(codec.encode(model.truncated(0), arch, {**args, "lods": 1, "decoders_from": 0}, 8, None)) < len(full)
    # a damaged octree is refused in one line
    back, _ = codec.decode(full)
    assert torch.equal(back.voxels, model.voxels)
    length = struct.unpack("<H", full[10:12])[0]
    start = 12 + length + 4  # header, then the octree's length and its deflated bytes
    broken = bytearray(full[:-4])
    broken[start + 2] ^= 0xFF
    broken = bytes(broken) + struct.pack("<I", zlib.crc32(bytes(broken)))
    with pytest.raises(common.InputError):
        codec.decode(broken)


def test_version_2_files_still_load():
    model, info = codec.read(DATA / "v2-keysphere-8bit.ksdf")
    expected = torch.load(DATA / "v2-keysphere-8bit.decoded.pt", weights_only=True)
    assert info["version"] == 2 and info["bits"] == 8 and info["kind"] == "closed"
    for name, value in expected.items():
        assert torch.equal(model.state_dict()[name], value), name


def test_corruption_truncation_and_unknown_versions_are_refused(tmp_path):
    model, args = model_with_spheres()
    data = bytearray(codec.encode(model, "keysphere", args, 6, None))
    for position in (12, len(data) // 2, len(data) - 6):
        flipped = bytearray(data)
        flipped[position] ^= 0x10
        with pytest.raises(common.InputError, match="checksum"):
            codec.decode(bytes(flipped), "f.ksdf")
    for cut in (1, 7, len(data) - 14):
        with pytest.raises(common.InputError, match="truncated|bad magic"):
            codec.decode(bytes(data[:-cut]), "f.ksdf")
    for version in (1, 4):
        other = bytearray(data)
        other[4] = version
        other[-4:] = struct.pack("<I", zlib.crc32(bytes(other[:-4])))
        with pytest.raises(common.InputError, match=f"f.ksdf: .ksdf format version {version} is not supported"):
            codec.decode(bytes(other), "f.ksdf")
    # a valid checksum over a cut payload (written by something else): one line, no traceback
    short = bytearray(data[:10]) + data[10:-40]
    short[6:10] = struct.pack("<I", len(short) - 10)
    short += struct.pack("<I", zlib.crc32(bytes(short)))
    with pytest.raises(common.InputError, match="inconsistent"):
        codec.decode(bytes(short), "f.ksdf")
    with pytest.raises(common.InputError, match="bad magic"):
        codec.decode(b"PK\x03\x04" + bytes(20), "f.ksdf")


def test_a_tensor_that_outgrew_its_step_is_clamped_alike_by_the_quantizer_and_the_file():
    # a step fixed early (quantization.py), then fine-tuning moved a one-number bias far: the integer is
    # clamped to the range the file codes, and training rounds through the same clamp
    model, args = model_with_spheres()
    coded, folded_args = codec.coded_form("keysphere", args, model)
    name = "mlp.model.6.bias"
    steps = {name: float(torch.tensor(1e-4).half())}
    with torch.no_grad():
        coded.state_dict()[name].fill_(0.5)
    bound = codec.tensor_bound(name, 1, 6)
    back, _ = codec.decode(codec.encode(coded, "keysphere", folded_args, 6, None, steps=steps))
    expected = codec.quantize(torch.tensor([0.5]), torch.tensor(steps[name]), bound)
    assert torch.equal(back.state_dict()[name], expected) and expected.item() == pytest.approx(bound * steps[name])
