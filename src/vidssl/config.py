"""Typed run configuration: dataclasses are the single source of truth.

A run is described by `Config`. Presets are YAML files in `vidssl/configs/` that hold
only the values that differ from the dataclass defaults; command-line overrides are dotted
`key=value` pairs (`optim.lr=1e-3`, `data.videos=[a.mp4,b.mp4]`). Unknown keys and values
of the wrong type are errors that name the key and list the valid ones.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from vidssl.errors import VidsslError, one_line
from vidssl.registry import ARCHS, METHOD_NAMES, PATCH_SIZES

PRESET_DIR = Path(__file__).parent / "configs"
RUN_CONFIG_NAME = "config.yaml"  # the resolved config in every run directory

# What Lightning Fabric accepts (lightning.fabric.plugins.precision.precision._PRECISION_INPUT_STR
# and its aliases), listed here so that `vidssl config` checks it without importing Lightning.
FABRIC_PRECISIONS: tuple[str, ...] = (
    "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true",
    "transformer-engine", "transformer-engine-float16",
    "32", "16", "bf16", "64",  # Fabric's aliases of 32-true, 16-mixed, bf16-mixed, 64-true
)
FABRIC_ACCELERATORS: tuple[str, ...] = ("auto", "cpu", "cuda", "gpu", "mps", "tpu")


class ConfigError(VidsslError, ValueError):
    """A preset, a YAML file or an override that does not fit the config schema."""


@dataclass
class ModelConfig:
    arch: Literal[ARCHS] = "vit_small"  # type: ignore[valid-type]
    patch_size: Literal[PATCH_SIZES] = 16  # type: ignore[valid-type]
    drop_path: float = 0.1  # student only; the teacher has none
    grad_checkpointing: bool = False  # student blocks recompute activations in backward: less memory, ~1/3 more compute
    # query/key initialisation of every attention block: timm's (std 0.02: flat attention at the start) or
    # mimetic (W_q W_k^T ~ 0.7 Z + 0.7 I per head: heads attend differently from step 0; docs/diagnostics.md)
    attn_init: Literal["timm", "mimetic"] = "timm"
    # DINO projection head
    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    head_layers: int = 3
    norm_last_layer: bool = True
    use_bn_in_head: bool = False
    # TimeT: a vidssl encoder export (.safetensors) loaded into student and teacher backbones when the
    # method is built; `vidssl pretrain --init W` writes one into the run dir from any weights
    init_weights: str | None = None


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
    # where the views are made (docs/data.md "Two view paths"): in the data-loader workers, or in the
    # training step on the accelerator (the loader then only decodes, plus DoRA's pre-crop); auto:
    # the accelerator when engine.accelerator resolves to a GPU (or other non-CPU device), else the loader
    device: Literal["auto", "loader", "accelerator"] = "auto"


@dataclass
class MethodConfig:
    name: Literal[METHOD_NAMES] = "dino"  # type: ignore[valid-type]
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    center_momentum: float = 0.9
    # weight of the KoLeo spread of the student's backbone [CLS] (DINOv2's regulariser, not in
    # DINO or DoRA: 0 in the paper presets); vidssl/methods/koleo.py
    koleo_weight: float = 0.0
    # DoRA (SPEC 1.5-1.7)
    num_objects: int = 3  # k
    sinkhorn_iters: int = 30
    sinkhorn_eps: float = 0.05
    mask_threshold: Literal["batch_mean", "sample_mean"] = "batch_mean"
    # patch embeddings the prototypes are refined against (SPEC 1.9 D4): the paper's last-block
    # attention output, or the official code's final-norm patch tokens
    track_features: Literal["attention_output", "final_tokens"] = "attention_output"
    official_loss_quirks: bool = False  # SPEC 1.9 D11+D12, for parity with released checkpoints
    track_pictures_every: int = 1  # DoRA: epochs between the teacher's tracks pictures in the run dir; 0: none
    # TimeT (SPEC 5.2-5.4); its Sinkhorn uses sinkhorn_iters/_eps, its cross-entropy student_temp
    timet_trainable_blocks: int = 2  # only the last n backbone blocks train
    timet_prototypes: int = 200  # K
    timet_head_dims: list[int] = field(default_factory=lambda: [1024, 1024, 512, 256])  # at ViT-S width (384), scaled with it
    timet_backbone_lr_scale: float = 0.1  # backbone lr = head lr x this (1e-5 vs 1e-4)
    timet_prop_context: int = 7  # feature forwarder: previous frames besides frame 0
    timet_prop_radius: int = 6  # local window, patches (13 x 13)
    timet_prop_topk: int = 5
    timet_prop_temp: float = 0.1


@dataclass
class OptimConfig:
    epochs: int = 100
    steps_per_epoch: int | None = None  # None: one pass over every clip start
    cap_steps_per_epoch: bool = False  # true: steps_per_epoch is a ceiling, lowered to one pass over shorter data
    lr: float = 0.0005  # at a total batch of 256; scaled linearly with the real total batch
    # what "total batch" counts for the linear lr rule: clips (the official DoRA run), or frames
    # (DINO's own rule, every frame being an image); docs/dora.md "The learning-rate rule"
    lr_scale_by: Literal["clips", "frames"] = "clips"
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.996
    clip_grad: float = 3.0  # per-parameter-tensor norm; 0 disables
    freeze_last_layer: int = 1  # epochs during which the head's last layer is not updated


@dataclass
class EngineConfig:
    accelerator: str = "auto"  # one of FABRIC_ACCELERATORS
    # processes per node: a count, "auto", or on GPUs -1 (every GPU) or indices such as "0,1"
    devices: Union[int, str] = "auto"
    # true: skip the check of engine.devices against this machine (more CPU processes than cores,
    # or a GPU count prepared on a machine without those GPUs); the run may then be slow or fail in Fabric
    force_devices: bool = False
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | None = None  # one of FABRIC_PRECISIONS; None: chosen by the engine for the hardware (resolve_precision)
    seed: int = 0
    deterministic: bool = False
    max_steps: int | None = None  # stop after this many optimizer steps in total (`--steps`; schedules still span the run)
    checkpoint_every: int = 500  # optimizer steps
    log_every: int = 10
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
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
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
                if dotted == "engine.precision" and value in (16, 32, 64) and not isinstance(value, bool):
                    value = str(int(value))  # Fabric's integer precisions, e.g. engine.precision=32
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


def resolve_preset_path(name_or_path: str, relative_to: Path | None = None) -> Path:
    """A preset name, or a YAML file; a relative file is taken against `relative_to` (the folder of
    the YAML file that names it as its `base:`) when given, else against the working directory."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if relative_to is not None and not path.is_absolute():
            path = relative_to / path
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if not preset.is_file():
        raise ConfigError(f"unknown preset '{name_or_path}'; available presets: {', '.join(list_presets())}")
    return preset


def load_yaml(path: Path) -> Any:
    """The YAML value in `path` ({} for an empty file); unreadable, non-UTF-8 or invalid YAML is
    one line: `<file>: line N: <problem>`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}); save the file as UTF-8"
        ) from None
    try:
        values = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = one_line(e.problem or e.context or type(e).__name__)
        if e.context and e.problem and e.context_mark is not None:
            problem += f" ({one_line(e.context)} at line {e.context_mark.line + 1})"
        raise ConfigError(f"{path}: {where}not valid YAML: {problem}") from None
    except yaml.YAMLError as e:  # e.g. a control character the YAML reader refuses
        line = getattr(e, "position", None)
        where = f"line {text.count(chr(10), 0, line) + 1}: " if isinstance(line, int) else ""
        reason = getattr(e, "reason", None) or str(e)
        raise ConfigError(f"{path}: {where}not valid YAML: {one_line(reason)}") from None
    return values if values is not None else {}


def _apply_file(cfg: Config, name_or_path: str, chain: tuple[Path, ...] = (), relative_to: Path | None = None) -> None:
    """Apply a preset or YAML file to `cfg`, its `base:` first. `chain` is the files that led here
    (each naming the next as its base), to report a cycle instead of recursing forever."""
    path = resolve_preset_path(name_or_path, relative_to)
    if path.resolve() in {p.resolve() for p in chain}:
        raise ConfigError(f"{chain[0]}: base: cycle {' -> '.join(str(p) for p in (*chain, path))}")
    values = load_yaml(path)
    base = values.pop("base", None) if isinstance(values, dict) else None
    if base is not None and base != "":
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base: expected a preset name or a YAML file, got {base!r}")
        _apply_file(cfg, base, (*chain, path), relative_to=path.parent)
    apply_dict(cfg, values, source=str(path))


def load_config(preset: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- preset or YAML file (which may name a `base:` preset or YAML file, relative to
    its own folder) <- overrides; then checked, including engine.devices against this machine."""
    cfg = Config()
    if preset:
        _apply_file(cfg, preset)
    for text in overrides:
        key, value = parse_override(text)
        _set(cfg, key, value)
    validate(cfg)
    check_devices(cfg)
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
    for key, low in _AT_LEAST.items():
        value = _get(cfg, key)
        if value is not None and not value >= low:  # `not >=`: NaN fails too
            raise ConfigError(f"{key} must be at least {low}, got {value}")
    for key in _ABOVE_ZERO:
        value = _get(cfg, key)
        if not value > 0:
            raise ConfigError(f"{key} must be greater than 0, got {value}")
    for key in _FINITE:
        value = _get(cfg, key)
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}")
    if not 0 <= m.drop_path < 1:
        raise ConfigError(f"model.drop_path must be in [0, 1), got {m.drop_path}")
    for name in ("precrop_scale", "global_crops_scale", "local_crops_scale"):
        low, high = getattr(a, name)
        if not 0 < low <= high <= 1:
            raise ConfigError(f"aug.{name}={[low, high]} must be two fractions of the area with 0 < min <= max <= 1")
    _check_engine(cfg.engine)
    if cfg.data.store and cfg.data.videos:
        raise ConfigError(
            f"data.store={cfg.data.store!r} and data.videos={cfg.data.videos!r} are both set; "
            "train from a frame store or from video files, not both"
        )
    if cfg.method.name == "dora" and a.global_crops_number != 1:
        raise ConfigError("method.name=dora uses one global clip: set aug.global_crops_number=1")
    if m.init_weights and cfg.method.name != "timet":
        raise ConfigError(f"model.init_weights is read by method.name=timet only (this run is {cfg.method.name})")
    if cfg.method.name == "timet" and (not cfg.method.timet_head_dims or min(cfg.method.timet_head_dims) < 1):
        raise ConfigError(f"method.timet_head_dims must be positive sizes, got {cfg.method.timet_head_dims}")


# Sizes and counts: key -> smallest valid value (None, where the field allows it, is not checked).
_AT_LEAST: dict[str, int | float] = {
    "model.out_dim": 1, "model.hidden_dim": 1, "model.bottleneck_dim": 1, "model.head_layers": 1,
    "data.frames_per_clip": 1, "data.frame_stride": 1, "data.batch_size": 1, "data.num_workers": 0,
    "data.max_decode_errors": 0, "data.video_short_side": 1, "data.stream_window": 1,
    "aug.precrop_size": 1, "aug.global_crop_size": 1, "aug.global_crops_number": 1,
    "aug.local_crops_number": 0, "aug.local_crop_size": 1,
    "method.warmup_teacher_temp_epochs": 0, "method.num_objects": 1, "method.track_pictures_every": 0,
    "method.timet_trainable_blocks": 1, "method.timet_prototypes": 2, "method.timet_prop_context": 0,
    "method.timet_prop_radius": 0, "method.timet_prop_topk": 1, "method.timet_backbone_lr_scale": 0,
    "method.koleo_weight": 0,
    "optim.epochs": 1, "optim.steps_per_epoch": 1, "optim.warmup_epochs": 0, "optim.freeze_last_layer": 0,
    "optim.lr": 0, "optim.min_lr": 0, "optim.clip_grad": 0,
    "engine.num_nodes": 1, "engine.max_steps": 1, "engine.checkpoint_every": 1, "engine.log_every": 1,
}
_ABOVE_ZERO = ("method.student_temp", "method.teacher_temp", "method.warmup_teacher_temp", "method.sinkhorn_eps",
               "method.timet_prop_temp")
_FINITE = ("optim.lr", "optim.min_lr", "optim.weight_decay", "optim.weight_decay_end", "optim.momentum_teacher",
           "optim.clip_grad", "method.center_momentum")


def _get(cfg: Config, dotted: str) -> Any:
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)


def _gpu_indices(devices: str) -> list[int] | None:
    """'0,1' / '0,' -> [0, 1] / [0] (Fabric's GPU index strings); anything else None."""
    parts = [p.strip() for p in devices.split(",")]
    if "," not in devices or not any(parts):
        return None
    if not all(p.isdigit() for p in parts if p):
        return None
    return [int(p) for p in parts if p]


def _as_count(devices: int | str) -> int | str:
    """'2' / '-1' (a quoted count in YAML) -> 2 / -1, as Fabric reads them; anything else unchanged."""
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        return int(devices)
    return devices


def _check_engine(e: EngineConfig) -> None:
    """engine.* values Fabric would reject at start-up with a traceback, checked without Lightning."""
    if e.accelerator not in FABRIC_ACCELERATORS:
        raise ConfigError(f"engine.accelerator: {e.accelerator!r} is not allowed; valid values: {', '.join(FABRIC_ACCELERATORS)}")
    if e.precision is not None and e.precision not in FABRIC_PRECISIONS:
        raise ConfigError(f"engine.precision: {e.precision!r} is not allowed; valid values: {', '.join(FABRIC_PRECISIONS)} or null (chosen for the hardware)")
    d = _as_count(e.devices)
    if isinstance(d, int):
        if d < 1 and d != -1:
            raise ConfigError(f"engine.devices must be at least 1 (or -1: every GPU, or auto), got {d}")
    elif d != "auto" and _gpu_indices(d) is None:
        raise ConfigError(
            f"engine.devices: {d!r} is not a device count; use auto, a number of processes (1, 2, ...), "
            "-1 (every GPU) or GPU indices such as '0,1'"
        )


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on (containers, taskset)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_devices(cfg: Config) -> None:
    """engine.devices against what this machine offers: on the CPU at most one process per core, on
    CUDA at most the visible GPUs. `engine.force_devices=true` skips this check. Torch is imported
    only when the answer depends on CUDA."""
    e = cfg.engine
    if e.force_devices or e.accelerator in ("mps", "tpu"):
        return
    d = _as_count(e.devices)
    on_gpu: bool | None = {"cpu": False, "cuda": True, "gpu": True}.get(e.accelerator)
    if not on_gpu and d in ("auto", 1):  # one process, or auto on auto: Fabric takes what there is
        return
    import torch

    gpus = torch.cuda.device_count()  # NVML-based where it can be: does not initialise CUDA
    if on_gpu is None:
        if gpus == 0 and torch.backends.mps.is_available():
            return
        on_gpu = gpus > 0
    force = "set engine.force_devices=true to start it anyway"
    if on_gpu:
        if gpus == 0:
            raise ConfigError(f"engine.accelerator={e.accelerator} but no CUDA device is visible; use engine.accelerator=cpu, or {force}")
        wanted = _gpu_indices(d) if isinstance(d, str) and d != "auto" else None
        if wanted is not None and max(wanted) >= gpus:
            raise ConfigError(f"engine.devices={d!r} names GPU {max(wanted)}, but {gpus} CUDA device(s) are visible (0..{gpus - 1})")
        if isinstance(d, int) and d > gpus:
            raise ConfigError(f"engine.devices={d} but {gpus} CUDA device(s) are visible; use engine.devices={gpus} or fewer, or {force}")
        return
    where = "engine.accelerator=cpu" if e.accelerator == "cpu" else "engine.accelerator=auto and no CUDA device"
    if not isinstance(d, int) or d < 1:
        raise ConfigError(f"engine.devices={d!r} selects GPUs, but the run is on the CPU ({where}); use a number of processes such as 1")
    cores = _cpu_cores()
    if d > cores:
        raise ConfigError(
            f"engine.devices={d} starts {d} training processes on the CPU ({where}), but this machine has "
            f"{cores} CPU core(s); use engine.devices={cores} or fewer, or {force}"
        )


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
    "ModelConfig", "OptimConfig", "FABRIC_PRECISIONS", "check_devices", "from_dict", "list_presets", "load_config", "to_dict",
    "to_yaml", "valid_keys",
]
