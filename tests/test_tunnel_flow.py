"""The tunnel rules shared by the overlay's tunnel ends and both sides of relay tunnels:
chunking, reassembly, byte credit (sender and receiver), and `TunnelEnd` built on them."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iris.core.tunnel_end import TunnelEnd
from iris.core.tunnel_flow import (
    CHUNK,
    MAX_MESSAGE,
    MessageAssembler,
    ReceiveCredit,
    SendCredit,
    TunnelError,
    TunnelProtocolError,
    split,
)
from iris.relay import protocol as rp

messages = st.lists(st.binary(max_size=3 * 1000), max_size=8)


@given(messages, st.integers(1, 1000))
def test_split_then_assemble_gives_back_every_message(msgs, limit):
    assembler = MessageAssembler()
    out = []
    for data in msgs:
        for first, chunk in split(data, limit):
            assert len(chunk) <= limit
            whole = assembler.add(first, len(data), chunk)
            if whole is not None:
                out.append(whole)
    assert out == msgs
    assert assembler.pending == 0 and not assembler.inside_message


def test_assembler_rejects_broken_framing():
    with pytest.raises(TunnelProtocolError, match="outside any message"):
        MessageAssembler().add(False, 0, b"x")
    a = MessageAssembler()
    a.add(True, 10, b"abc")
    assert a.pending == 3
    with pytest.raises(TunnelProtocolError, match="inside another"):
        a.add(True, 5, b"x")
    b = MessageAssembler()
    with pytest.raises(TunnelProtocolError, match="longer than announced"):
        b.add(True, 2, b"abc")


def test_send_credit_starts_a_message_on_its_first_chunk_and_spends_it_whole():
    credit = SendCredit()
    assert not credit.fits(0)  # an empty message waits for credit too
    credit.grant(100)
    assert credit.fits(100) and not credit.fits(101)
    credit.spend(1000)  # a message larger than the credit, started within it
    assert credit.available == -900 and not credit.fits(1)
    credit.grant(901)
    assert credit.fits(1)


def test_receive_credit_turns_away_a_message_started_beyond_it_and_batches_grants():
    credit = ReceiveCredit(100, batch=50)
    credit.started(100, 1000)  # first chunk within the credit: accepted, whole size spent
    with pytest.raises(TunnelProtocolError, match="beyond the credit"):
        credit.started(1, 1)
    assert credit.consumed(49) == 0
    assert credit.consumed(1) == 50  # a batch adds up: given back
    assert credit.granted == -850
    immediate = ReceiveCredit(0)
    assert immediate.consumed(7) == 7 and immediate.granted == 7
    assert immediate.consumed(0) == 0


def _pair(window=4 * CHUNK, send_buffer=1 << 30):
    a = TunnelEnd((1, 1), 2, window, send_buffer, 0.0)
    b = TunnelEnd((1, 1), 1, window, send_buffer, 0.0)
    a.send_credit.grant(window)
    b.send_credit.grant(window)
    return a, b


def _deliver(src, dst):
    got = []
    for seq, total, chunk in src.chunks():
        whole = dst.receive(seq, total, chunk)
        if whole is not None:
            got.append(whole)
    return got


def test_tunnel_end_moves_messages_in_order_within_the_window_and_credit_reopens_it():
    a, b = _pair(window=4 * CHUNK)
    msgs = [b"", b"x" * 10, b"y" * (3 * CHUNK + 5), b"z" * CHUNK, b"w"]
    for m in msgs:
        a.queue(m)
    first = _deliver(a, b)
    # the third message started within the credit and went whole; the fourth must wait
    assert first == msgs[:3]
    assert a.has_output() and a.queued_bytes == CHUNK + 1
    grant = b.consumed(sum(map(len, first)))
    assert grant == 3 * CHUNK + 15
    a.send_credit.grant(grant)
    assert _deliver(a, b) == msgs[3:]
    assert not a.has_output()


def test_tunnel_end_closes_on_a_gap_or_a_peer_beyond_its_credit():
    a, b = _pair()
    a.queue(b"one")
    a.queue(b"two")
    chunks = list(a.chunks())
    with pytest.raises(TunnelError, match="arrived where 0 was due"):
        b.receive(*chunks[1])
    _, c = _pair(window=CHUNK)
    with pytest.raises(TunnelError, match="beyond the credit"):
        c.receive(0, CHUNK + 2, b"x" * CHUNK)
        c.receive(1, 0, b"x")
        c.receive(2, 3, b"ab")  # a second message with no credit left


def test_tunnel_end_refuses_to_queue_beyond_its_buffer_or_after_close():
    a, _ = _pair(send_buffer=10)
    a.queue(b"12345678901")  # one message always fits an empty buffer
    with pytest.raises(TunnelError, match="buffer is full"):
        a.queue(b"x")
    a.closing = "closed"
    with pytest.raises(TunnelError, match="closing"):
        a.queue(b"")


def test_a_message_over_the_size_limit_is_refused_at_both_ends():
    """Later chunks go regardless of credit, so the size a peer announces is all that bounds
    what the receiver holds of one message: beyond MAX_MESSAGE, the tunnel breaks at once."""
    _, b = _pair()
    with pytest.raises(TunnelProtocolError, match="exceeds"):
        b.receive(0, MAX_MESSAGE + 2, b"x")  # (total is size + 1 on the overlay)
    a, _ = _pair(send_buffer=MAX_MESSAGE * 2)
    with pytest.raises(TunnelError, match="exceeds"):
        a.queue(bytes(MAX_MESSAGE + 1))
    a.queue(bytes(MAX_MESSAGE))  # the limit itself is allowed


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=6), st.integers(1, 100))
def test_relay_packets_of_a_message_reassemble(msgs, limit):
    reader = rp.NodeReader()
    stream = b"".join(rp.tun_message_packets(7, m, limit) for m in msgs)
    assembler = MessageAssembler()
    out = []
    for packet in reader.feed(stream):
        assert isinstance(packet, rp.TunTransfer) and packet.tunnel_id == 7
        whole = assembler.add(packet.size != 0, packet.size, packet.chunk)
        if whole is not None:
            out.append(whole)
    assert out == msgs
