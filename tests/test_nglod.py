"""NGLOD's pieces against analytic answers: trilinear interpolation, the octree of a sphere, LOD selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nglod


def full_grid(res: int) -> np.ndarray:
    r = np.arange(res)
    return np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)


def test_trilinear_interpolation_reproduces_a_trilinear_field_exactly():
    res = 4
    corners = nglod.voxel_corners(full_grid(res))
    xyz = corners / res * 2 - 1                          # the grid points in [-1, 1]^3
    def field(p):                                        # trilinear in x, y, z: interpolation is exact
        return np.stack([1 + 2 * p[:, 0] - p[:, 1] + 0.5 * p[:, 0] * p[:, 1] * p[:, 2], p[:, 2] * p[:, 1]], 1)
    table = torch.as_tensor(np.r_[field(xyz), np.zeros((1, 2))], dtype=torch.float64)
    points = np.random.default_rng(0).uniform(-1, 1, (500, 3))
    out = nglod.trilinear(torch.as_tensor(points), table, nglod.corner_lookup(corners, res), res)
    # a product of coordinates is trilinear within each cell, so piecewise-trilinear interpolation equals it
    np.testing.assert_allclose(out.numpy(), field(points), atol=1e-12)


def test_a_corner_without_a_voxel_contributes_zero():
    res = 2
    corners = nglod.voxel_corners(np.array([[1, 1, 1]]))  # only the upper octant's cell is stored
    table = torch.cat([torch.ones(len(corners), 1), torch.zeros(1, 1)]).double()
    lookup = nglod.corner_lookup(corners, res)
    inside = nglod.trilinear(torch.tensor([[0.5, 0.5, 0.5]]).double(), table, lookup, res)
    opposite = nglod.trilinear(torch.tensor([[-0.5, -0.5, -0.5]]).double(), table, lookup, res)
    assert inside.item() == 1.0 and opposite.item() == 0.125  # only the shared corner (0, 0, 0) is stored


def test_octree_of_a_sphere_is_the_shell_of_voxels_and_its_ancestors():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(200_000, 3))
    surface = 0.5 * d / np.linalg.norm(d, axis=1, keepdims=True)
    res = 32
    finest = nglod.occupied_voxels(surface, res, margin=0)
    centres = (finest + 0.5) / res * 2 - 1
    half_diagonal = np.sqrt(3) / res
    assert np.all(np.abs(np.linalg.norm(centres, axis=1) - 0.5) <= half_diagonal + 1e-9)  # every voxel touches it
    grown = nglod.occupied_voxels(surface, res, margin=1)
    assert len(grown) > len(finest) and len(np.unique(np.r_[grown, finest], axis=0)) == len(grown)
    levels = nglod.octree_levels(finest, 4)
    assert [len(v) for v in levels] == sorted(len(v) for v in levels)
    assert np.array_equal(levels[-1], finest) and levels[0].max() < 4
    for coarse, fine in zip(levels, levels[1:]):     # every voxel's parent is occupied, every occupied has a child
        assert {tuple(v) for v in fine // 2} == {tuple(v) for v in coarse}


def test_lod_selection_uses_only_the_coarser_levels_and_its_own_decoder():
    torch.manual_seed(0)
    voxels = full_grid(16)[::7]
    model = nglod.NGLODSDF(voxels, lods=3, base_res=4, feature_dim=8, hidden=16)
    x = torch.rand(300, 3) * 2 - 1
    before = [model(x, lod).detach() for lod in range(3)]
    with torch.no_grad():
        model.features[2].add_(1.0)                   # the finest level changes
    assert torch.equal(model(x, 0), before[0]) and torch.equal(model(x, 1), before[1])
    assert not torch.allclose(model(x, 2), before[2])
    assert torch.equal(model.at_lod(1)(x), model(x, 1))
    for lod, pred in enumerate(model.all_lods(x)):
        assert torch.allclose(pred, model(x, lod))
    assert model.stored_numbers(0) == model.features[0].numel() + 16 * 11 + 16 + 16 + 1


def test_state_dict_round_trip_rebuilds_the_octree():
    torch.manual_seed(0)
    model = nglod.NGLODSDF(full_grid(8)[::5], lods=2, base_res=4, feature_dim=4, hidden=8)
    empty = nglod.NGLODSDF(None, lods=2, base_res=4, feature_dim=4, hidden=8)
    empty.load_state_dict(model.state_dict())
    x = torch.rand(100, 3) * 2 - 1
    assert torch.equal(empty(x), model(x))


def test_outside_the_octree_the_field_has_the_octrees_sign_and_no_surface():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(50_000, 3))
    surface = 0.6 * d / np.linalg.norm(d, axis=1, keepdims=True)
    voxels = nglod.occupied_voxels(surface, 16, margin=1)
    signs = nglod.outside_signs(voxels, 16)
    assert signs[8, 8, 8] == -2 and signs[0, 0, 0] == 2 and (signs[tuple(voxels.T)] == 0).all()  # empty: sign, size
    model = nglod.NGLODSDF(voxels, lods=3, base_res=4, feature_dim=4, hidden=8)
    with torch.no_grad():
        model.decoders[2][2].bias.fill_(-0.001)  # a near-zero field of the wrong sign everywhere
        model.decoders[2][2].weight.zero_()
    x = torch.tensor([[0.0, 0.0, 0.0], [0.95, 0.95, 0.95], [0.6, 0.0, 0.0]])
    f = model(x).detach()
    assert f[0] <= -1 / 16 and f[1] >= 1 / 16  # inside and outside the shell: the octree's signs, half a voxel
    assert f[2].item() == pytest.approx(-0.001)        # on the surface: the network's own value


def test_in_the_margin_the_field_keeps_the_sign_of_the_surface_voxels_enclosure():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(50_000, 3))
    surface = 0.6 * d / np.linalg.norm(d, axis=1, keepdims=True)
    voxels = nglod.occupied_voxels(surface, 16, margin=1)
    kept = nglod.surface_superset(voxels, 16, 1)
    surface_voxels = {tuple(v) for v in nglod.occupied_voxels(surface, 16, margin=0)}
    assert surface_voxels <= {tuple(v) for v in kept} and len(kept) < len(voxels)
    x = torch.tensor([[0.7, 0.0, 0.0], [0.45, 0.0, 0.0], [0.6, 0.0, 0.0]])  # margin outside, margin inside, surface
    fields = []
    for margin in (0, 1):
        model = nglod.NGLODSDF(voxels, lods=3, base_res=4, feature_dim=4, hidden=8, margin=margin)
        with torch.no_grad():
            model.decoders[2][2].bias.fill_(-0.001)  # a near-zero field of the wrong sign outside
            model.decoders[2][2].weight.zero_()
        fields.append(model(x).detach())
    assert torch.allclose(fields[0], torch.tensor([-0.001] * 3))  # without the margin known: the network's own
    assert torch.allclose(fields[1], torch.tensor([0.001, -0.001, -0.001]))  # the sign held, no magnitude added
    assert torch.allclose(model(x, lod="all")[-1].detach(), torch.tensor([-0.001] * 3))  # training fits it free
    # a file of a coarser LOD holds the coarsened margin: 1 // 2 = 0 at LOD 2 of 3, the level's own rule
    model = nglod.NGLODSDF(voxels, lods=3, base_res=4, feature_dim=4, hidden=8, margin=1)
    assert model.truncated(1).margin == 0 and model.truncated(2).margin == 1
    assert torch.equal(model.truncated(1)(x), model.at_lod(1)(x))
