"""Eager socket reads and writes (iris.runtime.eager_io) over real TCP connections on loopback."""

import pytest
import trio
from conftest import LoopPasses, wait_until

from iris.runtime.eager_io import EagerReader, Flusher, Outbox


@pytest.fixture
async def pair(nursery):
    """Two ends of one loopback TCP connection."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    yield client, server
    for stream in (client, server):
        await trio.aclose_forcefully(stream)
    await listeners[0].aclose()


async def read_exactly(reader: EagerReader, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await reader.receive()
        assert chunk, "stream ended early"
        data += chunk
    return bytes(data)


async def test_a_batch_is_written_at_its_end_without_the_flusher_task(pair):
    client, server = pair
    flusher = Flusher()  # its task is not running: only the batch can write
    outbox = Outbox(client, flusher, limit=1 << 20)
    with flusher.batch():
        assert outbox.push(b"hello ") and outbox.push(b"world")
        assert outbox.queued_bytes == 11  # nothing written inside the batch
    assert outbox.queued_bytes == 0
    with trio.fail_after(5):
        assert await read_exactly(EagerReader(server), 11) == b"hello world"


async def test_packets_queued_outside_a_batch_go_out_through_the_flusher_task(pair, nursery):
    client, server = pair
    flusher = Flusher()
    outbox = Outbox(client, flusher, limit=1 << 20)
    nursery.start_soon(flusher.run)
    outbox.push(b"from a task")
    with trio.fail_after(5):
        assert await read_exactly(EagerReader(server), 11) == b"from a task"


async def test_what_the_kernel_does_not_take_waits_for_the_writer_in_order(pair, nursery):
    """A peer that does not read: the eager write takes what fits, the rest waits for the
    writer task, the limit refuses more, and once the peer reads every byte arrives in order."""
    client, server = pair
    flusher = Flusher()
    outbox = Outbox(client, flusher, limit=64 << 20)
    nursery.start_soon(outbox.run_writer)
    chunks = [bytes([i % 251]) * 65536 for i in range(256)]  # 16 MiB, far beyond socket buffers
    with flusher.batch():
        for chunk in chunks:
            assert outbox.push(chunk)
    assert 0 < outbox.queued_bytes < 16 << 20  # some went at once, the rest is queued
    assert not Outbox(client, flusher, limit=10).push(b"x" * 11)
    with trio.fail_after(20):
        got = await read_exactly(EagerReader(server), 16 << 20)
    assert got == b"".join(chunks)
    with trio.fail_after(5):
        await wait_until(lambda: not outbox.queued_bytes)


async def test_finish_writes_the_last_packet_and_ends_the_writer(pair):
    client, server = pair
    outbox = Outbox(client, Flusher(), limit=4)
    assert not outbox.push(b"too long")
    outbox.finish(b"goodbye")  # beyond the limit: the last word always goes
    with trio.fail_after(5):
        await outbox.run_writer()  # returns once written
        assert await read_exactly(EagerReader(server), 7) == b"goodbye"


async def test_the_reader_sees_the_end_of_the_stream_and_lets_others_run(pair, nursery):
    client, server = pair
    passes = LoopPasses()
    async def send_and_close():
        await client.send_all(b"x" * 300_000)
        await client.aclose()

    nursery.start_soon(passes.run)
    nursery.start_soon(send_and_close)
    reader = EagerReader(server, max_bytes=1000)
    before = passes.count
    with trio.fail_after(5):
        await read_exactly(reader, 300_000)
    assert passes.count - before >= 100  # a busy stream yields on every read: the other task ran
    with trio.fail_after(5):
        assert await reader.receive() == b""


async def test_a_new_readers_first_receive_takes_no_loop_pass(pair, nursery):
    """A connection's task reads what its client sent first (a relay client's Init) in the pass
    that started it (later reads with data there still yield: see the test above)."""
    client, server = pair
    passes = LoopPasses()
    nursery.start_soon(passes.run)
    await client.send_all(b"init")
    with trio.fail_after(5):
        await trio.lowlevel.wait_readable(server.socket)
    reader = EagerReader(server)
    before = passes.count
    assert await reader.receive() == b"init"
    assert passes.count == before  # no pass


async def test_a_batch_inside_a_batch_writes_once_at_the_outer_end(pair):
    client, server = pair
    flusher = Flusher()
    outbox = Outbox(client, flusher, limit=1 << 20)
    with flusher.batch():
        outbox.push(b"a")
        with flusher.batch():
            outbox.push(b"b")
        assert outbox.queued_bytes == 2  # the inner end wrote nothing
        outbox.push(b"c")
    assert outbox.queued_bytes == 0
    with trio.fail_after(5):
        assert await read_exactly(EagerReader(server), 3) == b"abc"
