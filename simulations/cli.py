"""`python -m simulations SCENARIO --nodes N --seed S [--json]` (also `iris sim ...`)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from typing import Any

from simulations.connections import LINK_MODELS
from simulations.messaging import MESSAGING_SCENARIOS, MessagingOptions
from simulations.scenarios import SCENARIOS

ALL_SCENARIOS = {**SCENARIOS, **MESSAGING_SCENARIOS}


def build_parser(prog: str = "python -m simulations") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a deterministic simulation of the overlay and print what it measured.",
    )
    parser.add_argument("scenario", choices=sorted(ALL_SCENARIOS))
    defaults = MessagingOptions()
    parser.add_argument("--nodes", type=int, default=defaults.nodes)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--lookups", type=int, default=defaults.lookups,
                        help="routed lookups to score (default %(default)s)")
    parser.add_argument("--lookup-rate", type=float, default=defaults.lookup_rate,
                        help="lookups issued per simulated second")
    parser.add_argument("--join-rate", type=float, default=defaults.join_rate,
                        help="joins per simulated second (0: nodes/20, at least 20)")
    parser.add_argument("--groups", type=int, default=defaults.groups,
                        help="partition: number of random groups")
    parser.add_argument("--isolate", action="store_true",
                        help="partition: cut one node off instead of splitting into groups")
    parser.add_argument("--partition-s", type=float, default=defaults.partition_s)
    parser.add_argument("--churn-s", type=float, default=defaults.churn_s)
    parser.add_argument("--session-s", type=float, default=defaults.session_s,
                        help="churn: mean node session length")
    parser.add_argument("--fail-fraction", type=float, default=defaults.fail_fraction)
    parser.add_argument("--loss", type=float, default=defaults.loss,
                        help="probability that a message is lost")
    parser.add_argument("--duplicate", type=float, default=defaults.duplicate,
                        help="probability that a message is delivered twice")
    parser.add_argument("--wire", action="store_true",
                        help="encode and decode every message through the wire codec")
    parser.add_argument("--requests", type=int, default=defaults.requests,
                        help="messaging: requests to clusters")
    parser.add_argument("--request-rate", type=float, default=defaults.request_rate)
    parser.add_argument("--broadcasts", type=int, default=defaults.broadcasts)
    parser.add_argument("--publishes", type=int, default=defaults.publishes)
    parser.add_argument("--tunnel-messages", type=int, default=defaults.tunnel_messages)
    parser.add_argument("--tunnel-big-mib", type=int, default=defaults.tunnel_big_mib,
                        help="messaging: size of the one large tunnel message (0: none)")
    parser.add_argument("--churn-fraction", type=float, default=defaults.churn_fraction,
                        help="messaging-churn: fraction of the nodes replaced")
    parser.add_argument("--pause-s", type=float, default=defaults.pause_s,
                        help="messaging-pause: how long two members of a cluster are frozen")
    parser.add_argument("--links", choices=sorted(LINK_MODELS), default=None,
                        help="how messages travel: connections (TCP-like, under the runtime's "
                        "link policy), unguarded (connections the policy never closes), "
                        "datagrams (each message on its own); default: connections for the "
                        "messaging scenarios, datagrams for the ring ones")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def options_from(args: argparse.Namespace) -> MessagingOptions:
    names = {f.name for f in fields(MessagingOptions)}
    return MessagingOptions(**{k: v for k, v in vars(args).items() if k in names})


def validate(parser: argparse.ArgumentParser, opts: MessagingOptions) -> None:
    if opts.nodes < 2:
        parser.error("--nodes must be at least 2")
    if opts.groups < 2:
        parser.error("--groups must be at least 2")
    if not 0 <= opts.loss < 1 or not 0 <= opts.duplicate < 1:
        parser.error("--loss and --duplicate are probabilities in [0, 1)")
    if not 0 < opts.fail_fraction < 1:
        parser.error("--fail-fraction must be in (0, 1)")
    if opts.lookups < 1 or opts.lookup_rate <= 0:
        parser.error("--lookups and --lookup-rate must be positive")


def format_report(result: dict[str, Any]) -> str:
    width = max(len(k) for k in result)
    lines = [f"scenario {result['scenario']}: {result['nodes']} nodes, seed {result['seed']}"]
    for key, value in result.items():
        if key in ("scenario", "nodes", "seed"):
            continue
        if isinstance(value, float):
            value = f"{value:.4g}"
        lines.append(f"  {key:<{width}}  {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "python -m simulations") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    opts = options_from(args)
    validate(parser, opts)
    result = ALL_SCENARIOS[args.scenario](opts)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_report(result))
    return 0 if result.get("checks_passed") else 1


if __name__ == "__main__":
    sys.exit(main())
