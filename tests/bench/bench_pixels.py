"""make bench-pixels: CPU per segment of the gateway's pixel check, counted from packets
against decoding every frame, on the renditions make bench-gateway's segments become.

A 2-second 360p30 segment (as bench_gateway_paths sends) is transcoded by the engine into
P240p30fps16x9 and P144p30fps16x9 in MPEG-TS; each rendition is then counted N times each
way, alternating, on one thread. Printed per segment (both renditions): CPU milliseconds of
farm.media.pixels.demuxed_pixels and of decoded_pixels side by side, and decoded/demuxed.
The two counts are checked to agree first: a faster count that differs is worth nothing.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from farm.media.engine import EngineOptions, transcode
from farm.media.pixels import PixelCount, decoded_pixels, demuxed_pixels
from farm.media.profiles import profile_by_name
from farm.media.synth import make_segment

LADDER = ("P240p30fps16x9", "P144p30fps16x9")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="counts of each rendition each way")
    parser.add_argument("--fmt", default="mpegts", choices=["mpegts", "mp4"])
    args = parser.parse_args()
    result = transcode(
        make_segment(640, 360, 30, 2.0),
        [profile_by_name(name) for name in LADDER],
        EngineOptions(fmt=args.fmt, prefer_gpu=False),
    )
    renditions = [(r.profile.name, r.data) for r in result.renditions]
    for name, data in renditions:
        fast, full = demuxed_pixels(data, args.fmt), decoded_pixels(data, args.fmt)
        if fast != full:
            raise SystemExit(f"{name}: counted {fast} from packets, {full} decoded")
        print(f"{name}: {full.frames} frames {full.width}x{full.height}, {len(data)} bytes")
    spent = {"demuxed": 0.0, "decoded": 0.0}
    ways: dict[str, Callable[[bytes, str], PixelCount | None]] = {
        "demuxed": demuxed_pixels,
        "decoded": decoded_pixels,
    }
    for _ in range(args.runs):
        for way, count in ways.items():
            started = time.process_time()
            for _, data in renditions:
                count(data, args.fmt)
            spent[way] += time.process_time() - started
    demuxed, decoded = (spent[w] / args.runs * 1000 for w in ("demuxed", "decoded"))
    print(
        f"pixel count CPU per segment ({len(renditions)} renditions, {args.runs} runs, "
        f"load {os.getloadavg()[0]:.1f}): demuxed {demuxed:.2f} ms, decoded {decoded:.2f} ms, "
        f"decoded/demuxed {decoded / demuxed:.1f}x"
    )


if __name__ == "__main__":
    main()
