"""Architecture 1 of the key-sphere paper, the shared SDF-MLP, and the NI baseline (Davies et al. 2020).

Model files hold ``nn.Module``s only; training lives in ``training.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.1  # the authors' LeakyReLU slope between hidden layers


def affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x W^T + b of one layer (x (N, in), weight (out, in), bias (out,)) -> (N, out), or of K stacked layers
    (x (K, N, in), weight (K, out, in), bias (K, out)) -> (K, N, out)."""
    if x.dim() == 2:  # one network: 2-D products are cheaper than batches of one on a CPU
        return torch.addmm(bias, x, weight.t())
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def mlp_hidden(layers: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor, slope: float = LEAKY_SLOPE,
               count: int | None = None) -> list[torch.Tensor]:
    """The inputs of the first ``count`` + 1 layers of an SDF-MLP (default: all of them): [x, h_1, ...,
    h_count], h_i = LeakyReLU(slope)(h_{i-1} W_i^T + b_i). One network or K stacked (see ``affine``)."""
    acts = [x]
    for weight, bias in layers[:len(layers) - 1 if count is None else count]:
        acts.append(F.leaky_relu_(affine(acts[-1], weight, bias), slope))
    return acts


def mlp_forward(layers: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor,
                slope: float = LEAKY_SLOPE) -> torch.Tensor:
    """The SDF-MLP forward: hidden layers with LeakyReLU(``slope``), then the last layer and tanh.

    The one forward of the project: the models, the training step (``training.l1_step``), stacked prediction
    and the layer-by-layer codec fit all call it.

    Parameters
    ----------
    layers : list of (weight, bias)
        (out, in) and (out,) tensors for one network, or (K, out, in) and (K, out) for K stacked.
    x : (N, in) or (K, N, in) tensor

    Returns
    -------
    (N,) or (K, N) tensor of signed distances.
    """
    weight, bias = layers[-1]
    return torch.tanh(affine(mlp_hidden(layers, x, slope)[-1], weight, bias)).squeeze(-1)


def mlp_layer_names(layers: int, prefix: str = "mlp.") -> list[tuple[str, str]]:
    """State-dict names (weight, bias) of the ``layers`` + 1 Linear layers of an ``SDFMLP`` held as ``prefix``:
    ``{prefix}model.{2i}.weight``, the authors' names."""
    return [(f"{prefix}model.{2 * i}.weight", f"{prefix}model.{2 * i}.bias") for i in range(layers + 1)]


class SDFMLP(nn.Module):
    """``layers`` hidden Linear layers of ``width`` with LeakyReLU(``slope``), then Linear(width, 1) and tanh.

    Parameters are named ``model.0`` ... ``model.{2 * layers}`` so the authors' weights load unchanged; the
    ``nn.Sequential`` holds them under those names (and, run as it is, computes the same function), the forward
    is ``mlp_forward``.

    Parameters
    ----------
    in_dim : int
        Input size (3 for xyz alone, 3 + feature_dim with key-sphere features).
    layers : int
        Number of hidden layers (the first maps ``in_dim`` to ``width``).
    width : int
        Hidden width.
    slope : float
        Negative slope of the hidden activations: the authors' 0.1; 0 is the ReLU of NI's released weights.
    """

    def __init__(self, in_dim: int, layers: int, width: int, slope: float = LEAKY_SLOPE):
        super().__init__()
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks += [nn.Linear(in_dim if i == 0 else width, width), nn.LeakyReLU(slope, inplace=True)]
        blocks += [nn.Linear(width, 1), nn.Tanh()]
        self.model = nn.Sequential(*blocks)
        self.slope = slope
        self.hidden_layers = layers

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) of every Linear layer, first to last."""
        return [(m.weight, m.bias) for m in self.model if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) -> (N,) signed distances."""
        return mlp_forward(self.layers(), x, self.slope)


FIRST_LAYER = mlp_layer_names(0)[0]  # the MLP's first layer in a model's state dict
WEIGHTINGS = ("distance", "inverse")


def sphere_weights(points: torch.Tensor, centres: torch.Tensor, weighting: str = "distance") -> torch.Tensor:
    """Weights of each sphere for each point, d = distance to the sphere centre:
    ``distance``: w_i = d_i / sum_j d_j, ``inverse``: w_i = (1 / d_i) / sum_j (1 / d_j).

    Proportional, not inverse, distance is what the authors' released weights were trained with.

    Parameters
    ----------
    points : (N, 3) tensor
    centres : (M, 3) tensor
    weighting : "distance" or "inverse"

    Returns
    -------
    (N, M) tensor whose rows sum to 1.
    """
    d = torch.cdist(points, centres)
    if weighting == "inverse":
        d = 1.0 / d.clamp_min(1e-6)
    return d / d.sum(dim=1, keepdim=True).clamp_min(1e-12)


class KeySphereSDF(nn.Module):
    """Architecture 1: a Linear(4, feature_dim) maps each sphere (x, y, z, signed SDF at the centre) to a
    feature; a point's feature is the distance-weighted sum of sphere features; the MLP sees [xyz, feature].

    With 128 spheres, 6 layers of 32 and feature_dim 29 this stores 7026 numbers (spheres included).

    Parameters
    ----------
    num_spheres : int
        M, the number of key spheres.
    layers, width : int
        Hidden layers and width of the SDF-MLP.
    feature_dim : int
        Size of the sphere feature; the MLP input is 3 + feature_dim.
    spheres : (M, 4) tensor, optional
        Sphere centres and signed SDF at the centres (normalized frame); loaded from a state dict otherwise.
    weighting : str
        ``distance`` (the authors') or ``inverse``, see ``sphere_weights``.
    """

    def __init__(self, num_spheres: int, layers: int = 6, width: int = 32, feature_dim: int = 29,
                 spheres: torch.Tensor | None = None, weighting: str = "distance"):
        super().__init__()
        self.weighting = weighting
        self.register_buffer("spheres", torch.zeros(num_spheres, 4) if spheres is None else spheres.float().clone())
        self.sphere_encoder = nn.Linear(4, feature_dim)
        self.mlp = SDFMLP(3 + feature_dim, layers, width)

    def sphere_features(self) -> torch.Tensor:
        """(M, feature_dim) features of the spheres."""
        return self.sphere_encoder(self.spheres)

    def precompute(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) points -> (N, 7): xyz and the weighted average of the spheres, sum_i w_i s_i.

        It depends on the points and the (untrained) spheres only, so training computes it once per point.
        """
        return torch.cat([points, sphere_weights(points, self.spheres[:, :3], self.weighting) @ self.spheres], 1)

    def input_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The MLP's first layer as one linear map of ``precompute``'s (N, 7) output: (weight (width, 7),
        bias (width,)), differentiable in the parameters (see ``input_layer_from``)."""
        return self.input_layer_from(dict(self.named_parameters()))

    @staticmethod
    def input_layer_from(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_layer`` from parameters by state-dict name, each optionally stacked for K networks
        (leading dimension K): weight (..., width, 7), bias (..., width).

        Layer 1 sees [xyz, A s + b] with s = sum_i w_i s_i; splitting its weight as [W_xyz, W_f] gives
        W_xyz xyz + (W_f A) s + (W_f b + b_1), the same function on 7 inputs instead of 32.
        """
        weight, bias = (params[name] for name in FIRST_LAYER)
        w_xyz, w_feature = weight[..., :3], weight[..., 3:]
        encoder_bias = (w_feature @ params["sphere_encoder.bias"].unsqueeze(-1)).squeeze(-1)
        return torch.cat([w_xyz, w_feature @ params["sphere_encoder.weight"]], -1), encoder_bias + bias

    def folded(self) -> "KeySphereSDF":
        """The same function with the sphere encoder folded into the MLP's first layer (``input_layer``):
        feature_dim 4, the encoder the identity, first layer [W_xyz, W_f A] and bias W_f b + b_1. At the
        default sizes 6081 numbers instead of 7026; what ``.ksdf`` files store."""
        weight, bias = self.input_layer()
        width, layers = weight.shape[0], self.mlp.hidden_layers
        out = KeySphereSDF(len(self.spheres), layers, width, 4, self.spheres, self.weighting)
        state = {k: v for k, v in self.state_dict().items() if k.startswith("mlp.")}
        state.update({"spheres": self.spheres, "sphere_encoder.weight": torch.eye(4),
                      "sphere_encoder.bias": torch.zeros(4), FIRST_LAYER[0]: weight.detach(),
                      FIRST_LAYER[1]: bias.detach()})
        out.load_state_dict(state)
        return out

    def is_folded(self) -> bool:
        """Whether the sphere encoder is the identity (``folded``)."""
        return self.sphere_encoder.weight.shape == (4, 4) and torch.equal(self.sphere_encoder.weight, torch.eye(4)) \
            and not self.sphere_encoder.bias.any()

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) points -> (N,) signed distances."""
        # sum_i w_i (A s_i + b) = A (sum_i w_i s_i) + b because the weights sum to 1: averaging the (M, 4)
        # spheres first and encoding once is the same function at ~1/7 of the cost of an (N, M) @ (M, F) product
        feature = self.sphere_encoder(self.precompute(points)[:, 3:])
        return self.mlp(torch.cat([points, feature], dim=1))


class NISDF(nn.Module):
    """The NI baseline (Davies et al. 2020): the SDF-MLP on xyz alone; 8 layers of 32 store 7553 numbers.
    ``slope``: the hidden activations' (ours LeakyReLU(0.1); NI's released weights, ReLU: 0)."""

    def __init__(self, layers: int = 8, width: int = 32, slope: float = LEAKY_SLOPE):
        super().__init__()
        self.mlp = SDFMLP(3, layers, width, slope)

    def precompute(self, points: torch.Tensor) -> torch.Tensor:
        """Nothing to precompute: (N, 3) -> (N, 3)."""
        return points

    def input_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The MLP's first layer (weight (width, 3), bias (width,)), applied to ``precompute``'s output."""
        return self.input_layer_from(dict(self.named_parameters()))

    @staticmethod
    def input_layer_from(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_layer`` from parameters by state-dict name, optionally stacked (leading dimension K)."""
        return params[FIRST_LAYER[0]], params[FIRST_LAYER[1]]

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) points -> (N,) signed distances."""
        return self.mlp(points)
