import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iris.core.messages as im
import overlay.messages as m
from overlay.ids import RING
from overlay.wire import MAX_FRAME, WIRE_VERSION, DecodeError, decode, encode

ids = st.integers(min_value=0, max_value=RING - 1)
id_lists = st.lists(ids, max_size=m.MAX_LIST).map(tuple)
u64 = st.integers(min_value=0, max_value=2**64 - 1)

lookups = st.builds(m.Lookup, ids, st.integers(0, 2**32 - 1))
messages = st.one_of(
    st.builds(m.Heartbeat, id_lists),
    st.builds(m.Ping, u64, st.booleans(), st.booleans(), st.integers(0, 32)),
    st.builds(m.Pong, u64, st.booleans(), st.none() | id_lists,
              st.lists(ids, max_size=16).map(tuple),
              st.lists(st.integers(0, m.MAX_RTT_US), max_size=16).map(tuple)),
    st.builds(m.JoinRequest, ids),
    st.builds(m.JoinReply, id_lists, st.none() | id_lists),
    st.builds(m.Hello, st.floats(min_value=0, max_value=3600)),
    st.just(m.Leave()),
    st.builds(m.Departed, ids, st.booleans()),
    st.builds(m.RowRequest, st.integers(0, 31)),
    st.builds(m.RowReply, st.integers(0, 31), st.lists(ids, max_size=16).map(tuple),
              st.lists(st.integers(0, m.MAX_RTT_US), max_size=16).map(tuple)),
    st.builds(m.Route, ids, u64, ids, st.integers(0, m.MAX_HOPS), lookups),
    st.builds(m.RouteAck, st.lists(u64, max_size=m.MAX_ACKS).map(tuple)),
    lookups,
    st.builds(m.Direct, u64, lookups),
)

small = st.binary(max_size=200)
weights = st.integers(0, 2**32 - 1)
paths = st.lists(ids, max_size=im.MAX_ANCESTORS).map(tuple)
messaging = st.one_of(
    st.builds(im.Subscribe, ids, ids, weights, weights),
    st.builds(im.TreeAck, ids, weights, paths),
    st.builds(im.Prune, ids),
    st.builds(im.TreeUp, st.lists(st.tuples(ids, weights), max_size=5).map(tuple)),
    st.builds(im.TreeDown, st.lists(st.tuples(ids, weights, paths), max_size=5).map(tuple)),
    st.builds(im.Request, ids, u64, ids, st.integers(0, im.MAX_WALK_HOPS), small, weights),
    st.builds(im.Reply, u64, st.integers(0, 3), small, st.text(max_size=50)),
    st.builds(im.Flood, ids, ids, u64, st.lists(small, min_size=1, max_size=4).map(tuple)),
    st.builds(im.TunnelOpen, ids, ids, u64, st.integers(0, im.MAX_WALK_HOPS), weights),
    st.builds(im.TunnelAccept, ids, u64, weights),
    st.builds(im.TunnelData, ids, u64, u64, u64, small),
    st.builds(im.TunnelCredit, ids, u64, u64),
    st.builds(im.TunnelClose, ids, u64, st.integers(0, im.LOST), st.text(max_size=50)),
    st.builds(im.SurveyAsk, ids, ids, u64, weights, weights, small),
    st.builds(im.SurveyAnswers, ids, u64, st.booleans(), weights, st.booleans(),
              st.lists(st.tuples(ids, small), max_size=5).map(tuple)),
)


@given(messaging)
def test_every_messaging_message_round_trips(msg):
    assert decode(encode(msg)) == msg
    assert decode(encode(m.Route(1, 2, 3, 4, msg))).payload == msg


@settings(max_examples=300)
@given(messaging, st.integers(0, 10_000), st.integers(1, 255))
def test_mutated_messaging_frames_only_raise_decode_error(msg, where, xor):
    frame = bytearray(encode(msg))
    frame[where % len(frame)] ^= xor
    with contextlib.suppress(DecodeError):
        decode(bytes(frame))


@given(messages)
def test_every_message_round_trips(msg):
    assert decode(encode(msg)) == msg


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_decode_error(data):
    with contextlib.suppress(DecodeError):
        decode(data)


@settings(max_examples=500)
@given(messages, st.data())
def test_mutated_frames_only_raise_decode_error(msg, data):
    frame = bytearray(encode(msg))
    action = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if action == "flip":
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] ^= data.draw(st.integers(1, 255))
    elif action == "truncate":
        frame = frame[: data.draw(st.integers(0, len(frame) - 1))]
    elif action == "extend":
        frame += data.draw(st.binary(min_size=1, max_size=20))
    else:
        i = data.draw(st.integers(0, len(frame)))
        frame[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    with contextlib.suppress(DecodeError):
        decode(bytes(frame))


@given(st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats()
    | st.binary(max_size=40) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=30,
))
def test_well_formed_msgpack_of_any_shape_only_raises_decode_error(obj):
    frames = [msgpack.packb(obj), msgpack.packb([WIRE_VERSION, 11, obj, obj, obj, obj, obj])]
    for frame in frames:
        with contextlib.suppress(DecodeError):
            decode(frame)


@pytest.mark.parametrize(
    "body, reason",
    [
        ([WIRE_VERSION + 1, 2, 1, False, False], "version"),
        ([True, 2, 1, False, False], "version"),
        ([WIRE_VERSION, 99], "unknown"),
        ([WIRE_VERSION, 2, 1, False], "fields"),
        ([WIRE_VERSION, 2, -1, False, False, 0], "range"),
        ([WIRE_VERSION, 2, 1, 0, False, 0], "bool"),
        ([WIRE_VERSION, 4, b"short"], "16 bytes"),
        ([WIRE_VERSION, 1, b"x" * 17, 0], "multiple of 16"),
        ([WIRE_VERSION, 1, b"x" * 16 * (m.MAX_LIST + 1), 0], "longer"),
        ([WIRE_VERSION, 1, b"x" * 16, m.NO_FAILURE + 1], "range"),
        ([WIRE_VERSION, 6, float("nan")], "range"),
        ([WIRE_VERSION, 44, b"o" * 16, 1, im.LOST + 1, "why"], "range"),  # no such close code
        ([WIRE_VERSION, 11, b"k" * 16, 1, b"o" * 16, 1, []], "nested"),
        ([WIRE_VERSION, 11, b"k" * 16, 1, b"o" * 16, 1,
          [11, b"k" * 16, 1, b"o" * 16, 1,
           [11, b"k" * 16, 1, b"o" * 16, 1,
            [11, b"k" * 16, 1, b"o" * 16, 1,
             [11, b"k" * 16, 1, b"o" * 16, 1, [12, 1]]]]]], "deeply"),
    ],
)
def test_invalid_fields_are_named(body, reason):
    with pytest.raises(DecodeError, match=reason):
        decode(msgpack.packb(body))


def test_oversized_frame_is_refused_before_parsing():
    with pytest.raises(DecodeError, match="too large"):
        decode(b"\x00" * (MAX_FRAME + 1))
