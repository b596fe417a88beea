"""Load and export encoders: the one way every command turns a weights string into a timm ViT.

Accepted weights (strict everywhere: missing or unexpected keys are an error listing them,
a path that does not exist is an error; never a silent fallback to other weights, SPEC 1.9 D14):

1. our export: `.safetensors` whose metadata holds `timm_model`, `img_size`, `patch_size`;
2. a vidssl run directory (holding `checkpoint.pt`) or a vidssl checkpoint file;
3. an official DINO/DoRA checkpoint (`teacher`/`student` key, `module.`/`backbone.` prefixes,
   `head.*` dropped) or a bare DINO backbone state dict;
4. a timm ViT state dict (`.pth`/`.pt`/`.safetensors` without our metadata, or nested under
   `state_dict`/`model`); a classifier `head.*` is dropped (the encoder has none);
5. `random:MODEL_NAME`, e.g. `random:vit_tiny_patch16_224`: a seeded random initialisation.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from vidssl.engine.checkpoint import CHECKPOINT_NAME, torch_load_safely
from vidssl.engine.checkpoint import FORMAT as CHECKPOINT_FORMAT
from vidssl.errors import VidsslError
from vidssl.io import atomic_write
from vidssl.models import create_vit, timm_model_name
from vidssl.registry import ARCH_EMBED_DIMS, ARCHS, PATCH_SIZES

EXPORT_FORMAT = "vidssl-encoder/1"
EMBED_DIM_TO_ARCH = {dim: arch for arch, dim in ARCH_EMBED_DIMS.items()}
_ARCH = "|".join(ARCHS)
_RANDOM_NAME = re.compile(rf"^({_ARCH})_patch({'|'.join(map(str, PATCH_SIZES))})_224$")


class WeightsError(VidsslError):
    """Weights that cannot be turned into an encoder: missing, unreadable, wrong architecture."""


# --------------------------------------------------------------------------- helpers


def parse_model_name(name: str) -> tuple[str, int]:
    """'vit_small_patch16_224' -> ('vit_small', 16); anything else is an error naming the valid ones."""
    m = _RANDOM_NAME.match(name)
    if not m:
        valid = ", ".join(f"{a}_patch{p}_224" for a in ARCHS for p in PATCH_SIZES)
        raise WeightsError(f"unknown model name '{name}'; valid: {valid}")
    return m.group(1), int(m.group(2))


def arch_of(model: nn.Module) -> tuple[str, int]:
    """(arch, patch size) of a timm ViT built by `create_vit`."""
    dim = int(model.embed_dim)
    if dim not in EMBED_DIM_TO_ARCH:
        raise WeightsError(f"unsupported embedding dim {dim}; vidssl knows {sorted(EMBED_DIM_TO_ARCH)}")
    return EMBED_DIM_TO_ARCH[dim], int(model.patch_embed.patch_size[0])


def infer_arch(state: dict[str, torch.Tensor], source: str) -> tuple[str, int]:
    """Architecture from tensor shapes: embedding dim -> tiny/small/base, patch from the conv kernel."""
    w = state.get("patch_embed.proj.weight")
    if w is None or w.ndim != 4:
        some = ", ".join(list(state)[:5])
        raise WeightsError(
            f"{source}: not a ViT state dict (no 'patch_embed.proj.weight'; first keys: {some or 'none'})"
        )
    dim, patch = int(w.shape[0]), int(w.shape[-1])
    if dim not in EMBED_DIM_TO_ARCH:
        raise WeightsError(f"{source}: embedding dim {dim} is not one of {sorted(EMBED_DIM_TO_ARCH)} (tiny/small/base)")
    if patch not in PATCH_SIZES:
        raise WeightsError(f"{source}: patch size {patch} is not one of {PATCH_SIZES}")
    return EMBED_DIM_TO_ARCH[dim], patch


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """load_state_dict(strict=True), with every problem listed in one VidsslError line."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if shape:
        problems.append(f"shape mismatch (file vs model): {', '.join(shape)}")
    if problems:
        raise WeightsError(f"{source}: does not fit {type(model).__name__}; " + "; ".join(problems))
    state = {k: v.to(own[k].dtype).contiguous() for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)  # the model may live on the meta device
    return model


def _empty_vit(arch: str, patch: int) -> nn.Module:
    """create_vit on the meta device: no random initialisation for weights about to be loaded."""
    with torch.device("meta"):
        return create_vit(arch, patch)


def _torch_load(path: Path) -> Any:
    """A safe torch.load; argparse.Namespace (in official DINO/DoRA checkpoints) allowed."""
    try:
        return torch_load_safely(path, allow=(argparse.Namespace,))
    except VidsslError as e:
        raise WeightsError(str(e)) from None


def _strip(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def _tensors_only(obj: Any, source: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{source}: expected a state dict of tensors")
    return obj


# --------------------------------------------------------------------------- the formats


def _from_random(name: str, seed: int, attn_init: str) -> nn.Module:
    arch, patch = parse_model_name(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_vit(arch, patch, attn_init=attn_init)


def _from_vidssl_checkpoint(ckpt: dict[str, Any], key: str, source: str) -> nn.Module:
    cfg = ckpt.get("config")
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise WeightsError(f"{source}: vidssl checkpoint without a 'config' holding 'model'")
    arch, patch = cfg["model"].get("arch"), cfg["model"].get("patch_size")
    if key not in ckpt:
        raise WeightsError(f"{source}: no '{key}' in the checkpoint; keys: {', '.join(sorted(ckpt))}")
    prefix = "backbone.vit."
    state = {k[len(prefix):]: v for k, v in _tensors_only(ckpt[key], source).items() if k.startswith(prefix)}
    if not state:
        raise WeightsError(f"{source}: '{key}' holds no '{prefix}*' tensors")
    try:
        model = _empty_vit(arch, int(patch))
    except (ValueError, TypeError) as e:
        raise WeightsError(f"{source}: config.model names an unknown architecture ({e})") from None
    return _load_strict(model, state, f"{source} [{key}]")


def _from_state_dict(state: dict[str, torch.Tensor], source: str) -> nn.Module:
    arch, patch = infer_arch(state, source)
    return _load_strict(_empty_vit(arch, patch), state, source)


def _from_official(ckpt: dict[str, Any], key: str, source: str) -> nn.Module:
    """DINO/DoRA training checkpoints: {'teacher': ..., 'student': ..., 'args': ...}."""
    if key not in ckpt:
        raise WeightsError(f"{source}: no '{key}' in the checkpoint; keys: {', '.join(sorted(ckpt))}")
    state = _strip(_tensors_only(ckpt[key], source), ("module.", "backbone.", "vit."))
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    return _from_state_dict(state, f"{source} [{key}]")


def _from_safetensors(path: Path) -> nn.Module:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"{path}: cannot be read as safetensors ({e})") from None
    if "timm_model" not in meta:
        return _from_state_dict(state, str(path))
    try:
        patch = int(meta["patch_size"])
        if patch not in PATCH_SIZES:
            raise ValueError(f"patch_size {meta['patch_size']!r} is not one of {PATCH_SIZES}")
        m = re.match(rf"^({_ARCH})_patch\d+_224$", meta["timm_model"])
        if m is None:
            raise ValueError(f"timm_model '{meta['timm_model']}' is not one of {', '.join(ARCHS)}")
        arch = m.group(1)
    except (KeyError, ValueError) as e:
        raise WeightsError(f"{path}: bad export metadata ({e})") from None
    return _load_strict(_empty_vit(arch, patch), state, str(path))


# --------------------------------------------------------------------------- public API


def load_encoder(
    weights: str | Path, *, checkpoint_key: str = "teacher", seed: int = 0, attn_init: str = "timm"
) -> nn.Module:
    """Any weights vidssl knows as a timm VisionTransformer (num_classes=0, eval mode, CPU).

    `checkpoint_key` picks the network inside training checkpoints ('teacher', the DINO
    protocol, or 'student'); `seed` and `attn_init` (`model.attn_init`) build `random:NAME`.
    """
    text = str(weights)
    if text.startswith("random:"):
        model = _from_random(text[len("random:"):], seed, attn_init)
        return model.eval()
    path = Path(text).expanduser()
    if not path.exists():
        raise WeightsError(f"weights not found: {path} (expected a file, a run directory, or random:MODEL_NAME)")
    if path.is_dir():
        ckpt_path = path / CHECKPOINT_NAME
        if not ckpt_path.is_file():
            raise WeightsError(f"{path}: a directory without {CHECKPOINT_NAME} is not a vidssl run directory")
        path = ckpt_path
    if path.suffix == ".safetensors":
        return _from_safetensors(path).eval()
    obj = _torch_load(path)
    source = str(path)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        model = _from_vidssl_checkpoint(obj, checkpoint_key, source)
    elif isinstance(obj, dict) and ("teacher" in obj or "student" in obj):
        model = _from_official(obj, checkpoint_key, source)
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict", obj.get("model")), dict):
        # timm's train.py and many repositories nest the weights one level down
        inner = obj.get("state_dict", obj.get("model"))
        state = _strip(_tensors_only(inner, source), ("module.", "backbone."))
        model = _from_state_dict({k: v for k, v in state.items() if not k.startswith("head.")}, source)
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = _strip(obj, ("module.", "backbone.", "vit."))
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        model = _from_state_dict(state, source)
    else:
        keys = ", ".join(sorted(map(str, obj))[:10]) if isinstance(obj, dict) else type(obj).__name__
        raise WeightsError(f"{source}: not a known weights layout (found: {keys})")
    return model.eval()


def describe_weights(weights: str | Path, checkpoint_key: str = "teacher", seed: int = 0) -> str:
    """A string that changes when the weights do: the cache key of computed features."""
    text = str(weights)
    if text.startswith("random:"):
        return f"{text}|seed={seed}"
    path = Path(text).expanduser().resolve()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    st = path.stat()
    return f"{path}|{st.st_size}|{st.st_mtime_ns}|{checkpoint_key}"


def export_encoder(source: str | Path | nn.Module, out_path: str | Path, *, checkpoint_key: str = "teacher") -> Path:
    """Write an encoder as a timm-compatible safetensors file with its timm name in the metadata.

    `source` is anything `load_encoder` accepts (run dir, checkpoint, ...) or a timm ViT /
    vidssl `Encoder`. The file loads with `timm.create_model(meta['timm_model'], num_classes=0,
    patch_size=int(meta['patch_size']))` and `load_state_dict(..., strict=True)`.
    """
    from safetensors.torch import save_file

    out = Path(out_path)
    if out.suffix != ".safetensors":
        raise WeightsError(f"export target {out} must end in .safetensors")
    if isinstance(source, nn.Module):
        model = getattr(source, "vit", source)
        origin = type(source).__name__
    else:
        model = load_encoder(source, checkpoint_key=checkpoint_key)
        origin = str(source)
    arch, patch = arch_of(model)
    name = timm_model_name(arch, patch)
    import timm

    if name not in timm.list_models():  # vit_tiny/8: registered under the /16 name + patch_size
        name = timm_model_name(arch, 16)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": EXPORT_FORMAT,
        "timm_model": name,
        "img_size": "224",
        "patch_size": str(patch),
        "arch": arch,
        "embed_dim": str(model.embed_dim),
        "source": origin,
    }
    return atomic_write(out, lambda tmp: save_file(state, str(tmp), metadata=meta))


__all__ = ["WeightsError", "arch_of", "describe_weights", "export_encoder", "infer_arch", "load_encoder", "parse_model_name"]
