"""load_encoder / export_encoder: every weights format, strictness, and the timm round trip."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vidssl.cli.main import main
from vidssl.config import load_config, to_dict
from vidssl.hub import WeightsError, export_encoder, infer_arch, load_encoder
from vidssl.methods.base import build_student_teacher
from vidssl.models import create_vit

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def vidssl_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.ModuleDict, torch.nn.ModuleDict]:
    return _vidssl_run(tmp_path_factory.mktemp("run16"))


def _vidssl_run(tmp_path: Path, patch: int = 16) -> tuple[Path, torch.nn.ModuleDict, torch.nn.ModuleDict]:
    """A run directory with a checkpoint in the engine's layout; teacher != student."""
    cfg = load_config(overrides=["model.arch=vit_tiny", f"model.patch_size={patch}", "model.out_dim=64",
                                 "model.hidden_dim=32", "model.bottleneck_dim=16"])
    torch.manual_seed(1)
    student, teacher = build_student_teacher(cfg)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": "vidssl-checkpoint/1", "config": to_dict(cfg), "student": student.state_dict(),
                "teacher": teacher.state_dict(), "step": 3, "optimizer": {}}, run / "checkpoint.pt")
    return run, student, teacher


def _official(tmp_path: Path) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    """DINO/DoRA training checkpoint: teacher 'backbone.' (+ head), student DDP 'module.backbone.', args."""
    torch.manual_seed(2)
    t = create_vit("vit_tiny", 16)
    s = copy.deepcopy(t)
    with torch.no_grad():
        s.cls_token.add_(1.0)
    head = {"head.mlp.0.weight": torch.randn(8, 192), "head.last_layer.weight_g": torch.ones(4, 1)}
    ckpt = {
        "teacher": {**{f"backbone.{k}": v for k, v in t.state_dict().items()}, **head},
        "student": {**{f"module.backbone.{k}": v for k, v in s.state_dict().items()},
                    **{f"module.{k}": v for k, v in head.items()}},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_tiny", patch_size=16, lr=0.0005),
    }
    path = tmp_path / "checkpoint0100.pth"
    torch.save(ckpt, path)
    return path, t, s


def test_export_loads_into_plain_timm_strict(tmp_path: Path, vidssl_run) -> None:
    run, _, teacher = vidssl_run
    out = export_encoder(run, tmp_path / "enc.safetensors")
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["timm_model"] == "vit_tiny_patch16_224" and meta["img_size"] == "224" and meta["patch_size"] == "16"
    # no vidssl code between the file and timm
    model = timm.create_model(meta["timm_model"], num_classes=0, pretrained=False)
    model.load_state_dict(state, strict=True)
    model.eval()
    ref = teacher["backbone"].vit.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))),
                                   ref(torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))))
    assert _same(load_encoder(out), ref)


def test_export_patch8_tiny_names_registered_model(tmp_path: Path) -> None:
    run, _, teacher = _vidssl_run(tmp_path, patch=8)
    out = export_encoder(run, tmp_path / "t8.safetensors")
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    model = timm.create_model(meta["timm_model"], num_classes=0, patch_size=int(meta["patch_size"]))
    model.load_state_dict(state, strict=True)
    assert meta["patch_size"] == "8"
    assert _same(load_encoder(out), teacher["backbone"].vit)


def test_run_dir_and_checkpoint_give_the_teacher(vidssl_run) -> None:
    run, student, teacher = vidssl_run
    assert _same(load_encoder(run), teacher["backbone"].vit)
    assert _same(load_encoder(run / "checkpoint.pt"), teacher["backbone"].vit)
    assert _same(load_encoder(run, checkpoint_key="student"), student["backbone"].vit)
    assert not _same(load_encoder(run), student["backbone"].vit)


def test_official_dino_checkpoint_layout(tmp_path: Path) -> None:
    path, t, s = _official(tmp_path)
    m = load_encoder(path)
    assert m.embed_dim == 192 and m.patch_embed.patch_size == (16, 16)
    assert _same(m, t)
    assert _same(load_encoder(path, checkpoint_key="student"), s)


def test_architecture_inferred_from_shapes() -> None:
    for dim, arch in ((192, "vit_tiny"), (384, "vit_small"), (768, "vit_base")):
        for patch in (8, 16):
            assert infer_arch({"patch_embed.proj.weight": torch.zeros(dim, 3, patch, patch)}, "x") == (arch, patch)
    with pytest.raises(WeightsError, match="x: not a ViT state dict"):
        infer_arch({"conv1.weight": torch.zeros(1)}, "x")


def test_bare_dino_backbone_and_timm_state_dicts(tmp_path: Path) -> None:
    torch.manual_seed(4)
    ref = create_vit("vit_tiny", 8)
    torch.save(ref.state_dict(), tmp_path / "dino_deittiny8_pretrain.pth")
    assert _same(load_encoder(tmp_path / "dino_deittiny8_pretrain.pth"), ref)
    save_file(ref.state_dict(), str(tmp_path / "timm.safetensors"))  # no vidssl metadata
    m = load_encoder(tmp_path / "timm.safetensors")
    assert m.patch_embed.patch_size == (8, 8) and _same(m, ref)


def test_random_is_seeded_and_named(tmp_path: Path) -> None:
    a = load_encoder("random:vit_tiny_patch16_224")
    b = load_encoder("random:vit_tiny_patch16_224")
    c = load_encoder("random:vit_tiny_patch16_224", seed=1)
    assert _same(a, b) and not _same(a, c)
    assert a.embed_dim == 192
    with pytest.raises(WeightsError, match="unknown model name 'resnet50'.*vit_small_patch16_224"):
        load_encoder("random:resnet50")


def test_strict_loading_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="weights not found: .*nope.pth"):
        load_encoder(tmp_path / "nope.pth")
    (tmp_path / "emptyrun").mkdir()
    with pytest.raises(WeightsError, match="without checkpoint.pt"):
        load_encoder(tmp_path / "emptyrun")
    state = create_vit("vit_tiny", 16).state_dict()
    # a missing block and an extra key are both listed
    bad = {k: v for k, v in state.items() if not k.startswith("blocks.11.mlp")}
    bad["blocks.12.norm1.weight"] = torch.ones(192)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as e:
        load_encoder(tmp_path / "bad.pth")
    msg = str(e.value)
    assert "missing keys: blocks.11.mlp.fc1.bias" in msg and "unexpected keys: blocks.12.norm1.weight" in msg
    # metadata claims another architecture than the tensors: a shape error, not a silent load
    save_file(state, str(tmp_path / "wrong.safetensors"),
              metadata={"timm_model": "vit_small_patch16_224", "img_size": "224", "patch_size": "16"})
    with pytest.raises(WeightsError, match="shape mismatch.*cls_token"):
        load_encoder(tmp_path / "wrong.safetensors")
    # an unsupported width
    odd = {k: v for k, v in state.items()}
    odd["patch_embed.proj.weight"] = torch.zeros(100, 3, 16, 16)
    torch.save(odd, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match="embedding dim 100"):
        load_encoder(tmp_path / "odd.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth: cannot be read"):
        load_encoder(tmp_path / "junk.pth")


def test_export_cli(tmp_path: Path, capsys: pytest.CaptureFixture, vidssl_run) -> None:
    run, _, teacher = vidssl_run
    assert main(["export", str(run), "--out", str(tmp_path / "e.safetensors")]) == 0
    assert _same(load_encoder(tmp_path / "e.safetensors"), teacher["backbone"].vit)
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "weights not found" in capsys.readouterr().err


def test_nested_timm_training_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(5)
    ref = create_vit("vit_tiny", 16)
    state = {**ref.state_dict(), "head.weight": torch.zeros(10, 192), "head.bias": torch.zeros(10)}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "model_best.pth.tar")
    assert _same(load_encoder(tmp_path / "model_best.pth.tar"), ref)


def test_half_precision_weights_load_as_float32(tmp_path: Path) -> None:
    torch.manual_seed(6)
    ref = create_vit("vit_tiny", 16)
    torch.save({k: v.half() for k, v in ref.state_dict().items()}, tmp_path / "half.pth")
    m = load_encoder(tmp_path / "half.pth")
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in m.parameters())
    torch.testing.assert_close(m.cls_token, ref.cls_token.half().float())
