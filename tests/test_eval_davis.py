"""DAVIS-2017 evaluation: J and F against a plain implementation, label propagation against DINO's
dense formulation, perfect features recover the shapes, and the command end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from test_eval_fixtures import MeanColourViT, write_davis
from vidssl.cli.main import main
from vidssl.eval.davis import DavisParams, read_davis, segment_and_score, working_size
from vidssl.eval.davis_metrics import boundary_f, evaluate_sequence, region_j, summarize
from vidssl.eval.palette import davis_palette, read_label_png
from vidssl.ops.propagation import propagate_labels

# --------------------------------------------------------------------------- plain J and F


def plain_j(gt: np.ndarray, pred: np.ndarray, void: np.ndarray) -> float:
    inter = union = 0
    for g, p, v in zip(gt.ravel(), pred.ravel(), void.ravel()):
        if v:
            continue
        inter += bool(g and p)
        union += bool(g or p)
    return 1.0 if union == 0 else inter / union


def plain_boundary(m: np.ndarray) -> list[tuple[int, int]]:
    H, W = m.shape
    pts = []
    for y in range(H):
        for x in range(W):
            for dy, dx in ((0, 1), (1, 0), (1, 1)):
                if y + dy < H and x + dx < W and m[y + dy, x + dx] != m[y, x]:
                    pts.append((y, x))
                    break
    return pts


def plain_f(gt: np.ndarray, pred: np.ndarray, void: np.ndarray) -> float:
    gt, pred = gt & ~void, pred & ~void
    r = math.ceil(0.008 * math.hypot(*gt.shape))
    bg, bp = plain_boundary(gt), plain_boundary(pred)
    if not bg and not bp:
        return 1.0
    if not bg or not bp:
        return 0.0

    def matched(a: list, b: list) -> float:
        B = np.array(b)
        return sum(bool(np.any((B[:, 0] - y) ** 2 + (B[:, 1] - x) ** 2 <= r * r)) for y, x in a) / len(a)

    P, R = matched(bp, bg), matched(bg, bp)
    return 0.0 if P + R == 0 else 2 * P * R / (P + R)


def _blob(rng: np.random.Generator, H: int, W: int) -> np.ndarray:
    y, x = np.mgrid[:H, :W]
    m = np.zeros((H, W), bool)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(5, 20)
        m |= (y - cy) ** 2 + ((x - cx) * rng.uniform(0.5, 1.5)) ** 2 <= r * r
    return m


def test_j_and_f_match_plain_implementation() -> None:
    rng = np.random.default_rng(0)
    H, W = 90, 160  # boundary tolerance ceil(0.008 * 183.6) = 2 px
    no_void = np.zeros((H, W), bool)
    for i in range(6):
        gt, pred = _blob(rng, H, W), _blob(rng, H, W)
        if i == 1:  # a near miss: a shifted copy
            pred = np.roll(gt, (1, 2), axis=(0, 1))
        void = no_void if i % 2 else _blob(rng, H, W) & (rng.random((H, W)) < 0.5)
        assert region_j(gt, pred, void) == pytest.approx(plain_j(gt, pred, void))
        assert boundary_f(gt, pred, void) == pytest.approx(plain_f(gt, pred, void))
    gt = _blob(rng, H, W)
    assert region_j(gt, gt) == 1.0 and boundary_f(gt, gt) == 1.0  # perfect prediction
    empty = np.zeros((H, W), bool)
    assert region_j(empty, empty) == 1.0 and boundary_f(empty, empty) == 1.0  # empty object, nothing predicted
    assert region_j(empty, gt) == 0.0 and boundary_f(empty, gt) == 0.0
    assert region_j(gt, empty) == 0.0 and boundary_f(gt, empty) == 0.0


def test_j_and_f_known_values() -> None:
    gt = np.zeros((60, 80), bool)  # tolerance ceil(0.008 * 100) = 1 px
    gt[10:20, 10:20] = True
    pred = np.zeros_like(gt)
    pred[10:20, 13:23] = True  # shifted 3 px right
    assert region_j(gt, pred) == pytest.approx(70 / 130)
    pred1 = np.zeros_like(gt)
    pred1[10:20, 11:21] = True  # shifted 1 px: every boundary pixel within tolerance
    assert boundary_f(gt, pred1) == 1.0
    assert boundary_f(gt, pred) < 0.8


def test_sequence_scoring_skips_first_and_last_frame() -> None:
    H, W = 40, 50
    gt = np.zeros((5, H, W), np.uint8)
    gt[:, 5:15, 5:15] = 1
    gt[:, 20:30, 25:40] = 2
    gt[:, 0, :] = 255  # void row
    pred = gt.copy()
    pred[pred == 255] = 0
    pred[0] = 0  # first and last frame are not scored
    pred[-1] = 2
    r = evaluate_sequence(gt, pred)
    assert r["J"].shape == (2, 3) and np.all(r["J"] == 1) and np.all(r["F"] == 1)
    pred[1:4][pred[1:4] == 2] = 0  # object 2 lost in the scored frames
    s = summarize({"seq": evaluate_sequence(gt, pred)})
    assert s["J-mean"] == pytest.approx(50.0) and s["F-mean"] == pytest.approx(50.0)
    assert s["J&F-mean"] == pytest.approx(50.0) and s["objects"] == 2


# --------------------------------------------------------------------------- propagation


def dense_propagation(tgt, srcs, labs, topk, T, radius):
    """DINO's formulation: exp affinity for every (source, target) pair, window mask by loops,
    threshold at the k-th largest value per target column, normalise columns, multiply."""
    D, h, w = tgt.shape
    C, K = srcs.shape[0], labs.shape[1]
    N = h * w
    ft = F.normalize(tgt.double().reshape(D, N), dim=0)
    fs = F.normalize(srcs.double().reshape(C, D, N), dim=1)
    aff = torch.exp(torch.einsum("dt,cds->cts", ft, fs) / T)  # (C, N_tar, N_src)
    mask = torch.zeros(N, N, dtype=torch.float64)
    for i in range(N):
        for j in range(N):
            if abs(i // w - j // w) <= radius and abs(i % w - j % w) <= radius:
                mask[i, j] = 1
    aff = (aff * mask).transpose(2, 1).reshape(C * N, N)  # (sources, targets)
    kth = aff.topk(topk, dim=0).values.min(dim=0).values
    aff[aff < kth] = 0
    aff = aff / aff.sum(0, keepdim=True)
    segs = labs.double().reshape(C, K, N).transpose(2, 1).reshape(C * N, K).T  # (K, C*N)
    return (segs @ aff).reshape(K, h, w)


@pytest.mark.parametrize("radius,topk", [(1, 3), (2, 5), (20, 5)])
def test_propagation_matches_dense_formulation(radius: int, topk: int) -> None:
    g = torch.Generator().manual_seed(radius)
    tgt, srcs = torch.randn(16, 5, 7, generator=g), torch.randn(3, 16, 5, 7, generator=g)
    labs = torch.rand(3, 4, 5, 7, generator=g)
    got = propagate_labels(tgt, srcs, labs, topk=topk, temperature=0.1, radius=radius, max_chunk_elements=50)
    torch.testing.assert_close(got.double(), dense_propagation(tgt, srcs, labs, topk, 0.1, radius), rtol=1e-4, atol=1e-5)
    batched = propagate_labels(torch.stack([tgt, tgt.flip(-1)]), torch.stack([srcs, srcs]), torch.stack([labs, labs]),
                               topk=topk, temperature=0.1, radius=radius)
    torch.testing.assert_close(batched[0], got)


def _shapes(h: int, w: int, shift: int) -> torch.Tensor:
    lab = torch.zeros(h, w, dtype=torch.long)
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    lab[(y - 5) ** 2 + (x - 4 - shift) ** 2 <= 9] = 1
    lab[2:6, 10 - shift : 14 - shift] = 2
    return lab


def test_perfect_features_recover_moving_shapes() -> None:
    h, w = 12, 16
    first, target = _shapes(h, w, 0), _shapes(h, w, 2)
    feats = lambda lab: F.one_hot(lab, 3).permute(2, 0, 1).float()  # noqa: E731 - features = the true label
    onehot = feats(first)
    soft = propagate_labels(feats(target), onehot[None], onehot[None], topk=5, temperature=0.1, radius=4)
    assert torch.equal(soft.argmax(0), target)
    # without the features telling the objects apart, the shapes are not recovered
    blind = propagate_labels(torch.ones(3, h, w), torch.ones(1, 3, h, w), onehot[None], topk=5, radius=4)
    assert not torch.equal(blind.argmax(0), target)


# --------------------------------------------------------------------------- end to end


def test_working_size_follows_dino() -> None:
    assert working_size(480, 854, 480, 64, 16) == (480, 832)
    assert working_size(1080, 1920, 480, 64, 8) == (480, 832)
    assert working_size(854, 480, 480, 64, 16) == (832, 480)


def test_colour_encoder_tracks_fixture_objects(tmp_path: Path) -> None:
    root = write_davis(tmp_path / "davis", n_frames=6)
    out = tmp_path / "masks"
    params = DavisParams(short_side=64, long_multiple=32, radius=4)
    r = segment_and_score(MeanColourViT(4), root, "val", out, params)
    assert r["J-mean"] > 80 and r["J&F-mean"] > 75 and r["objects"] == 2
    blind = MeanColourViT(4)
    blind.scale.data.fill_(0.0)  # every patch the same feature: nothing to track by
    assert segment_and_score(blind, root, "val", None, params)["J&F-mean"] < r["J&F-mean"] - 20
    seq = read_davis(root)[0]
    written = sorted((out / "shapes").glob("*.png"))
    assert [p.stem for p in written] == [f.stem for f in seq.frames]
    with Image.open(written[3]) as im:
        assert im.mode == "P" and im.size == (96, 64)
        assert np.array_equal(np.array(im.getpalette()[:9]).reshape(3, 3), davis_palette(3))
    assert np.array_equal(read_label_png(written[0]), read_label_png(seq.annotations[0]))


def test_davis_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_davis(tmp_path / "davis", n_frames=4, names=("a", "b"))
    js = tmp_path / "d.json"
    assert main(["eval", "davis", "--weights", "random:vit_tiny_patch16_224", "--davis", str(root),
                 "--resolution", "64", "--out", str(tmp_path / "out"), "--json", str(js)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("davis random:vit_tiny_patch16_224: J&F-mean=") and "(2 sequences, 4 objects)" in last
    r = json.loads(js.read_text())["metrics"]
    assert set(r["sequences"]) == {"a", "b"}
    assert r["J&F-mean"] == pytest.approx((r["J-mean"] + r["F-mean"]) / 2)
    assert len(list((tmp_path / "out" / "b").glob("*.png"))) == 4
    assert main(["eval", "davis", "--weights", "random:vit_tiny_patch16_224", "--davis", str(root),
                 "--resolution", "60"]) == 2
    assert "not a multiple of the patch size 16" in capsys.readouterr().err
    assert main(["eval", "davis", "--weights", "random:vit_tiny_patch16_224", "--davis", str(tmp_path / "nope")]) == 2
    assert "DAVIS directory not found" in capsys.readouterr().err


def test_davis_feature_cache_is_reused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_davis(tmp_path / "davis", n_frames=4)
    base = ["eval", "davis", "--weights", "random:vit_tiny_patch16_224", "--davis", str(root), "--resolution", "64",
            "--cache-dir", str(tmp_path / "c")]
    assert main([*base, "--json", str(tmp_path / "a.json")]) == 0
    cached = list((tmp_path / "c" / "features").glob("*.pt"))
    assert len(cached) == 1
    cached[0].touch()
    stamp = cached[0].stat().st_mtime_ns
    assert main([*base, "--json", str(tmp_path / "c.json")]) == 0  # read back, not recomputed
    assert list((tmp_path / "c" / "features").glob("*.pt")) == cached and cached[0].stat().st_mtime_ns == stamp
    a, c = (json.loads((tmp_path / n).read_text())["metrics"] for n in ("a.json", "c.json"))
    assert a == c
    nocache = tmp_path / "n.json"
    assert main([*base[:-2], "--json", str(nocache)]) == 0
    assert json.loads(nocache.read_text())["metrics"] == a


def test_patch_features_are_the_encoders_patch_tokens() -> None:
    from vidssl.eval.features import patch_features
    from vidssl.hub import load_encoder
    from vidssl.models import Encoder

    vit = load_encoder("random:vit_tiny_patch16_224")
    x = torch.randn(2, 3, 32, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, patches = Encoder(vit).encode(x)  # (B, N, D), row-major over the 2 x 4 grid
        maps = patch_features(Encoder(vit), x)  # an Encoder is accepted as well as the bare ViT
        torch.testing.assert_close(maps, patches.transpose(1, 2).reshape(2, 192, 2, 4))
        torch.testing.assert_close(patch_features(vit, x), maps)
