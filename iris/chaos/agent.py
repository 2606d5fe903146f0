"""The workload beside one chaos node: `python -m iris.chaos.agent --relay-port P ...`.

It talks to its own node through the relay (which listens on the node's loopback, hence one
agent in each node's namespace), and writes what happened as records (`iris.chaos.records`)
for the harness to judge afterwards: it never decides what is a violation itself. Every agent
serves its group's cluster (recording each execution) and delivers the events topic (recording
each event); some also send requests to every cluster, publish sequence-numbered events, or
keep a tunnel open to a cluster. When its node goes away (killed), it connects again until its
node is back. It stops on SIGTERM or SIGINT, and at `--until` (wall clock) whatever happens, so
no load runs unbounded.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import IO, Any

import trio

from iris.chaos.records import TOPIC
from iris.errors import ClosedError, IrisError, RemoteError, TimeoutError
from iris.relay.client import RelayClient
from iris.relay.tunnel import RelayTunnel

STATUS_PERIOD_S = 0.5
RECONNECT_S = 0.5
TUNNEL_PERIOD_S = 0.05
TUNNEL_OPEN_TIMEOUT_S = 5.0


class Recorder:
    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, kind: str, **fields: Any) -> None:
        self.out.write(json.dumps({"k": kind, **fields}, separators=(",", ":")) + "\n")
        self.out.flush()


class Member:
    """The handler of the group's cluster: records each request it starts, echoes it back,
    and echoes every tunnel message, recording what arrives."""

    def __init__(self, record: Recorder) -> None:
        self.record = record

    async def handle_request(self, data: bytes) -> bytes:
        request = json.loads(data)
        self.record("exec", id=request["id"], t=time.time(), sent=request["sent"],
                    timeout=request["timeout"])
        return data

    async def handle_tunnel(self, tunnel: RelayTunnel) -> None:
        while True:
            try:
                data = await tunnel.receive()
            except ClosedError:
                return
            message = json.loads(data)
            self.record("tunnel", event="rx", s=message["s"], i=message["i"], t=time.time())
            try:
                await tunnel.send(data)
            except ClosedError:
                return


class Agent:
    def __init__(self, args: argparse.Namespace, record: Recorder) -> None:
        self.args = args
        self.record = record
        self.requests_sent = 0
        self.published = 0
        self.tunnel_sessions = 0

    async def run(self) -> None:
        """Connect, work until the connection ends, connect again."""
        while True:
            try:
                async with RelayClient.open(self.args.relay_port, cluster=self.args.cluster,
                                            handler=Member(self.record)) as client:
                    await client.subscribe(TOPIC, self.on_event)
                    self.record("subscribed", t=time.time())
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self.poll_status, client)
                        if self.args.targets:
                            nursery.start_soon(self.send_requests, client)
                        if self.args.publish_rate > 0:
                            nursery.start_soon(self.publish, client)
                        if self.args.tunnel_to:
                            nursery.start_soon(self.keep_tunnel, client)
                        await client.wait_closed()
                        nursery.cancel_scope.cancel()
            except IrisError:  # no node yet, or it went away: try again
                pass
            await trio.sleep(RECONNECT_S)

    async def on_event(self, data: bytes) -> None:
        event = json.loads(data)
        self.record("ev", pub=event["pub"], seq=event["seq"], sent=event["t"], t=time.time())

    async def poll_status(self, client: RelayClient) -> None:
        while True:
            with trio.move_on_after(2 * STATUS_PERIOD_S + 1):
                try:
                    status = await client.status()
                except IrisError:
                    pass
                else:
                    self.record("status", t=time.time(), id=status["id"],
                                leaf=status["leaf_set"])
            await trio.sleep(STATUS_PERIOD_S)

    async def send_requests(self, client: RelayClient) -> None:
        period = 1.0 / self.args.request_rate
        async with trio.open_nursery() as nursery:
            while self.requests_sent < self.args.max_requests:
                for target in self.args.targets:
                    self.requests_sent += 1
                    nursery.start_soon(self.one_request, client, target,
                                       f"{self.args.name}-{self.requests_sent}")
                await trio.sleep(period)

    async def one_request(self, client: RelayClient, target: str, ident: str) -> None:
        timeout = self.args.request_timeout
        sent = time.time()
        data = json.dumps({"id": ident, "sent": sent, "timeout": timeout}).encode()
        outcome, detail = "no answer", ""
        with trio.move_on_after(timeout + 2.0):  # the node answers by the deadline itself
            try:
                reply = await client.request(target, data, timeout)
                outcome = "ok" if reply == data else "wrong reply"
            except TimeoutError:
                outcome = "timeout"
            except RemoteError as exc:
                outcome, detail = "error", str(exc)
            except ClosedError as exc:
                outcome, detail = "closed", str(exc)
            except IrisError as exc:
                outcome, detail = "error", str(exc)
        self.record("req", id=ident, target=target, sent=sent, done=time.time(),
                    outcome=outcome, detail=detail[:200])

    async def publish(self, client: RelayClient) -> None:
        period = 1.0 / self.args.publish_rate
        while self.published < self.args.max_events:
            seq = self.published
            now = time.time()
            try:
                await client.publish(TOPIC, json.dumps({"pub": self.args.name, "seq": seq,
                                                        "t": now}).encode())
            except IrisError:  # the connection ended: the next one goes on with the next seq
                return
            self.published += 1
            self.record("pub", seq=seq, t=now)
            await trio.sleep(period)

    async def keep_tunnel(self, client: RelayClient) -> None:
        """One tunnel session after another: sequence-numbered messages out, their echoes
        back; a closed session is recorded and a new one opened."""
        while self.tunnel_sessions < self.args.max_tunnels:
            self.tunnel_sessions += 1
            session = f"{self.args.name}-{self.tunnel_sessions}"
            try:
                tunnel = await client.tunnel(self.args.tunnel_to, TUNNEL_OPEN_TIMEOUT_S)
            except TimeoutError:
                await trio.sleep(1.0)
                continue
            except IrisError:  # the connection ended
                return
            self.record("tunnel", event="open", s=session, t=time.time())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.tunnel_echoes, tunnel, session)
                reason = await self.tunnel_messages(tunnel, session)
                nursery.cancel_scope.cancel()
            self.record("tunnel", event="closed", s=session, t=time.time(), reason=reason)
            await trio.sleep(1.0)

    async def tunnel_messages(self, tunnel: RelayTunnel, session: str) -> str:
        """Send the session's messages; why it ended."""
        try:
            for i in range(self.args.max_tunnel_messages):
                await tunnel.send(json.dumps({"s": session, "i": i}).encode())
                self.record("tunnel", event="sent", s=session, i=i, t=time.time())
                await trio.sleep(TUNNEL_PERIOD_S)
            await tunnel.close()
        except ClosedError as exc:
            return str(exc)
        return "all messages sent"

    async def tunnel_echoes(self, tunnel: RelayTunnel, session: str) -> None:
        """Record each echo until the tunnel closes (the sender finds out by itself)."""
        while True:
            try:
                message = json.loads(await tunnel.receive())
            except ClosedError:
                return
            self.record("tunnel", event="echo", s=session, i=message["i"], t=time.time())


async def main_async(args: argparse.Namespace, out: IO[str]) -> None:
    agent = Agent(args, Recorder(out))
    with trio.move_on_after(max(0.0, args.until - time.time())), \
            trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent.run)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m iris.chaos.agent")
    parser.add_argument("--relay-port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--cluster", required=True, help="the cluster this agent serves")
    parser.add_argument("--out", required=True, help="the file the records are appended to")
    parser.add_argument("--until", type=float, required=True, help="stop at (wall clock)")
    parser.add_argument("--targets", default="", help="clusters to send requests to (comma)")
    parser.add_argument("--request-rate", type=float, default=4.0, help="per target, per s")
    parser.add_argument("--request-timeout", type=float, default=2.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--publish-rate", type=float, default=0.0)
    parser.add_argument("--max-events", type=int, default=100_000)
    parser.add_argument("--tunnel-to", default="", help="keep a tunnel open to this cluster")
    parser.add_argument("--max-tunnels", type=int, default=1000)
    parser.add_argument("--max-tunnel-messages", type=int, default=100_000)
    args = parser.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with open(args.out, "a", buffering=1) as out:
        trio.run(main_async, args, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
