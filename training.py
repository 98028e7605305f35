"""Training SDF networks, one or many at once.

A group is K networks of one architecture and size, each with its own mesh, points, shuffle and (when asked)
hard examples, whose parameters are stacked into tensors with a leading dimension K: one batched forward and
backward (``torch.baddbmm``) and one Adam step train all K. Adam works element by element and each network's
loss is its own mean, so a network trains in a group exactly as it trains alone, up to float rounding. On a
GPU this turns K launch-bound steps into one; on a CPU one network per process (K = 1, plain ``addmm``) stays
fastest.

``train_group`` is the whole recipe for a group: optional restarts, the learning-rate schedule, hard-example
mining and the collapse guard (a network whose field collapses is trained again at half the rate, in a group
of retries); ``quantization.py`` then fits a group to the codec. ``train_series.py`` feeds it meshes.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import statistics
from dataclasses import dataclass

import torch
from tqdm import tqdm

import codec
from architectures import Architecture
from common import InputError, TrainConfig
from field import evaluate_points
from mesh_kind import TargetField
from NeuralImplicit import affine, mlp_forward, mlp_hidden, mlp_layer_names
from sphere_sampler import sample_hard_points

log = logging.getLogger("keysphere")
MINE_BAND = 0.05        # hard examples: where the predicted or true field is within this of zero (the surface moves)
MINE_MIN_ERROR = 0.02   # and the error exceeds this (smaller ones are the rounding of the surface, not a wrong one)
PROBE_POINTS = 4096     # training points per network on which the collapse guard looks at the field
MAX_ATTEMPTS = 3        # a collapsed network is trained at most this often, halving the rate each time


def total_epochs(cfg: TrainConfig) -> int:
    """Epochs trained in all: the final model's, plus those of the restarts that lost."""
    return cfg.epochs + (cfg.restarts - 1) * cfg.restart_epochs if cfg.restarts > 1 else cfg.epochs


# ----------------------------------------------------------------------------------------------------------
# The step


def transpose_stacked(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(1, 2)


def l1_step(layers: list[tuple[torch.Tensor, torch.Tensor]], slope: float, x: torch.Tensor,
            y: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Losses and gradients of mean |f_k(x_k) - y_k| for K stacked MLPs f_k (LeakyReLU(``slope``) between
    layers, tanh after the last), forward and backward written out by hand.

    The same arithmetic as autograd (a test checks the gradients) without its bookkeeping: for 2048 x 32
    activations that bookkeeping costs about as much as the matrix products. K = 1 runs on 2-D tensors
    (``addmm``; a batch of one costs more per step on a CPU), K > 1 as batched products (``baddbmm``).

    Parameters
    ----------
    layers : list of (weight (K, out, in), bias (K, out)) tensors
    slope : float
    x : (K, N, in) tensor
    y : (K, N) tensor of targets

    Returns
    -------
    loss : (K,) tensor, each network's mean absolute error
    grads : list of (grad weight, grad bias), one per layer, shaped like the layers
    """
    single = x.shape[0] == 1
    if single:
        x, y, layers = x[0], y[0], [(w[0], b[0]) for w, b in layers]
        matmul, transpose = torch.mm, torch.t
    else:
        matmul, transpose = torch.bmm, transpose_stacked
    with torch.no_grad():
        acts = mlp_hidden(layers, x, slope)  # the forward of mlp_forward, its activations kept for the backward
        out = torch.tanh(affine(acts[-1], *layers[-1]))
        diff = out.squeeze(-1) - y
        loss = diff.abs().mean(-1)
        grad = torch.sign(diff).unsqueeze(-1).mul_(1.0 / y.shape[-1]).mul_(1 - out * out)
        grads = []
        for i in range(len(layers) - 1, -1, -1):
            grads.append((matmul(transpose(grad), acts[i]), grad.sum(-2)))
            if i > 0:
                # the mask of LeakyReLU from its output: positive exactly where its input was
                grad = torch.ops.aten.leaky_relu_backward(matmul(grad, layers[i][0]), acts[i], slope, True)
    grads = grads[::-1]
    if single:
        return loss.unsqueeze(0), [(w.unsqueeze(0), b.unsqueeze(0)) for w, b in grads]
    return loss, grads


# ----------------------------------------------------------------------------------------------------------
# K networks, stacked


class NetworkStack:
    """K networks of one architecture and size, trained as one: parameters stacked (leading dimension K).

    Parameters
    ----------
    models : list of K networks of one architecture and size
        Their parameters are copied into the stack; their buffers (the spheres) serve ``precompute``.
    device : torch.device
    """

    def __init__(self, models: list[torch.nn.Module], device: torch.device):
        self.models = [m.to(device).eval() for m in models]
        names = [name for name, _ in self.models[0].named_parameters()]
        self.params = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in self.models])
                       .clone().requires_grad_(True) for name in names}
        mlp = self.models[0].mlp
        self.hidden_names = mlp_layer_names(mlp.hidden_layers)[1:]  # the first comes from input_layer_from
        self.slope = mlp.slope

    @classmethod
    def new(cls, arch: Architecture, model_args: dict, structures: list, seed: int, device: torch.device):
        """K fresh networks, one per entry of ``structures`` (see ``Architecture.network_args``), each
        initialised from ``torch.manual_seed(seed)`` as a network trained alone is; ``model_args`` without the
        structures."""
        models = []
        for s in structures:
            torch.manual_seed(seed)
            models.append(arch.build(arch.network_args(model_args, s)))
        return cls(models, device)

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) of every layer; the first from ``input_layer_from`` (differentiable)."""
        first = type(self.models[0]).input_layer_from(self.params)
        return [first] + [(self.params[w], self.params[b]) for w, b in self.hidden_names]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gradients of each network's L1 loss on its batch (x (K, N, in) precomputed, y (K, N)) into the
        parameters' ``.grad``; returns the (K,) losses."""
        single = len(self.models) == 1  # 2-D products are cheaper than batches of one on a CPU
        params = {name: p[0] for name, p in self.params.items()} if single else self.params
        weight, bias = type(self.models[0]).input_layer_from(params)
        first = (weight.detach(), bias.detach())
        layers = [(first[0][None], first[1][None]) if single else first] + [
            (self.params[w].detach(), self.params[b].detach()) for w, b in self.hidden_names]
        loss, grads = l1_step(layers, self.slope, x, y)
        for (w, b), (grad_weight, grad_bias) in zip(self.hidden_names, grads[1:]):
            self.params[w].grad, self.params[b].grad = grad_weight, grad_bias
        torch.autograd.backward([weight, bias], [g[0] for g in grads[0]] if single else list(grads[0]))
        return loss

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(K, N) fields on precomputed inputs x (K, N, in)."""
        return mlp_forward(self.layers(), x, self.slope)

    def precompute(self, points: torch.Tensor) -> torch.Tensor:
        """(K, N, 3) points -> (K, N, in): each network's fixed per-point inputs (``model.precompute``)."""
        return torch.stack([self.precompute_one(k, p) for k, p in enumerate(points)])

    def precompute_one(self, k: int, points: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
        """(N, 3) points -> (N, in) inputs of network k, in chunks (bounded memory)."""
        with torch.no_grad():
            model = self.models[k]
            return torch.cat([model.precompute(points[i:i + chunk]) for i in range(0, max(len(points), 1), chunk)])

    def export(self, k: int) -> torch.nn.Module:
        """Network k as a model of its own (a copy)."""
        model = copy.deepcopy(self.models[k])
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(self.params[name][k])
        return model.eval()


class ModuleStack(NetworkStack):
    """One NGLOD network behind ``NetworkStack``'s interface: its parameters with a leading dimension of 1,
    steps by autograd. The loss is the sum over its LODs of each LOD's L1 loss (every LOD stays usable); the
    reported loss is the finest LOD's."""

    def __init__(self, models: list[torch.nn.Module], device: torch.device):
        if len(models) != 1:
            raise ValueError("a ModuleStack trains one network (its networks differ in shape)")
        self.models = [m.to(device).eval() for m in models]
        self.params = {name: p.detach()[None].clone().requires_grad_(True)
                       for name, p in self.models[0].named_parameters()}

    def _call(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        params = {name: p[0] for name, p in self.params.items()}
        return torch.func.functional_call(self.models[0], params, (x,), kwargs)

    def layers(self):
        raise NotImplementedError("a ModuleStack has no layer list (no layer-by-layer codec fit)")

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        losses = (self._call(x[0], lod="all") - y[0]).abs().mean(1)
        losses.sum().backward()
        return losses[-1:].detach()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(x[0])[None]


def stack_for(arch: Architecture):
    """The stack class that trains ``arch``: NetworkStack (stacked MLPs, hand-written step) or ModuleStack."""
    return NetworkStack if arch.stacks else ModuleStack


def select(stacks: list[NetworkStack], optimizers: list[torch.optim.Optimizer], choice: list[int],
           lr: float) -> tuple[NetworkStack, torch.optim.Optimizer]:
    """Network k of ``stacks[choice[k]]`` for every k, with its Adam state: the winners of restarts."""
    models = [stacks[c].export(k) for k, c in enumerate(choice)]
    stack = type(stacks[0])(models, next(iter(stacks[0].params.values())).device)
    opt = torch.optim.Adam(stack.params.values(), lr=lr, fused=True)
    for name, p in stack.params.items():
        states = [optimizers[c].state[stacks[c].params[name]] for c in choice]
        opt.state[p] = {"step": states[0]["step"].clone(),
                        **{key: torch.stack([s[key][k] for k, s in enumerate(states)])
                           for key in ("exp_avg", "exp_avg_sq")}}
    return stack, opt


# ----------------------------------------------------------------------------------------------------------
# Epochs


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, epochs: int, steps_per_epoch: int):
    """Returns (scheduler, per_batch): per-batch schedules step every batch, plateau every epoch."""
    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=epochs * steps_per_epoch), True
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch), True
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience), False
    return None, False


@dataclass
class TrainingSet:
    """What K networks train on: points (K, N, 3), targets (K, N), their precomputed inputs (K, N, in), and
    the sphere centres appended to every batch, precomputed (K, A, in), with their targets (K, A), or None."""

    points: torch.Tensor
    sdf: torch.Tensor
    inputs: torch.Tensor
    anchors: torch.Tensor | None
    anchor_sdf: torch.Tensor | None


def training_set(stack: NetworkStack, points: torch.Tensor, sdf: torch.Tensor, spheres: list,
                 cfg: TrainConfig) -> TrainingSet:
    """Precompute the inputs of ``stack`` for (K, N, 3) ``points``; the sphere centres join when
    ``train_on_spheres`` is on."""
    anchors = anchor_sdf = None
    if cfg.train_on_spheres and spheres[0] is not None:
        centres = torch.stack([s[:, :3] for s in spheres])
        anchors, anchor_sdf = stack.precompute(centres), torch.stack([s[:, 3] for s in spheres])
    return TrainingSet(points, sdf, stack.precompute(points), anchors, anchor_sdf)


def run_epochs(stack: NetworkStack, opt, data: TrainingSet, epochs: int, cfg: TrainConfig,
               generators: list[torch.Generator], scheduler=None, per_batch=False, progress=None,
               quantizer: dict | None = None, check=None) -> list[list[float]]:
    """Train ``epochs`` epochs of mini-batches, each network through its own permutation; returns each
    network's epoch losses.

    With ``quantizer`` ({name: ((K,) steps, bound)}) every step runs forward and backward with those
    parameters quantized as ``codec.py`` stores them and applies the gradient to the float weights
    (straight-through).
    ``check(stack)``, when given, runs after every epoch.
    """
    k_count, n = data.inputs.shape[:2]
    losses = [[] for _ in range(k_count)]
    rows = torch.arange(k_count, device=data.inputs.device).unsqueeze(1)
    for _ in range(epochs):
        perm = torch.stack([torch.randperm(n, generator=g, device=data.inputs.device) for g in generators])
        # one shuffled copy per epoch, then contiguous batches (cheaper per step than gathering each batch)
        shuffled_inputs, shuffled_sdf = data.inputs[rows, perm], data.sdf[rows, perm]
        total = torch.zeros(k_count, device=data.inputs.device)
        for start in range(0, n, cfg.batch_size):
            x = shuffled_inputs[:, start:start + cfg.batch_size]
            y = shuffled_sdf[:, start:start + cfg.batch_size]
            if data.anchors is not None:
                x, y = torch.cat([x, data.anchors], 1), torch.cat([y, data.anchor_sdf], 1)
            if quantizer:
                with torch.no_grad():
                    stash = {name: stack.params[name].detach().clone() for name in quantizer}
                    for name, (step, bound) in quantizer.items():
                        stack.params[name].copy_(codec.quantize(stack.params[name], step, bound))
            opt.zero_grad(set_to_none=True)
            loss = stack.step(x, y)
            if quantizer:
                with torch.no_grad():
                    for name, value in stash.items():
                        stack.params[name].copy_(value)
            opt.step()
            if per_batch:
                scheduler.step()
            total += loss * x.shape[1]
        anchors = 0 if data.anchors is None else data.anchors.shape[1] * math.ceil(n / cfg.batch_size)
        epoch_loss = (total / (n + anchors)).tolist()
        if not all(math.isfinite(v) for v in epoch_loss):
            raise InputError("training diverged (loss is not finite); try a lower lr")
        if scheduler is not None and not per_batch:
            scheduler.step(sum(epoch_loss) / k_count)
        for k, v in enumerate(epoch_loss):
            losses[k].append(v)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{statistics.median(epoch_loss):.5f}")
        if check is not None:
            check(stack)
    return losses


def collapsed(stack: NetworkStack, probe: torch.Tensor, target: torch.Tensor, final: bool) -> torch.Tensor:
    """(K,) bool: whether each network's field has collapsed on its probe points (precomputed (K, P, in)):
    it is constant (a saturated tanh or dead units, which no later step can undo), or, at the end of training
    (``final``), it has one sign where the (K, P) ``target`` distances have two."""
    field = stack.predict(probe)
    constant = (field.max(1).values - field.min(1).values) < 1e-5
    if not final:
        return constant
    two_signs = (target > 0).any(1) & (target < 0).any(1)
    one_sign = ~((field > 0).any(1) & (field < 0).any(1))
    return constant | (two_signs & one_sign)


def mining_epochs(cfg: TrainConfig, epochs: int) -> list[int]:
    """The epochs (of ``epochs``) before which hard examples are mined: ``mine_rounds`` rounds, the first
    after ``mine_at`` of the epochs, the others spread evenly over the rest; each at least one epoch in."""
    starts = [round(epochs * (cfg.mine_at + r * (1 - cfg.mine_at) / cfg.mine_rounds)) for r in range(cfg.mine_rounds)]
    return sorted({min(max(1, s), epochs - 1) for s in starts if epochs > 1})


def mining_grid(cfg: TrainConfig) -> int:
    """Hard examples are looked for on a jittered grid of half the marching-cubes resolution (64^3 for 128)."""
    return max(8, cfg.mesh_res // 2)


def mine_hard_points(stack: NetworkStack, data: TrainingSet, fields: list, cfg: TrainConfig, seed: int) -> None:
    """Replace, in place, a ``mine_fraction`` of each network's training points, drawn at random, by the
    points where it errs most near its surface (``sample_hard_points``)."""
    n = data.points.shape[1]
    for k, field in enumerate(fields):
        if field is None:
            continue
        model = stack.export(k)
        device = data.points.device
        hard, hard_sdf = sample_hard_points(lambda p, m=model: evaluate_points(m, p), field,
                                            int(cfg.mine_fraction * n), mining_grid(cfg), MINE_BAND, MINE_MIN_ERROR,
                                            seed, device)
        if len(hard) == 0:  # nothing wrong enough to mine
            continue
        gen = torch.Generator(device=device).manual_seed(seed + 1)
        replaced = torch.randperm(n, generator=gen, device=device)[:len(hard)]
        data.points[k, replaced], data.sdf[k, replaced] = hard, hard_sdf
        data.inputs[k, replaced] = stack.precompute_one(k, hard)
        log.debug("hard-example mining: %d of %d training points replaced", len(hard), n)


# ----------------------------------------------------------------------------------------------------------
# The recipe


@dataclass
class Member:
    """One network's share of a group: its name (for logs), key spheres (M, 4) or None, training points
    (N, 3) and targets (N,) on the training device, its ``TargetField`` (for hard examples) or None, and for
    NGLOD its occupied voxels (V, 3)."""

    name: str
    spheres: torch.Tensor | None
    points: torch.Tensor
    sdf: torch.Tensor
    field: TargetField | None = None
    voxels: torch.Tensor | None = None


@dataclass
class Trained:
    """A trained network: the float ``model``, its ``history`` (epoch losses, final loss, learning rate) and
    the points and targets it ended with (hard examples included)."""

    model: torch.nn.Module
    history: dict
    points: torch.Tensor
    sdf: torch.Tensor


def start_stack(arch: Architecture, model_args: dict, cfg: TrainConfig, members: list[Member], device,
                generators: list[torch.Generator], histories: list[dict], bar):
    """The stack a training goes on with, its Adam and its ``TrainingSet``: fresh networks from ``cfg.seed``,
    or with ``restarts`` > 1 per network the best of ``restarts`` trainings of ``restart_epochs`` (their losses
    go into ``histories``)."""
    spheres = [m.spheres for m in members]
    structures = [m.voxels if arch.has_octree else m.spheres for m in members]
    points, sdf = torch.stack([m.points for m in members]), torch.stack([m.sdf for m in members])
    stacks, optimizers, finals, data = [], [], [], None
    for r in range(cfg.restarts if cfg.restarts > 1 else 1):
        stack = stack_for(arch).new(arch, model_args, structures, cfg.seed + r, device)
        opt = torch.optim.Adam(stack.params.values(), lr=cfg.lr, fused=True)
        if data is None:  # every restart has the same spheres, so the same inputs
            data = training_set(stack, points, sdf, spheres, cfg)
        if cfg.restarts <= 1:
            return stack, opt, data
        losses = run_epochs(stack, opt, data, cfg.restart_epochs, cfg, generators, progress=bar)
        for k, h in enumerate(histories):
            h["restarts"].append(losses[k])
        stacks.append(stack)
        optimizers.append(opt)
        finals.append([loss[-1] for loss in losses])
    choice = [min(range(cfg.restarts), key=lambda r, k=k: finals[r][k]) for k in range(len(members))]
    return (*select(stacks, optimizers, choice, cfg.lr), data)


def train_once(arch: Architecture, model_args: dict, cfg: TrainConfig, members: list[Member], device: torch.device,
               quiet: bool, guard: bool) -> tuple[list[Trained], list[bool]]:
    """One training of a group: restarts (best final loss wins, per network), then the schedule for the rest
    of ``epochs``, with hard examples after ``mine_at`` of it. Returns the trained networks and whether each
    collapsed (checked after every epoch when ``guard``, and at the end)."""
    generators = [torch.Generator(device=device).manual_seed(cfg.seed) for _ in members]
    steps = math.ceil(len(members[0].points) / cfg.batch_size)
    histories = [{"restarts": [], "main": []} for _ in members]
    with tqdm(total=total_epochs(cfg), desc="  epochs", leave=False, disable=quiet) as bar:
        stack, opt, data = start_stack(arch, model_args, cfg, members, device, generators, histories, bar)
        remaining = cfg.epochs - cfg.restart_epochs if cfg.restarts > 1 else cfg.epochs
        probe = data.inputs[:, :PROBE_POINTS]
        target = data.sdf[:, :PROBE_POINTS]
        dead = torch.zeros(len(members), dtype=torch.bool, device=device)

        def check(s):
            dead.logical_or_(collapsed(s, probe, target, final=False))

        if remaining > 0:
            data = dataclasses.replace(data, points=data.points.clone(), sdf=data.sdf.clone(),
                                       inputs=data.inputs.clone())  # mining edits them; retries start afresh
            scheduler, per_batch = make_scheduler(opt, cfg, remaining, steps)
            fields = [m.field for m in members]
            mining = cfg.mine_fraction > 0 and any(f is not None for f in fields)
            starts = mining_epochs(cfg, remaining) if mining else []
            for begin, end in zip([0] + starts, starts + [remaining]):
                if begin > 0:
                    mine_hard_points(stack, data, fields, cfg, seed=cfg.seed + 2000 + begin)
                losses = run_epochs(stack, opt, data, end - begin, cfg, generators, scheduler, per_batch,
                                    progress=bar, check=check if guard else None)
                for k, h in enumerate(histories):
                    h["main"] += losses[k]
                if guard and bool(dead.all()):
                    break
    dead |= collapsed(stack, probe, target, final=True)
    trained = []
    for k, h in enumerate(histories):
        h["final_loss"] = h["main"][-1] if h["main"] else min(loss[-1] for loss in h["restarts"])
        h["lr"] = cfg.lr
        trained.append(Trained(stack.export(k), h, data.points[k], data.sdf[k]))
    return trained, dead.tolist()


def train_group(arch: Architecture, model_args: dict, cfg: TrainConfig, members: list[Member], device: torch.device,
                quiet: bool = True) -> list[Trained]:
    """Train one network per member (all of one ``arch`` and ``model_args``; points of equal count).

    A network that collapses (the field turns constant, e.g. after a too-large step, or ends one-signed) is
    trained again at half the learning rate with the others that collapsed, at most ``MAX_ATTEMPTS`` times
    in all; the last attempt is kept whatever it gives.
    """
    results: list[Trained | None] = [None] * len(members)
    todo = list(range(len(members)))
    for attempt in range(MAX_ATTEMPTS):
        last = attempt == MAX_ATTEMPTS - 1
        trained, dead = train_once(arch, model_args, cfg, [members[i] for i in todo], device, quiet, guard=not last)
        retry = []
        for i, t, d in zip(todo, trained, dead):
            results[i] = t
            if d and not last:
                retry.append(i)
                log.warning("%s: training collapsed at lr %g (the field is constant or one-signed); retrying at "
                            "lr %g", members[i].name, cfg.lr, cfg.lr / 2)
        if not retry:
            break
        todo, cfg = retry, dataclasses.replace(cfg, lr=cfg.lr / 2)
    return results
