"""`python -m simulations SCENARIO --nodes N --seed S [--json]` (also `iris sim ...`)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import textwrap
from dataclasses import fields
from pathlib import Path
from typing import Any

from simulations import compiled, timeline
from simulations.connections import LINK_MODELS
from simulations.messaging import MESSAGING_SCENARIOS, MessagingOptions
from simulations.report import describe_failure, format_report, units_of
from simulations.scenarios import SCENARIOS
from simulations.survey import SURVEY_SCENARIOS

ALL_SCENARIOS = {**SCENARIOS, **MESSAGING_SCENARIOS, **SURVEY_SCENARIOS}

SCENARIO_HELP = {
    "join": "the nodes join (--join-rate per simulated second) and settle; then 60 s of "
            "quiet maintenance, --lookups routed lookups at --lookup-rate, every checker, and "
            "the time to detect one crash (detect_s).",
    "mass-failure": "--fail-fraction of the nodes crash at once; lookups during the repair, "
                    "the time until every checker passes again (repair_s), then lookups.",
    "churn": "for --churn-s, nodes crash at random (exponential sessions, mean --session-s) "
             "and new ones join in their place, under lookups; then the ring must settle "
             "(repair_s).",
    "partition": "the network is split into --groups random groups (or --isolate cuts off one "
                 "node) for --partition-s, then healed: the time until every checker passes "
                 "(repair_s), then lookups.",
    "messaging": "10 clusters (1 to 100 members) and 20 topics (up to 200 subscribers): "
                 "--requests at --request-rate, --broadcasts, --publishes, and a tunnel with "
                 "--tunnel-messages and one --tunnel-big-mib message, every delivery scored.",
    "messaging-churn": "the messaging workload over --churn-s while --churn-fraction of the "
                       "nodes are replaced (the newcomers take over their memberships).",
    "messaging-partition": "the messaging workload with the network split in halves for "
                           "--partition-s: requests while split, events until 20 s after the "
                           "heal; the time until every tree is whole again (recovery_s).",
    "messaging-pause": "two of the three members of a cluster frozen (SIGSTOP) for --pause-s "
                       "under steady requests, then thawed: no request may run late or twice.",
    "survey": "a cluster of 200 members (and one of 10): 200 surveys, each member must "
              "answer each once, within the deadline, one message per tree edge each way.",
    "survey-churn": "the survey workload while --churn-fraction of the nodes are replaced "
                    "over --churn-s: "
                    "answers only from live members, none twice, no missed member hidden.",
    "survey-partition": "surveys during a split in halves (--partition-s) and after the heal "
                        "(then every survey complete).",
}

EPILOG = """\
Times are simulated seconds unless a figure's name ends in wall_s; `--json` adds a `units`
map with the unit of every figure. Exit status: 0 when every check passed, 1 when one failed
(the report names each failed check, its figure and the threshold), 2 for bad arguments, 130
when interrupted. The same --seed gives the same run and the same digest, with or without
--csv, --plot or --progress.

--csv FILE writes one row per --sample-s of simulated time: t_s, phase, active_nodes,
leaf_exact_ratio (leaf sets exactly right), leaf_side_exact_ratio (right for the node's own
side of a partition), table_fill_ratio, table_unreachable_entries, routing_correct_ratio,
msgs_sent_per_node_s, msgs_dropped_per_node_s, and what was issued in that slice and how it
ended: lookups_issued/_correct/_wrong/_lost, requests_sent/_ok,
flood_deliveries_expected/flood_deliveries. --plot FILE (.png, .svg or .pdf; needs
matplotlib: pip install 'iris-overlay[plot]') draws them, with the hop-count histogram.
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except for flags and options without one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def _columns() -> int:
    return min(100, shutil.get_terminal_size().columns - 2)  # as argparse wraps


def _wrap(paragraph: str) -> str:
    return textwrap.fill(" ".join(paragraph.split()), _columns(), break_on_hyphens=False)


def _scenario_list() -> str:
    lines = ["scenarios:"]
    width = max(len(name) for name in ALL_SCENARIOS)
    for name in ALL_SCENARIOS:
        text = textwrap.wrap(SCENARIO_HELP[name], max(30, _columns() - width - 4),
                             break_on_hyphens=False)
        lines.append(f"  {name:<{width}}  {text[0]}")
        lines.extend(f"  {'':<{width}}  {more}" for more in text[1:])
    return "\n".join(lines)


def build_parser(prog: str = "python -m simulations") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a deterministic simulation of the overlay and print what it measured.\n\n"
                    + _scenario_list(),
        epilog="\n\n".join(_wrap(paragraph) for paragraph in EPILOG.split("\n\n")),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("scenario", choices=list(ALL_SCENARIOS), metavar="SCENARIO",
                        help="one of the scenarios above")
    defaults = MessagingOptions()
    ring = parser.add_argument_group("the ring")
    ring.add_argument("--nodes", type=int, default=defaults.nodes, metavar="N",
                      help="nodes in the ring")
    ring.add_argument("--seed", type=int, default=defaults.seed, metavar="S",
                      help="seed of the one RNG every random choice comes from")
    ring.add_argument("--join-rate", type=float, default=defaults.join_rate, metavar="PER_S",
                      help="joins per simulated second (0: nodes/20, at least 20)")
    ring.add_argument("--formed", action="store_true",
                      help="start from a ring formed from the truth, without joins: each "
                      "leaf set exact, each table cell its nearest candidate "
                      "(`simulations.formed`); for what comes after a join, at scale")
    ring.add_argument("--near-seeds", action="store_true",
                      help="each joiner is given the nearest active node as its seed, as "
                      "Pastry's join assumes (an operator seeding each node with a near "
                      "one), not a random one: shorter routes, cheaper joins")
    ring.add_argument("--lookups", type=int, default=defaults.lookups, metavar="N",
                      help="ring scenarios: routed lookups to score")
    ring.add_argument("--lookup-rate", type=float, default=defaults.lookup_rate,
                      metavar="PER_S", help="lookups issued per simulated second")
    faults = parser.add_argument_group("faults")
    faults.add_argument("--groups", type=int, default=defaults.groups, metavar="N",
                        help="partition: number of random groups")
    faults.add_argument("--isolate", action="store_true",
                        help="partition: cut one node off instead of splitting into groups")
    faults.add_argument("--partition-s", type=float, default=defaults.partition_s,
                        metavar="S", help="partition, messaging-partition: how long the "
                        "network stays split, simulated seconds")
    faults.add_argument("--churn-s", type=float, default=defaults.churn_s, metavar="S",
                        help="churn, messaging-churn: how long the churn lasts, simulated "
                        "seconds")
    faults.add_argument("--session-s", type=float, default=defaults.session_s, metavar="S",
                        help="churn: mean node session length, simulated seconds")
    faults.add_argument("--fail-fraction", type=float, default=defaults.fail_fraction,
                        metavar="F", help="mass-failure: fraction of the nodes that crash")
    faults.add_argument("--churn-fraction", type=float, default=defaults.churn_fraction,
                        metavar="F", help="messaging-churn: fraction of the nodes replaced")
    faults.add_argument("--pause-s", type=float, default=defaults.pause_s, metavar="S",
                        help="messaging-pause: how long two members of a cluster are frozen, "
                        "simulated seconds")
    faults.add_argument("--loss", type=float, default=defaults.loss, metavar="P",
                        help="probability that a message is lost")
    faults.add_argument("--duplicate", type=float, default=defaults.duplicate, metavar="P",
                        help="probability that a message is delivered twice")
    faults.add_argument("--links", choices=sorted(LINK_MODELS), default=None,
                        help="how messages travel: connections (TCP-like, under the runtime's "
                        "link policy), unguarded (connections the policy never closes), "
                        "datagrams (each message on its own); default: connections for the "
                        "messaging scenarios, datagrams for the ring ones")
    faults.add_argument("--wire", action="store_true",
                        help="encode and decode every message through the wire codec")
    traffic = parser.add_argument_group("messaging traffic")
    traffic.add_argument("--requests", type=int, default=defaults.requests, metavar="N",
                         help="requests to clusters")
    traffic.add_argument("--request-rate", type=float, default=defaults.request_rate,
                         metavar="PER_S", help="requests per simulated second")
    traffic.add_argument("--broadcasts", type=int, default=defaults.broadcasts, metavar="N",
                         help="broadcasts to clusters")
    traffic.add_argument("--publishes", type=int, default=defaults.publishes, metavar="N",
                         help="events published to topics")
    traffic.add_argument("--tunnel-messages", type=int, default=defaults.tunnel_messages,
                         metavar="N", help="1 KiB messages through one tunnel")
    traffic.add_argument("--tunnel-big-mib", type=int, default=defaults.tunnel_big_mib,
                         metavar="MIB", help="size of the one large tunnel message (0: none)")
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true",
                        help="print one JSON object (with a `units` map) instead of the report")
    output.add_argument("--csv", metavar="FILE", type=Path,
                        help="write the time series, one row per --sample-s")
    output.add_argument("--plot", metavar="FILE", type=Path,
                        help="draw the time series and the hop-count histogram (.png, .svg, "
                        ".pdf; needs matplotlib)")
    output.add_argument("--sample-s", type=float, default=1.0, metavar="S",
                        help="--csv and --plot: one sample every S simulated seconds")
    output.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="a progress line on stderr (default: when stderr is a terminal); "
                        "never on stdout")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--compiled", action="store_true",
                       help="run on the protocol cores and the engine compiled with mypyc "
                       "(`simulations.compiled`; built on first use, needs mypy and a C "
                       "compiler): the same run and digest, 1.3-1.6 times as fast")
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


PLOT_FORMATS = (".png", ".svg", ".pdf")


def _output_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with --csv, --plot or --sample-s, found before a long run, or None."""
    if not args.sample_s > 0:
        return "--sample-s must be a positive number of simulated seconds"
    for flag, path in (("--csv", args.csv), ("--plot", args.plot)):
        if path is None:
            continue
        parent = path.parent
        if not parent.is_dir():
            return f"{flag} {path}: no directory {parent}"
        if not os.access(parent, os.W_OK):
            return f"{flag} {path}: cannot write in {parent}"
    if args.plot is not None:
        if args.plot.suffix.lower() not in PLOT_FORMATS:
            return f"--plot {args.plot}: name a .png, .svg or .pdf file"
        from simulations import plot

        missing = plot.unavailable()
        if missing:
            return missing
    return None


def write_csv(path: Path, tl: timeline.Timeline) -> int:
    rows = tl.rows()
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(timeline.COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def _run_compiled(argv: list[str], prog: str) -> int | None:
    """`--compiled`: build, then run again on the build (no return); in that second run, make
    sure the compiled modules are the ones loaded. None: go on with the run."""
    if os.environ.get(compiled.ENV):
        if compiled.loaded():
            return None
        print(f"{prog}: --compiled: the compiled modules did not load from "
              f"{os.environ[compiled.ENV]}", file=sys.stderr)
        return 2
    try:
        folder = compiled.build(announce=lambda line: print(f"{prog}: {line}", file=sys.stderr))
    except (compiled.BuildError, OSError) as e:
        print(f"{prog}: --compiled: {e}", file=sys.stderr)
        return 2
    compiled.rerun_cli(folder, argv, prog)


def main(argv: list[str] | None = None, prog: str = "python -m simulations") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    opts = options_from(args)
    validate(parser, opts)
    problem = _output_problem(args)
    if problem:
        print(f"{prog}: {problem}", file=sys.stderr)
        return 2
    if args.compiled:
        status = _run_compiled(argv, prog)
        if status is not None:
            return status
    record = args.csv is not None or args.plot is not None
    show_progress = sys.stderr.isatty() if args.progress is None else args.progress
    progress = (timeline.Progress(sys.stderr, f"{args.scenario} {opts.nodes} nodes")
                if show_progress else None)
    monitor = None
    if record or progress is not None:
        monitor = timeline.Monitor(record=record, period_s=args.sample_s if record else 0.5,
                                   progress=progress)
    try:
        if monitor is None:
            result = ALL_SCENARIOS[args.scenario](opts)
        else:
            with timeline.watching(monitor):
                result = ALL_SCENARIOS[args.scenario](opts)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    if args.compiled:
        result["compiled"] = True
    result["units"] = units_of(result)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_report(result))
    if args.json and not result.get("checks_passed"):  # the report already says so
        for failure in result.get("failed_checks", []):
            print(f"{prog}: check failed: {describe_failure(failure)}", file=sys.stderr)
    if monitor is not None and record:
        status = _write_outputs(args, monitor.timeline, result, prog)
        if status:
            return status
    return 0 if result.get("checks_passed") else 1


def _write_outputs(args: argparse.Namespace, tl: timeline.Timeline, result: dict[str, Any],
                   prog: str) -> int:
    try:
        if args.csv is not None:
            rows = write_csv(args.csv, tl)
            print(f"{prog}: wrote {rows} rows to {args.csv}", file=sys.stderr)
        if args.plot is not None:
            from simulations import plot

            plot.write_plot(args.plot, tl, result)
            print(f"{prog}: drew {args.plot}", file=sys.stderr)
    except OSError as e:
        print(f"{prog}: cannot write {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
