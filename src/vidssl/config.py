"""Typed run configuration: dataclasses are the single source of truth.

A run is described by `Config`. Presets are YAML files in `vidssl/configs/` that hold
only the values that differ from the dataclass defaults; command-line overrides are dotted
`key=value` pairs (`optim.lr=1e-3`, `data.videos=[a.mp4,b.mp4]`). Unknown keys and values
of the wrong type are errors that name the key and list the valid ones.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from vidssl.errors import VidsslError

PRESET_DIR = Path(__file__).parent / "configs"
RUN_CONFIG_NAME = "config.yaml"  # the resolved config in every run directory


class ConfigError(VidsslError, ValueError):
    """A preset, a YAML file or an override that does not fit the config schema."""


@dataclass
class ModelConfig:
    arch: Literal["vit_tiny", "vit_small", "vit_base"] = "vit_small"
    patch_size: Literal[8, 16] = 16
    drop_path: float = 0.1  # student only; the teacher has none
    grad_checkpointing: bool = False  # student blocks recompute activations in backward: less memory, ~1/3 more compute
    # DINO projection head
    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    head_layers: int = 3
    norm_last_layer: bool = True
    use_bn_in_head: bool = False


@dataclass
class DataConfig:
    videos: list[str] = field(default_factory=list)  # empty and no store: the built-in sample
    store: str | None = None  # a frame store written by `vidssl ingest`
    video_weights: list[float] = field(default_factory=list)  # per video sampling weight; empty = equal
    backend: Literal["pyav", "torchcodec"] = "pyav"
    frames_per_clip: int = 8  # T
    frame_stride: int = 60  # s: frames between consecutive frames of a clip
    batch_size: int = 16  # clips per process
    num_workers: int = 2
    max_decode_errors: int = 100  # clips skipped for decoding errors before the run stops
    sampler: Literal["stride", "timet_dense", "timet_uniform"] = "stride"  # SPEC 1.3 / 5.2 item 1
    video_short_side: int | None = 256  # video files read directly are downscaled to this (None: as decoded)
    stream_window: int = 256  # video files: each batch is drawn from a shuffled block of this many neighbouring clips


@dataclass
class AugConfig:
    precrop_size: int = 300  # DoRA: shared pre-crop of the clip (SPEC 1.4 step 2)
    precrop_scale: tuple[float, float] = (0.2, 1.0)
    global_crop_size: int = 224
    global_crops_scale: tuple[float, float] = (0.4, 1.0)
    global_crops_number: int = 2  # DINO-on-frames uses 2; DoRA uses 1 global clip
    local_crops_number: int = 8
    local_crop_size: int = 96
    local_crops_scale: tuple[float, float] = (0.05, 0.4)


@dataclass
class MethodConfig:
    name: Literal["dino", "dora"] = "dino"
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    center_momentum: float = 0.9
    # DoRA (SPEC 1.5-1.7)
    num_objects: int = 3  # k
    sinkhorn_iters: int = 30
    sinkhorn_eps: float = 0.05
    mask_threshold: Literal["batch_mean", "sample_mean"] = "batch_mean"
    # patch embeddings the prototypes are refined against (SPEC 1.9 D4): the paper's last-block
    # attention output, or the official code's final-norm patch tokens
    track_features: Literal["attention_output", "final_tokens"] = "attention_output"
    official_loss_quirks: bool = False  # SPEC 1.9 D11+D12, for parity with released checkpoints


@dataclass
class OptimConfig:
    epochs: int = 100
    steps_per_epoch: int | None = None  # None: one pass over every clip start
    lr: float = 0.0005  # at a total batch of 256; scaled linearly with the real total batch
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.996
    clip_grad: float = 3.0  # per-parameter-tensor norm; 0 disables
    freeze_last_layer: int = 1  # epochs during which the head's last layer is not updated


@dataclass
class EngineConfig:
    accelerator: str = "auto"
    devices: Union[int, str] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | None = None  # None: chosen by the engine for the hardware (resolve_precision)
    seed: int = 0
    deterministic: bool = False
    max_steps: int | None = None  # stop after this many optimizer steps (a time budget, not a schedule)
    checkpoint_every: int = 500  # optimizer steps
    log_every: int = 10
    track_pictures_every: int = 1  # epochs between tracks pictures (DoRA)
    progress: bool = True


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)


# --------------------------------------------------------------------------- schema


def _field_types(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp)


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted leaf key of the schema, e.g. `optim.lr`."""
    keys = []
    for name, tp in _field_types(cls).items():
        if _is_section(tp):
            keys += valid_keys(tp, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp`, converting where YAML is looser (int->float)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        errors = []
        for option in get_args(tp):
            try:
                return _coerce(key, value, option)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} is not one of the allowed types ({_type_name(tp)})")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{key}: {value!r} is not allowed; valid values: {', '.join(map(repr, get_args(tp)))}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value] if origin is list and value is not None else value
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
            return tuple(_coerce(key, v, a) for v, a in zip(value, args))
        return [_coerce(key, v, args[0]) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, Path)):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def _set(cfg: Any, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node, path = cfg, []
    for i, part in enumerate(parts):
        types_ = _field_types(type(node))
        if part not in types_:
            scope = valid_keys(type(node), ".".join(path) + "." if path else "")
            raise ConfigError(f"unknown config key '{dotted}'; valid keys: {', '.join(scope)}")
        path.append(part)
        tp = types_[part]
        if i == len(parts) - 1:
            if _is_section(tp):
                if not isinstance(value, dict):
                    raise ConfigError(f"{dotted}: is a section; set one of {', '.join(valid_keys(tp, dotted + '.'))}")
                for k, v in value.items():
                    _set(cfg, f"{dotted}.{k}", v)
            else:
                setattr(node, part, _coerce(dotted, value, tp))
        else:
            if not _is_section(tp):
                raise ConfigError(f"unknown config key '{dotted}': '{'.'.join(path)}' is not a section")
            node = getattr(node, part)


def apply_dict(cfg: Config, values: dict[str, Any], source: str = "") -> Config:
    """Set nested `values` (as read from YAML) on `cfg`."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source or 'config'}: expected a mapping of sections, got {type(values).__name__}")
    for key, value in values.items():
        try:
            _set(cfg, key, value)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}" if source else str(e)) from None
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """`optim.lr=1e-3` -> ('optim.lr', 0.001); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"bad override '{text}': expected key=value, e.g. optim.lr=1e-3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"bad override '{text}': the key is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    # YAML reads 1e-3 as a string; numbers written like that are numbers here.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return key, value


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_preset_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if not preset.is_file():
        raise ConfigError(f"unknown preset '{name_or_path}'; available presets: {', '.join(list_presets())}")
    return preset


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    return values


def load_config(preset: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- preset or YAML file (which may name a `base:` preset) <- overrides."""
    cfg = Config()
    if preset:
        path = resolve_preset_path(preset)
        values = load_yaml(path)
        base = values.pop("base", None) if isinstance(values, dict) else None
        if base:
            cfg = load_config(base)
        apply_dict(cfg, values, source=str(path))
    for text in overrides:
        key, value = parse_override(text)
        _set(cfg, key, value)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks that a single type annotation cannot express."""
    a, m = cfg.aug, cfg.model
    for name in ("global_crop_size", "local_crop_size"):
        size = getattr(a, name)
        if size % m.patch_size:
            raise ConfigError(
                f"aug.{name}={size} is not divisible by model.patch_size={m.patch_size}; "
                f"use a multiple of {m.patch_size}"
            )
    positive = {
        "data.frames_per_clip": cfg.data.frames_per_clip,
        "data.frame_stride": cfg.data.frame_stride,
        "data.batch_size": cfg.data.batch_size,
        "optim.epochs": cfg.optim.epochs,
        "engine.checkpoint_every": cfg.engine.checkpoint_every,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be at least 1, got {value}")
    if cfg.data.store and cfg.data.videos:
        raise ConfigError(
            f"data.store={cfg.data.store!r} and data.videos={cfg.data.videos!r} are both set; "
            "train from a frame store or from video files, not both"
        )
    if cfg.method.name == "dora" and a.global_crops_number != 1:
        raise ConfigError("method.name=dora uses one global clip: set aug.global_crops_number=1")


def to_dict(obj: Any) -> Any:
    """Plain nested dicts and lists (tuples become lists), for YAML, JSON and checkpoints."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a Config from `to_dict` output (e.g. the one saved in a checkpoint)."""
    cfg = apply_dict(Config(), values)
    validate(cfg)
    return cfg


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


__all__ = [
    "AugConfig", "Config", "ConfigError", "DataConfig", "EngineConfig", "MethodConfig",
    "ModelConfig", "OptimConfig", "from_dict", "list_presets", "load_config", "to_dict",
    "to_yaml", "valid_keys",
]
