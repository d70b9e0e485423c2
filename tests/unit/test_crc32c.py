"""appliance.crc32c against the reference implementation (Debian's crc32c module), on both
sides of the size where the GIL starts being released, chained and in one piece."""

import os

import crc32c as reference
import pytest

from appliance import crc32c as ours


@pytest.mark.parametrize("size", [0, 1, 80, ours.GIL_RELEASE_MIN - 1, ours.GIL_RELEASE_MIN,
                                  (1 << 20) + 3])
def test_matches_the_reference_for_every_buffer_kind(size):
    data = os.urandom(size)
    want = reference.crc32c(data)
    assert ours.crc32c(data) == want
    assert ours.crc32c(bytearray(data)) == want
    assert ours.crc32c(memoryview(bytearray(data))[0:size]) == want
    half = size // 2
    assert ours.crc32c(data[half:], ours.crc32c(data[:half])) == want
    assert ours.crc32c_at(b"xx" + data + b"y", 2, size) == want


def test_standard_check_value():
    assert ours.crc32c(b"123456789") == 0xE3069283
    assert ours.hardware_based
