"""Records counted from the file itself, independently of the reader that stages them."""

from __future__ import annotations

import io
import random

from omop_etl.extract.records import scan


def _reference(data: bytes, quote: bytes) -> tuple[int, bool]:
    """Byte by byte: a record ends at a line feed outside quotes; a line that is empty
    (or only a carriage return) is no record."""
    records, in_quote, line = 0, False, b""
    for byte in data:
        c = bytes([byte])
        if quote and c == quote:
            in_quote = not in_quote
        if c == b"\n" and not in_quote:
            records += line not in (b"", b"\r")
            line = b""
        else:
            line += c
    if line not in (b"", b"\r") and not in_quote:
        records += 1
    return records, in_quote


def test_the_vectorized_count_agrees_with_a_byte_by_byte_count_at_every_chunk_size():
    rng = random.Random(7)
    alphabet = [b"a", b",", b'"', b"\n", b"\r", b"\r\n", b"\n\n", b"x y"]
    for _ in range(300):
        data = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        for quote in (b'"', b""):
            expected = _reference(data, quote)
            for chunk in (1, 2, 3, 5, 8, 1 << 20):
                assert scan(io.BytesIO(data), quote, chunk) == expected, (data, quote, chunk)


def test_quoted_line_feeds_and_blank_lines():
    data = b'id,text\r\n1,"two\r\nlines"\r\n\r\n2,plain\r\n3,"a ""quoted"" word"\n\n4,last'
    assert scan(io.BytesIO(data), b'"') == (5, False)
    # a quote that never closes: no record ends, and the count says the quote is open
    assert scan(io.BytesIO(b'1,"never closed\n2,x\n'), b'"') == (0, True)
