"""What decoding at a larger short side costs, and what it buys (issue 11 item 3).

For short sides 256, 512 and native, on a generated 1080p video (or --video): milliseconds per
decoded frame with the streaming reader (decode + resize, every frame of a stretch, as training
reads them), milliseconds per DoRA clip view (T = 8 frames, the paper's views), and how much the
300 px pre-crop enlarges its source on average (above 1: upsampled, detail invented).

    python benchmarks/decode_resolution.py                  # 1080p, about 2 minutes on 2 cores
    python benchmarks/decode_resolution.py --video walk.mp4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from clip_loading import make_video  # noqa: E402  the same generated 1080p scene

from vidssl.config import load_config  # noqa: E402
from vidssl.data.video import PyAVReader, probe_video  # noqa: E402
from vidssl.methods.dora_views import DoRAClipViews  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", help="measure on this video instead of a generated 1080p one")
    ap.add_argument("--frames", type=int, default=120, help="frames decoded per setting (default 120)")
    ap.add_argument("--clips", type=int, default=6, help="clip views timed per setting (default 6)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one loader worker's view
    tmp = Path(tempfile.mkdtemp(prefix="vidssl-res-"))
    video = Path(args.video) if args.video else make_video(tmp / "walk_1080p.mp4", 1920, 1080, 6.0, 30, 30)
    info = probe_video(video)
    views = DoRAClipViews(load_config("dora-vits16-wtours").aug)
    print(f"{video.name}: {info.width}x{info.height}, {info.num_frames} frames; DoRA views of dora-vits16-wtours")
    print(f"{'short side':>10s} {'decoded':>10s} {'ms/frame':>9s} {'ms/clip view':>13s} {'pre-crop upsampling':>20s}")
    for short in (256, 512, None):
        reader = PyAVReader(video, short_side=short)
        n = min(args.frames, info.num_frames)
        t0 = time.perf_counter()
        got, _ = reader.read(list(range(n)))
        per_frame = (time.perf_counter() - t0) / n * 1000
        reader.close()
        frames = torch.from_numpy(__import__("numpy").stack([got[i] for i in sorted(got)]))
        h, w = frames.shape[1:3]
        torch.manual_seed(0)
        t0 = time.perf_counter()
        for c in range(args.clips):
            views(frames[c * 8 % max(1, n - 8):][:8].contiguous())
        per_clip = (time.perf_counter() - t0) / args.clips * 1000
        up = views.source_crop.mean_upsampling(h, w)
        print(f"{str(short or 'native'):>10s} {f'{w}x{h}':>10s} {per_frame:9.1f} {per_clip:13.0f} {up:20.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
