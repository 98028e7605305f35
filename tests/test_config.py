"""The recipe's one source: TrainConfig defaults, configs/default.yaml and the configs that differ from it."""

import dataclasses
import re

import pytest
import yaml
from conftest import ROOT

import architectures
import common

CONFIGS = ROOT / "configs"


def yaml_lines(path):
    """{key: (value text, comment)} of a config file's top-level lines."""
    out = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^(\w+):\s*(.*?)\s*(?:#\s*(.*))?$", line)
        if match:
            out[match.group(1)] = (match.group(2), match.group(3) or "")
    return out


def test_the_dataclass_defaults_are_default_yaml():
    loaded = yaml.safe_load((CONFIGS / "default.yaml").read_text())
    defaults = dataclasses.asdict(common.TrainConfig())
    assert set(loaded) == set(defaults)
    assert {k: loaded[k] for k in defaults} == defaults
    assert common.TrainConfig.load(CONFIGS / "default.yaml") == common.TrainConfig()


def test_every_key_is_documented_once_in_default_yaml():
    lines = yaml_lines(CONFIGS / "default.yaml")
    for field in dataclasses.fields(common.TrainConfig):
        assert len(lines.get(field.name, ("", ""))[1]) > 10, f"{field.name} has no comment in default.yaml"


@pytest.mark.parametrize("name", ["quality.yaml", "paper.yaml", "default-v1.yaml"])
def test_other_configs_hold_only_their_differences_each_with_a_reason(name):
    values = yaml.safe_load((CONFIGS / name).read_text())
    defaults = dataclasses.asdict(common.TrainConfig())
    lines = yaml_lines(CONFIGS / name)
    for key, value in values.items():
        assert value != defaults[key], f"{name}: {key} restates the default"
        assert lines[key][1], f"{name}: {key} has no comment saying why"
    common.TrainConfig.load(CONFIGS / name)  # and it loads


def test_list_keys_take_yaml_lists_and_comma_strings(tmp_path):
    assert common.TrainConfig.load(None, ["--rd_bits=4,5"]).rd_bits == [4, 5]
    assert common.TrainConfig.load(None, ["--rd_bits=[8, 4]"]).extra_bits == [4, 8]
    assert common.TrainConfig.load(None, ["--rd_bits=5"]).rd_bits == [5]
    assert common.TrainConfig.load(None, ["--mine_kinds=sheet,leaky"]).mine_kinds == ["sheet", "leaky"]
    (tmp_path / "c.yaml").write_text("mine_kinds: [closed]\nrd_bits: []\n")
    cfg = common.TrainConfig.load(tmp_path / "c.yaml")
    assert cfg.mine_kinds == ["closed"] and cfg.rd_bits == []
    with pytest.raises(common.InputError, match="mine_kinds"):
        common.TrainConfig.load(None, ["--mine_kinds=films"])
    with pytest.raises(common.InputError, match="rd_bits"):
        common.TrainConfig.load(None, ["--rd_bits=four"])


def test_an_override_the_architecture_does_not_read_is_refused():
    cfg = common.TrainConfig()
    nglod = architectures.get("nglod")
    with pytest.raises(common.InputError, match="nglod_lr"):
        nglod.resolve(cfg, ["--lr=0.1"])
    with pytest.raises(common.InputError, match="num_spheres"):
        nglod.resolve(cfg, ["--num_spheres=8"])
    with pytest.raises(common.InputError, match="nglod_lods"):
        architectures.get("keysphere").resolve(cfg, ["--nglod_lods=2"])
    resolved = nglod.resolve(cfg, ["--nglod_lr=0.003", "--epochs=2"])
    assert resolved.lr == cfg.nglod_lr and resolved.codec_bits == cfg.nglod_bits  # what the checkpoint records
    assert architectures.get("keysphere").resolve(cfg, ["--lr=0.1"]) == cfg  # the MLPs read lr as it is
    assert architectures.get("ni").overrides_for(["--num_spheres=8", "--epochs=2", "--ni_width=16"]) == \
        ["--epochs=2", "--ni_width=16"]
