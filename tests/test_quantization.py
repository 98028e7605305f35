"""Fitting trained networks to the codec's integers (quantization.py)."""

import dataclasses

import pytest
import torch
from test_group_training import CFG, KEYSPHERE, member

import architectures
import codec
import quantization
import training


def test_gptq_rounds_onto_the_grid_and_changes_the_output_less_than_nearest_rounding():
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(2, 4000, 12, generator=gen) @ torch.randn(12, 12, generator=gen)  # correlated inputs
    weight, bias = torch.randn(2, 8, 12, generator=gen), torch.randn(2, 8, generator=gen)
    weight_step = codec.tensor_steps(weight, 4, stacked=True)
    bias_step = codec.tensor_steps(bias, 4, stacked=True)
    w, b = quantization.gptq_round(weight, bias, inputs, weight_step, bias_step)
    assert torch.allclose(w / weight_step[:, None, None], torch.round(w / weight_step[:, None, None]), atol=1e-4)
    assert torch.allclose(b / bias_step[:, None], torch.round(b / bias_step[:, None]), atol=1e-4)

    def output_error(w_, b_):
        return ((inputs @ (w_ - weight).transpose(1, 2)) + (b_ - bias)[:, None]).square().mean()

    nearest = (codec.quantize(weight, weight_step), codec.quantize(bias, bias_step))
    assert output_error(w, b) < 0.8 * output_error(*nearest)


def test_stages_follow_the_network_and_skip_what_the_file_does_not_store():
    model, _ = codec.coded_form("keysphere", KEYSPHERE.model_args(CFG, 8),
                                training.NetworkStack.new(KEYSPHERE, KEYSPHERE.model_args(CFG, 8),
                                                          [member("a", 1, 0.5).spheres], 0, "cpu").export(0))
    stack = training.NetworkStack([model], torch.device("cpu"))
    assert quantization.stages(KEYSPHERE, stack) == [[f"mlp.model.{i}.weight", f"mlp.model.{i}.bias"]
                                                       for i in (0, 2, 4, 6)]


@pytest.mark.parametrize("arch, fit", [("keysphere", "gptq"), ("latent", "gptq"), ("ni", "gptq"),
                                       ("keysphere", "nearest"), ("keysphere", "straight_through")])
def test_the_fitted_network_is_exactly_what_its_file_decodes_to(arch, fit):
    cfg = dataclasses.replace(CFG, fit=fit)
    m = member("a", 1, 0.5, spheres=arch != "ni")
    entry = architectures.get(arch)
    args = entry.model_args(cfg, 8)
    [trained] = training.train_group(entry, args, cfg, [m], torch.device("cpu"))
    [(model, steps, losses)] = quantization.quantization_aware_finetune([trained], [m], entry, args, cfg, "cpu")
    stages = len(quantization.stages(entry, training.NetworkStack([model], "cpu")))
    assert len(losses) == quantization.fit_epochs(entry, cfg) == \
        (cfg.qat_epochs if fit == "straight_through" else cfg.qat_epochs * (stages - 1) + 1)
    back, _ = codec.decode(codec.encode(model, arch, args, cfg.codec_bits, None, steps=steps))
    for name, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name
    # and it still fits its ball about as well as the float network
    error = (back(m.points) - m.sdf).abs().mean()
    assert error < 1.5 * (trained.model(m.points) - m.sdf).abs().mean() + 0.01


def test_a_group_is_fitted_as_its_networks_would_be_one_by_one():
    members = [member("a", 1, 0.5), member("b", 2, 0.3)]
    args = KEYSPHERE.model_args(CFG, 8)
    trained = training.train_group(KEYSPHERE, args, CFG, members, torch.device("cpu"))
    together = quantization.quantization_aware_finetune(trained, members, KEYSPHERE, args, CFG, "cpu")
    for k in range(2):
        [(alone, steps, losses)] = quantization.quantization_aware_finetune([trained[k]], [members[k]], KEYSPHERE,
                                                                            args, CFG, "cpu")
        assert together[k][2] == pytest.approx(losses, rel=1e-4)
        assert together[k][1] == pytest.approx(steps, rel=1e-3)
        for p, q in zip(together[k][0].parameters(), alone.parameters()):
            assert torch.allclose(p, q, atol=1e-3)
