import pytest
import yaml

from vidssl.cli.main import main
from vidssl.config import Config, ConfigError, list_presets, load_config, to_dict, from_dict, valid_keys


def test_override_types_and_nesting():
    cfg = load_config(None, ["optim.lr=1e-3", "data.videos=[a.mp4,b.mp4]", "engine.devices=2", "aug.local_crops_scale=[0.1,0.3]"])
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.data.videos == ["a.mp4", "b.mp4"]
    assert cfg.engine.devices == 2
    assert cfg.aug.local_crops_scale == (0.1, 0.3)
    assert load_config(None, ["engine.devices=auto"]).engine.devices == "auto"


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr'; valid keys: optim.epochs"),
        ("nosuch.x=1", "valid keys: model.arch"),
        ("model.patch_size=15", "model.patch_size: 15 is not allowed; valid values: 8, 16"),
        ("optim.epochs=abc", "optim.epochs: expected an integer"),
        ("model.norm_last_layer=3", "expected true or false"),
        ("optim.lr", "expected key=value"),
        ("aug.global_crop_size=100", "not divisible by model.patch_size=16"),
        ("data.batch_size=0", "data.batch_size must be at least 1"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_config(None, [override])


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match="unknown preset 'nope'; available presets: .*default"):
        load_config("nope")


def test_every_preset_loads_and_roundtrips():
    for name in list_presets():
        cfg = load_config(name)
        assert from_dict(to_dict(cfg)) == cfg


def test_yaml_file_with_base(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: default\noptim:\n  epochs: 7\n")
    cfg = load_config(str(path))
    assert cfg.optim.epochs == 7
    assert cfg.model.arch == load_config("default").model.arch


def test_valid_keys_cover_every_section():
    keys = valid_keys()
    assert {"model.arch", "data.videos", "aug.local_crops_number", "method.name", "optim.lr", "engine.precision"} <= set(keys)
    assert len(keys) == len(set(keys))


def test_cli_config_prints_resolved_yaml(capsys):
    assert main(["config", "default", "optim.epochs=3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["epochs"] == 3
    assert from_dict(printed) == load_config("default", ["optim.epochs=3"])


def test_cli_bad_override_is_one_line_error(capsys):
    assert main(["config", "optim.nope=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidssl: error: unknown config key 'optim.nope'") and "\n" not in err
    assert Config().optim.epochs  # defaults untouched
