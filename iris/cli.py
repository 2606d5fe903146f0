"""The `iris` command line. Subcommands grow with the project; today: `iris sim`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="iris", description="Iris-style messaging overlay.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sim", help="run a deterministic ring simulation (see `iris sim -h`)",
                   add_help=False)
    if argv and argv[0] == "sim":
        from simulations.cli import main as sim_main

        return sim_main(argv[1:], prog="iris sim")
    parser.parse_args(argv)
    return 2


if __name__ == "__main__":
    sys.exit(main())
