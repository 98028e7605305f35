"""Group training: K networks stacked into one model train as K networks trained alone would."""

import dataclasses

import pytest
import torch
import trimesh

import architectures
import common
import NeuralImplicit
import training

KEYSPHERE = architectures.get("keysphere")

CFG = common.TrainConfig(epochs=4, batch_size=128, lr=0.01, num_spheres=8, layers=3, width=16, feature_dim=5,
                         ni_layers=3, ni_width=16, qat_epochs=1, codec_bits=8)


def member(name: str, seed: int, radius: float, count: int = 2048, spheres: bool = True) -> training.Member:
    """Points near a ball of ``radius`` (as the importance sampler draws them) with their signed distances."""
    gen = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(count, 3, generator=gen), dim=1)
    points = direction * (radius + 0.1 * torch.randn(count, 1, generator=gen)).clamp_min(0)
    sdf = points.norm(dim=1) - radius
    centres = torch.rand(8, 3, generator=gen) * radius - radius / 2
    return training.Member(name, torch.cat([centres, (centres.norm(dim=1) - radius)[:, None]], 1) if spheres else None,
                           points, sdf)


@pytest.mark.parametrize("arch", ["keysphere", "ni"])
def test_a_group_trains_the_same_networks_as_separate_trainings(arch):
    members = [member(name, seed, radius, spheres=arch != "ni")
               for name, seed, radius in (("a", 1, 0.5), ("b", 2, 0.3), ("c", 3, 0.7))]
    args = architectures.get(arch).model_args(CFG, 8)
    together = training.train_group(architectures.get(arch), args, CFG, members, torch.device("cpu"))
    for m, t in zip(members, together):
        [alone] = training.train_group(architectures.get(arch), args, CFG, [m], torch.device("cpu"))
        assert t.history["lr"] == alone.history["lr"] == CFG.lr
        assert t.history["main"] == pytest.approx(alone.history["main"], rel=1e-4)
        for (name, p), q in zip(t.model.named_parameters(), alone.model.parameters()):
            assert torch.allclose(p, q, atol=1e-4), (m.name, name)
    # each network learned its own ball, not its neighbour's
    for m, t, other in zip(members, together, together[1:] + together[:1]):
        assert (t.model(m.points) - m.sdf).abs().mean() < (other.model(m.points) - m.sdf).abs().mean()


def test_a_collapsed_network_is_retried_alone_at_half_the_rate(monkeypatch):
    sane = member("sane", 1, 0.5)
    doomed = member("doomed", 2, 0.5)
    doomed.sdf[0] = 50.0  # marks it for the guard below, which then finds its field collapsed every time
    groups = []
    original, guard = training.train_once, training.collapsed

    def spy(arch, model_args, cfg, members, *args, **kwargs):
        groups.append(([m.name for m in members], cfg.lr))
        return original(arch, model_args, cfg, members, *args, **kwargs)

    monkeypatch.setattr(training, "train_once", spy)
    monkeypatch.setattr(training, "collapsed", lambda s, probe, target, final: guard(s, probe, target, final)
                        | (target[:, 0] > 10))
    args = KEYSPHERE.model_args(CFG, 8)
    result = training.train_group(KEYSPHERE, args, CFG, [sane, doomed], torch.device("cpu"))
    assert groups == [(["sane", "doomed"], 0.01), (["doomed"], 0.005), (["doomed"], 0.0025)]
    assert result[0].history["lr"] == 0.01 and result[1].history["lr"] == 0.0025
    monkeypatch.setattr(training, "train_once", original)
    monkeypatch.setattr(training, "collapsed", guard)
    [alone] = training.train_group(KEYSPHERE, args, CFG, [sane], torch.device("cpu"))
    for p, q in zip(result[0].model.parameters(), alone.model.parameters()):
        assert torch.allclose(p, q, atol=1e-4)


def test_restarts_keep_each_networks_best_and_its_optimizer_state():
    cfg = dataclasses.replace(CFG, restarts=2, restart_epochs=1, epochs=3)
    members = [member("a", 1, 0.5), member("b", 2, 0.3)]
    args = KEYSPHERE.model_args(cfg, 8)
    together = training.train_group(KEYSPHERE, args, cfg, members, torch.device("cpu"))
    for m, t in zip(members, together):
        [alone] = training.train_group(KEYSPHERE, args, cfg, [m], torch.device("cpu"))
        assert len(t.history["restarts"]) == 2 and len(t.history["main"]) == 2
        assert t.history["main"] == pytest.approx(alone.history["main"], rel=1e-4)


def test_mining_rounds_are_spread_over_the_epochs_left():
    cfg = dataclasses.replace(CFG, mine_fraction=0.1, mine_at=0.5, mine_rounds=2)
    assert training.mining_epochs(cfg, 40) == [20, 30]
    assert training.mining_epochs(dataclasses.replace(cfg, mine_rounds=1, mine_at=0.75), 40) == [30]
    assert training.mining_epochs(cfg, 1) == []


def test_hard_examples_change_only_their_networks_points_and_none_found_is_fine(monkeypatch):
    from mesh_kind import TargetField

    field = TargetField.of(trimesh.creation.icosphere(3, radius=0.5), 0.01, grid=16)
    cfg = dataclasses.replace(CFG, mine_fraction=0.2, mine_at=0.5, mine_rounds=1, mesh_res=32)
    mined, plain = member("mined", 1, 0.5), member("plain", 2, 0.3)
    mined.field = field
    args = KEYSPHERE.model_args(cfg, 8)
    result = training.train_group(KEYSPHERE, args, cfg, [mined, plain], torch.device("cpu"))
    changed = (result[0].points != mined.points).any(1)
    assert 0 < changed.sum() <= 0.2 * len(mined.points)
    truth = torch.as_tensor(field.sdf(result[0].points[changed].numpy()))
    assert torch.allclose(result[0].sdf[changed].double(), truth)
    assert torch.equal(result[1].points, plain.points)  # a network without a field keeps its points
    monkeypatch.setattr(training, "sample_hard_points", lambda *a, **k: (torch.zeros(0, 3), torch.zeros(0)))
    [nothing] = training.train_group(KEYSPHERE, args, cfg, [mined], torch.device("cpu"))
    assert torch.equal(nothing.points, mined.points)


@pytest.mark.parametrize("k_count", [1, 2])
def test_the_hand_written_step_has_autograds_loss_and_gradients(k_count):
    members = [member(name, seed, radius) for name, seed, radius in (("a", 1, 0.5), ("b", 2, 0.3))][:k_count]
    args = KEYSPHERE.model_args(CFG, 8)
    stack = training.NetworkStack.new(KEYSPHERE, args, [m.spheres for m in members], 0, torch.device("cpu"))
    x = stack.precompute(torch.stack([m.points for m in members]))
    y = torch.stack([m.sdf for m in members])
    loss = stack.step(x, y)
    hand = {name: p.grad.clone() for name, p in stack.params.items()}
    for p in stack.params.values():
        p.grad = None
    out = NeuralImplicit.mlp_forward(stack.layers(), x, stack.slope)
    reference = (out - y).abs().mean(-1)
    reference.sum().backward()
    assert torch.allclose(loss, reference.detach(), rtol=1e-5)
    for name, p in stack.params.items():
        assert torch.allclose(hand[name], p.grad, rtol=1e-4, atol=1e-7), name
