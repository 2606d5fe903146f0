"""What the workload agents write, one JSON object a line, and reading it back.

Every record has a kind `k` and wall-clock times (every namespace shares the machine's clock):

- `subscribed` {t}: the agent (re)connected to its node and subscribed to the events topic;
- `exec` {id, t, sent, timeout}: this agent's member handler started request `id`, which its
  caller sent at `sent` with `timeout` seconds to wait;
- `req` {id, target, sent, done, outcome, detail}: a request this agent sent to cluster
  `target` and how it ended (`ok`, `timeout`, `error`, `closed`, `no answer`);
- `pub` {seq, t}: this agent published its event `seq`;
- `ev` {pub, seq, sent, t}: this agent delivered event `seq` of publisher `pub`, published at
  `sent`;
- `status` {t, id, leaf}: its node's id and leaf set;
- `tunnel` {event, s, i, t, reason}: the tunnel session `s`: `open`, `sent` message `i` (the
  opener), `rx` message `i` (the member), `echo` of message `i` back at the opener, `closed`.

`Records` holds every agent's records by kind, in the order each agent wrote them (the order
of deliveries is what the order check reads), each tagged with the agent's name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

TOPIC = "chaos-events"
KINDS = ("subscribed", "exec", "req", "pub", "ev", "status", "tunnel")


def agent_name(group: int, index: int) -> str:
    """The agent (and node) `index` of `group`: "g<group>n<index>"."""
    return f"g{group}n{index}"


def agent_group(name: str) -> int:
    return int(name[1:].split("n")[0])


def cluster_of(group: int) -> str:
    """The cluster every member of `group` serves."""
    return f"chaos-g{group}"


def cluster_group(name: str) -> int:
    return int(name.removeprefix("chaos-g"))


@dataclass
class Records:
    by_kind: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {kind: [] for kind in KINDS})

    def add(self, agent: str, record: dict[str, Any]) -> None:
        record["agent"] = agent
        self.by_kind[record["k"]].append(record)

    def __getitem__(self, kind: str) -> list[dict[str, Any]]:
        return self.by_kind[kind]


class Tail:
    """Reads the records an agent appended to its file since the last call (a line still
    being written waits for its newline)."""

    def __init__(self, agent: str, path: str) -> None:
        self.agent = agent
        self.path = path
        self._offset = 0
        self._partial = b""

    def read_into(self, records: Records) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line:
                records.add(self.agent, json.loads(line))
