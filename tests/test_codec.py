import struct
import zlib

import numpy as np
import pytest
import torch

import codec
import common
from NeuralImplicit import KeySphereSDF


def model_with_spheres():
    torch.manual_seed(0)
    spheres = torch.cat([(torch.randint(0, 128, (16, 3)) - 64) / 64, -torch.rand(16, 1) * 0.2], dim=1)
    return KeySphereSDF(16, layers=3, width=16, feature_dim=5, spheres=spheres), \
        {"num_spheres": 16, "layers": 3, "width": 16, "feature_dim": 5}


@pytest.mark.parametrize("bits", codec.SUPPORTED_BITS)
def test_round_trip_at_every_bit_depth(bits):
    model, args = model_with_spheres()
    data = codec.encode(model, "keysphere", args, bits, {"center": [1.0, 2.0, 3.0], "scale": 0.5})
    back, info = codec.decode(data)
    assert info["bits"] == bits and info["normalization"]["scale"] == 0.5 and info["bytes"] == len(data)
    for name, value in model.state_dict().items():
        restored = back.state_dict()[name]
        if bits == 32:
            assert torch.equal(restored, value)
        else:
            # per-row symmetric quantization: error at most half a step of the row's scale
            rows = value.T if name == "spheres" else value.reshape(value.shape[0], -1) if value.ndim > 1 \
                else value.reshape(1, -1)
            # (scales are float16, rounded up: a step at most 2^-10 larger)
            step = rows.abs().amax(dim=1) / ((1 << (bits - 1)) - 1) * (1 + 2 ** -10)
            err = (restored - value).abs()
            err_rows = err.T if name == "spheres" else err.reshape(rows.shape)
            assert (err_rows <= step[:, None] / 2 + 1e-7).all(), name


@pytest.mark.parametrize("bits", (4, 8, 10, 32))
def test_fake_quantize_is_what_the_decoder_sees(bits):
    # quantization-aware training trains through fake_quantize: it must equal the decoded weights exactly
    model, args = model_with_spheres()
    back, _ = codec.decode(codec.encode(model, "keysphere", args, bits, None))
    for name, value in model.state_dict().items():
        assert torch.equal(codec.fake_quantize(name, value, bits), back.state_dict()[name]), name


def test_bit_packing_is_exact():
    rng = np.random.default_rng(0)
    for bits in (2, 3, 7, 8, 13, 16):
        v = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=1001)
        assert np.array_equal(codec.unpack_bits(codec.pack_bits(v, bits), len(v), bits), v)


def test_file_round_trip_through_load_model(tmp_path):
    model, args = model_with_spheres()
    size = codec.write(tmp_path / "m.ksdf", model, "keysphere", args, 8, None)
    assert size == (tmp_path / "m.ksdf").stat().st_size
    loaded, info = codec.load_model(tmp_path / "m.ksdf")
    x = torch.rand(100, 3) * 2 - 1
    assert (loaded(x) - model(x)).abs().max() < 0.05
    assert info["arch"] == "keysphere"


def test_corruption_truncation_and_old_versions_are_refused(tmp_path):
    model, args = model_with_spheres()
    data = bytearray(codec.encode(model, "keysphere", args, 8, None))
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    with pytest.raises(common.InputError, match="checksum"):
        codec.decode(bytes(flipped), "f.ksdf")
    with pytest.raises(common.InputError, match="truncated"):
        codec.decode(bytes(data[:-7]), "f.ksdf")
    for version in range(codec.VERSION):  # every older version, e.g. 1 with its float32 scales
        old = bytearray(data)
        old[4] = version
        old[-4:] = struct.pack("<I", zlib.crc32(bytes(old[:-4])))
        with pytest.raises(common.InputError, match=f"f.ksdf: .ksdf format version {version} is not supported"):
            codec.decode(bytes(old), "f.ksdf")
    with pytest.raises(common.InputError, match="bad magic"):
        codec.decode(b"PK\x03\x04" + bytes(20), "f.ksdf")
