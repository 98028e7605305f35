"""Fitting trained networks to the integers a ``.ksdf`` file stores.

Rounding every weight of a trained SDF network to 6 bits at once moves its surface by several times its
error, and fine-tuning through the quantizer does not bring it back (median CD2 x2.4 over the 12 shared
meshes after 31 straight-through epochs). Here the networks are quantized one layer at a time, first layer
first (x1.04 with the same epochs):

1. the layer's weights are rounded to the codec's step (``codec.tensor_steps``) column by column, each
   column's rounding error pushed onto the columns not yet rounded so that the layer's output on real inputs
   changes least (GPTQ, Frantar et al. 2023: the inverse Hessian of the layer's inputs says how);
2. the layers after it, still float, train ``qat_epochs`` epochs to make up for what is left;
3. at the end one epoch at a quarter of the rate trains all layers through the quantizer
   (straight-through), then everything is rounded to the same steps.

Config ``fit`` picks the procedure: ``gptq`` (the above), ``nearest`` (the same with plain rounding) or
``straight_through`` (no stages: ``qat_epochs`` straight-through epochs of all layers at once, the earlier
recipe); results/codec/README.md compares them.
"""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

import codec
from architectures import Architecture
from common import TrainConfig
from NeuralImplicit import FIRST_LAYER, mlp_hidden
from training import Member, NetworkStack, Trained, run_epochs, training_set

CALIBRATION_POINTS = 16384  # training points per network whose inputs tell GPTQ which errors matter
DAMPING = 0.01              # GPTQ's damping: this share of the mean diagonal added to the Hessian
FINAL_EPOCHS = 1            # straight-through epochs of all layers at the end (at qat_lr / 4)


def fit_epochs(arch: Architecture, cfg: TrainConfig) -> int:
    """Epochs over the training points that fitting one network to one bit depth takes: ``qat_epochs`` after
    every stage but the last, plus ``FINAL_EPOCHS`` (0 when ``qat_epochs`` is 0 or the depth is float32)."""
    if cfg.qat_epochs == 0 or cfg.codec_bits == 32 or not arch.layerwise_fit:
        return 0
    if cfg.fit == "straight_through":
        return cfg.qat_epochs
    return cfg.qat_epochs * (arch.fit_stages(cfg) - 1) + FINAL_EPOCHS


def stages(arch: Architecture, stack: NetworkStack) -> list[list[str]]:
    """The stored parameters grouped by module (a layer's weight and bias), in the order they are quantized:
    the order of the network, inputs first. Parameters the file does not store (a folded sphere encoder,
    fixed at the identity) are in no stage and never train."""
    stored = set(codec.stored_tensors(arch.name, stack.params))
    groups: dict[str, list[str]] = {}
    for name in stack.params:
        if name in stored:
            groups.setdefault(name.rsplit(".", 1)[0], []).append(name)
    return list(groups.values())


@torch.no_grad()
def gptq_round(weight: torch.Tensor, bias: torch.Tensor, inputs: torch.Tensor, weight_step: torch.Tensor,
               bias_step: torch.Tensor, bounds: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Round K stacked layers to their steps, each column's error compensated on the later columns (GPTQ),
    the bias as a last column of constant input 1; per network the result is kept only where it changes the
    layer's output on ``inputs`` less than plain rounding does.

    Parameters
    ----------
    weight : (K, out, in) tensor
    bias : (K, out) tensor
    inputs : (K, C, in) tensor
        The layer's inputs on calibration points.
    weight_step, bias_step : (K,) tensors
        ``codec.tensor_steps`` of the weight and of the bias.
    bounds : (int, int), optional
        ``codec.tensor_bound`` of the weight and of the bias: integers are clamped to them.

    Returns
    -------
    (weight, bias) on the grid of their steps, shapes as given.
    """
    k_count, _, width_in = weight.shape
    x = torch.cat([inputs, torch.ones_like(inputs[..., :1])], -1).double()
    hessian = x.transpose(1, 2) @ x / x.shape[1]
    diagonal = hessian.diagonal(dim1=1, dim2=2)
    hessian += DAMPING * diagonal.mean(1)[:, None, None] * torch.eye(width_in + 1, dtype=x.dtype, device=x.device)
    upper = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)
    w = torch.cat([weight, bias.unsqueeze(-1)], -1).double()
    steps = torch.cat([weight_step[:, None].expand(k_count, width_in), bias_step[:, None]], 1).double()
    limit = torch.tensor([bounds[0]] * width_in + [bounds[1]] if bounds else [math.inf] * (width_in + 1),
                         dtype=w.dtype, device=w.device)
    q = torch.zeros_like(w)
    for j in range(width_in + 1):
        q[..., j] = torch.round(w[..., j] / steps[:, j:j + 1]).clamp(-limit[j], limit[j]) * steps[:, j:j + 1]
        error = (w[..., j] - q[..., j]) / upper[:, j, j][:, None]
        w[..., j + 1:] -= error[..., None] * upper[:, None, j, j + 1:]
    original = torch.cat([weight, bias.unsqueeze(-1)], -1).double()
    nearest = torch.round(original / steps[:, None, :]).clamp(-limit, limit) * steps[:, None, :]

    def output_error(candidate):
        return ((candidate - original) @ x.transpose(1, 2)).square().mean(dim=(1, 2))

    better = (output_error(q) < output_error(nearest))[:, None, None]
    chosen = torch.where(better, q, nearest).to(weight.dtype)
    return chosen[..., :-1].contiguous(), chosen[..., -1].contiguous()


@torch.no_grad()
def layer_inputs(stack: NetworkStack, inputs: torch.Tensor, index: int) -> torch.Tensor:
    """(K, C, in) inputs of layer ``index`` of the stack's MLP for precomputed network inputs (K, C, in0)."""
    return mlp_hidden(stack.layers(), inputs, stack.slope, index)[-1]


def quantization_aware_finetune(trained: list[Trained], members: list[Member], arch: Architecture, model_args: dict,
                                cfg: TrainConfig, device: torch.device, quiet: bool = True
                                ) -> list[tuple[torch.nn.Module, dict, list]]:
    """The trained networks (a group) brought onto the codec's integers at ``cfg.codec_bits`` (module
    docstring). Each network starts from its ``codec.coded_form`` (the same function) with its spheres as
    the file stores them.

    Returns
    -------
    Per network: (model whose stored tensors are multiples of their steps, within ``codec.tensor_bound``;
    steps {name: float} to give ``codec.encode``; epoch losses).
    """
    models = []
    for t in trained:
        model, _ = codec.coded_form(arch.name, model_args, t.model)
        if hasattr(model, "spheres"):
            model.spheres.copy_(codec.quantize_spheres(model.spheres))
        models.append(model)
    stack = NetworkStack(models, device)
    # inputs from the stored spheres; the float sphere centres stay training points
    data = training_set(stack, torch.stack([t.points for t in trained]), torch.stack([t.sdf for t in trained]),
                        [m.spheres for m in members], cfg)
    calibration = calibration_inputs(data, cfg.seed, device)
    groups = stages(arch, stack)
    hidden = {w: i for i, (w, _) in enumerate([FIRST_LAYER] + stack.hidden_names)}
    first_is_layer = arch.first_layer_sees_inputs
    steps, losses = {}, [[] for _ in models]
    generators = [torch.Generator(device=device).manual_seed(cfg.seed + 1000) for _ in models]
    every = [name for g in groups for name in g]
    bounds = {name: codec.tensor_bound(name, stack.params[name][0].numel(), cfg.codec_bits) for name in every}

    def quantizer() -> dict:  # what the straight-through epochs round with: the steps fixed so far
        return {name: (steps[name], bounds[name]) for name in steps}

    with tqdm(total=fit_epochs(arch, cfg), desc="  quantization-aware", leave=False, disable=quiet) as bar:
        if cfg.fit == "straight_through":
            steps = {name: codec.tensor_steps(stack.params[name], cfg.codec_bits, name, stacked=True)
                     for name in every}
            losses = train_some(stack, every, data, cfg, cfg.qat_epochs, cfg.qat_lr, generators, bar, quantizer())
            groups = []
        for i, group in enumerate(groups):
            for name in group:
                steps[name] = codec.tensor_steps(stack.params[name], cfg.codec_bits, name, stacked=True)
            weight_name = next((n for n in group if n in hidden), None)
            gptq = cfg.fit == "gptq" and weight_name is not None and (hidden[weight_name] > 0 or first_is_layer)
            round_stage(stack, group, steps, bounds, (calibration, hidden[weight_name]) if gptq else None)
            rest = [name for g in groups[i + 1:] for name in g]
            if rest and cfg.qat_epochs:
                stage_losses = train_some(stack, rest, data, cfg, cfg.qat_epochs, cfg.qat_lr, generators, bar)
                for k, v in enumerate(stage_losses):
                    losses[k] += v
        if groups:
            final = train_some(stack, every, data, cfg, FINAL_EPOCHS, cfg.qat_lr / 4, generators, bar, quantizer())
            for k, v in enumerate(final):
                losses[k] += v
    with torch.no_grad():
        for name in every:
            stack.params[name].copy_(codec.quantize(stack.params[name], steps[name], bounds[name]))
    return [(stack.export(k), {name: float(s[k]) for name, s in steps.items()}, losses[k])
            for k in range(len(models))]


def calibration_inputs(data, seed: int, device) -> torch.Tensor:
    """(K, C, in0) network inputs GPTQ calibrates on: up to ``CALIBRATION_POINTS`` training points drawn with
    ``seed`` + 2000, and the sphere centres when they train."""
    generator = torch.Generator(device=device).manual_seed(seed + 2000)
    count = min(CALIBRATION_POINTS, data.inputs.shape[1])
    calibration = data.inputs[:, torch.randperm(data.inputs.shape[1], generator=generator, device=device)[:count]]
    return calibration if data.anchors is None else torch.cat([calibration, data.anchors], 1)


@torch.no_grad()
def round_stage(stack: NetworkStack, group: list[str], steps: dict, bounds: dict, gptq: tuple | None) -> None:
    """Round the parameters ``group`` of a stack onto their ``steps`` in place: with ``gptq`` = (calibration
    inputs (K, C, in0), layer index), the layer's weight and bias by ``gptq_round``; else to the nearest step."""
    if gptq is None:
        for name in group:
            stack.params[name].copy_(codec.quantize(stack.params[name], steps[name], bounds[name]))
        return
    calibration, index = gptq
    weight_name = next(n for n in group if n.endswith(".weight"))
    bias_name = weight_name.replace(".weight", ".bias")
    w, b = gptq_round(stack.params[weight_name], stack.params[bias_name], layer_inputs(stack, calibration, index),
                      steps[weight_name], steps[bias_name], (bounds[weight_name], bounds[bias_name]))
    stack.params[weight_name].copy_(w)
    stack.params[bias_name].copy_(b)


def train_some(stack: NetworkStack, names: list[str], data, cfg: TrainConfig, epochs: int, lr: float,
               generators: list[torch.Generator], bar, quantizer: dict | None = None) -> list[list[float]]:
    """``epochs`` epochs of Adam on the parameters ``names`` only (cosine decay from ``lr``); with
    ``quantizer`` ({name: (steps, bound)}) through it (straight-through). Returns each network's epoch losses."""
    opt = torch.optim.Adam([stack.params[n] for n in names], lr=lr, fused=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=epochs * math.ceil(data.points.shape[1] / cfg.batch_size))
    return run_epochs(stack, opt, data, epochs, cfg, generators, scheduler, True, progress=bar,
                      quantizer=quantizer)
