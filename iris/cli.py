"""The `iris` command line: keygen, node, the relay's client commands, demo, sim, chaos.

Errors are one line on stderr that names the problem and what to do, and the exit status says
what kind it was: 2 the input was wrong (an argument, a key file, a port in use, a seed that is
no node of this network), 1 it failed while running (no node's relay to talk to, a member that
answered with an error), 130 interrupted. `--debug` shows the traceback as well.

This module imports what a command needs when it runs: `iris --version` and `iris -h` start
without loading trio or the overlay.
"""

from __future__ import annotations

import argparse
import errno
import logging
import math
import os
import signal
import socket
import sys
from typing import Any, NoReturn

from iris import __version__

log = logging.getLogger("iris.node")

EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130
DEFAULT_RELAY_PORT = 55555  # (iris.relay.server.DEFAULT_PORT, not imported: see above)
TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("debug", "info", "warning", "error")


class CliError(Exception):
    """What the command line reports in one line, and the exit status it ends with."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------- argument types
class _FromEnv(str):
    """An option's default taken from an environment variable: argparse converts a string
    default with the option's type, and a bad one is reported with the variable's name."""

    env = ""


def _env_default(name: str, default: Any) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = _FromEnv(raw)
    value.env = name
    return value


def _typed(convert: Any, name: str) -> Any:
    """An argparse `type`: `convert`, whose ValueError becomes argparse's one-line error
    (naming the environment variable when the value came from one)."""

    def parse(value: str) -> Any:
        try:
            return convert(value)
        except ValueError as exc:
            source = f" (from {value.env})" if isinstance(value, _FromEnv) else ""
            raise argparse.ArgumentTypeError(f"{exc}{source}") from None

    parse.__name__ = name  # argparse names the type in some messages
    return parse


def _utf8(value: str, what: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {value!r} is not valid UTF-8") from None
    return value


def _parse_address(value: str, zero_ok: bool) -> tuple[str, int]:
    host, sep, port = _utf8(value, "address").rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:7000), got {value!r}")
    number = int(port)
    if number > 65535 or (number == 0 and not zero_ok):
        raise ValueError(f"port {port} of {value!r} is out of range "
                         f"({0 if zero_ok else 1}-65535)")
    return host.strip("[]") or "127.0.0.1", number


def _listen_address(value: str) -> str:
    _parse_address(value, zero_ok=True)
    return value


def _seed_address(value: str) -> str:
    _parse_address(value, zero_ok=False)
    return value


def _port(value: str) -> int:
    if not value.strip().isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError(f"expected a port number (1-65535), got {value!r}")
    return int(value)


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"expected a positive number of seconds, got {value!r}")
    return number


def _number(what: str, least: float = 0.0, positive: bool = True) -> Any:
    """A finite number of at least `least` (above it, if `positive`)."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < least or (positive and number == least):
            bound = f"above {least:g}" if positive else f"{least:g} or more"
            raise ValueError(f"expected {what} ({bound}), got {value!r}")
        return number
    return parse


def _count(least: int) -> Any:
    def parse(value: str) -> int:
        if not value.strip().isdigit() or int(value) < least:
            raise ValueError(f"expected a whole number of at least {least}, got {value!r}")
        return int(value)
    return parse


def _name(what: str, example: str) -> Any:
    def parse(value: str) -> str:
        if not value:
            raise ValueError(f"the {what} name is empty: give a name such as {example!r}")
        return _utf8(value, f"{what} name")
    return parse


def _log_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value.lower()


def _log_format(value: str) -> str:
    if value not in ("text", "json"):
        raise ValueError(f"expected text or json, got {value!r}")
    return value


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


# ------------------------------------------------------------------------------ logging
class JsonFormatter(logging.Formatter):
    """`--log-format json`: one JSON object per line (time in UTC, level, logger, message,
    and the traceback as `exception` when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        import json
        from datetime import UTC, datetime

        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging(args: argparse.Namespace, default_level: str) -> None:
    level = args.log_level or default_level
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if args.log_format == "json"
                         else logging.Formatter(TEXT_LOG_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def _report(prog: str, message: str) -> None:
    """The one line of a failed command: a log record when the logs are JSON (one format
    on stderr), else `iris COMMAND: message`."""
    handlers = logging.getLogger().handlers
    if any(isinstance(h.formatter, JsonFormatter) for h in handlers):
        log.error("%s", message)
    else:
        print(f"{prog}: {message}", file=sys.stderr)


# ------------------------------------------------------------------------------- keygen
def cmd_keygen(args: argparse.Namespace) -> int:
    path = args.path
    directory = os.path.dirname(path) or "."
    if os.path.isdir(path):
        raise CliError(f"{path} is a directory: give the path of the key file to write, "
                       f"e.g. {os.path.join(path, 'net.key')}")
    if not os.path.isdir(directory):
        raise CliError(f"directory {directory} does not exist: create it first "
                       f"(mkdir -p {directory}) or write the key elsewhere")
    if os.path.exists(path) and not args.force:
        raise CliError(f"{path} exists (use --force to overwrite it)")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))  # iris.generate_network_key(), without importing trio
        os.chmod(path, 0o600)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    print(f"wrote a network key to {shown} (mode 0600)")
    return 0


def read_key(path: str) -> bytes:
    """The network key in `path`, or CliError saying what is wrong with the file."""
    try:
        with open(path, "rb") as f:
            key = f.read(33)  # (a device or a FIFO named by mistake is not read to its end)
    except FileNotFoundError:
        raise CliError(f"network key file {path} not found: create one with "
                       f"`iris keygen {path}` and give every node of the network a copy"
                       ) from None
    except IsADirectoryError:
        raise CliError(f"{path} is a directory, not a network key file: give the file "
                       f"`iris keygen` wrote") from None
    except PermissionError:
        raise CliError(f"cannot read network key file {path}: permission denied (run as "
                       f"its owner, or fix its mode)") from None
    except OSError as exc:
        raise CliError(f"cannot read network key file {path}: {exc.strerror or exc}") from None
    if len(key) != 32:
        size = "more than 32" if len(key) > 32 else str(len(key))
        raise CliError(f"{path} is not a network key (expected 32 bytes, got {size}): write "
                       f"one with `iris keygen`")
    return key


# --------------------------------------------------------------------------------- node
def _bind_problem(host: str, port: int) -> str | None:
    """Why listening on (host, port) would fail, or None: what trio's listeners will do
    (SO_REUSEADDR, IPv6 only on IPv6 sockets), tried before the node starts."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        return f"{host!r} is no address of this host ({getattr(exc, 'strerror', None) or exc})"
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "the port is in use"
            return exc.strerror or str(exc)
    return None


def _check_relay_port(port: int) -> None:
    """The relay listens on 127.0.0.1 and ::1 (either is enough): refuse a port another
    program (often another node's relay) holds on either."""
    problems = []
    for host in ("127.0.0.1", "::1"):
        problem = _bind_problem(host, port)
        if problem == "the port is in use":
            raise CliError(_relay_in_use(port))
        if problem is not None:
            problems.append(problem)
    if len(problems) == 2:
        raise CliError(f"cannot listen on relay port {port}: {problems[0]}: give another with "
                       f"--relay-port PORT, or --no-relay")


def _relay_in_use(port: int) -> str:
    return (f"relay port {port} is in use (another iris node's relay?): give this node its "
            f"own with --relay-port PORT, or --no-relay")


def cmd_node(args: argparse.Namespace) -> int:
    key = read_key(args.network_key_file)
    seeds = args.seed
    host, port = _parse_address(args.listen, zero_ok=True)
    from iris.relay.session import Limits

    try:
        relay_limits = Limits.parse(args.relay_limit)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    problem = _bind_problem(host, port)
    if problem is not None:
        raise CliError(f"cannot listen on {args.listen}: {problem}: choose another with "
                       f"--listen HOST:PORT (port 0: any free one)")
    if not args.no_relay:
        _check_relay_port(args.relay_port)
    _configure_logging(args, "info")

    import trio

    import iris
    from iris.runtime.accept import raise_open_file_limit

    if args.metrics_port is not None:
        try:
            from iris.metrics import serve_metrics
        except ImportError:
            raise CliError("--metrics-port needs prometheus-client: pip install "
                           "'iris-overlay[metrics]'") from None
        problem = _bind_problem("127.0.0.1", args.metrics_port)
        if problem is not None:
            raise CliError(f"cannot serve metrics on port {args.metrics_port}: {problem}: "
                           f"choose another with --metrics-port PORT")
    raise_open_file_limit()  # links and relay clients each take a descriptor
    relay_failed: list[OSError] = []
    metrics_failed: list[OSError] = []
    joined = False

    async def run() -> None:
        nonlocal joined
        async with iris.open_node(network_key=key, listen=args.listen, seeds=seeds,
                                  join_timeout=args.join_timeout,
                                  busy_poll_s=args.busy_poll_us / 1e6,
                                  link_policy=iris.LinkPolicy(
                                      idle_close_s=args.idle_close_s,
                                      max_links=args.max_links)) as node:
            joined = True
            log.info("node %032x listening on %s:%d", node.id, *node.address)
            for cluster in args.echo:
                await node.register(cluster, _Echo())
                log.info("serving cluster %r with an echo handler", cluster)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch, node, args.status_interval)
                relay = None
                if not args.no_relay:
                    from iris.relay.server import RelayServer

                    relay = RelayServer(node, relay_limits)
                    try:
                        await nursery.start(relay.serve, args.relay_port)
                    except OSError as exc:  # taken since the check: leave, then say so
                        relay_failed.append(exc)
                        nursery.cancel_scope.cancel()
                if args.metrics_port is not None and not relay_failed:
                    try:
                        port = await nursery.start(serve_metrics, node, args.metrics_port,
                                                   "127.0.0.1", relay)
                    except OSError as exc:
                        metrics_failed.append(exc)
                        nursery.cancel_scope.cancel()
                    else:
                        log.info("metrics on http://127.0.0.1:%d/metrics", port)
                if not relay_failed and not metrics_failed:
                    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for signum in signals:
                            log.info("%s: leaving the ring", signal.Signals(signum).name)
                            break
                nursery.cancel_scope.cancel()
        log.info("left")

    try:
        trio.run(run)
    except iris.JoinError as exc:
        raise CliError(_join_advice(str(exc))) from None
    except BaseException as exc:
        leaf = _leaf(exc)
        if not joined and isinstance(leaf, OSError) and not isinstance(leaf, TimeoutError):
            # (listening failed after all: taken since the check, or refused another way)
            raise CliError(f"cannot listen on {args.listen}: {leaf.strerror or leaf}: choose "
                           f"another with --listen HOST:PORT") from exc
        raise
    if relay_failed:
        raise CliError(_relay_in_use(args.relay_port))
    if metrics_failed:
        raise CliError(f"cannot serve metrics on port {args.metrics_port}: "
                       f"{metrics_failed[0].strerror or metrics_failed[0]}: choose another "
                       f"with --metrics-port PORT")
    return 0


def _join_advice(message: str) -> str:
    if "different network key" in message:
        return (f"{message}: give every node of a network a copy of the same key file "
                f"(--network-key-file)")
    if "could not join" in message:
        return f"{message}: is a node running there? check --seed, or raise --join-timeout"
    return f"{message}: give --seed the HOST:PORT an `iris node` listens on"


class _Echo:
    """`--echo CLUSTER`: answer every request and every survey with its own bytes, and send
    every tunnel message back on its tunnel (checks of a deployment, demos): each pattern that
    expects an answer gets one from such a member."""

    async def handle_request(self, data: bytes) -> bytes:
        return data

    async def handle_survey(self, data: bytes) -> bytes:
        return data

    async def handle_tunnel(self, tunnel: Any) -> None:
        from iris.errors import ClosedError

        try:
            while True:
                await tunnel.send(await tunnel.receive())
        except ClosedError:
            return  # the opener closed it (or its node went away)


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


# ---------------------------------------------------------------------- client commands
def read_message(value: str) -> bytes:
    """A message argument: `-` reads standard input, `@PATH` a file, anything else is the
    argument's own bytes (as the shell passed them: not necessarily UTF-8). All binary-safe."""
    if value == "-":
        return sys.stdin.buffer.read()
    if value.startswith("@"):
        path = value[1:]
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise CliError(f"cannot read the message from {path}: {exc.strerror or exc} "
                           f"(a message that starts with @ itself can come from stdin: -)"
                           ) from None
    return os.fsencode(value)


def _client_command(args: argparse.Namespace) -> int:
    """request / survey / broadcast / publish / subscribe / serve / status, through a node's
    relay (survey: this project's relay extension, `iris.relay.survey`)."""
    data = b""
    if args.command in ("request", "survey", "broadcast", "publish"):
        data = read_message(args.message)
        from iris.core.limits import check_payload
        from iris.errors import LimitExceededError

        try:
            check_payload(data)
        except LimitExceededError as exc:
            raise CliError(str(exc)) from None
    if args.command == "serve":
        import shutil

        if shutil.which(args.run[0]) is None:
            raise CliError(f"command {args.run[0]!r} not found: give the program to run after "
                           f"--, e.g. `iris serve {args.cluster} -- tr a-z A-Z`")
    _configure_logging(args, "info")

    import json as json_module

    import trio

    from iris.errors import IrisError
    from iris.relay.client import RelayClient

    class _Serve:
        async def handle_request(self, request: bytes) -> bytes:
            return await _run_command(args.run, request, "request", args.cluster)

        async def handle_broadcast(self, message: bytes) -> None:
            try:
                await _run_command(args.run, message, "broadcast", args.cluster)
            except Exception as exc:
                logging.getLogger("iris.serve").warning("broadcast to %s: %s", args.run[0], exc)

    async def print_event(event: bytes) -> None:
        sys.stdout.buffer.write(event + b"\n")
        sys.stdout.flush()

    async def run() -> int:
        serving = args.command == "serve"
        async with RelayClient.open(args.relay_port, cluster=args.cluster if serving else "",
                                    handler=_Serve() if serving else None) as client:
            if args.command == "request":
                reply = await client.request(args.cluster, data, args.timeout)
                newline = b"" if args.raw or reply.endswith(b"\n") else b"\n"
                sys.stdout.buffer.write(reply + newline)
                sys.stdout.flush()
            elif args.command == "survey":
                result = await client.survey(args.cluster, data, args.timeout)
                _print_survey(result, args.json)
            elif args.command == "broadcast":
                await client.broadcast(args.cluster, data)
            elif args.command == "publish":
                await client.publish(args.topic, data)
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
        message = str(exc)
        if message.startswith("no node relay on"):
            message += (": is `iris node` running on this host? give its relay port with "
                        "--relay-port")
        raise CliError(message, EXIT_FAILED) from None


def _print_survey(result: Any, as_json: bool) -> None:
    """`iris survey`: one line per answer (the member's id, a space, the answer) and a count
    of who answered on stderr; or one JSON object."""
    if as_json:
        import base64
        import json as json_module

        print(json_module.dumps({
            "members_known": result.members_known, "complete": result.complete,
            "missing": result.missing,
            "answers": {f"{member:032x}": base64.b64encode(answer).decode()
                        for member, answer in sorted(result.answers.items())}}))
        return
    out = sys.stdout.buffer
    for member, answer in sorted(result.answers.items()):
        out.write(f"{member:032x} ".encode() + answer + (b"" if answer.endswith(b"\n")
                                                         else b"\n"))
    out.flush()
    print(f"{len(result.answers)} of {result.members_known} members answered"
          + (f" ({result.missing} missing)" if result.missing else ""), file=sys.stderr)


async def _run_command(argv: list[str], data: bytes, kind: str, cluster: str) -> bytes:
    """`iris serve`: the message on the command's stdin, IRIS_KIND (request or broadcast) and
    IRIS_CLUSTER in its environment. A request's reply is its stdout; a broadcast's stdout
    goes to ours."""
    import trio

    env = {**os.environ, "IRIS_KIND": kind, "IRIS_CLUSTER": cluster}
    if kind == "broadcast":
        result = await trio.run_process(argv, stdin=data, capture_stderr=True, check=False,
                                        env=env)
    else:
        result = await trio.run_process(argv, stdin=data, capture_stdout=True,
                                        capture_stderr=True, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.decode(errors="replace").strip()
                           or f"{argv[0]} exited with status {result.returncode}")
    return result.stdout or b""


# ------------------------------------------------------------------------ demo and chaos
def cmd_demo(args: argparse.Namespace) -> int:
    _configure_logging(args, "warning")
    from iris.demo import main as demo_main

    return demo_main(as_json=args.json, nodes=args.nodes, requests=args.requests,
                     concurrency=args.concurrency)


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
        raise CliError(str(exc)) from None
    except (KeyboardInterrupt, harness.Interrupted):
        print("iris chaos: interrupted; its processes and namespaces are removed",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(json_module.dumps(report) if args.json else format_report(report))
    return 0 if report["passed"] else 1


# ------------------------------------------------------------------------------ parsing
class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line (the usage is one `-h` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see `{self.prog} -h`)\n")


class _Formatter(argparse.HelpFormatter):
    """Every option's help ends with its default, where it has one worth showing; a
    description or epilog of several lines (a table) is shown as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or "default" in text or not action.option_strings
                or default in (None, False, [], argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)"


ENVIRONMENT = """\
environment variables (an option given on the command line wins):
  IRIS_NETWORK_KEY_FILE   --network-key-file
  IRIS_LISTEN             --listen HOST:PORT
  IRIS_SEEDS              --seed, several separated by commas: host1:7000,host2:7000
  IRIS_JOIN_TIMEOUT       --join-timeout SECONDS
  IRIS_STATUS_INTERVAL    --status-interval SECONDS
  IRIS_RELAY_PORT         --relay-port PORT (the client commands read it too)
  IRIS_NO_RELAY           --no-relay when 1, true, yes or on
  IRIS_BUSY_POLL_US       --busy-poll-us MICROSECONDS
  IRIS_IDLE_CLOSE_S       --idle-close-s SECONDS
  IRIS_MAX_LINKS          --max-links COUNT
  IRIS_METRICS_PORT       --metrics-port PORT
  IRIS_LOG_LEVEL          --log-level debug|info|warning|error
  IRIS_LOG_FORMAT         --log-format text|json
  IRIS_DEBUG              --debug when 1, true, yes or on
"""


def _common_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """--debug, --log-level and --log-format: before the command or after it. (On the
    subcommands they default to SUPPRESS, so that the top level's values stand unless given
    again after the command.)"""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument("--debug", action="store_true",
                        default=default(_truthy("IRIS_DEBUG")),
                        help="on failure, show the traceback too (env IRIS_DEBUG)")
    parser.add_argument("--log-level", type=_typed(_log_level, "log level"), metavar="LEVEL",
                        default=default(_env_default("IRIS_LOG_LEVEL", None)),
                        help="debug, info, warning or error (default: info; the demo: "
                             "warning; env IRIS_LOG_LEVEL)")
    parser.add_argument("--log-format", type=_typed(_log_format, "log format"),
                        metavar="FORMAT",
                        default=default(_env_default("IRIS_LOG_FORMAT", "text")),
                        help="text, or json: one JSON object per line (time, level, logger, "
                             "message) (default: text; env IRIS_LOG_FORMAT)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="iris", description="Iris-style messaging overlay.",
                     formatter_class=_Formatter,
                     epilog="Exit status: 0 done, 1 failed while running, 2 bad input (one "
                            "line on stderr says what to change), 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"iris {__version__}",
                        help="print the version and exit")
    _common_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to do (`iris COMMAND -h` tells more)")
    common = _Parser(add_help=False, formatter_class=_Formatter)
    _common_options(common, top=False)

    def command(name: str, help: str, parents: tuple[argparse.ArgumentParser, ...] = (),
                **kwargs: Any) -> argparse.ArgumentParser:
        every: list[Any] = [common, *parents]
        parser_: argparse.ArgumentParser = sub.add_parser(
            name, help=help, parents=every, formatter_class=_Formatter, **kwargs)
        return parser_

    keygen = command("keygen", "write a fresh network key file (mode 0600)",
                     description="Write 32 random bytes, the network key every node of one "
                                 "network shares, to a new file only its owner may read.")
    keygen.add_argument("path", help="the file to write (its directory must exist)")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing file")
    keygen.set_defaults(func=cmd_keygen)

    node = command("node", "run a node until interrupted", epilog=ENVIRONMENT,
                   description="Run a node: listen, join the ring through a seed (or found "
                               "one without), serve the relay for local clients, log "
                               "neighbours and a status line; Ctrl-C or SIGTERM leaves the "
                               "ring gracefully.")
    node.add_argument("--listen", type=_typed(_listen_address, "address"), metavar="HOST:PORT",
                      default=_env_default("IRIS_LISTEN", "127.0.0.1:0"),
                      help="where the node listens for its peers (port 0: any free one; "
                           "default: %(default)s; env IRIS_LISTEN)")
    node.add_argument("--seed", action="append", type=_typed(_seed_address, "address"),
                      metavar="HOST:PORT", default=None,
                      help="a running node to join through (repeatable; none: found a new "
                           "ring; env IRIS_SEEDS, comma-separated)")
    key_env = _env_default("IRIS_NETWORK_KEY_FILE", None)
    node.add_argument("--network-key-file", required=key_env is None, default=key_env,
                      metavar="PATH",
                      help="the network key, from `iris keygen` (required; env "
                           "IRIS_NETWORK_KEY_FILE)")
    node.add_argument("--join-timeout", type=_typed(_seconds, "seconds"), metavar="SECONDS",
                      default=_env_default("IRIS_JOIN_TIMEOUT", 60.0),
                      help="give up joining after this long (a seed with another network "
                           "key, or that is no iris node, fails at once; default: "
                           "%(default)s; env IRIS_JOIN_TIMEOUT)")
    node.add_argument("--status-interval", type=_typed(_seconds, "seconds"), metavar="SECONDS",
                      default=_env_default("IRIS_STATUS_INTERVAL", 10.0),
                      help="log a status line this often (default: %(default)s; env "
                           "IRIS_STATUS_INTERVAL)")
    node.add_argument("--relay-port", type=_typed(_port, "port"), metavar="PORT",
                      default=_env_default("IRIS_RELAY_PORT", DEFAULT_RELAY_PORT),
                      help="port of the relay for local clients, on 127.0.0.1 and ::1; each "
                           "node on one host needs its own (default: %(default)s; env "
                           "IRIS_RELAY_PORT)")
    node.add_argument("--no-relay", action="store_true", default=_truthy("IRIS_NO_RELAY"),
                      help="do not start the relay (env IRIS_NO_RELAY)")
    node.add_argument("--relay-limit", action="append", default=[], metavar="NAME=VALUE",
                      help="change one of the relay's limits (repeatable; `iris status` shows "
                           "them all): e.g. max_connections=1000 (clients at once), "
                           "memory_bytes=268435456 (partly read packets and queued output, "
                           "all clients), out_bytes=67108864 (one client's queued output), "
                           "init_timeout_s=10, packet_timeout_s=30, requests=10000 (one "
                           "client's requests in flight) (default: none changed)")
    node.add_argument("--metrics-port", type=_typed(_port, "port"), metavar="PORT",
                      default=_env_default("IRIS_METRICS_PORT", None),
                      help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics (needs "
                           "the metrics extra; default: %(default)s, off; env "
                           "IRIS_METRICS_PORT)")
    microseconds = _typed(_number("a number of microseconds", positive=False), "number")
    node.add_argument("--busy-poll-us", type=microseconds,
                      metavar="MICROSECONDS", default=_env_default("IRIS_BUSY_POLL_US", 250.0),
                      help="after traffic, poll this long before sleeping: lower latency on "
                           "virtual machines for some CPU (0: off; default: %(default)s; env "
                           "IRIS_BUSY_POLL_US)")
    node.add_argument("--idle-close-s", type=_typed(_number("a number of seconds"), "number"),
                      metavar="SECONDS", default=_env_default("IRIS_IDLE_CLOSE_S", 60.0),
                      help="close a connection to another node that carried nothing either "
                           "way this long (default: %(default)s; env IRIS_IDLE_CLOSE_S)")
    node.add_argument("--max-links", type=_typed(_count(1), "count"), metavar="COUNT",
                      default=_env_default("IRIS_MAX_LINKS", 512),
                      help="keep at most this many connections to other nodes open, the ones "
                           "idle longest closing first; never more than a quarter of the "
                           "process's file descriptors (default: %(default)s; env "
                           "IRIS_MAX_LINKS)")
    node.add_argument("--echo", action="append", default=[], metavar="CLUSTER",
                      type=_typed(_name("cluster", "echo"), "cluster"),
                      help="also serve CLUSTER with an echo handler: requests, surveys and "
                           "tunnel messages come back as they were sent (repeatable; default: "
                           "none)")
    node.set_defaults(func=cmd_node)

    demo = command("demo", "20 nodes on loopback TCP in one process: every pattern, measured",
                   description="Start nodes on loopback TCP in this one process, register "
                               "three clusters and two topics, then measure requests (some "
                               "in flight at once), broadcasts, publishes and a tunnel.")
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.add_argument("--nodes", type=_typed(_count(2), "count"), default=20,
                      help="nodes to start (at least 2; clusters and topics get fewer members "
                           "on fewer than 14)")
    demo.add_argument("--requests", type=_typed(_count(0), "count"), default=2000,
                      help="requests to send in all")
    demo.add_argument("--concurrency", type=_typed(_count(1), "count"), default=16,
                      help="requests in flight at once")
    demo.set_defaults(func=cmd_demo)

    chaos = command(
        "chaos", "real node processes under a fault, with checks (see `iris chaos -h`)",
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
                            "(default: %(default)s)")
    chaos.add_argument("--groups", type=_typed(_count(1), "count"), default=3,
                       help="groups of nodes")
    chaos.add_argument("--nodes", type=_typed(_count(1), "count"), default=3,
                       help="nodes per group")
    chaos.add_argument("--duration", type=_typed(_seconds, "seconds"), default=None,
                       help="seconds the fault lasts (default: partition 45, pause and kill "
                            "15, loss and delay 30)")
    chaos.add_argument("--seed", type=int, default=1, help="chooses the faulted group")
    rate = _typed(_number("a number per second"), "rate")
    chaos.add_argument("--request-rate", type=rate, default=4.0,
                       help="requests per second from each group to each cluster")
    chaos.add_argument("--event-rate", type=rate, default=10.0,
                       help="events per second from each group's publisher")
    chaos.add_argument("--loss-percent", type=_typed(_number("a percentage", positive=False),
                                                      "percentage"), default=30.0,
                       help="packets lost on the faulted link (the loss fault)")
    chaos.add_argument("--delay-ms", type=_typed(_number("milliseconds", positive=False),
                                                  "milliseconds"), default=300.0,
                       help="delay added on the faulted link (the delay fault)")
    chaos.add_argument("--logs", metavar="DIR", help="keep the node logs and agent records here "
                                                     "(default: removed)")
    chaos.add_argument("--json", action="store_true", help="print one JSON object")
    chaos.set_defaults(func=cmd_chaos)

    relay = _Parser(add_help=False, formatter_class=_Formatter)
    relay.add_argument("--relay-port", type=_typed(_port, "port"), metavar="PORT",
                       default=_env_default("IRIS_RELAY_PORT", DEFAULT_RELAY_PORT),
                       help="the relay port of the node to use (default: %(default)s; env "
                            "IRIS_RELAY_PORT)")
    message_help = ("the message: the argument's bytes, - to read standard input, or @PATH "
                    "to read a file (binary-safe; up to 8 MiB)")
    cluster_name = _typed(_name("cluster", "echo"), "cluster")
    topic_name = _typed(_name("topic", "news"), "topic")
    request = command("request", "send a request to a cluster, print the reply", (relay,))
    request.add_argument("cluster", type=cluster_name, help="the cluster to ask")
    request.add_argument("message", help=message_help)
    request.add_argument("--timeout", type=_typed(_seconds, "seconds"), default=5.0,
                         metavar="SECONDS", help="give up after this long")
    request.add_argument("--raw", action="store_true",
                         help="write the reply as it is (no newline added at its end)")
    survey = command("survey", "ask every member of a cluster, print their answers", (relay,),
                     description="Ask every member of CLUSTER (members of embedded nodes that "
                                 "have handle_survey; relay clients cannot answer surveys) and "
                                 "print one line per answer: the member's id and its answer; "
                                 "stderr says how many of the members the cluster's tree knew "
                                 "of answered. Uses this project's extension of the relay "
                                 "protocol (a request to the node-local `iris.survey`).")
    survey.add_argument("cluster", type=cluster_name, help="the cluster to ask")
    survey.add_argument("message", help=message_help)
    survey.add_argument("--timeout", type=_typed(_seconds, "seconds"), default=5.0,
                        metavar="SECONDS", help="gather answers for this long at most")
    survey.add_argument("--json", action="store_true",
                        help="print one JSON object (answers in base64)")
    broadcast = command("broadcast", "send a message to every member of a cluster", (relay,))
    broadcast.add_argument("cluster", type=cluster_name, help="the cluster to reach")
    broadcast.add_argument("message", help=message_help)
    publish = command("publish", "publish an event on a topic", (relay,))
    publish.add_argument("topic", type=topic_name, help="the topic")
    publish.add_argument("message", help=message_help)
    subscribe = command("subscribe", "print a topic's events until interrupted", (relay,))
    subscribe.add_argument("topic", type=topic_name, help="the topic")
    serve = command("serve", "answer a cluster's requests (and take its broadcasts) with a "
                             "command", (relay,),
                    description="Serve CLUSTER with a command: it runs once per message, the "
                                "message on its stdin and IRIS_KIND (request or broadcast) "
                                "and IRIS_CLUSTER in its environment. A request's reply is "
                                "its stdout (a failure, its stderr); a broadcast's stdout goes "
                                "to this command's.")
    serve.add_argument("cluster", type=cluster_name, help="the cluster to serve")
    serve.add_argument("run", nargs="*", metavar="-- COMMAND",
                       help="the command and its arguments, after --")
    status = command("status", "the node's view: id, peers, leaf set, groups, counters",
                     (relay,))
    for parser_ in (request, survey, broadcast, publish, subscribe, serve, status):
        parser_.set_defaults(func=_client_command)

    sub.add_parser("sim", help="run a deterministic simulation (see `iris sim -h`)",
                   add_help=False)
    return parser


def _leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _interrupted(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_interrupted(inner) for inner in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


def _seeds_from_env(args: argparse.Namespace) -> None:
    """--seed, or else IRIS_SEEDS (comma-separated)."""
    if args.seed is not None:
        return
    args.seed = []
    for seed in filter(None, (s.strip() for s in os.environ.get("IRIS_SEEDS", "").split(","))):
        try:
            args.seed.append(_seed_address(seed))
        except ValueError as exc:
            raise CliError(f"IRIS_SEEDS: {exc}") from None


def _interruptible() -> None:
    """Every command stops on SIGINT (status 130), even one started with SIGINT ignored, as a
    shell without job control starts a background job: `kill -INT` on it did nothing, and a
    chaos run so stopped by its harness left its namespaces. `iris node` and `iris demo`
    listen for the signal themselves; the others get Python's `KeyboardInterrupt` back."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _interruptible()
    if argv and argv[0] == "sim":
        from simulations.cli import main as sim_main

        try:
            return sim_main(argv[1:], prog="iris sim")
        except KeyboardInterrupt:
            print("iris sim: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    parser = build_parser()
    command: list[str] = []
    if "--" in argv and "serve" in argv[: argv.index("--")]:
        # everything after -- is the command, verbatim
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    args = parser.parse_args(argv)
    prog = f"iris {args.command}"
    if args.command == "serve":
        args.run = command or args.run
        if not args.run:
            parser.exit(EXIT_USAGE, "iris serve: give the command to run after --, e.g. "
                                    "`iris serve upper -- tr a-z A-Z`\n")
    try:
        if args.command == "node":
            _seeds_from_env(args)
        status: int = args.func(args)  # every command returns its exit status
        return status
    except CliError as exc:
        if args.debug:
            raise
        _report(prog, str(exc))
        return exc.status
    except BaseException as exc:
        if _interrupted(exc):
            if args.debug:
                raise
            _report(prog, "interrupted")
            return EXIT_INTERRUPTED
        if args.debug or isinstance(exc, SystemExit):
            raise
        leaf = _leaf(exc)
        _report(prog, f"failed: {type(leaf).__name__}: {leaf} (run with --debug for the "
                      f"traceback)")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
