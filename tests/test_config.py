import pytest
import yaml

from vidssl.cli.main import main
from vidssl.config import Config, ConfigError, list_presets, load_config, to_dict, from_dict, valid_keys


def test_override_types_and_nesting():
    # force_devices: the count is a type check here, not a question of how many cores this machine has
    cfg = load_config(None, ["optim.lr=1e-3", "data.videos=[a.mp4,b.mp4]", "engine.devices=2", "engine.force_devices=true",
                             "aug.local_crops_scale=[0.1,0.3]"])
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


# SPEC 1.8, the official DoRA recipe, written out independently of the preset file.
SPEC_DORA_RECIPE = {
    "model.arch": "vit_small", "model.patch_size": 16, "model.drop_path": 0.1, "model.out_dim": 65536,
    "model.hidden_dim": 2048, "model.bottleneck_dim": 256, "model.head_layers": 3,
    "model.norm_last_layer": False, "model.use_bn_in_head": False,
    "data.frames_per_clip": 8, "data.frame_stride": 60, "data.batch_size": 6,
    "aug.precrop_size": 300, "aug.precrop_scale": (0.2, 1.0), "aug.global_crop_size": 224,
    "aug.global_crops_scale": (0.4, 1.0), "aug.global_crops_number": 1, "aug.local_crops_number": 6,
    "aug.local_crop_size": 112, "aug.local_crops_scale": (0.05, 0.4),
    "method.name": "dora", "method.student_temp": 0.1, "method.teacher_temp": 0.04,
    "method.warmup_teacher_temp": 0.04, "method.warmup_teacher_temp_epochs": 30, "method.center_momentum": 0.9,
    "method.num_objects": 3, "method.sinkhorn_iters": 30, "method.sinkhorn_eps": 0.05,
    "optim.epochs": 100, "optim.lr": 0.0005, "optim.min_lr": 1e-5, "optim.warmup_epochs": 10,
    "optim.weight_decay": 0.04, "optim.weight_decay_end": 0.4, "optim.momentum_teacher": 0.996,
    "optim.clip_grad": 3.0, "optim.freeze_last_layer": 1, "engine.precision": "16-mixed", "engine.seed": 0,
}


def test_dora_preset_holds_the_official_recipe():
    cfg = load_config("dora-vits16-wtours")
    for key, expected in SPEC_DORA_RECIPE.items():
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == expected, key
    dino = load_config("dino-vits16-wtours")
    assert dino.method.name == "dino" and dino.aug.global_crops_number == 2
    for key in ("model.arch", "data.frame_stride", "aug.local_crops_number", "optim.lr", "optim.epochs"):
        section, name = key.split(".")
        assert getattr(getattr(dino, section), name) == getattr(getattr(cfg, section), name), key


def test_official_parity_preset_is_the_recipe_with_the_code_departures():
    paper, official = to_dict(load_config("dora-vits16-wtours")), to_dict(load_config("dora-vits16-wtours-official"))
    differ = {(s, k) for s in paper for k in paper[s] if paper[s][k] != official[s][k]}
    assert differ == {("method", "track_features"), ("method", "official_loss_quirks")}
    assert official["method"]["track_features"] == "final_tokens" and official["method"]["official_loss_quirks"] is True


def test_default_preset_is_a_tiny_dora():
    cfg = load_config("default")
    assert cfg.method.name == "dora" and cfg.model.arch == "vit_tiny" and cfg.data.frames_per_clip > 1


def test_store_and_videos_together_is_an_error():
    with pytest.raises(ConfigError, match="data.store=.*and data.videos=.*are both set"):
        load_config(None, ["data.store=s", "data.videos=[a.mp4]"])
