"""Zip archives (.npz files) with a header field changed, for tests of damaged files."""

import io
import struct
import zipfile


def zip_field(data: bytes, local: int, central: int, value: int) -> bytes:
    """``data`` (a zip) with a 2-byte field set to ``value`` in every member's local header (at
    offset ``local``) and central directory entry (at offset ``central``)."""
    out = bytearray(data)
    pos = struct.unpack("<I", data[data.rfind(b"PK\x05\x06") + 16 :][:4])[0]
    for info in zipfile.ZipFile(io.BytesIO(data)).infolist():
        struct.pack_into("<H", out, info.header_offset + local, value)
        struct.pack_into("<H", out, pos + central, value)
        n, m, k = struct.unpack("<HHH", data[pos + 28 : pos + 34])
        pos += 46 + n + m + k
    return bytes(out)
