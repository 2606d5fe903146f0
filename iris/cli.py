"""The `iris` command line: keygen, node, demo, sim, chaos."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

log = logging.getLogger("iris.node")


def cmd_keygen(args: argparse.Namespace) -> int:
    import iris

    path = args.path
    if os.path.exists(path) and not args.force:
        print(f"iris keygen: {path} exists (use --force to overwrite)", file=sys.stderr)
        return 1
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(iris.generate_network_key())
    os.chmod(path, 0o600)
    print(f"wrote a network key to {path} (mode 0600)")
    return 0


def read_key(path: str) -> bytes:
    with open(path, "rb") as f:
        key = f.read()
    if len(key) != 32:
        raise SystemExit(f"iris: {path} is not a network key (expected 32 bytes, got {len(key)})")
    return key


def cmd_node(args: argparse.Namespace) -> int:
    import trio

    import iris

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    key = read_key(args.network_key_file)
    from iris.relay.session import Limits
    from iris.runtime.accept import raise_open_file_limit

    try:
        relay_limits = Limits.parse(args.relay_limit)
    except ValueError as exc:
        raise SystemExit(f"iris node: {exc}") from None
    raise_open_file_limit()  # links and relay clients each take a descriptor

    async def run() -> None:
        async with iris.open_node(network_key=key, listen=args.listen, seeds=args.seed,
                                  join_timeout=args.join_timeout,
                                  busy_poll_s=args.busy_poll_us / 1e6) as node:
            log.info("node %032x listening on %s:%d", node.id, *node.address)
            for cluster in args.echo:
                await node.register(cluster, _Echo())
                log.info("serving cluster %r with an echo handler", cluster)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch, node, args.status_interval)
                if not args.no_relay:
                    from iris.relay.server import RelayServer

                    await nursery.start(RelayServer(node, relay_limits).serve,
                                        args.relay_port)
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        log.info("%s: leaving the ring", signal.Signals(signum).name)
                        break
                nursery.cancel_scope.cancel()
        log.info("left")

    try:
        trio.run(run)
    except iris.JoinError as exc:
        log.error("%s", exc)
        return 2
    return 0


class _Echo:
    """`--echo CLUSTER`: answer every request with its own bytes (checks, demos)."""

    async def handle_request(self, data: bytes) -> bytes:
        return data


async def _watch(node: Any, status_interval: float) -> None:
    """Log leaf-set changes as they happen and a status line every `status_interval`."""
    import trio

    known = set(node.status()["leaf_set"])
    waited = 0.0
    while True:
        await trio.sleep(0.5)
        waited += 0.5
        status = node.status()
        now = set(status["leaf_set"])
        for peer in sorted(now - known):
            log.info("neighbour joined: %s", peer[:8])
        for peer in sorted(known - now):
            log.info("neighbour gone (left or failed): %s", peer[:8])
        known = now
        if waited >= status_interval:
            waited = 0.0
            log.info("status: %s, %d links, leaf set %d, table %d, clusters %s, topics %s, sent %s",
                     status["state"], status["links"], len(status["leaf_set"]),
                     status["table_entries"], status["clusters"], status["topics"],
                     status["messages_sent"])


def _client_command(args: argparse.Namespace) -> int:
    """request / broadcast / publish / subscribe / serve / status, through a node's relay."""
    import json as json_module

    import trio

    from iris.errors import IrisError
    from iris.relay.client import RelayClient

    class _Serve:
        async def handle_request(self, data: bytes) -> bytes:
            return await _run_command(args.run, data)

    async def print_event(event: bytes) -> None:
        sys.stdout.buffer.write(event + b"\n")
        sys.stdout.flush()

    async def run() -> int:
        serving = args.command == "serve"
        async with RelayClient.open(args.relay_port, cluster=args.cluster if serving else "",
                                    handler=_Serve() if serving else None) as client:
            if args.command == "request":
                reply = await client.request(args.cluster, args.message.encode(), args.timeout)
                sys.stdout.buffer.write(reply + (b"" if reply.endswith(b"\n") else b"\n"))
            elif args.command == "broadcast":
                await client.broadcast(args.cluster, args.message.encode())
            elif args.command == "publish":
                await client.publish(args.topic, args.message.encode())
            elif args.command == "subscribe":
                await client.subscribe(args.topic, print_event)
                raise IrisError(await client.wait_closed())
            elif serving:
                raise IrisError(await client.wait_closed())
            elif args.command == "status":
                print(json_module.dumps(await client.status(), indent=2))
        return 0

    try:
        return trio.run(run)
    except IrisError as exc:
        print(f"iris {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _run_command(argv: list[str], data: bytes) -> bytes:
    """`iris serve`: the request on the command's stdin, its stdout as the reply."""
    import trio

    result = await trio.run_process(argv, stdin=data, capture_stdout=True, capture_stderr=True,
                                    check=False)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.decode(errors="replace").strip()
                           or f"{argv[0]} exited with status {result.returncode}")
    return result.stdout


def cmd_demo(args: argparse.Namespace) -> int:
    from iris.demo import main as demo_main

    return demo_main(as_json=args.json, nodes=args.nodes, requests=args.requests)


def cmd_chaos(args: argparse.Namespace) -> int:
    import json as json_module

    from iris.chaos import harness
    from iris.chaos.report import format_report
    from iris.chaos.topology import SetupError

    options = harness.Options(fault=args.fault, groups=args.groups, nodes=args.nodes,
                              duration=args.duration, seed=args.seed, logs=args.logs,
                              request_rate=args.request_rate, event_rate=args.event_rate,
                              loss_percent=args.loss_percent, delay_ms=args.delay_ms)
    try:
        report = harness.run(options)
    except SetupError as exc:
        print(f"iris chaos: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, harness.Interrupted):
        print("iris chaos: interrupted; its processes and namespaces are removed",
              file=sys.stderr)
        return 130
    print(json_module.dumps(report) if args.json else format_report(report))
    return 0 if report["passed"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iris", description="Iris-style messaging overlay.")
    sub = parser.add_subparsers(dest="command", required=True)

    keygen = sub.add_parser("keygen", help="write a fresh network key file (mode 0600)")
    keygen.add_argument("path")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing file")
    keygen.set_defaults(func=cmd_keygen)

    node = sub.add_parser("node", help="run a node until interrupted")
    node.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on")
    node.add_argument("--seed", action="append", default=[],
                      help="HOST:PORT of a node to join through (repeatable)")
    node.add_argument("--network-key-file", required=True)
    node.add_argument("--join-timeout", type=float, default=60.0)
    node.add_argument("--status-interval", type=float, default=10.0)
    node.add_argument("--relay-port", type=int, default=55555,
                      help="port of the relay for local clients, on 127.0.0.1 and ::1 "
                           "(default %(default)s)")
    node.add_argument("--no-relay", action="store_true", help="do not start the relay")
    node.add_argument("--relay-limit", action="append", default=[], metavar="NAME=VALUE",
                      help="change one of the relay's limits (repeatable; `iris status` shows "
                           "them all): e.g. max_connections=1000 (clients at once), "
                           "memory_bytes=268435456 (partly read packets and queued output, "
                           "all clients), out_bytes=67108864 (one client's queued output), "
                           "init_timeout_s=10, packet_timeout_s=30, requests=10000 (one "
                           "client's requests in flight)")
    node.add_argument("--busy-poll-us", type=float, default=250.0,
                      help="after traffic, poll this long before sleeping: lower latency on "
                           "virtual machines for some CPU (0: off; default %(default)s)")
    node.add_argument("--echo", action="append", default=[], metavar="CLUSTER",
                      help="also serve CLUSTER with an echo handler (repeatable)")
    node.set_defaults(func=cmd_node)

    demo = sub.add_parser("demo", help="20 nodes on loopback TCP: every pattern, measured")
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.add_argument("--nodes", type=int, default=20)
    demo.add_argument("--requests", type=int, default=2000)
    demo.set_defaults(func=cmd_demo)

    chaos = sub.add_parser(
        "chaos", help="real node processes under a fault, with checks (see `iris chaos -h`)",
        description="Start `iris node` processes in groups (each in its own network namespace "
                    "on a private subnet when run as root with `ip`; else on loopback, with "
                    "the pause and kill faults only), run a checked workload (requests to "
                    "every group's cluster, sequence-numbered events, a tunnel), inject the "
                    "fault, heal, and report. Exit status: 0 all checks passed, 1 a "
                    "violation, 2 the run could not be set up.")
    chaos.add_argument("--fault", default="partition",
                       choices=["partition", "pause", "kill", "loss", "delay"],
                       help="partition: one group cut off silently; pause: SIGSTOP all but "
                            "one member of a group; kill: SIGKILL them, restart at the heal; "
                            "loss, delay: netem on a group's link (needs tc) "
                            "(default %(default)s)")
    chaos.add_argument("--groups", type=int, default=3)
    chaos.add_argument("--nodes", type=int, default=3, help="nodes per group (default 3)")
    chaos.add_argument("--duration", type=float, default=None,
                       help="seconds the fault lasts (default: partition 45, pause and kill "
                            "15, loss and delay 30)")
    chaos.add_argument("--seed", type=int, default=1, help="chooses the faulted group")
    chaos.add_argument("--request-rate", type=float, default=4.0,
                       help="requests per second from each group to each cluster")
    chaos.add_argument("--event-rate", type=float, default=10.0,
                       help="events per second from each group's publisher")
    chaos.add_argument("--loss-percent", type=float, default=30.0)
    chaos.add_argument("--delay-ms", type=float, default=300.0)
    chaos.add_argument("--logs", metavar="DIR", help="keep the node logs and agent records here")
    chaos.add_argument("--json", action="store_true", help="print one JSON object")
    chaos.set_defaults(func=cmd_chaos)

    relay = argparse.ArgumentParser(add_help=False)
    relay.add_argument("--relay-port", type=int, default=55555, help="the node's relay port")
    request = sub.add_parser("request", parents=[relay],
                             help="send a request to a cluster, print the reply")
    request.add_argument("cluster")
    request.add_argument("message")
    request.add_argument("--timeout", type=float, default=5.0)
    broadcast = sub.add_parser("broadcast", parents=[relay],
                               help="send a message to every member of a cluster")
    broadcast.add_argument("cluster")
    broadcast.add_argument("message")
    publish = sub.add_parser("publish", parents=[relay], help="publish an event on a topic")
    publish.add_argument("topic")
    publish.add_argument("message")
    subscribe = sub.add_parser("subscribe", parents=[relay],
                               help="print a topic's events until interrupted")
    subscribe.add_argument("topic")
    serve = sub.add_parser("serve", parents=[relay],
                           help="answer a cluster's requests with a command "
                                "(request on stdin, reply from stdout)")
    serve.add_argument("cluster")
    serve.add_argument("run", nargs="*", metavar="-- COMMAND", help="the command, after --")
    sub.add_parser("status", parents=[relay],
                   help="the node's view: id, peers, leaf set, groups, counters")
    for parser_ in (request, broadcast, publish, subscribe, serve, sub.choices["status"]):
        parser_.set_defaults(func=_client_command)

    sub.add_parser("sim", help="run a deterministic simulation (see `iris sim -h`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sim":
        from simulations.cli import main as sim_main

        return sim_main(argv[1:], prog="iris sim")
    parser = build_parser()
    command: list[str] = []
    if argv[:1] == ["serve"] and "--" in argv:  # everything after -- is the command, verbatim
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    args = parser.parse_args(argv)
    if args.command == "serve":
        args.run = command or args.run
        if not args.run:
            parser.error("iris serve: give the command after --")
    status: int = args.func(args)  # every command returns its exit status
    return status


if __name__ == "__main__":
    sys.exit(main())
