"""The transcoding engine: one decode, a full rendition ladder per segment.

The calling thread demuxes and decodes the input once. Each rendition runs on its own thread
with its own scaler, encoder and muxer; decoded frames and audio packets are handed to every
rendition through small bounded queues. PyAV releases the GIL while scaling, encoding and
decoding, so renditions encode in parallel with the decode and with each other.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import partial
from typing import Any, cast

import av
from av.bitstream import BitStreamFilterContext
from av.video.reformatter import ColorRange, Interpolation, VideoReformatter

from farm.errors import (
    EncoderUnavailable,
    EngineFailure,
    FarmError,
    InputCorrupt,
    InputInvalid,
    InputTooLong,
    ProfileInvalid,
    TranscodeTimeout,
    UnsupportedCodec,
)
from farm.media.audio import AAC_RATES, AudioToAac
from farm.media.codecs import (
    FAMILY_CODECS,
    QUIET_OPTIONS,
    EncoderChoice,
    choose_encoder,
    codec_name,
    nvdec_opens,
)
from farm.media.encoders import (
    EncoderKey,
    StaleEncoder,
    StreamEncoder,
    StreamSession,
    zero_delay_options,
)
from farm.media.output import STREAMABLE, OutputFile, check_format
from farm.media.profiles import H264_PROFILES, VideoProfile
from farm.media.result import Failure, Rendition, TranscodeResult
from farm.media.source import MAX_INPUT_SECONDS, Source, SourceInput, open_source
from farm.media.verify import FollowingVerifier, verify_rendition

__all__ = ["EngineOptions", "adts_to_mp4", "transcode"]

log = logging.getLogger(__name__)

_QUEUE_DEPTH = 6
_STOP = object()


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How the engine encodes; the defaults suit live segments on CPUs."""

    fmt: str = "mpegts"
    #: x264/x265 preset for software encodes.
    preset: str = "veryfast"
    prefer_gpu: bool = True
    #: GPU index for NVENC/NVDEC, None for CPU only.
    gpu: int | None = None
    max_seconds: float = MAX_INPUT_SECONDS
    #: Wall-clock budget for the whole segment; None for no limit.
    deadline_s: float | None = None
    #: Encode renditions on their own threads (off only to measure the difference).
    parallel: bool = True
    interpolation: str = "BICUBIC"
    #: Reopen and check every rendition (farm.media.verify): MPEG-TS and fMP4 while they are
    #: written, on a thread of its own that follows the muxer's bytes; MP4 once encoded.
    verify: bool = False
    #: Verify MPEG-TS and fMP4 while they are written (off only to measure the difference).
    verify_following: bool = True
    #: The stream this segment belongs to and the worker's kept encoders
    #: (farm.media.encoders); None: every encoder is opened for this segment alone.
    session: StreamSession | None = None
    #: Seconds (the input's timeline) before which pictures are decoded but not output: a
    #: segment cut at an open-GOP keyframe carries the GOP before it to prime the decoder
    #: (farm.media.segmenter).
    show_from: float | None = None


class _Rendition(threading.Thread):
    """Scales, encodes and muxes one rendition from the shared decoded frames."""

    def __init__(
        self,
        profile: VideoProfile,
        source: Source,
        choice: EncoderChoice,
        opts: EngineOptions,
        aac: AudioToAac | None = None,
    ) -> None:
        super().__init__(name=f"rendition-{profile.name}", daemon=True)
        self.profile = profile
        self.choice = choice
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_DEPTH)
        self.error: BaseException | None = None
        self.result: Rendition | None = None
        self.width, self.height = profile.oriented(source.portrait)
        self._scaler = VideoReformatter()
        # A picture shown turned a quarter is scaled in its coded orientation, then turned.
        self._coded = (
            (self.height, self.width) if source.rotation in (90, 270) else (self.width, self.height)
        )
        self._turn = _Turn(source.rotation, *self._coded) if source.rotation else None
        self._interpolation = Interpolation[opts.interpolation]
        self._rate = profile.frame_rate
        self._pending: tuple[av.VideoFrame, Fraction] | None = None
        self._frames = 0
        self._first_pts: int | None = None
        self._last_pts: int | None = None
        # Verified while written where the format allows, so checking overlaps encoding.
        follow = opts.verify and opts.verify_following and opts.fmt in STREAMABLE
        self._out = OutputFile(opts.fmt, follow=follow)
        self._session = opts.session
        #: The kept encoder this rendition encodes with (None: the output stream's own, for
        #: this segment alone), and whether it came from the stream's previous segment.
        self.kept: StreamEncoder | None = None
        self.reused = False
        zero_delay = (
            zero_delay_options(choice.codec, profile, opts.fmt)
            if opts.session is not None and not opts.session.cache.refuses(choice.codec)
            else None
        )
        self.keeps = zero_delay is not None
        if zero_delay is None:
            self._video = self._add_video(source, opts)
        else:
            self._video = self._add_kept_video(source, opts, zero_delay)
        self._audio: av.AudioStream | None = None
        if aac is not None:
            self._audio = aac.add_stream(self._out.container)
        elif source.audio is not None:
            self._audio = self._out.container.add_stream_from_template(source.audio)
        self._in_frame = Fraction(1) / source.frame_rate if source.frame_rate else None
        self._adts: BitStreamFilterContext | None = None
        if aac is None and self._audio and source.audio and opts.fmt in ("mp4", "fmp4"):
            self._adts = adts_to_mp4(source.audio, self._audio)
        self.cancelled = threading.Event()
        self._verify = opts.verify
        self._input_duration = 0.0
        self.failures: list[Failure] = []
        self.verify_seconds = 0.0
        self._verifier: FollowingVerifier | None = None
        # Renditions are decoded with NVDEC where the worker's GPU has it for their codec.
        self._verify_gpu = (
            opts.gpu
            if opts.verify
            and opts.gpu is not None
            and nvdec_opens(FAMILY_CODECS.get(profile.encoder, ""))
            else None
        )
        if follow:
            self._verifier = FollowingVerifier(
                self._out.followed, opts.fmt, profile.name, self._verify_gpu
            )
            self._verifier.start()

    def _add_video(self, source: Source, opts: EngineOptions) -> av.VideoStream:
        in_rate = source.frame_rate or Fraction(30)
        rate = self._rate or in_rate
        stream = cast(av.VideoStream, self._out.container.add_stream(self.choice.codec, rate=rate))
        stream.width, stream.height = self.width, self.height
        stream.pix_fmt = "yuv420p"
        self._time_base = self._encoder_time_base(source)
        stream.codec_context.time_base = self._time_base
        stream.bit_rate = self.profile.bitrate
        stream.codec_context.thread_type = "AUTO"
        gop = self._gop_size(rate)
        if gop is not None:
            stream.gop_size = gop
        stream.options = {**self._encoder_options(opts)}
        try:
            stream.codec_context.open()
        except (av.FFmpegError, OSError) as e:
            self._out.abort()
            raise self._open_failed(e) from e
        return stream

    def _add_kept_video(
        self, source: Source, opts: EngineOptions, zero_delay: dict[str, str]
    ) -> av.VideoStream:
        """The output stream of a rendition whose encoder outlives the segment: the stream
        only carries packets, and the encoder is the stream's kept one (or a new one)."""
        assert opts.session is not None
        rate = self._rate or source.frame_rate or Fraction(30)
        self._time_base = self._encoder_time_base(source)
        ctx = source.video.codec_context
        key = EncoderKey(
            stream=opts.session.stream,
            profile=self.profile,
            codec=self.choice.codec,
            width=self.width,
            height=self.height,
            in_width=ctx.width,
            in_height=ctx.height,
            in_pix_fmt=str(ctx.pix_fmt),
            in_rate=source.frame_rate,
            time_base=self._time_base,
            preset=opts.preset,
            gpu=opts.gpu,
        )
        stream = cast(
            av.VideoStream,
            self._out.container.add_mux_stream(
                self.choice.codec, rate=rate, width=self.width, height=self.height
            ),
        )
        self._key = key
        self._reopen = partial(self._open_kept, opts, rate, zero_delay)
        self.kept = opts.session.cache.take(key)
        self.reused = self.kept is not None
        if self.kept is None:
            try:
                self.kept = opts.session.cache.open(key, self._reopen)
            except BaseException:
                self._out.abort()
                raise
        return stream

    def _open_kept(
        self, opts: EngineOptions, rate: Fraction, zero_delay: dict[str, str]
    ) -> av.VideoCodecContext:
        ctx = cast(av.VideoCodecContext, av.CodecContext.create(self.choice.codec, "w"))
        ctx.width, ctx.height = self.width, self.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = self._time_base
        ctx.framerate = rate
        ctx.bit_rate = self.profile.bitrate
        # Slice threads only: frame threads hold frames back, which a kept encoder may not.
        ctx.thread_type = "SLICE"
        gop = self._gop_size(rate)
        if gop is not None:
            ctx.gop_size = gop
        ctx.options = {**self._encoder_options(opts), **zero_delay}
        try:
            ctx.open()
        except (av.FFmpegError, OSError) as e:
            raise self._open_failed(e) from e
        return ctx

    def _encoder_time_base(self, source: Source) -> Fraction:
        tb = Fraction(1) / self._rate if self._rate else source.video.time_base
        assert tb is not None
        return tb

    def _gop_size(self, rate: Fraction) -> int | None:
        p = self.profile
        if p.intra_only:
            return 1
        if p.gop_seconds is not None:
            return max(1, round(p.gop_seconds * float(rate)))
        return None

    def _encoder_options(self, opts: EngineOptions) -> dict[str, str]:
        p = self.profile
        options: dict[str, str] = dict(QUIET_OPTIONS.get(self.choice.codec, {}))
        if not self.choice.hardware and self.choice.codec in ("libx264", "libx265"):
            options["preset"] = opts.preset
        if self.choice.hardware and opts.gpu is not None:
            options["gpu"] = str(opts.gpu)
        h264_profile = H264_PROFILES[p.profile]
        if h264_profile:
            options["profile"] = h264_profile
        if p.b_frames is not None:
            options["bf"] = str(p.b_frames)
        return options

    def _open_failed(self, e: BaseException) -> FarmError:
        if self.choice.hardware:
            return EncoderUnavailable(f"{self.choice.codec} failed to open: {e}")
        return UnsupportedCodec(f"{self.choice.codec} rejected profile {self.profile.name!r}: {e}")

    # -- thread body -------------------------------------------------------------------
    def run(self) -> None:
        stopped = False
        try:
            while (item := self.queue.get()) is not _STOP:
                if self.cancelled.is_set():
                    self._out.abort()
                    return
                self.handle(item)
            stopped = True
            if self.cancelled.is_set():
                self._out.abort()
                return
            self.finish()
            self.check()
        except BaseException as e:  # reported to the decoding thread, which re-raises
            self.error = e
            self._out.abort()
            # Keep taking input until the decoding thread's stop, unless it came already
            # (finishing failed): nothing more will be put then.
            while not stopped and not self.cancelled.is_set() and self.queue.get() is not _STOP:
                pass

    def handle(self, item: Any) -> None:
        """Process one queue item: an audio packet, a decoded frame, or the end of video."""
        if isinstance(item, av.Packet):
            self._mux_audio(item)
        elif isinstance(item, _Close):
            self.close_video(item.end)
            self._input_duration = float(item.duration)
        else:
            self.video(*item)

    def video(self, frame: av.VideoFrame, t: Fraction) -> None:
        """Take the next decoded frame at input time ``t`` (seconds)."""
        if self._rate is None:
            self._encode(frame, round(t / self._time_base))
            return
        if self._pending is not None:
            self._emit_pending(until=t)
        self._pending = (frame, t)

    def _emit_pending(self, until: Fraction) -> None:
        # Output frame k shows at k/fps; an input frame covers the output frames whose slot
        # starts in [its time, the next frame's time), so frames drop or repeat as needed.
        assert self._pending is not None and self._rate is not None
        frame, t = self._pending
        first, stop = round(t * self._rate), round(until * self._rate)
        if self._last_pts is not None:
            first = max(first, self._last_pts + 1)
        for k in range(first, stop):
            self._encode(frame, k)

    def _encode(self, frame: av.VideoFrame, pts: int) -> None:
        width, height = self._coded
        # Renditions are limited range: a full-range picture (a camera's Motion JPEG, a
        # screen recording) is converted, as swscale does not do by itself once a range is
        # given, and players show full-range values in an unflagged stream with crushed
        # blacks and clipped whites.
        full = frame.color_range == ColorRange.JPEG or frame.format.name.startswith("yuvj")
        scaled = self._scaler.reformat(
            frame,
            width,
            height,
            "yuv420p",
            interpolation=self._interpolation,
            src_color_range=ColorRange.JPEG if full else ColorRange.MPEG,
            dst_color_range=ColorRange.MPEG,
        )
        if self._turn is not None:
            scaled = self._turn(scaled)
        elif scaled is frame:
            # Same size and format as the input: give this rendition its own frame, since
            # pts and picture type are written on it.
            scaled = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
        scaled.pts = pts
        scaled.time_base = self._time_base
        scaled.pict_type = (
            av.video.frame.PictureType.I if self._frames == 0 else av.video.frame.PictureType.NONE
        )
        if self._first_pts is None:
            self._first_pts = pts
        self._last_pts = pts
        self._frames += 1
        if self.kept is None:
            packets = self._video.encode(scaled)
        else:
            packets = self._encode_kept(scaled, self.kept)
        for packet in packets:
            self._out.container.mux(packet)

    def _encode_kept(self, frame: av.VideoFrame, kept: StreamEncoder) -> list[av.Packet[Any]]:
        assert self._session is not None and frame.pts is not None
        if self._frames == 1 and not kept.takes(frame.pts):
            # The stream's timestamps went back (a restart, a wrap): a kept encoder would
            # see them out of order, so this segment starts a new one.
            cache = self._session.cache
            cache.drop(kept, "timestamps went back")
            self.kept = kept = cache.open(self._key, self._reopen)
            self.reused = False
        packets = kept.encode(frame)
        for packet in packets:
            packet.stream = self._video
        return packets

    def _mux_audio(self, packet: av.Packet[Any]) -> None:
        assert self._audio is not None
        # Each rendition muxes its own copy: muxing takes ownership of a packet's data.
        copy = av.Packet(bytes(packet))
        copy.pts, copy.dts, copy.time_base = packet.pts, packet.dts, packet.time_base
        copy.is_keyframe = packet.is_keyframe
        for out in self._adts.filter(copy) if self._adts is not None else (copy,):
            out.stream = self._audio
            self._out.container.mux(out)

    def check(self) -> None:
        """Verify the finished rendition, when the options ask for it."""
        if not self._verify or self.result is None:
            return
        started = time.perf_counter()
        if self._verifier is not None:
            self.failures = self._verifier.verdict(self.result, self._input_duration)
            self.verify_seconds = self._verifier.busy
            return
        self.failures = verify_rendition(self.result, self._input_duration, gpu=self._verify_gpu)
        self.verify_seconds = time.perf_counter() - started

    def abort(self) -> None:
        """Drop the output of a rendition that will not finish."""
        if self.result is None:
            self._out.abort()

    def join_verifier(self, timeout: float = 10.0) -> None:
        """Wait for the verifier following a dropped rendition: its buffer is closed, so it
        reads to the end at once. No verification outlives a failed transcode."""
        if self._verifier is not None:
            self._verifier.join(timeout)

    def close_video(self, end: Fraction) -> None:
        """Flush the last pending frame, holding it until ``end`` (seconds)."""
        if self._pending is not None:
            self._emit_pending(until=end)
            self._pending = None

    def finish(self) -> None:
        if self.kept is None:
            for packet in self._video.encode(None):
                self._out.container.mux(packet)
        else:
            # Never flushed: the encoder goes on with the stream's next segment.
            self.kept.end_segment()
        data = self._out.finish()
        tb = self._time_base
        first = self._first_pts or 0
        last = self._last_pts if self._last_pts is not None else first - 1
        frame_len = (Fraction(1) / self._rate) if self._rate else self._in_frame
        end = (last * tb + frame_len) if frame_len else (last + 1) * tb
        self.result = Rendition(
            profile=self.profile,
            data=data,
            fmt=self._out.fmt,
            encoder=self.choice.codec,
            width=self.width,
            height=self.height,
            frames=self._frames,
            pixels=self._frames * self.width * self.height,
            start=float(first * tb),
            end=float(end),
        )


def _choose(profiles: Sequence[VideoProfile], opts: EngineOptions) -> list[EncoderChoice]:
    choices = []
    for p in profiles:
        choice = choose_encoder(p.encoder, prefer_gpu=opts.prefer_gpu and opts.gpu is not None)
        if choice is None:
            raise UnsupportedCodec(f"no {p.encoder} encoder available for profile {p.name!r}")
        if opts.fmt == "mpegts" and p.encoder == "VP9":
            raise ProfileInvalid(f"profile {p.name!r}: VP9 cannot be carried in MPEG-TS; use mp4")
        choices.append(choice)
    return choices


def transcode(
    data: SourceInput,
    profiles: Sequence[VideoProfile],
    options: EngineOptions | None = None,
) -> TranscodeResult:
    """Transcode one segment into every profile in one pass.

    With ``options.session``, renditions whose encoder can keep its state between segments
    (farm.media.encoders) encode with the stream's kept encoders, which are kept again for
    the next segment when this one succeeds. A kept encoder whose output fails its checks is
    dropped and the segment done again with fresh encoders: never a wrong output.

    Raises a :class:`~farm.errors.PermanentError` for input or profiles that cannot work and
    a :class:`~farm.errors.RetryableError` for failures another attempt may not hit.
    """
    opts = options or EngineOptions()
    check_format(opts.fmt)
    if not profiles:
        raise ProfileInvalid("at least one profile is required")
    if opts.session is None:
        return _transcode(data, profiles, opts)
    try:
        return _transcode(data, profiles, opts)
    except StaleEncoder as e:
        log.warning("stream %s: %s; transcoding the segment afresh", opts.session.stream, e)
        opts.session.cache.refuse(e.codec)
        result = _transcode(data, profiles, replace(opts, session=None))
        result.encoders = {"reused": 0, "opened": 0, "fresh": len(profiles)}
        return result


def _transcode(
    data: SourceInput, profiles: Sequence[VideoProfile], opts: EngineOptions
) -> TranscodeResult:
    started = time.perf_counter()
    choices = _choose(profiles, opts)
    source = open_source(data, max_seconds=opts.max_seconds, gpu=opts.gpu, find_rotation=True)
    workers: list[_Rendition] = []
    try:
        aac = AudioToAac.needed(source.audio, opts.fmt)
        for p, choice in zip(profiles, choices, strict=True):
            workers.append(_Rendition(p, source, choice, opts, aac))
        opened = time.perf_counter()
        if opts.parallel:
            for w in workers:
                w.start()
        stats = _decode(source, workers, opts, started, aac)
        for w in workers:
            _hand(w, _STOP, opts.parallel)
        for w in workers:
            if opts.parallel:
                w.join()
            elif w.error is None:
                w.finish()
                w.check()
        _raise_first(workers)
    except BaseException as e:
        for w in workers:
            if w.is_alive():
                _drain_and_stop(w)
            else:
                w.abort()
        for w in workers:
            w.join_verifier()
        _keep(workers, opts.session, failed=e)
        raise
    finally:
        source.close()
    done = time.perf_counter()
    _keep(workers, opts.session)
    return TranscodeResult(
        renditions=[w.result for w in workers if w.result is not None],
        decoder=source.decoder,
        decoded_frames=stats["frames"],
        decoded_pixels=stats["pixels"],
        input_start=stats["start"],
        input_duration=stats["duration"],
        timings={
            "open": opened - started,
            "transcode": done - opened,
            "total": done - started,
            **({"verify": max(w.verify_seconds for w in workers)} if opts.verify else {}),
        },
        verification=[f for w in workers for f in w.failures] if opts.verify else None,
        encoders=_encoder_counts(workers) if opts.session is not None else None,
        spent=[source, *workers],
    )


def _keep(
    workers: Sequence[_Rendition],
    session: StreamSession | None,
    failed: BaseException | None = None,
) -> None:
    """Hand the kept encoders of a finished segment back to the stream, or drop them when
    the segment (or that rendition's checks) failed."""
    if session is None:
        return
    for w in workers:
        if w.kept is None:
            continue
        if failed is None and not w.failures:
            session.cache.give_back(w.kept)
        else:
            why = f"{type(failed).__name__}: {failed}" if failed else "verification failed"
            session.cache.drop(w.kept, why)
        w.kept = None


def _encoder_counts(workers: Sequence[_Rendition]) -> dict[str, int]:
    """How this segment's renditions got their encoders: kept from the stream's previous
    segment, newly opened to be kept, or opened for this segment alone."""
    reused = sum(1 for w in workers if w.reused)
    kept = sum(1 for w in workers if w.keeps)
    return {"reused": reused, "opened": kept - reused, "fresh": len(workers) - kept}


def _hand(worker: _Rendition, item: Any, parallel: bool) -> None:
    if not parallel:
        if worker.error is None and item is not _STOP:
            try:
                worker.handle(item)
            except BaseException as e:
                worker.error = e
        return
    while True:
        try:
            worker.queue.put(item, timeout=0.5)
            return
        except queue.Full:
            if not worker.is_alive():
                return


def _drain_and_stop(worker: _Rendition) -> None:
    """Stop a rendition thread that will get no more input, whatever state it is in."""
    worker.cancelled.set()
    while True:
        try:
            worker.queue.get_nowait()
        except queue.Empty:
            break
    with contextlib.suppress(queue.Full):
        worker.queue.put_nowait(_STOP)  # the queue was just emptied; only this thread puts
    worker.join()


def _raise_first(workers: Sequence[_Rendition]) -> None:
    for w in workers:
        if w.error is not None:
            if isinstance(w.error, FarmError | StaleEncoder):
                raise w.error
            raise EngineFailure(f"rendition {w.profile.name!r} failed: {w.error}") from w.error


def _decode(
    source: Source,
    workers: Sequence[_Rendition],
    opts: EngineOptions,
    started: float,
    aac: AudioToAac | None = None,
) -> dict[str, Any]:
    video, audio = source.video, source.audio
    tb = video.time_base
    assert tb is not None
    frames = pixels = untimed = 0
    first_t: Fraction | None = None
    last_t: Fraction | None = None
    streams = [s for s in (video, audio) if s is not None]
    deadline = started + opts.deadline_s if opts.deadline_s else None
    frame_len = Fraction(1) / source.frame_rate if source.frame_rate else Fraction(1, 30)
    # Half a frame early, so the first picture to show is not lost to rounding.
    hidden = Fraction(opts.show_from) - frame_len / 2 if opts.show_from is not None else None
    try:
        with av.logging.Capture() as logs:
            for packet in source.container.demux(streams):
                if deadline is not None and time.perf_counter() > deadline:
                    raise TranscodeTimeout(
                        f"transcode passed its {opts.deadline_s:g} s deadline after {frames} frames"
                    )
                if packet.stream is audio:
                    _check_audio(packet)
                    if packet.size:
                        for out in aac.encode(packet) if aac is not None else (packet,):
                            for w in workers:
                                _hand(w, out, opts.parallel)
                    continue
                if packet.is_corrupt:
                    raise InputCorrupt(f"corrupt video packet at {_when(packet.pts, tb)}")
                for decoded in packet.decode():
                    frame = cast(av.VideoFrame, decoded)
                    if frame.is_corrupt:
                        raise InputCorrupt(f"corrupt video frame at {_when(frame.pts, tb)}")
                    if frame.pts is None:
                        untimed += 1
                        continue
                    t = frame.pts * tb
                    if hidden is not None and t < hidden:
                        continue  # a primer's picture: it only primes the decoder
                    if first_t is None:
                        first_t = t
                    if t - first_t > opts.max_seconds:
                        raise InputTooLong(f"input runs past the {opts.max_seconds:g} s limit")
                    if last_t is not None and t <= last_t:
                        continue  # a repeated or out-of-order timestamp would break the output
                    last_t = t
                    frames += 1
                    pixels += frame.width * frame.height
                    for w in workers:
                        _hand(w, (frame, t), opts.parallel)
                _raise_first(workers)
            for out in aac.encode(None) if aac is not None else ():
                for w in workers:
                    _hand(w, out, opts.parallel)
            _check_logs(logs)
    except av.FFmpegError as e:
        raise InputCorrupt(f"video cannot be decoded: {e}") from e
    if first_t is None or last_t is None:
        if untimed:
            raise InputInvalid(
                f"the {untimed} video frames have no timestamps ({source.format_name} is a raw "
                "stream?): send them in a container such as MPEG-TS, MP4 or Matroska"
            )
        raise InputCorrupt("no decodable video frames in the input")
    end = last_t + frame_len
    # MP4/MOV that stops early (a faststart file cut short) demuxes without an error; its
    # header says how long its video is (after its edit list: a trimmed phone video holds
    # samples it does not show, so its sample count says nothing).
    declared = source.video.duration
    if source.format_name.startswith("mov") and declared and opts.show_from is None:
        length = declared * tb
        if length - (end - first_t) > 2 * frame_len:
            raise InputCorrupt(
                f"input is truncated: its video ends {float(end - first_t):.3f} s in, of the "
                f"{float(length):.3f} s its header declares"
            )
    for w in workers:
        _hand(w, _Close(end, end - first_t), opts.parallel)
    return {
        "frames": frames,
        "pixels": pixels,
        "start": float(first_t),
        "duration": float(end - first_t),
    }


_AAC_OBJECTS = {"Main": 1, "LC": 2, "SSR": 3, "LTP": 4, "HE-AAC": 2, "HE-AACv2": 2}


def adts_to_mp4(source: av.AudioStream, out: av.AudioStream) -> BitStreamFilterContext | None:
    """For ADTS AAC (as MPEG-TS carries it) going into MP4: a filter that strips the ADTS
    headers, and the AudioSpecificConfig the MP4 header needs before the first packet."""
    ctx = source.codec_context
    if codec_name(source) != "aac" or ctx.extradata or ctx.sample_rate not in AAC_RATES:
        return None
    obj = _AAC_OBJECTS.get(ctx.profile or "LC", 2)
    channels = ctx.channels if ctx.channels in range(1, 7) else (7 if ctx.channels == 8 else 2)
    config = (obj << 11) | (AAC_RATES.index(ctx.sample_rate) << 7) | (channels << 3)
    bsf = BitStreamFilterContext("aac_adtstoasc", source)
    out.codec_context.extradata = config.to_bytes(2, "big")
    return bsf


class _Turn:
    """Turns a rendition's scaled pictures, ``width`` x ``height`` as coded, upright:
    ``degrees`` clockwise (90, 180 or 270), as FFmpeg's own autorotation does with its
    filters."""

    _FILTERS = {
        90: [("transpose", "clock")],
        180: [("hflip", ""), ("vflip", "")],
        270: [("transpose", "cclock")],
    }

    def __init__(self, degrees: int, width: int, height: int) -> None:
        self._graph = av.filter.Graph()
        node = self._graph.add_buffer(
            width=width,
            height=height,
            format=av.VideoFormat("yuv420p"),
            time_base=Fraction(1, 90000),
        )
        for name, arg in self._FILTERS[degrees]:
            step = self._graph.add(name, arg)
            node.link_to(step)
            node = step
        node.link_to(self._graph.add("buffersink"))
        self._graph.configure()

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        self._graph.vpush(frame)
        return self._graph.vpull()


class _Close:
    """Queue item: flush the pending frame up to ``end``; the input lasted ``duration``."""

    def __init__(self, end: Fraction, duration: Fraction) -> None:
        self.end = end
        self.duration = duration


def _check_audio(packet: av.Packet[Any]) -> None:
    # An ADTS frame states its own length: a shorter packet is the cut end of a truncated
    # segment, which the demuxer passes on without complaint.
    if not packet.size or codec_name(packet.stream) != "aac":
        return
    head = bytes(packet)[:7]
    if len(head) == 7 and head[0] == 0xFF and head[1] & 0xF0 == 0xF0:
        length = ((head[3] & 0x03) << 11) | (head[4] << 3) | (head[5] >> 5)
        if length > packet.size:
            raise InputCorrupt(
                f"input is truncated: an audio frame at {_when(packet.pts, packet.time_base)} "
                f"has {packet.size} of its {length} bytes"
            )


def _when(pts: int | None, tb: Fraction | None) -> str:
    return "unknown time" if pts is None or tb is None else f"{float(pts * tb):.3f} s"


_FATAL_LOG_MARKS = ("Invalid NAL unit size", "error while decoding MB", "concealing")


def _check_logs(logs: list[tuple[int, str, str]]) -> None:
    # The H.264 decoder conceals damaged slices instead of failing; a truncated or damaged
    # segment shows up only in its log, and a concealed picture is not a good rendition.
    for level, name, message in logs:
        if level <= av.logging.ERROR and any(mark in message for mark in _FATAL_LOG_MARKS):
            raise InputCorrupt(f"video is damaged: {name}: {message.strip()}")
