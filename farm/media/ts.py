"""The H.264 video of a plain MPEG transport stream, PES by PES, without opening a demuxer.

For the pixel count of a rendition (farm.media.pixels) opening the container with FFmpeg's
demuxer costs more than reading its headers: the probe decodes a picture, and each packet
crosses into Python. A rendition a transcoder muxed (FFmpeg's muxer, go-livepeer's or this
farm's) is the simplest case of ISO/IEC 13818-1: one program, one H.264 stream, one access
unit per PES. :func:`h264_pes` reads exactly that case and answers None for anything else, so
that the caller takes FFmpeg's path instead: a lost sync byte or a length that is not a whole
number of packets, a transport error or a scrambled packet, a continuity count that skips or
repeats on the video PID, a PAT or PMT that changes or comes after the video starts, more or
other than one H.264 video stream, a PES that is not a video PES, is empty or whose length
disagrees with its bytes.
"""

from __future__ import annotations

__all__ = ["h264_pes"]

_PACKET = 188
_H264 = 0x1B
#: stream_type values of audio a rendition may carry beside its video (MPEG-1/2 audio, AAC
#: in ADTS and LATM, AC-3, E-AC-3): any other stream, which FFmpeg might take for video
#: (private data, say), is not the plain case.
_AUDIO_TYPES = frozenset({0x03, 0x04, 0x0F, 0x11, 0x81, 0x87})
#: PIDs below this carry tables (the PAT, CAT and DVB's service information).
_TABLES = 0x20


def h264_pes(data: bytes) -> list[bytes] | None:
    """The payloads of the H.264 stream's PES packets, in order; None when the stream is not
    the plain case this reads (see the module)."""
    if not data or len(data) % _PACKET:
        return None
    pmt_pid: int | None = None
    pmt: bytes | None = None
    video: int | None = None
    listed: frozenset[int] = frozenset()
    counter = -1
    payloads: list[bytes] = []
    pes = bytearray()
    started = False
    view = memoryview(data)
    for pos in range(0, len(data), _PACKET):
        b1, b2, b3 = data[pos + 1], data[pos + 2], data[pos + 3]
        if data[pos] != 0x47 or b1 & 0x80 or b3 & 0xC0:
            return None  # sync lost, a transport error, or scrambled
        pid = (b1 & 0x1F) << 8 | b2
        unit_start = b1 & 0x40
        control = b3 & 0x30
        start = pos + 4
        if control & 0x20:  # an adaptation field
            start += 1 + data[pos + 4]
            if start > pos + _PACKET:
                return None
        has_payload = control & 0x10
        if pid == video:
            if has_payload:
                cc = b3 & 0x0F
                if counter >= 0 and cc != (counter + 1) & 0x0F:
                    return None
                counter = cc
                if unit_start:
                    if started and not _close(pes, payloads):
                        return None
                    pes = bytearray(view[start : pos + _PACKET])
                    started = True
                elif started:
                    pes += view[start : pos + _PACKET]
                else:
                    return None  # video bytes before the first PES start
            continue
        if pid == 0x1FFF or not has_payload or (0 < pid < _TABLES):
            continue  # null packets, adaptation-only packets, service information
        if pid not in listed and pid not in (0, pmt_pid):
            # A stream's packets before its program says what it is, or of a PID the
            # program does not list: FFmpeg's demuxer may add a stream for either.
            return None
        if pid == 0 or pid == pmt_pid:
            if not unit_start:
                return None  # a table spread over packets: not the plain case
            section = _section(data[start : pos + _PACKET])
            if section is None:
                return None
            if pid == 0:
                program = _one_program(section)
                if program is None or (pmt_pid is not None and program != pmt_pid):
                    return None
                pmt_pid = program
            else:
                if pmt is not None:
                    if section != pmt:
                        return None  # the program changed
                    continue
                if started:
                    return None
                streams = _one_h264_stream(section)
                if streams is None:
                    return None
                video, listed = streams
                pmt = section
    if not started or not _close(pes, payloads):
        return None
    return payloads


def _close(pes: bytearray, payloads: list[bytes]) -> bool:
    """Take one whole video PES: its elementary stream bytes onto ``payloads``."""
    if len(pes) < 9 or pes[0:3] != b"\x00\x00\x01" or not 0xE0 <= pes[3] <= 0xEF:
        return False
    length = pes[4] << 8 | pes[5]
    if length and length != len(pes) - 6:
        return False
    if pes[6] & 0xC0 != 0x80:  # the '10' marker of the optional PES header
        return False
    start = 9 + pes[8]
    if start >= len(pes):
        return False
    payloads.append(bytes(pes[start:]))
    return True


def _section(payload: bytes) -> bytes | None:
    """The PSI section a payload starts (past its pointer field), CRC and all; None when it
    does not fit in the packet."""
    if not payload:
        return None
    start = 1 + payload[0]
    if start + 3 > len(payload):
        return None
    length = (payload[start + 1] & 0x0F) << 8 | payload[start + 2]
    end = start + 3 + length
    if length < 9 or end > len(payload):
        return None
    return bytes(payload[start:end])


def _one_program(section: bytes) -> int | None:
    """The PMT PID of a PAT that lists exactly one program."""
    if section[0] != 0x00:
        return None
    entries = section[8:-4]
    programs = [
        (entries[i + 2] & 0x1F) << 8 | entries[i + 3]
        for i in range(0, len(entries) - 3, 4)
        if entries[i] << 8 | entries[i + 1]  # program 0 is the network PID
    ]
    return programs[0] if len(programs) == 1 and len(entries) % 4 == 0 else None


def _one_h264_stream(section: bytes) -> tuple[int, frozenset[int]] | None:
    """The PID of a PMT's one stream that is not audio, when it is H.264, and the PIDs of
    all its streams."""
    if section[0] != 0x02 or len(section) < 16:
        return None
    info_length = (section[10] & 0x0F) << 8 | section[11]
    pos, end = 12 + info_length, len(section) - 4
    found: list[tuple[int, int]] = []
    pids: set[int] = set()
    while pos + 5 <= end:
        kind = section[pos]
        pid = (section[pos + 1] & 0x1F) << 8 | section[pos + 2]
        pos += 5 + ((section[pos + 3] & 0x0F) << 8 | section[pos + 4])
        pids.add(pid)
        if kind not in _AUDIO_TYPES:
            found.append((kind, pid))
    if pos != end or len(found) != 1 or found[0][0] != _H264 or pids & {0, 0x1FFF}:
        return None
    return found[0][1], frozenset(pids)
