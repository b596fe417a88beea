"""Reading frames from video files: probe, and a persistent forward-decoding reader.

A reader is opened once per data-loader worker and kept. `read(indices)` takes sorted frame
indices and decodes forward from the current position; it seeks only when the next wanted
frame is behind it or further ahead than `seek_gap` frames, so a batch of overlapping clips
costs one pass over the frames they span, never one seek per clip.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np

from vidssl.data.errors import VideoError
from vidssl.errors import first_line

SEEK_GAP = 300  # frames; decoding this many forward is cheaper than a seek + GOP decode
MAX_STEP_BACKS = 3  # re-seeks to earlier keyframes when the first frame after a seek is corrupt


@dataclass(frozen=True)
class VideoInfo:
    """What the clip index needs to know about one video file."""

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    codec: str

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps else 0.0


def check_video_path(path: str | Path) -> Path:
    """A path that exists, is a file and is not empty, else a `VideoError` naming it."""
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p}: no such file")
    if p.is_dir():
        raise VideoError(f"{p}: is a directory, not a video file")
    if p.stat().st_size == 0:
        raise VideoError(f"{p}: is an empty file (0 bytes)")
    return p


def _open_container(path: Path):
    import av

    try:
        container = av.open(str(path))
    except Exception as e:  # av.error.InvalidDataError, PermissionError, ...
        raise VideoError(f"{path}: cannot be opened as a video ({type(e).__name__}: {first_line(e)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: not a video (no video stream)")
    return container


def _stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def timestamps_unusable(container, stream, packets: int = 200) -> bool:
    """True when frames must be indexed by decode output order instead of pts. AVI stores no
    presentation times (only a frame counter in decode order; with packed B-frames, DivX-style,
    one packet even holds two frames), and some streams leave pts unset on packets: indexing by
    such timestamps puts B-frames out of order and invents lost frames. Demuxes (no decoding)
    up to `packets` packets, then rewinds."""
    if "avi" in (container.format.name or "").split(","):
        return True
    unusable = False
    try:
        for k, pkt in enumerate(container.demux(stream)):
            if k >= packets:
                break
            if pkt.size > 0 and pkt.pts is None:
                unusable = True
                break
    finally:
        container.seek(0, stream=stream, backward=True, any_frame=False)
    return unusable


def probe_video(path: str | Path, backend: str = "pyav") -> VideoInfo:
    """Frame count, fps and size of a video. The count comes from the container header when it
    has one, else from demuxing every packet (no decoding)."""
    p = check_video_path(path)
    if backend == "torchcodec":
        return _probe_torchcodec(p)
    container = _open_container(p)
    try:
        stream = container.streams.video[0]
        fps = _stream_fps(stream)
        n = int(stream.frames or 0)
        if n <= 0:
            try:
                n = sum(1 for pkt in container.demux(stream) if pkt.size > 0)
            except Exception as e:
                raise VideoError(f"{p}: cannot be read as a video ({type(e).__name__}: {first_line(e)})") from None
        width, height = stream.codec_context.width, stream.codec_context.height
        codec = stream.codec_context.name
    finally:
        container.close()
    if n <= 0 or fps <= 0 or width <= 0:
        raise VideoError(f"{p}: not a video (no frames found)")
    return VideoInfo(str(p), n, fps, width, height, codec)


def _probe_torchcodec(p: Path) -> VideoInfo:
    decoder = _torchcodec_decoder(p)
    md = decoder.metadata
    n = int(md.num_frames or 0)
    fps = float(md.average_fps or 0.0)
    if n <= 0 or fps <= 0:
        raise VideoError(f"{p}: not a video (no frames found)")
    return VideoInfo(str(p), n, fps, int(md.width), int(md.height), str(md.codec))


def _torchcodec_decoder(p: Path):
    try:
        from torchcodec.decoders import VideoDecoder
    except Exception as e:
        raise VideoError(f"{p}: data.backend=torchcodec but torchcodec cannot be imported ({first_line(e)})") from None
    try:
        return VideoDecoder(str(p), seek_mode="approximate", dimension_order="NHWC")
    except Exception as e:
        raise VideoError(f"{p}: cannot be opened as a video by torchcodec ({type(e).__name__}: {first_line(e)})") from None


def resized_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(w, h) with the short side at most `short_side` (never upscaled); even sizes."""
    if not short_side or min(width, height) <= short_side:
        return width, height
    scale = short_side / min(width, height)
    w, h = round(width * scale), round(height * scale)
    return max(2, w - w % 2), max(2, h - h % 2)


class FrameReader(Protocol):
    """Anything that returns frames of one video by index."""

    def read(self, indices: list[int]) -> tuple[dict[int, np.ndarray], dict[int, str]]: ...

    def close(self) -> None: ...


@dataclass
class DecodedFrame:
    """One frame out of `FrameIterator`: its number in presentation order and what is known of it."""

    index: int
    time: float  # seconds in the source (start time included)
    pts: int | None
    frame: object  # the av.VideoFrame, still in the decoder's pixel format
    corrupt: bool  # FFmpeg concealed damage in it
    untrusted: str  # why it cannot be trusted (it depends on a frame that stayed corrupt after a seek), or ""


class FrameIterator:
    """The one PyAV decode loop, used by `PyAVReader` and by ingest: forward decoding from the
    start or from a seek, with

    - frame numbers in presentation order (pts), or in decoder output order where the
      container's timestamps are unusable (`timestamps_unusable`);
    - packet errors caught per packet and recorded (`errors`: (seconds or None, message));
      decoding goes on with the next packet, so one damaged packet never ends a pass;
    - after a seek, a first frame that comes out corrupt (a keyframe that does not decode on
      its own) makes it step back to an earlier keyframe, further each time (0, 1, 3 s), at most
      `MAX_STEP_BACKS` times; frames up to the next clean keyframe are then marked `untrusted`.
    """

    def __init__(self, path: str | Path, threads: int = 0):
        self.path = check_video_path(path)
        self.container = _open_container(self.path)
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        if threads:
            self.stream.codec_context.thread_count = threads
        self.fps = _stream_fps(self.stream)
        self.time_base = self.stream.time_base or Fraction(1, 1)
        self.start_time = float((self.stream.start_time or 0) * self.time_base)
        # without usable timestamps a frame's index is its position in the decoder's output, known
        # only by counting from the start: every backward jump decodes from frame 0 again
        self.output_order = timestamps_unusable(self.container, self.stream)
        self.errors: list[tuple[float | None, str]] = []
        self._fresh_error = ""  # the last error since the previous frame came out
        self._frames = None  # raw decoded frames (the generator of `_decode`)
        self._next = 0  # index of the next frame the generator yields (approx.; -1 unknown)
        self._counter = 0
        self._after_seek = False
        self._step_backs = 0  # re-seeks made for the current seek (capped: never an endless loop)
        self._broken = ""  # why frames are untrusted until the next clean keyframe ("" if they are fine)
        self._target: int | None = None  # the frame the last seek was for: the landing must not be past it

    def close(self) -> None:
        self._frames = None
        self.container.close()

    def _decode(self):
        """Raw frames; a packet that fails to decode is recorded and skipped, and a damaged
        container ends the pass where it stops being readable."""
        try:
            for packet in self.container.demux(self.stream):
                try:
                    decoded = packet.decode()
                except Exception as e:
                    t = float(packet.pts * self.time_base) if packet.pts is not None else None
                    where = "packet at ?" if t is None else f"packet at {round(t, 3)} s"
                    self._error(t, f"{where}: {type(e).__name__}: {first_line(e)}")
                    continue
                yield from decoded
        except Exception as e:
            self._error(None, f"reading stopped after frame {self._counter - 1}: {type(e).__name__}: {first_line(e)}")

    def _error(self, t: float | None, message: str) -> None:
        self.errors.append((t, message))
        self._fresh_error = message

    def take_error(self) -> str:
        """The last decoding error since the previous frame came out ("" if none), once."""
        e, self._fresh_error = self._fresh_error, ""
        return e

    def _index(self, frame) -> int:
        if self.output_order or frame.time is None:
            return self._counter
        return int(round((float(frame.time) - self.start_time) * self.fps))

    def _seek(self, index: int) -> None:
        """Position the decoder at the last keyframe at or before frame `index - 1`."""
        seconds = self.start_time + max(0, index - 1) / self.fps
        ts = int(math.floor(seconds / self.time_base))
        try:
            self.container.seek(ts, stream=self.stream, backward=True, any_frame=False)
        except Exception:
            self.container.seek(0, stream=self.stream, backward=True, any_frame=False)
        self._frames = self._decode()
        self._next = -1  # unknown until the first frame comes out
        self._after_seek = True

    def rewind(self) -> None:
        """Decode from the first frame again."""
        if self._frames is not None or self._counter:
            self.container.seek(0, stream=self.stream, backward=True, any_frame=False)
        self._frames = self._decode()
        self._next = self._counter = 0
        self._after_seek = False
        self._step_backs, self._broken, self._target = 0, "", None

    def start_at(self, index: int) -> None:
        """Make the next frames start at or before frame `index` (a rewind where seeking cannot
        work: output order, or the very start)."""
        if self.output_order or (self._frames is None and index == 0):
            self.rewind()
            return
        self._seek(index)
        self._step_backs, self._broken, self._target = 0, "", index

    def seek_pts(self, pts: int, index: int | None = None) -> None:
        """Start at the keyframe at or before `pts` (stream time base), e.g. a keyframe found by
        a demux: an exact landing, where `start_at` aims one frame early for rounding. `index`:
        the frame wanted first (a landing past it steps back)."""
        if self.output_order:
            self.rewind()
            return
        self.container.seek(int(pts), stream=self.stream, backward=True, any_frame=False)
        self._frames = self._decode()
        self._next, self._after_seek = -1, True
        self._step_backs, self._broken, self._target = 0, "", index

    def _landed_late(self) -> None:
        """The seek landed past the frame it was for (MPEG program streams and other containers
        whose index is approximate): aim 1, 2, 4 s earlier, then decode from the start."""
        if self._step_backs < MAX_STEP_BACKS:
            back = 2 ** self._step_backs * max(1, round(self.fps))
            self._step_backs += 1
            self._seek(max(0, self._target - back))
        else:
            self.rewind()

    def next_frame(self) -> DecodedFrame | None:
        """The next frame, or None past the last one (starting from the first frame if no start
        was asked for)."""
        if self._frames is None:
            self.rewind()
        while True:
            try:
                frame = next(self._frames)
            except StopIteration:
                if self._after_seek and self._target is not None and self._target > 0:
                    self._landed_late()  # a seek past the last keyframe landed at the end
                    continue
                self._frames = None
                return None
            idx = self._index(frame)
            corrupt = bool(getattr(frame, "is_corrupt", False))
            if self._after_seek and self._target is not None and idx > self._target:
                self._landed_late()
                continue
            if corrupt and self._after_seek and idx > 0:
                if self._step_backs < MAX_STEP_BACKS:
                    # Some files mark frames as keyframes that do not decode on their own (FFmpeg
                    # conceals the damage and flags the frame): step back to an earlier keyframe,
                    # further each time (0, 1, 3 s before it) in case a seek lands here again.
                    back = (2 ** self._step_backs - 1) * max(1, round(self.fps))
                    self._step_backs += 1
                    self._seek(max(0, idx - back))
                    continue
                # Still corrupt: give up. Frames up to the next clean keyframe depend on this one,
                # so they are marked untrusted (their clips are skipped), not returned as if fine.
                self._broken = (f"undecodable: frame {idx} is corrupt after a seek and {MAX_STEP_BACKS} "
                                f"step-backs to earlier keyframes did not help")
            elif self._broken and frame.key_frame and not corrupt:
                self._broken = ""
            self._after_seek = False
            self._counter = self._next = idx + 1
            time_s = float(frame.time) if frame.time is not None else self.start_time + idx / self.fps
            if self.output_order:
                time_s = self.start_time + idx / self.fps
            return DecodedFrame(idx, time_s, frame.pts, frame, corrupt, self._broken)

    def __iter__(self):
        while (d := self.next_frame()) is not None:
            yield d


class PyAVReader(FrameIterator):
    """Persistent PyAV reader of one file. `read(sorted indices)` -> ({index: uint8 (H, W, 3)},
    {index: why it is missing}). Decoding errors never propagate: the frames are reported
    missing and decoding goes on past them."""

    def __init__(self, path: str | Path, short_side: int | None = None, threads: int = 0,
                 seek_gap: int = SEEK_GAP):
        super().__init__(path, threads)
        cc = self.stream.codec_context
        self.size = resized_size(cc.width, cc.height, short_side)
        self.resize = self.size != (cc.width, cc.height)
        self.seek_gap = seek_gap
        self._sought = -1  # the frame the last seek was made for

    def to_array(self, frame) -> np.ndarray:
        return frame_to_rgb(frame, self.size if self.resize else None)

    def read(self, indices: list[int]) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        out: dict[int, np.ndarray] = {}
        missing: dict[int, str] = {}
        wanted = sorted(set(int(i) for i in indices))
        k = 0
        while k < len(wanted):
            target = wanted[k]
            # far ahead: seek, unless this very frame was what the last seek was for (a seek that
            # landed past it stepped back further than seek_gap; seeking again would land there again)
            far = target - self._next > self.seek_gap and not self.output_order and target != self._sought
            if self._frames is None or target < self._next or far:
                self.take_error()  # errors of an earlier pass do not describe these frames
                self.start_at(target)
                self._sought = target
            d = self.next_frame()
            error = self.take_error()
            if d is None:
                why = f"past the last decodable frame ({error})" if error else "past the last decodable frame"
                for i in wanted[k:]:
                    missing[i] = why
                break
            skipped = f"decode error ({error})" if error else "frame not in the stream (lost or corrupt)"
            while k < len(wanted) and wanted[k] < d.index:
                missing[wanted[k]] = skipped
                k += 1
            if k < len(wanted) and wanted[k] == d.index:
                if d.untrusted:
                    missing[d.index] = d.untrusted
                elif d.corrupt:
                    missing[d.index] = "decoded with errors (corrupt data)"
                else:
                    out[d.index] = self.to_array(d.frame)
                k += 1
        return out, missing


def frame_to_rgb(frame, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 (H, W, 3) RGB of a decoded frame, scaled to `size` (w, h) in the same swscale pass
    as the colour conversion (AREA: a box filter for downscaling)."""
    if size is None:
        return frame.to_ndarray(format="rgb24")
    return frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA")


class TorchCodecReader:
    """torchcodec reader of one file (asked for with data.backend=torchcodec)."""

    def __init__(self, path: str | Path, short_side: int | None = None, **_: object):
        self.path = check_video_path(path)
        self.decoder = _torchcodec_decoder(self.path)
        md = self.decoder.metadata
        self.fps = float(md.average_fps or 0.0)
        self.num_frames = int(md.num_frames or 0)
        self.size = resized_size(int(md.width), int(md.height), short_side)
        self.resize = self.size != (int(md.width), int(md.height))
        self.short_side = short_side
        self.pyav: PyAVReader | None = None  # opened only for frames torchcodec cannot give
        container = _open_container(self.path)
        try:
            # torchcodec numbers frames by its own reading of the timestamps: where they are unusable
            # (AVI, packed B-frames) any read not from frame 0 came back shifted by one (frames 33-46,
            # 46, 46 for 32-47): such files are read by the PyAV reader, which counts output order
            self.by_pyav = timestamps_unusable(container, container.streams.video[0])
        finally:
            container.close()

    def close(self) -> None:
        self.decoder = None
        if self.pyav is not None:
            self.pyav.close()
            self.pyav = None

    def read(self, indices: list[int]) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        wanted = sorted(set(int(i) for i in indices))
        out: dict[int, np.ndarray] = {}
        missing: dict[int, str] = {}
        if self.by_pyav:
            if self.pyav is None:
                self.pyav = PyAVReader(self.path, short_side=self.short_side)
            return self.pyav.read(wanted)
        ok = [i for i in wanted if i < self.num_frames]
        for i in wanted[len(ok):]:
            missing[i] = "past the last frame"
        try:
            frames = self.decoder.get_frames_at(ok).data if ok else None  # (N, H, W, 3) uint8
        except Exception:
            frames = None
            failed = {}
            for i in ok:  # one by one, to find the bad ones
                try:
                    out[i] = self._resize(self.decoder.get_frame_at(i).data[None])[0].numpy()
                except Exception as e:
                    failed[i] = f"decode error ({type(e).__name__}: {first_line(e)})"
            missing.update(self._ask_pyav(failed, out))
            return out, missing
        if frames is not None:
            frames = self._resize(frames)
            for j, i in enumerate(ok):
                out[i] = frames[j].numpy()
        return out, missing

    def _ask_pyav(self, failed: dict[int, str], out: dict[int, np.ndarray]) -> dict[int, str]:
        """torchcodec drops frames FFmpeg can produce (the last frame of an MPEG-4 AVI with
        B-frames): such frames come from the PyAV reader, so `missing` means FFmpeg could not."""
        if not failed:
            return {}
        if self.pyav is None:
            self.pyav = PyAVReader(self.path, short_side=self.short_side)
        got, still = self.pyav.read(sorted(failed))
        out.update(got)
        return {i: failed[i] for i in still}

    def _resize(self, frames):
        import torch
        import torch.nn.functional as F

        if not self.resize:
            return frames
        w, h = self.size
        x = frames.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def open_reader(path: str | Path, backend: str = "pyav", short_side: int | None = None,
                threads: int = 0) -> FrameReader:
    """A persistent reader for `path` with the chosen backend."""
    if backend == "torchcodec":
        return TorchCodecReader(path, short_side)
    if backend != "pyav":
        raise VideoError(f"{path}: unknown data.backend {backend!r}; valid: 'pyav', 'torchcodec'")
    return PyAVReader(path, short_side, threads=threads)


def iter_frames(path: str | Path, backend: str = "pyav", short_side: int | None = None, start: int = 0,
                chunk: int = 32):
    """Every frame from `start` on, front to back, as (index, uint8 (H, W, 3)); frames that do
    not decode (corrupt, lost) are left out, so the indices say where the gaps are. PyAV runs
    `FrameIterator` (one pass, seeking once to `start`); torchcodec reads `chunk` frames a
    call, falling back to PyAV for frames it cannot give, as `TorchCodecReader` does."""
    if backend == "torchcodec":
        reader = TorchCodecReader(path, short_side)
        try:
            for a in range(start, reader.num_frames, chunk):
                got, _ = reader.read(list(range(a, min(a + chunk, reader.num_frames))))
                yield from sorted(got.items())
        finally:
            reader.close()
        return
    if backend != "pyav":
        raise VideoError(f"{path}: unknown data.backend {backend!r}; valid: 'pyav', 'torchcodec'")
    it = PyAVReader(path, short_side)
    try:
        if start > 0:
            it.start_at(start)
        for d in it:
            if d.index >= start and not d.corrupt and not d.untrusted:
                yield d.index, it.to_array(d.frame)
    finally:
        it.close()


def read_frames(path: str | Path, indices: list[int], short_side: int | None = None,
                skip_undecodable: bool = False) -> np.ndarray:
    """Frames `indices` of a video as uint8 (T, H, W, 3) in the order asked, for pictures and
    one-off reads (training reads clips through `open_reader`). Errors are one line naming the
    file: missing, not a video, too short, a frame FFmpeg cannot produce (or, with
    `skip_undecodable`, only when none can be)."""
    info = probe_video(path)
    if not indices:
        raise VideoError(f"{path}: no frames asked for")
    bad = min(indices) if min(indices) < 0 else max(indices)
    if not 0 <= bad < info.num_frames:
        raise VideoError(f"{path} has {info.num_frames} frames; frame {bad} was asked for")
    reader = open_reader(path, short_side=short_side)
    try:
        got, missing = reader.read(sorted(set(indices)))
    finally:
        reader.close()
    if missing and not skip_undecodable:
        i, why = min(missing.items())
        raise VideoError(f"{path}: frame {i} could not be decoded ({why})")
    kept = [i for i in indices if i in got]
    if not kept:
        reasons = "; ".join(sorted(set(missing.values())))[:200]
        raise VideoError(f"{path}: no frame could be decoded ({reasons or 'empty stream'})")
    return np.stack([got[i] for i in kept])


def is_readable_file(path: str | Path) -> bool:
    return os.path.isfile(path) and os.path.getsize(path) > 0
