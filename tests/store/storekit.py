"""Helpers shared by the store tests."""

import trio


async def chunks(data: bytes, size: int = 65536):
    for i in range(0, len(data), size):
        yield data[i:i + size]
        await trio.sleep(0)


async def read_all(it) -> bytes:
    return b"".join([piece async for piece in it])
