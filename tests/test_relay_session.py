"""The relay's rules without sockets (iris.relay.session): any sequence of client packets
(valid, invalid, out of order) and node events keeps the session within its limits, answers
every request once, closes every tunnel it was given, never sends a client more than the credit
it granted, and says nothing after its final packet."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from iris.core.tunnel_flow import CHUNK, WINDOW, ReceiveCredit, TunnelProtocolError
from iris.relay import commands as rc
from iris.relay import protocol as rp
from iris.relay.session import Limits, RelaySession

LIMITS = Limits(requests=3, serve_timeout_s=5.0, init_timeout_s=2.0, packet_timeout_s=4.0,
                join_timeout_s=1.0,
                tunnel_confirm_timeout_s=5.0, tunnel_message=300_000, tunnel_bytes=400_000,
                tunnels=2, topics=2)


class Responder:
    def __init__(self) -> None:
        self.outcomes: list[tuple[bytes | None, str]] = []


class Handle:
    """An overlay tunnel as the session sees it: an opaque object passed back in commands."""

    def __init__(self) -> None:
        self.closed = 0


def start(*packets: bytes) -> RelaySession:
    session = RelaySession(LIMITS)
    feed(session, b"".join(packets))
    return session


def feed(session: RelaySession, data: bytes, now: float = 0.0) -> None:
    for packet in session.read(data):
        session.handle(packet)
    session.read_done(now)


def sent(session: RelaySession) -> list[rp.NodePacket]:
    out, _ = session.take()
    reader = rp.NodeReader()
    packets = reader.feed(b"".join(out))
    assert reader.error is None and reader.pending == 0
    return packets


# ------------------------------------------------------------------------- examples
def test_a_user_gets_its_init_answer_and_a_member_only_after_its_registration():
    session = start(rp.Init.pack())
    assert sent(session) == [rp.NodeInit()]
    member = start(rp.Init.pack(cluster="svc"))
    assert member.take() == ([], [rc.Register("svc")])
    member.joined(True)
    assert sent(member) == [rp.NodeInit()] and member.cluster == "svc"
    late = start(rp.Init.pack(cluster="svc"))
    late.joined(False)
    assert late.final == rp.Deny.pack(reason="could not join cluster 'svc' within 1 s")


@pytest.mark.parametrize("first, reason", [
    (rp.Subscribe.pack("t"), "expected Init"),
    (rp.Init.pack(magic="http"), "bad magic"),
    (rp.Init.pack(version="v0.9"), "not supported"),
    (b"\x7f", "unknown opcode 0x7f from the client"),
])
def test_a_bad_start_is_denied_with_the_reason(first, reason):
    session = start(first)
    deny = rp.NodeReader().feed(session.final or b"")
    assert isinstance(deny[0], rp.Deny) and reason in deny[0].reason


def test_tunnel_credit_is_checked_at_the_first_chunk_of_each_message():
    """A message may start while its first chunk fits the credit granted; its later chunks
    follow regardless; the next message needs credit again (none comes back here: the
    overlay never takes a message)."""
    session = start(rp.Init.pack(), rp.TunInit.pack(1, "c", 1000))
    session.tunnel_opened(1, Handle())
    session.take()
    session.tunnels[1].received.granted = 100  # (instead of WINDOW)
    feed(session, rp.TunTransfer.pack(1, 60, b"a" * 60) + rp.TunTransfer.pack(1, 150, b"b" * 40)
         + rp.TunTransfer.pack(1, 0, b"c" * 110))
    _, commands = session.take()
    assert [len(c.data) for c in commands if isinstance(c, rc.SendOnTunnel)] == [60, 150]
    assert session.final is None and session.tunnel_bytes == 210
    feed(session, rp.TunTransfer.pack(1, 1, b"d"))
    assert session.final is not None and b"beyond the credit" in session.final


def test_credit_comes_back_once_per_read_as_messages_reach_the_overlay():
    handle = Handle()
    session = start(rp.Init.pack(), rp.TunInit.pack(1, "c", 1000))
    session.tunnel_opened(1, handle)
    assert sent(session)[-1] == rp.TunAllow(1, WINDOW)
    feed(session, rp.TunTransfer.pack(1, 5, b"x" * 5) + rp.TunTransfer.pack(1, 7, b"y" * 7))
    session.tunnel_sent(1, handle, 5)
    session.tunnel_sent(1, handle, 7)
    session.tunnel_sent(1, Handle(), 99)  # another tunnel's (gone) bytes do not count here
    session.return_credit()
    assert sent(session) == [rp.TunAllow(1, 12)] and session.tunnel_bytes == 0


def test_a_message_for_the_client_waits_for_its_credit():
    handle = Handle()
    session = start(rp.Init.pack(), rp.TunInit.pack(1, "c", 1000))
    session.tunnel_opened(1, handle)
    session.take()
    assert session.to_client(1, b"m" * 10) is False  # the client granted nothing yet
    assert sent(session) == []
    feed(session, rp.TunAllow.pack(1, 4))  # the first chunk (all 10 bytes) does not fit yet
    assert sent(session) == []
    feed(session, rp.TunAllow.pack(1, 6))
    out, commands = session.take()
    assert rp.NodeReader().feed(b"".join(out)) == [rp.TunTransfer(1, 10, b"m" * 10)]
    assert commands == [rc.Resume(1)]


def test_a_member_request_unanswered_in_time_fails_and_a_late_reply_is_dropped():
    session = start(rp.Init.pack(cluster="svc"))
    session.joined(True)
    session.take()
    first, second = Responder(), Responder()
    session.serve_request(first, b"q1", now=0.0, time_left=60.0)
    session.serve_request(second, b"q2", now=1.0, time_left=60.0)
    assert [type(p) for p in sent(session)] == [rp.NodeRequest, rp.NodeRequest]
    first_deadline = LIMITS.serve_timeout_s + LIMITS.expiry_grace_s
    assert session.next_deadline() == first_deadline
    session.expire(first_deadline)
    assert session.take()[1] == [rc.Answer(first, None, "relay client did not answer in time")]
    feed(session, rp.Reply.pack(1, True, b"late") + rp.Reply.pack(2, True, b"r2"))
    assert session.take()[1] == [rc.Answer(second, b"r2", "")]


def test_the_end_answers_every_request_and_closes_every_tunnel():
    session = start(rp.Init.pack(cluster="svc"), )
    session.joined(True)
    feed(session, rp.Subscribe.pack("a") + rp.Subscribe.pack("b"))
    waiting, arriving, carried = Responder(), Handle(), Handle()
    session.serve_request(waiting, b"q", now=0.0, time_left=60.0)
    session.tunnel_arrived(arriving, now=0.0)
    feed(session, rp.TunInit.pack(5, "c", 100))
    session.tunnel_opened(5, carried)
    session.take()
    session.cleanup()
    _, commands = session.take()
    assert commands == [rc.Answer(waiting, None, "relay client left"), rc.CloseTunnel(arriving),
                        rc.CloseTunnel(carried), rc.Unregister(), rc.Unsubscribe("a"),
                        rc.Unsubscribe("b")]


def test_a_client_that_sends_no_init_in_time_is_denied():
    session = RelaySession(LIMITS, now=10.0)
    feed(session, rp.Init.pack()[:3], now=10.5)  # a part of it does not count
    assert session.next_deadline() == 10.0 + LIMITS.init_timeout_s
    session.expire(11.9)
    assert session.final is None
    session.expire(12.0)
    assert session.final == rp.Deny.pack(reason="no Init within 2 s")
    assert session.next_deadline() is None  # nothing more to wake for
    prompt = RelaySession(LIMITS, now=10.0)
    feed(prompt, rp.Init.pack(), now=11.0)
    assert prompt.next_deadline() is None
    prompt.expire(100.0)
    assert prompt.final is None


def test_a_packet_left_unfinished_too_long_closes_the_connection():
    """The time runs from the read that began the packet: more of it does not restart it,
    and completing it (even when the same read begins the next one) does."""
    counted: list[str] = []
    session = RelaySession(LIMITS, counted.append)
    feed(session, rp.Init.pack())
    assert session.next_deadline() is None
    subscribe = rp.Subscribe.pack("topic")
    feed(session, subscribe[:2], now=1.0)
    assert session.next_deadline() == 1.0 + LIMITS.packet_timeout_s
    feed(session, subscribe[2:4], now=3.0)
    assert session.next_deadline() == 1.0 + LIMITS.packet_timeout_s
    feed(session, subscribe[4:] + subscribe[:1], now=4.0)  # done, and the next one begun
    assert session.next_deadline() == 4.0 + LIMITS.packet_timeout_s
    session.expire(7.9)
    assert session.final is None
    session.expire(8.0)
    assert session.final == rp.NodeClose.pack("a packet left unfinished for 4 s")
    assert counted == ["packet_timeouts"]
    whole = start(rp.Init.pack())
    feed(whole, subscribe[:2], now=1.0)
    feed(whole, subscribe[2:], now=2.0)
    assert whole.next_deadline() is None


# ------------------------------------------------------------------- any sequence at all
_IDS = st.integers(0, 4)
_NAMES = st.sampled_from(["a", "b", "c", "d", "iris.status"])


def _client_packets() -> st.SearchStrategy[bytes]:
    """Packets a client may well send (any ids, in any order)."""
    data = st.binary(max_size=8)
    return st.one_of(
        st.builds(rp.Init.pack, st.just(rp.CLIENT_MAGIC), st.just(rp.VERSION), _NAMES),
        st.builds(rp.Broadcast.pack, _NAMES, data),
        st.builds(rp.Request.pack, _IDS, _NAMES, data, st.integers(0, 5000)),
        st.builds(rp.Reply.pack, st.integers(0, 8), st.booleans(), data, st.text(max_size=3)),
        st.builds(rp.Subscribe.pack, _NAMES),
        st.builds(rp.Unsubscribe.pack, _NAMES),
        st.builds(rp.Publish.pack, _NAMES, data),
        st.builds(rp.TunInit.pack, _IDS, _NAMES, st.integers(0, 5000)),
        st.builds(rp.TunConfirm.pack, st.integers(0, 8), _IDS),
        st.builds(rp.TunAllow.pack, _IDS, st.sampled_from([0, 1, 10, CHUNK, WINDOW])),
        st.builds(lambda tid, size: rp.tun_message_packets(tid, b"m" * size, CHUNK), _IDS,
                  st.sampled_from([1, 9, CHUNK, 3 * CHUNK])),
        st.builds(rp.TunClose.pack, _IDS),
    )


def _hostile_packets() -> st.SearchStrategy[bytes]:
    """What only a broken or hostile client sends."""
    return st.one_of(
        st.just(rp.Close.pack()),
        st.builds(rp.TunTransfer.pack, _IDS, st.sampled_from([0, 1, 5, 9, 70_000, 500_000]),
                  st.sampled_from([0, 1, 5, 9, CHUNK, CHUNK + 1]).map(lambda n: b"c" * n)),
        st.binary(min_size=1, max_size=6),
    )


class RelaySessionMachine(RuleBasedStateMachine):
    """The session between a scripted client and a stand-in node that runs its commands."""

    def __init__(self) -> None:
        super().__init__()
        self.session = RelaySession(LIMITS)
        self.now = 0.0
        self.finished = False  # the final packet was taken
        self.registering = False
        self.registered = False
        self.asks: list[int] = []  # the client's requests the node works on
        self.requests_handled = 0  # Request packets the session acted on (answers owed)
        self.replies = 0
        self.responders: list[Responder] = []
        self.handles: list[Handle] = []  # every tunnel handle the session was given
        self.opening: list[int] = []  # OpenTunnel ids the node works on
        self.carried: dict[int, Handle] = {}  # CarryTunnel: tid -> handle
        self.held: set[int] = set()  # tids whose to_client was held until a Resume
        self.overlay: list[tuple[int, Handle, int]] = []  # messages for the overlay
        self.subscribed: set[str] = set()
        self.client_credit: dict[int, ReceiveCredit] = {}  # what this client let the node send

    # --------------------------------------------------------------------------- plumbing
    def step(self) -> None:
        """Take the session's output: check the bytes the client gets, run the commands."""
        out, commands = self.session.take()
        reader = rp.NodeReader()
        packets = reader.feed(b"".join(out))
        assert reader.error is None and reader.pending == 0, reader.error
        assert not (self.finished and packets), "output after the final packet"
        for packet in packets:
            self.client_gets(packet)
        if self.session.final is not None:
            self.finished = True
        for command in commands:
            self.run(command)

    def client_gets(self, packet: rp.NodePacket) -> None:
        if isinstance(packet, rp.NodeTunClose):
            self.client_credit.pop(packet.tunnel_id, None)
        elif isinstance(packet, rp.NodeReply):
            self.replies += 1
            assert self.replies <= self.requests_handled
        elif isinstance(packet, rp.TunTransfer):
            credit = self.client_credit.get(packet.tunnel_id)
            assert credit is not None, "a transfer on a tunnel the client does not know"
            assert len(packet.chunk) <= CHUNK
            if packet.size:
                try:
                    credit.started(len(packet.chunk), packet.size)
                except TunnelProtocolError:
                    raise AssertionError("the node sent beyond the client's credit") from None

    def run(self, command: rc.Command) -> None:
        session = self.session
        if isinstance(command, rc.Register):
            assert not self.registering and not self.registered
            self.registering = True
        elif isinstance(command, rc.Unregister):
            assert self.registered
            self.registered = False
        elif isinstance(command, rc.Ask):
            self.asks.append(command.rid)
        elif isinstance(command, rc.Status):
            session.status(command.rid, b"{}")
        elif isinstance(command, rc.Answer):
            command.responder.outcomes.append((command.reply, command.fault))
            assert len(command.responder.outcomes) == 1, "a request answered twice"
        elif isinstance(command, rc.Drop):  # (expired on the way: settled, unanswered)
            command.responder.outcomes.append(None)
            assert len(command.responder.outcomes) == 1, "a request answered twice"
        elif isinstance(command, rc.Subscribe):
            assert command.topic not in self.subscribed
            self.subscribed.add(command.topic)
        elif isinstance(command, rc.Unsubscribe):
            self.subscribed.remove(command.topic)
        elif isinstance(command, rc.OpenTunnel):
            self.opening.append(command.tid)
        elif isinstance(command, rc.CarryTunnel):
            assert command.tid not in self.carried
            self.carried[command.tid] = command.handle
        elif isinstance(command, rc.SendOnTunnel):
            assert self.carried.get(command.tid) is command.handle
            self.overlay.append((command.tid, command.handle, len(command.data)))
        elif isinstance(command, rc.Resume):
            self.held.discard(command.tid)
        elif isinstance(command, rc.CloseTunnel):
            command.handle.closed += 1
            for tid, handle in list(self.carried.items()):
                if handle is command.handle:
                    del self.carried[tid]
                    self.held.discard(tid)
        self.step()

    # ------------------------------------------------------------------------ the client
    @precondition(lambda self: self.session.state == "new")
    @rule(cluster=st.sampled_from(["", "svc"]))
    def client_starts(self, cluster: str) -> None:
        feed(self.session, rp.Init.pack(cluster=cluster))
        self.step()

    @precondition(lambda self: self.session.state != "new")
    @rule(packets=st.lists(_client_packets(), min_size=1, max_size=4))
    def client_sends(self, packets: list[bytes]) -> None:
        self.receive(packets)

    @rule(packet=_hostile_packets())
    def client_misbehaves(self, packet: bytes) -> None:
        self.receive([packet])

    def receive(self, packets: list[bytes]) -> None:
        session = self.session
        for packet in session.read(b"".join(packets)):
            before = (session.final, session.state)
            session.handle(packet)
            if before == (None, "ready") and isinstance(packet, rp.Request):
                self.requests_handled += 1
            if isinstance(packet, rp.TunAllow) and packet.tunnel_id in self.client_credit:
                self.client_credit[packet.tunnel_id].grant(packet.space)
            elif isinstance(packet, rp.TunClose):
                self.client_credit.pop(packet.tunnel_id, None)
            elif (isinstance(packet, rp.TunConfirm) and packet.tunnel_id in session.tunnels
                  and packet.tunnel_id not in self.client_credit):
                self.client_credit[packet.tunnel_id] = ReceiveCredit(0)
            self.step()
        session.read_done(self.now)
        self.step()

    # -------------------------------------------------------------------------- the node
    @precondition(lambda self: self.registering)
    @rule(ok=st.booleans())
    def registration_decided(self, ok: bool) -> None:
        self.registering = False
        self.registered = ok
        self.session.joined(ok)
        self.step()

    @precondition(lambda self: self.asks)
    @rule(outcome=st.sampled_from(["reply", "fault", "timeout"]))
    def the_overlay_answers(self, outcome: str) -> None:
        rid = self.asks.pop(0)
        if outcome == "reply":
            self.session.answered(rid, b"r")
        else:
            self.session.answered(rid, None, "f", timed_out=outcome == "timeout")
        self.step()

    @precondition(lambda self: self.opening)
    @rule(ok=st.booleans())
    def the_overlay_opens_a_tunnel(self, ok: bool) -> None:
        tid = self.opening.pop(0)
        handle = Handle() if ok else None
        if handle is not None:
            self.handles.append(handle)
            self.client_credit[tid] = ReceiveCredit(0)
        self.session.tunnel_opened(tid, handle)
        self.step()

    @rule(time_left=st.sampled_from([0.0, 0.5, 4.0, 100.0]))
    def a_request_reaches_the_member(self, time_left: float) -> None:
        responder = Responder()
        self.responders.append(responder)
        self.session.serve_request(responder, b"q", self.now, time_left)
        self.step()

    @rule()
    def a_tunnel_reaches_the_member(self) -> None:
        handle = Handle()
        self.handles.append(handle)
        self.session.tunnel_arrived(handle, self.now)
        self.step()

    @precondition(lambda self: set(self.carried) - self.held)
    @rule(data=st.data(), size=st.sampled_from([1, 10, CHUNK, CHUNK + 5, 3 * CHUNK]))
    def the_overlay_delivers(self, data: st.DataObject, size: int) -> None:
        tid = data.draw(st.sampled_from(sorted(set(self.carried) - self.held)))
        if not self.session.to_client(tid, b"m" * size):
            self.held.add(tid)
        self.step()

    @precondition(lambda self: self.overlay)
    @rule()
    def the_overlay_takes_a_message(self) -> None:
        tid, handle, nbytes = self.overlay.pop(0)
        self.session.tunnel_sent(tid, handle, nbytes)
        self.session.return_credit()
        self.step()

    @precondition(lambda self: self.carried)
    @rule(data=st.data())
    def an_overlay_tunnel_ends(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(sorted(self.carried)))
        handle = self.carried.pop(tid)
        handle.closed += 1  # (the server closes its end)
        self.held.discard(tid)
        self.session.tunnel_ended(tid, handle, "closed by the other end")
        self.step()

    @rule(seconds=st.sampled_from([0.5, 3.0, 6.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        self.session.expire(self.now)
        self.step()

    def teardown(self) -> None:
        """The client goes away: everything it held is let go."""
        self.registering = False  # (the driver stops waiting for it)
        self.asks.clear()
        self.session.cleanup()
        self.step()
        assert all(len(r.outcomes) == 1 for r in self.responders), "a request left unanswered"
        for tid in self.opening:  # openings still under way end closed when they complete
            handle = Handle()
            self.handles.append(handle)
            self.session.tunnel_opened(tid, handle)
        self.opening.clear()
        self.step()
        assert all(h.closed for h in self.handles), "a tunnel left open"
        assert not self.subscribed and not self.registered and not self.carried

    # ------------------------------------------------------------------------ invariants
    @invariant()
    def within_limits(self) -> None:
        session = self.session
        assert len(session.tunnels) + len(session.opening) + len(session.building) <= LIMITS.tunnels
        assert len(session.topics) <= LIMITS.topics
        assert 0 <= session.asking <= LIMITS.requests
        assert 0 <= session.tunnel_bytes <= LIMITS.tunnel_bytes
        assert session.tunnel_bytes == sum(t.unsent for t in session.tunnels.values())
        assert session.topics == self.subscribed

    @invariant()
    def every_request_is_answered_once(self) -> None:
        """Each Request the session acted on is answered, or in flight in the node."""
        if not self.finished:
            assert self.session.asking == len(self.asks)
            assert self.replies + self.session.asking == self.requests_handled


RelaySessionMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                                 deadline=None)
test_any_sequence_of_client_packets_and_node_events = RelaySessionMachine.TestCase
