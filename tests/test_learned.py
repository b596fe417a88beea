"""The sample's ground truth (DAVIS and ImageFolder layouts) and the end-of-run "what it learned" block."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vidssl.data.sample import NUM_FRAMES, render_labelled
from vidssl.eval.davis import read_davis
from vidssl.eval.datasets import read_image_folder
from vidssl.eval.learned import LEARNED_NAME, learned_report
from vidssl.eval.palette import read_label_png
from vidssl.eval.sample_bench import SEQUENCE_LENGTH, UNSUP_EVAL_SIZE, UNSUP_INPUT_SIZE, write_ground_truth
from vidssl.eval.unsup_seg import evaluate_unsup_seg
from vidssl.hub import load_encoder
from test_pretrain import TINY_RUN, video, vidssl  # noqa: F401  (video is a fixture)


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    root = tmp_path_factory.mktemp("truth")
    return root, write_ground_truth(root)


def test_ground_truth_is_davis_and_imagefolder_layout_of_the_held_out_frames(truth):
    root, summary = truth
    seqs = read_davis(root / "davis")
    assert [s.name for s in seqs] == summary["sequences"] and len(seqs) >= 2
    for s in seqs:
        start = int(s.name.removeprefix("sample"))
        assert start >= NUM_FRAMES  # held out: past the end of the training video
        assert len(s.frames) == SEQUENCE_LENGTH and all(a is not None for a in s.annotations)
        frames, labels = render_labelled(0, start, SEQUENCE_LENGTH)
        gt = np.stack([read_label_png(a) for a in s.annotations])
        # the annotation is the generator's own labels, renumbered 1..n within the sequence
        objs = sorted(int(i) for i in np.unique(labels[0]) if i > 0)
        assert gt.max() == len(objs) >= 2
        for new, old in enumerate(objs, start=1):
            assert np.array_equal(gt == new, labels == old)
        assert np.array_equal(np.asarray(Image.open(s.frames[3])), frames[3])
    train, val = read_image_folder(root / "objects" / "train"), read_image_folder(root / "objects" / "val")
    assert train.classes == val.classes and len(train.classes) >= 6
    assert (len(train.items), len(val.items)) == (summary["train_crops"], summary["val_crops"])
    assert write_ground_truth(root) == summary  # written once


def test_end_of_run_block_reports_the_numbers_of_the_files_it_names(video, truth, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    proc = vidssl("pretrain", "default", "--video", str(video), "--out", str(out), "--steps", "4", *TINY_RUN)
    block = proc.stdout[proc.stdout.index("what it learned"):]
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert f"loss {rows[0]['loss']:.3f} at the first step" in block
    assert f"-> {rows[-1]['loss']:.3f} over the last steps" in block  # 4 logged steps: the last tenth is the last one
    assert f"teacher entropy per sample {rows[-1]['teacher_entropy']:.2f}" in block
    saved = json.loads((out / LEARNED_NAME).read_text())
    assert saved["diagnostics"]["kl"] == pytest.approx(rows[-1]["kl"])
    assert str(out / LEARNED_NAME) in block and str(out / "loss.png") in block
    assert "J&F" not in block  # a user's video has no ground truth: diagnostics only
    # on the built-in sample the block adds the teacher against random init on the held-out ground truth
    root = truth[0]
    text, result = learned_report(out, 128, root, seeds=1, attn_init="mimetic")  # the default's init
    scores = result["sample_scores"]
    assert scores == json.loads((out / LEARNED_NAME).read_text())["sample_scores"]
    for name, key in (("label propagation J&F", "J&F"), ("k-NN top-1 by object", "knn_top1"),
                      ("k-means segmentation mIoU", "unsup_mIoU")):
        assert (f"{name}: trained {scores['trained'][key]:.2f} vs random init {scores['random_mean'][key]:.2f} "
                f"± 0.00 (1 seed, mimetic q/k init)") in text
    # k-means is TimeT's clip protocol: one clustering and one matching per held-out sequence
    clip = evaluate_unsup_seg(load_encoder(out), root / "davis", "davis", protocols=["clip"],
                              input_size=UNSUP_INPUT_SIZE, eval_size=UNSUP_EVAL_SIZE, num_workers=0,
                              cache=False)["metrics"]["clip"]
    assert clip["units"] == len(read_davis(root / "davis"))
    trained = scores["trained"]["unsup_mIoU"]
    assert 0 < trained <= 100 and trained == pytest.approx(clip["mIoU"])
