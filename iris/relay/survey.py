"""This project's extension of the relay protocol: surveys through a node's relay.

The Iris relay protocol has no survey packet. A client asks its node for a survey with a plain
Request to the node-local pseudo-cluster `iris.survey` (`SURVEY_CLUSTER`, never routed, as
`iris.status` is): the request's data is the surveyed cluster's name (UTF-8), a NUL byte and
the question; its timeout is the survey's. The node runs the survey (`Node.start_survey`) and
replies with JSON `{"members_known": n, "complete": bool, "answers": {member id as 32 hex
digits: answer in base64}}`, or a fault `ErrorName: text` (NoSuchClusterError,
LimitExceededError, ...), or timed-out. Any client of the protocol, in any language, can use it
without a change to its packets; a node without the extension answers it as a request to a
cluster with no members.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from iris.errors import IrisError, LimitExceededError, NoSuchClusterError, RemoteError
from iris.relay.session import SURVEY_CLUSTER
from iris.runtime.survey import SurveyResult

__all__ = ["SURVEY_CLUSTER", "decode_result", "encode_result", "error_of", "fault",
           "parse_question", "question"]

_ERRORS: dict[str, type[IrisError]] = {
    "NoSuchClusterError": NoSuchClusterError,
    "LimitExceededError": LimitExceededError,
}


def question(cluster: str, data: bytes) -> bytes:
    """The data of the Request that asks for a survey of `cluster`."""
    if "\0" in cluster:
        raise ValueError("a cluster name with a NUL character cannot be surveyed via the relay")
    return cluster.encode() + b"\0" + data


def parse_question(data: bytes) -> tuple[str, bytes]:
    """(cluster, question); ValueError for data that is not one."""
    name, sep, rest = data.partition(b"\0")
    if not sep:
        raise ValueError("a survey request is the cluster's name, a NUL byte and the question")
    return name.decode(), rest  # (UnicodeDecodeError is a ValueError)


def encode_result(result: SurveyResult) -> bytes:
    return json.dumps({
        "members_known": result.members_known,
        "complete": result.complete,
        "answers": {f"{member:032x}": base64.b64encode(answer).decode()
                    for member, answer in result.answers.items()},
    }).encode()


def decode_result(data: bytes) -> SurveyResult:
    try:
        raw: Any = json.loads(data)
        answers = {int(member, 16): base64.b64decode(answer, validate=True)
                   for member, answer in raw["answers"].items()}
        return SurveyResult(answers, int(raw["members_known"]))
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise IrisError(f"not a survey result from the node: {exc}") from None


def fault(error: IrisError) -> str:
    return f"{type(error).__name__}: {error}"


def error_of(remote: RemoteError) -> IrisError:
    """The error a survey's fault stands for (a RemoteError when it is not one of ours)."""
    name, sep, text = str(remote).partition(": ")
    kind = _ERRORS.get(name) if sep else None
    return kind(text) if kind is not None else remote
