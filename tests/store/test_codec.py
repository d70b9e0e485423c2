"""Codec: the data-fragment fast path returns exactly what pyeclib's decode returns."""

import hypothesis.strategies as st
from hypothesis import given, settings

from appliance.store.codec import Codec, PoolSpec

CODECS = {name: Codec(PoolSpec.parse(name)) for name in ("ec:4+2", "ec:3+1", "ec:6+5")}


def segments(small_max: int):
    """(codec, segment bytes): sizes up to ``small_max`` or just under a full 1 MiB segment."""
    sizes = st.one_of(st.integers(1, small_max), st.integers((1 << 20) - 100, 1 << 20))
    return st.tuples(st.sampled_from(sorted(CODECS)), sizes, st.integers(0, 2**32 - 1)).map(
        lambda t: (CODECS[t[0]], (t[2].to_bytes(4, "little") * (t[1] // 4 + 1))[:t[1]]))


@settings(max_examples=60, deadline=None)
@given(case=segments(5000))
def test_data_fragments_join_equals_pyeclib_decode(case):
    codec, data = case
    frags = dict(enumerate(codec.encode(data)))
    k = codec.spec.k
    data_only = {i: frags[i] for i in range(k)}
    assert codec._join_data([frags[i] for i in range(k)]) == data
    assert codec.decode(data_only) == data
    # with a parity fragment in the set, pyeclib decodes; the result is the same
    mixed = {i: frags[i] for i in list(range(1, k)) + [k]}
    assert codec.decode(mixed) == data


def test_fragments_out_of_place_are_left_to_pyeclib():
    codec = CODECS["ec:4+2"]
    data = bytes(range(256)) * 4096
    frags = codec.encode(data)
    # swapped positions: the headers name other indices, so the fast path declines
    assert codec._join_data([frags[1], frags[0], frags[2], frags[3]]) is None
    # a damaged header magic also sends it to pyeclib
    bad = bytearray(frags[0])
    bad[59] ^= 0xFF
    assert codec._join_data([bytes(bad), frags[1], frags[2], frags[3]]) is None
    assert codec.decode({i: f for i, f in enumerate(frags)}) == data


@settings(max_examples=60, deadline=None)
@given(case=segments(70000))
def test_isal_encoder_writes_exactly_pyeclibs_fragments(case):
    codec, data = case
    assert codec._encoder is not None  # libisal2 is a dependency: the fast path is in use
    ours = [bytes(f) for f in codec.encode(data)]
    assert ours == codec._driver.encode(data)
    # and pyeclib decodes them from any K, parity included
    k = codec.spec.k
    assert codec._driver.decode(ours[-k:]) == data


@settings(max_examples=60, deadline=None)
@given(case=segments(70000), cuts=st.lists(st.integers(0, 1 << 20), max_size=6),
       fill=st.integers(1, 255))
def test_segment_given_as_pieces_encodes_like_pyeclib(case, cuts, fill):
    """A segment handed over as the pieces it was received in (bytes, memoryview slices,
    bytearrays) gives pyeclib's fragments; the fragments are allocated unfilled, so memory
    just freed full of ``fill`` bytes is recycled first: any byte the encoder forgets to set
    (header or data padding) shows up as a difference."""
    codec, data = case
    assert codec._encoder is not None
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    kinds = (bytes, bytearray, lambda b: memoryview(b"." + b)[1:])
    pieces = [kinds[i % 3](data[a:b]) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]
    size = 80 + -(-len(data) // codec.spec.k)
    junk = [bytearray([fill]) * size for _ in range(2 * codec.spec.width)]
    del junk
    ours = [bytes(f) for f in codec.encode(pieces)]
    assert ours == codec._driver.encode(data)


@settings(max_examples=60, deadline=None)
@given(case=segments(5000))
def test_data_layout_places_the_segment_in_the_data_fragments(case):
    codec, data = case
    n, k = len(data), codec.spec.k
    frags = codec.encode(data)
    skip, shares = codec.data_layout(n)
    # the K shares tile the segment exactly: every byte comes from one fragment
    assert shares[0][0] == 0 and shares[-1][1] == n
    assert all(shares[i][1] == shares[i + 1][0] for i in range(k - 1))
    for i, (a, b) in enumerate(shares):
        assert bytes(frags[i][skip:skip + b - a]) == data[a:b]
    heads = [bytes(frags[i][:skip]) for i in range(k)]
    assert codec.data_headers_match(heads, n)
    assert not codec.data_headers_match(heads, n + 1)
    assert not codec.data_headers_match([heads[1], heads[0], *heads[2:]], n)


def test_replicated_pools_have_no_data_layout():
    assert Codec(PoolSpec.parse("replicated:3")).data_layout(1000) is None
