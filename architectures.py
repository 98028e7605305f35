"""The architectures, one registry entry each: everything the pipeline needs to know about a kind of network.

    arch = architectures.get("nglod")
    model = arch.build(arch.network_args(arch.model_args(cfg, 0), voxels))

Outside this module no code tests an architecture's name; it asks the entry (timm's model registry works the
same way). A new architecture is one more entry here and its model class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch

from common import InputError, TrainConfig
from NeuralImplicit import NISDF, KeySphereSDF
from NeuralImplicit_1 import LatentSphereSDF
from nglod import NGLODSDF

# config keys read by one family of architectures only; the rest apply to all
SPHERE_KEYS = ("num_spheres", "sphere_min_radius", "layers", "width", "feature_dim", "sphere_weighting",
               "train_on_spheres")
NI_KEYS = ("ni_layers", "ni_width")
NGLOD_KEYS = ("nglod_lods", "nglod_base_res", "nglod_features", "nglod_hidden", "nglod_margin",
              "nglod_voxel_fraction", "nglod_lr", "nglod_bits")
LAYERWISE_FIT_KEYS = ("qat_epochs", "qat_lr", "fit")  # the MLPs' codec fit (quantization.py)


@dataclass(frozen=True)
class Architecture:
    """One kind of network.

    Attributes
    ----------
    name : str
        What ``--arch`` takes and checkpoints and ``.ksdf`` headers store.
    summary : str
        One line for ``--help``.
    model_class : type
        The ``nn.Module``; ``model_class(**network_args)`` builds one.
    structure : str
        What a network is built on besides its weights: ``spheres`` (key spheres), ``octree`` (NGLOD's
        occupied voxels) or ``none``.
    own_keys : tuple of str
        Config keys only this architecture reads (besides the shared ones).
    make_args : callable
        (cfg, number of spheres) -> ``model_args`` (without the structure).
    linear_layers : callable
        cfg -> Linear layers of its MLP (0: no MLP, the codec rounds it to the nearest step).
    first_layer_sees_inputs : bool
        Whether the MLP's first layer acts on ``precompute``'s inputs (so GPTQ can calibrate it); a latent
        model's first layer sees its latents.
    extra_stages : int
        Codec fit stages beyond the Linear layers (architecture 2: its latents).
    input_size : callable
        (number of spheres) -> size of ``precompute``'s output, the first layer's input.
    renamed_keys : dict
        Shared keys this architecture reads from a key of its own: {shared: own} (NGLOD's rate and bits).
    fold : callable
        (model, model_args) -> the same function in the form a file stores (architecture 1: its sphere
        encoder folded into the first layer), with its model_args.
    unstored : tuple of str
        State entries a file does not store as numbers: a folded encoder (the identity), NGLOD's voxels (an
        octree of bits).
    unstored_values : callable
        Decoded model -> {name: tensor} of those entries.
    """

    name: str
    summary: str
    model_class: type
    structure: str
    own_keys: tuple[str, ...]
    make_args: Callable[[TrainConfig, int], dict]
    linear_layers: Callable[[TrainConfig], int]
    input_size: Callable[[int], int]
    first_layer_sees_inputs: bool = True
    extra_stages: int = 0
    renamed_keys: dict = dataclasses.field(default_factory=dict)
    fold: Callable = lambda model, model_args: (model, model_args)
    unstored: tuple[str, ...] = ()
    unstored_values: Callable = lambda model: {}

    def __reduce__(self):  # pickled by name (worker processes): the entry holds functions
        return get, (self.name,)

    @property
    def has_spheres(self) -> bool:
        return self.structure == "spheres"

    @property
    def has_octree(self) -> bool:
        return self.structure == "octree"

    @property
    def stacks(self) -> bool:
        """Whether networks of one size train stacked in groups (the MLPs; NGLOD's octrees differ in shape)."""
        return self.structure != "octree"

    @property
    def layerwise_fit(self) -> bool:
        """Whether ``quantization.py`` fits it to the codec (the MLPs); otherwise files round to the nearest step."""
        return not self.has_octree

    @property
    def has_lods(self) -> bool:
        """Whether its files come in levels of detail (``--lod``)."""
        return self.has_octree

    def model_args(self, cfg: TrainConfig, num_spheres: int = 0) -> dict:
        """Constructor arguments of a network for ``cfg`` (without its spheres or voxels)."""
        return self.make_args(cfg, num_spheres)

    def network_args(self, model_args: dict, structure) -> dict:
        """``model_args`` of one network with what it was built on (``structure``: its (M, 4) key spheres or
        NGLOD's (V, 3) occupied voxels; None for NI)."""
        if structure is None or self.structure == "none":
            return model_args
        return {**model_args, ("voxels" if self.has_octree else "spheres"): structure}

    def build(self, model_args: dict) -> torch.nn.Module:
        return self.model_class(**model_args)

    def fit_stages(self, cfg: TrainConfig) -> int:
        """Stored parameter groups the layer-by-layer codec fit goes through."""
        return self.linear_layers(cfg) + self.extra_stages

    def applies(self, key: str) -> bool:
        """Whether config key ``key`` changes what this architecture does."""
        own = {k for a in REGISTRY.values() for k in a.own_keys}
        return key not in own or key in self.own_keys

    def overrides_for(self, overrides: list[str]) -> list[str]:
        """The ``--key=value`` overrides that apply to this architecture (a comparison of several passes each
        its own)."""
        keys = [item.lstrip("-").partition("=")[0].replace("-", "_") for item in overrides]
        return [item for item, key in zip(overrides, keys) if self.applies(key) and key not in self.renamed_keys]

    def resolve(self, cfg: TrainConfig, overrides: list[str] = ()) -> TrainConfig:
        """The config this architecture trains with: its renamed keys in place of the shared ones (the
        checkpoint keeps what ran). An override of a key it does not read is an InputError."""
        for item in overrides:
            key = item.lstrip("-").partition("=")[0].replace("-", "_")
            if key in self.renamed_keys:
                raise InputError(f"--{key} does not apply to --arch {self.name}: its key is --{self.renamed_keys[key]}")
            if not self.applies(key):
                raise InputError(f"--{key} does not apply to --arch {self.name}")
        return dataclasses.replace(cfg, **{shared: getattr(cfg, own) for shared, own in self.renamed_keys.items()})


def _sphere_args(cfg: TrainConfig, num_spheres: int) -> dict:
    return {"num_spheres": num_spheres, "layers": cfg.layers, "width": cfg.width, "feature_dim": cfg.feature_dim,
            "weighting": cfg.sphere_weighting}


def _fold_keysphere(model: KeySphereSDF, model_args: dict) -> tuple[KeySphereSDF, dict]:
    return (model if model.is_folded() else model.folded()), {**model_args, "feature_dim": 4}


def _identity_encoder(model: KeySphereSDF) -> dict:
    return {"sphere_encoder.weight": torch.eye(4), "sphere_encoder.bias": torch.zeros(4)}


REGISTRY: dict[str, Architecture] = {a.name: a for a in (
    Architecture("keysphere", "architecture 1: a linear map of each key sphere to a feature", KeySphereSDF,
                 "spheres", SPHERE_KEYS + LAYERWISE_FIT_KEYS, _sphere_args, lambda cfg: cfg.layers + 1,
                 lambda spheres: 7, fold=_fold_keysphere, unstored=("sphere_encoder.weight", "sphere_encoder.bias"),
                 unstored_values=_identity_encoder),
    Architecture("latent", "architecture 2: a free latent per key sphere", LatentSphereSDF, "spheres",
                 SPHERE_KEYS + LAYERWISE_FIT_KEYS, _sphere_args, lambda cfg: cfg.layers + 1,
                 lambda spheres: 3 + spheres, first_layer_sees_inputs=False, extra_stages=1),
    Architecture("ni", "the NI baseline: an MLP on xyz alone", NISDF, "none", NI_KEYS + LAYERWISE_FIT_KEYS,
                 lambda cfg, _: {"layers": cfg.ni_layers, "width": cfg.ni_width}, lambda cfg: cfg.ni_layers + 1,
                 lambda spheres: 3),
    Architecture("nglod", "NGLOD: feature grids on a sparse octree, a decoder per level of detail", NGLODSDF,
                 "octree", NGLOD_KEYS,
                 lambda cfg, _: {"lods": cfg.nglod_lods, "base_res": cfg.nglod_base_res,
                                 "feature_dim": cfg.nglod_features, "hidden": cfg.nglod_hidden,
                                 "margin": cfg.nglod_margin},
                 lambda cfg: 0, lambda spheres: 3, renamed_keys={"lr": "nglod_lr", "codec_bits": "nglod_bits"},
                 unstored=("voxels",), unstored_values=lambda model: {"voxels": model.voxels}),
)}
NAMES = tuple(REGISTRY)


def get(name: str) -> Architecture:
    """The entry of architecture ``name``; an unknown name is an InputError."""
    if name not in REGISTRY:
        raise InputError(f"unknown architecture {name!r} (expected one of {', '.join(NAMES)})")
    return REGISTRY[name]


def build_model(name: str, model_args: dict) -> torch.nn.Module:
    """Rebuild a network from an architecture's name and the ``model_args`` stored with it."""
    return get(name).build(model_args)
