"""Shared plumbing for the scripts: errors, atomic writes, configs, run paths, checkpoints, logging.

Everything here is small and free of training logic, so each script stays a flat, readable file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

PROJECT_ROOT = Path(__file__).resolve().parent
MESH_SUFFIXES = (".obj", ".stl", ".ply", ".off", ".glb", ".gltf")

log = logging.getLogger("keysphere")


class InputError(Exception):
    """Bad user input. The scripts print its message as one line and exit non-zero (no traceback)."""


# ----------------------------------------------------------------------------------------------------------
# Atomic writes: a reader never sees a half-written file, and a crash never destroys the previous one.


def atomic_write(path: str | Path, write_fn) -> None:
    """Call ``write_fn(tmp_path)`` and then rename the temporary file onto ``path``.

    The temporary file keeps the suffix of ``path`` because several writers (trimesh, matplotlib) pick the
    format from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a finished ``tmp_dir`` onto ``final_dir``; an old ``final_dir`` is removed only afterwards."""
    old = None
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------
# Training configuration: one dataclass, filled from a YAML file and then from --key=value overrides.


DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"
LIST_KEYS = {"mine_kinds": str, "rd_bits": int}  # list-valued keys and their items' type


@dataclass
class TrainConfig:
    """Every setting of a training run. The defaults are ``configs/default.yaml``'s values, and that file
    documents each key once (``tests/test_config.py`` checks both); a config file lists what it changes."""

    seed: int = 0
    num_spheres: int = 128
    sphere_grid: int = 128
    sphere_min_radius: float = 0.5
    layers: int = 6
    width: int = 32
    feature_dim: int = 29
    sphere_weighting: str = "distance"
    ni_layers: int = 8
    ni_width: int = 32
    nglod_lods: int = 4
    nglod_base_res: int = 4
    nglod_features: int = 32
    nglod_hidden: int = 128
    nglod_margin: int = 1
    nglod_voxel_fraction: float = 0.1
    nglod_lr: float = 0.01
    nglod_bits: int = 10
    pool_uniform: int = 1_000_000
    pool_surface: int = 1_000_000
    surface_noise: float = 0.03
    importance_beta: float = 60.0
    num_samples: int = 500_000
    uniform_fraction: float = 0.05
    train_on_spheres: bool = True
    sheet_shell: float = 0.01
    mine_fraction: float = 0.1
    mine_at: float = 0.5
    mine_rounds: int = 2
    mine_kinds: list = dataclasses.field(default_factory=lambda: ["sheet"])
    epochs: int = 55
    retry_epochs: int = 150
    batch_size: int = 2048
    lr: float = 0.02
    scheduler: str = "onecycle"
    plateau_patience: int = 5
    plateau_factor: float = 0.5
    restarts: int = 1
    restart_epochs: int = 3
    threads: int = 0
    workers: int = 0
    group: int = 0
    mesh_res: int = 128
    codec_bits: int = 6
    qat_epochs: int = 5
    qat_lr: float = 0.0005
    fit: str = "gptq"
    rd_bits: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if self.sphere_weighting not in ("distance", "inverse"):
            raise InputError(f"sphere_weighting must be distance or inverse, got {self.sphere_weighting!r}")
        if self.fit not in ("gptq", "nearest", "straight_through"):
            raise InputError(f"fit must be gptq, nearest or straight_through, got {self.fit!r}")
        if self.scheduler not in ("plateau", "onecycle", "cosine", "none"):
            raise InputError(f"scheduler must be plateau, onecycle, cosine or none, got {self.scheduler!r}")
        for name in ("num_spheres", "layers", "width", "epochs", "batch_size", "num_samples", "restarts", "nglod_lods",
                     "nglod_base_res", "nglod_features", "nglod_hidden"):
            if getattr(self, name) < 1:
                raise InputError(f"config value {name} must be at least 1, got {getattr(self, name)}")
        if self.workers < 0 or self.threads < 0 or self.group < 0:
            raise InputError("config values workers, threads and group must be 0 (automatic) or more")
        if self.retry_epochs < 0:
            raise InputError(f"config value retry_epochs must be 0 (no second try) or more, got {self.retry_epochs}")
        if not (0 <= self.mine_fraction <= 1 and 0 < self.mine_at < 1 and self.mine_rounds >= 1):
            raise InputError("config values mine_fraction must be in [0, 1], mine_at in (0, 1), mine_rounds >= 1")
        if not set(self.mine_kinds) <= {"closed", "leaky", "sheet"}:
            raise InputError(f"config value mine_kinds must list closed, leaky or sheet, got {self.mine_kinds!r}")
        if not 0 < self.sheet_shell < 0.5:
            raise InputError(f"config value sheet_shell must be in (0, 0.5), got {self.sheet_shell}")
        if self.restarts > 1 and not 0 < self.restart_epochs <= self.epochs:
            raise InputError("config value restart_epochs must be between 1 and epochs")
        for bits in [self.codec_bits, self.nglod_bits] + self.extra_bits:
            if not (2 <= bits <= 16 or bits == 32):
                raise InputError(f"config values codec_bits, nglod_bits and rd_bits must be 2..16 or 32, got {bits}")

    @property
    def extra_bits(self) -> list[int]:
        """The bit depths of ``rd_bits`` other than ``codec_bits``, sorted."""
        return sorted(set(self.rd_bits) - {self.codec_bits})

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] = ()) -> "TrainConfig":
        """Read a YAML config, then apply ``key=value`` overrides; unknown keys are an error."""
        values = {}
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise InputError(f"{path}: config file not found")
            try:
                values = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as exc:
                raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
            if not isinstance(values, dict):
                raise InputError(f"{path}: expected a mapping of config keys")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for item in overrides:
            key, sep, text = item.lstrip("-").partition("=")
            key = key.replace("-", "_")
            if not sep:
                raise InputError(f"override {item!r} is not of the form --key=value")
            values[key] = yaml.safe_load(text)
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise InputError(f"{path or 'overrides'}: unknown config key(s) {', '.join(unknown)}")
        return cls(**{key: typed_value(key, value, type(getattr(cls(), key))) for key, value in values.items()})


def typed_value(key: str, value, kind: type):
    """A config value as its key's type; a list key also takes a comma-separated string (``--rd_bits=4,5``)."""
    if kind is bool and not isinstance(value, bool):
        raise InputError(f"config value {key} must be true or false, got {value!r}")
    try:
        if key in LIST_KEYS:
            items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else [value]
            return [LIST_KEYS[key](v.strip() if isinstance(v, str) else v) for v in items
                    if not (isinstance(v, str) and not v.strip())]
        return kind(value)
    except (TypeError, ValueError):
        raise InputError(f"config value {key} must be {kind.__name__}, got {value!r}") from None


# ----------------------------------------------------------------------------------------------------------
# Run paths: the one place that names every file of a training run.


@dataclass(frozen=True)
class RunPaths:
    """Files of one mesh's run: ``<out>/<mesh name>/...``."""

    dir: Path

    @property
    def checkpoint(self) -> Path:
        return self.dir / "model.pt"

    @property
    def spheres(self) -> Path:
        return self.dir / "spheres.txt"

    @property
    def loss_plot(self) -> Path:
        return self.dir / "loss.png"

    @property
    def log(self) -> Path:
        return self.dir / "train.log"

    @property
    def reconstruction(self) -> Path:
        return self.dir / "reconstruction.ply"

    @property
    def compressed(self) -> Path:
        return self.dir / "model.ksdf"

    def compressed_at(self, bits: int) -> Path:
        """A further operating point of the codec (config ``rd_bits``): ``model-<bits>bit.ksdf``."""
        return self.dir / f"model-{bits}bit.ksdf"

    def compressed_at_lod(self, lod: int) -> Path:
        """NGLOD: the model cut at a coarser LOD (1-based), ``model-lod<k>.ksdf``."""
        return self.dir / f"model-lod{lod}.ksdf"


def mesh_name(path: Path) -> str:
    return Path(path).stem


def list_meshes(mesh_dir: str | Path) -> list[Path]:
    mesh_dir = Path(mesh_dir)
    if not mesh_dir.is_dir():
        raise InputError(f"{mesh_dir}: mesh folder not found")
    meshes = sorted(p for p in mesh_dir.iterdir() if p.suffix.lower() in MESH_SUFFIXES and p.is_file())
    if not meshes:
        raise InputError(f"{mesh_dir}: no mesh files ({', '.join(MESH_SUFFIXES)})")
    return meshes


# ----------------------------------------------------------------------------------------------------------
# Scripts: logging, devices, error handling.


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Console output at the chosen level; the logger itself passes INFO on, so per-mesh log files keep it."""
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [console]
    log.propagate = False
    log.setLevel(logging.DEBUG if verbose else logging.INFO)


def add_logging_flags(parser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quiet", action="store_true", help="only warnings and errors")
    group.add_argument("--verbose", action="store_true", help="debug output")


def pick_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an input error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name}: unknown device") from None


def run_main(main) -> None:
    """Run a script's ``main``; an InputError becomes one line on stderr and exit status 2."""
    import sys

    try:
        sys.exit(main())
    except InputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
