"""Architecture 2 of the key-sphere paper: a free latent vector per sphere instead of a linear map."""

from __future__ import annotations

import torch
from torch import nn

from NeuralImplicit import FIRST_LAYER, SDFMLP, sphere_weights


class LatentSphereSDF(nn.Module):
    """Each key sphere owns a learned ``feature_dim`` latent; a point's feature is their weighted sum
    (weights as in architecture 1) and the MLP sees [xyz, feature].

    Parameters
    ----------
    num_spheres : int
        M, the number of key spheres.
    layers, width : int
        Hidden layers and width of the SDF-MLP.
    feature_dim : int
        Size of each sphere's latent.
    spheres : (M, 4) tensor, optional
        Sphere centres and signed SDF at the centres (only the centres are used here).
    weighting : str
        ``distance`` (the authors') or ``inverse``, see ``sphere_weights``.
    """

    def __init__(self, num_spheres: int, layers: int = 6, width: int = 32, feature_dim: int = 29,
                 spheres: torch.Tensor | None = None, weighting: str = "distance"):
        super().__init__()
        self.weighting = weighting
        self.register_buffer("spheres", torch.zeros(num_spheres, 4) if spheres is None else spheres.float().clone())
        # small init: the summed feature starts near zero, as the linear map of architecture 1 roughly does
        self.latents = nn.Parameter(0.01 * torch.randn(num_spheres, feature_dim))
        self.mlp = SDFMLP(3 + feature_dim, layers, width)

    def precompute(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) points -> (N, 3 + M): xyz and the sphere weights, fixed per point during training."""
        return torch.cat([points, sphere_weights(points, self.spheres[:, :3], self.weighting)], 1)

    def input_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The MLP's first layer as one linear map of ``precompute``'s (N, 3 + M) output: weight
        [W_xyz, W_f L^T] (width, 3 + M) and bias (width,), differentiable in the latents L (M, feature_dim)."""
        return self.input_layer_from(dict(self.named_parameters()))

    @staticmethod
    def input_layer_from(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_layer`` from parameters by state-dict name, optionally stacked (leading dimension K)."""
        weight, bias = params[FIRST_LAYER[0]], params[FIRST_LAYER[1]]
        latents_t = params["latents"].transpose(-1, -2)
        return torch.cat([weight[..., :3], weight[..., 3:] @ latents_t], -1), bias

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) points -> (N,) signed distances."""
        feature = sphere_weights(points, self.spheres[:, :3], self.weighting) @ self.latents
        return self.mlp(torch.cat([points, feature], dim=1))
