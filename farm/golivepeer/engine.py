"""The transcode step on a go-livepeer transcoder, in the shape of the local engine.

farm.tasks runs the same job-store and blob-store steps around it as around
:func:`farm.media.engine.transcode`; this step pushes the segment to an attached transcoder
through the hub, then reads the renditions it posted back (size, frames, timestamps) so they
can be verified, stored and reported exactly as local renditions are.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Sequence
from fractions import Fraction

import av

from farm.errors import ProfileInvalid, VerificationFailed
from farm.golivepeer.hub import Hub, NoTranscoder, Part
from farm.golivepeer.wire import job_capabilities, to_net_profile
from farm.media.engine import EngineOptions
from farm.media.output import MIME_TYPES, check_format
from farm.media.profiles import VideoProfile
from farm.media.result import Rendition, TranscodeResult
from farm.media.source import open_source
from farm.timeouts import segment_timeout

__all__ = ["RemoteEngine", "probe_rendition"]


def _video_timing(data: bytes, rate: Fraction | None) -> tuple[int, int, int, float, float, str]:
    """(width, height, frames, start, end, codec) of the first video stream's packets."""
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        pts = sorted(p.pts for p in container.demux(stream) if p.size and p.pts is not None)
        tb = stream.time_base
        if not pts or tb is None:
            raise VerificationFailed("no timed video packets")
        guessed = stream.average_rate or stream.guessed_rate
        frame_len = (
            Fraction(1) / rate
            if rate
            else (
                (pts[-1] - pts[0]) * tb / (len(pts) - 1)
                if len(pts) > 1
                else (Fraction(1) / Fraction(guessed) if guessed else Fraction(1, 30))
            )
        )
        ctx = stream.codec_context
        return (
            ctx.width,
            ctx.height,
            len(pts),
            float(pts[0] * tb),
            float(pts[-1] * tb + frame_len),
            ctx.name,
        )


def probe_rendition(profile: VideoProfile, part: Part, fmt: str) -> Rendition:
    """A posted part as a Rendition; VerificationFailed when it is not the expected media."""
    if part.content_type.lower() != MIME_TYPES[fmt]:
        raise VerificationFailed(
            f"{profile.name}: the transcoder sent {part.content_type!r}, not {MIME_TYPES[fmt]}"
        )
    try:
        width, height, frames, start, end, codec = _video_timing(part.data, profile.frame_rate)
    except (av.FFmpegError, IndexError) as e:
        raise VerificationFailed(f"{profile.name}: the rendition does not demux: {e}") from e
    return Rendition(
        profile=profile,
        data=part.data,
        fmt=fmt,
        encoder=f"golivepeer/{codec}",
        width=width,
        height=height,
        frames=frames,
        pixels=part.pixels,
        start=start,
        end=end,
    )


class RemoteEngine:
    """Called by farm.tasks in place of the local engine on the node's bridge."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def __call__(
        self, data: bytes, profiles: Sequence[VideoProfile], opts: EngineOptions
    ) -> TranscodeResult:
        from farm.media.verify import verify_result

        started = time.perf_counter()
        check_format(opts.fmt)
        # Bad input fails here exactly as on a local worker, without bothering a transcoder.
        source = open_source(data, max_seconds=opts.max_seconds)
        source.close()
        _, _, frames, start, end, codec = _video_timing(data, None)
        try:
            for p in profiles:
                to_net_profile(p, opts.fmt)
            job_capabilities(profiles, opts.fmt, codec)
        except ProfileInvalid as e:
            # Another worker may take it: the job is fine, go-livepeer cannot express it.
            raise NoTranscoder(f"no go-livepeer transcoder can take this job: {e}") from e
        duration = end - start
        timeout = opts.deadline_s or segment_timeout(duration)
        transcoder, outcome = self.hub.run(
            data, profiles, opts.fmt, duration, timeout, uuid.uuid4().hex, codec
        )
        if len(outcome.parts) != len(profiles):
            raise VerificationFailed(
                f"{transcoder.name} returned {len(outcome.parts)} rendition(s) "
                f"for {len(profiles)} profile(s)"
            )
        renditions = [
            probe_rendition(p, part, opts.fmt)
            for p, part in zip(profiles, outcome.parts, strict=True)
        ]
        done = time.perf_counter()
        result = TranscodeResult(
            renditions=renditions,
            decoder=f"{codec} ({transcoder.name} at {transcoder.address})",
            decoded_frames=frames,
            decoded_pixels=outcome.decoded_pixels,
            input_start=start,
            input_duration=duration,
            timings={"total": done - started, "remote": done - started},
        )
        if opts.verify:
            report = verify_result(result)
            result.verification = list(report.failures)
            result.timings["verify"] = report.seconds
        if not result.verification:
            self.hub.credit(transcoder, result.encoded_pixels)
        return result
