"""The secure link, sans-IO: framing, handshake with the network key, sealed frames."""

import os

import pytest

from overlay.link import MAX_RECORD, FrameReader, Handshake, LinkError, Session, frame
from overlay.wire import MAX_FRAME


def pair(key_a=None, key_b=None):
    key = os.urandom(32)
    a = Handshake(key_a or key, 1, "127.0.0.1", 1000, dialer=True)
    b = Handshake(key_b or key, 2, "127.0.0.1", 2000, dialer=False)
    fin_a = a.receive(b.hello())
    fin_b = b.receive(a.hello())
    return a, b, fin_a, fin_b


def test_handshake_gives_matching_sessions():
    a, b, fin_a, fin_b = pair()
    a.receive(fin_b)
    b.receive(fin_a)
    assert a.peer.node_id == 2 and b.peer.node_id == 1 and b.peer.port == 1000
    for i in range(3):
        assert b.session.open(a.session.seal(b"to b %d" % i)) == b"to b %d" % i
        assert a.session.open(b.session.seal(b"to a")) == b"to a"


def test_wrong_network_key_fails_the_proof():
    a, b, fin_a, fin_b = pair(key_a=os.urandom(32), key_b=os.urandom(32))
    with pytest.raises(LinkError, match="network key"):
        b.receive(fin_a)
    with pytest.raises(LinkError, match="network key"):
        a.receive(fin_b)


def test_replayed_reordered_altered_and_forged_frames_are_rejected():
    a, b, fin_a, fin_b = pair()
    a.receive(fin_b)
    b.receive(fin_a)
    first, second = a.session.seal(b"one"), a.session.seal(b"two")
    with pytest.raises(LinkError):
        b.session.open(second)  # reordered
    assert b.session.open(first) == b"one"
    with pytest.raises(LinkError):
        b.session.open(first)  # replayed
    altered = bytearray(second)
    altered[0] ^= 1
    with pytest.raises(LinkError):
        b.session.open(bytes(altered))
    with pytest.raises(LinkError):
        b.session.open(Session(os.urandom(32), os.urandom(32)).seal(b"forged"))


def test_garbage_hello_is_an_error():
    b = Handshake(os.urandom(32), 2, "h", 1, dialer=False)
    for junk in (b"", b"\xc1", b"\x93\x01\x02\x03", os.urandom(40)):
        with pytest.raises(LinkError):
            Handshake(os.urandom(32), 2, "h", 1, dialer=False).receive(junk)
    with pytest.raises(ValueError):
        Handshake(b"short", 1, "h", 1, dialer=True)
    assert b.session is None


def test_frames_split_and_joined_at_any_byte():
    data = frame(b"alpha") + frame(b"") + frame(b"x" * 1000)
    reader = FrameReader()
    out = []
    for i in range(len(data)):
        out += reader.feed(data[i : i + 1])
    assert out == [b"alpha", b"", b"x" * 1000]


def test_oversized_frame_is_refused_from_its_header():
    reader = FrameReader(max_frame=100)
    with pytest.raises(LinkError, match="101 bytes"):
        reader.feed((101).to_bytes(4, "big"))


def test_a_hello_of_another_protocol_version_is_turned_away():
    """The hello is a wire message, so its frame carries the protocol version: a node of
    another version is refused at the handshake, with the reason."""
    from overlay.wire import WIRE_VERSION

    key = os.urandom(32)
    hello = bytearray(Handshake(key, 2, "h", 1, dialer=False).hello())
    assert hello[1] == WIRE_VERSION  # a msgpack array whose first element is the version
    hello[1] = WIRE_VERSION + 1
    with pytest.raises(LinkError, match="another protocol version"):
        Handshake(key, 1, "h", 1, dialer=True).receive(bytes(hello))


def sessions():
    a, b, fin_a, fin_b = pair()
    a.receive(fin_b)
    b.receive(fin_a)
    return a.session, b.session


def records_of(data):
    """Framed records -> their sealed bodies (what a link's reader hands the session)."""
    return FrameReader(max_frame=MAX_RECORD).feed(data)


def test_a_batch_of_frames_travels_in_one_sealed_record_in_order():
    a, b = sessions()
    batch = [b"one", b"", b"three" * 100]
    data = a.seal_batch(batch, 7)
    (record,) = records_of(data)
    # the sender's clock, then each frame: one tag for all
    assert len(record) == 4 + 4 * len(batch) + sum(map(len, batch)) + 16
    assert b.open_batch(record) == (7, batch)
    # the next record continues the counter: a replayed or reordered record fails as a frame does
    second = records_of(a.seal_batch([b"four"], 8))[0]
    third = records_of(a.seal_batch([b"five"], 9))[0]
    with pytest.raises(LinkError):
        b.open_batch(third)
    assert b.open_batch(second) == (8, [b"four"])
    with pytest.raises(LinkError):
        b.open_batch(second)


def test_frames_beyond_one_record_go_in_several_and_oversized_ones_are_refused():
    a, b = sessions()
    big = b"x" * (MAX_FRAME - 10)
    records = records_of(a.seal_batch([b"small", big, b"after"], 2**32 - 1))
    assert len(records) == 2
    opened = [b.open_batch(r) for r in records]
    assert [clock for clock, _ in opened] == [2**32 - 1] * 2  # each record carries the clock
    assert [f for _, frames in opened for f in frames] == [b"small", big, b"after"]
    with pytest.raises(LinkError):
        a.seal_batch([b"x" * (MAX_FRAME + 1)], 0)


CLOCK = (5).to_bytes(4, "big")


@pytest.mark.parametrize("plaintext", [
    b"",                                           # an empty record
    b"\x00\x00",                                   # a record ending inside its clock
    CLOCK,                                         # a clock and no frame
    CLOCK + b"\x00\x00",                           # a record ending inside a frame header
    CLOCK + (10).to_bytes(4, "big") + b"short",    # a frame running past the record's end
    CLOCK + (MAX_FRAME + 1).to_bytes(4, "big"),    # a frame over the limit
])
def test_records_whose_frames_do_not_fit_close_the_link(plaintext):
    a, b = sessions()
    with pytest.raises(LinkError):
        b.open_batch(a.seal(plaintext))
