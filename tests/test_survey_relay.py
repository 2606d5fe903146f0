"""Surveys through a node's relay (this project's extension, `iris.relay.survey`): the
Python relay client and `iris survey`."""

import json
import sys

import pytest
import trio

import iris
from iris.relay import survey as relay_survey
from iris.relay.client import RelayClient
from iris.relay.server import RelayServer
from iris.testing import local_nodes


class Who:
    def __init__(self, name: bytes) -> None:
        self.name = name

    async def handle_survey(self, data: bytes) -> bytes:
        return self.name + b":" + data


async def test_survey_through_the_relay_client_and_the_cli():
    with trio.fail_after(60):
        async with local_nodes(3, transport="tcp") as nodes, trio.open_nursery() as nursery:
            for i, node in enumerate(nodes):
                await node.register("who", Who(b"m%d" % i))
            port = await nursery.start(RelayServer(nodes[0]).serve, 0, ("127.0.0.1",))
            async with RelayClient.open(port) as client:
                result = await client.survey("who", b"hi", timeout=5)
                assert result.complete and result.members_known == 3
                assert result.answers == {n.id: b"m%d:hi" % i for i, n in enumerate(nodes)}
                with pytest.raises(iris.NoSuchClusterError):
                    await client.survey("nobody", b"hi", timeout=5)
            cli = [sys.executable, "-m", "iris", "survey", "--relay-port", str(port)]
            out = await trio.run_process(cli + ["who", "hi"], capture_stdout=True,
                                         capture_stderr=True)
            lines = sorted(out.stdout.decode().splitlines())
            assert lines == sorted(f"{n.id:032x} m{i}:hi" for i, n in enumerate(nodes))
            assert "3 of 3 members answered" in out.stderr.decode()
            out = await trio.run_process(cli + ["who", "hi", "--json"], capture_stdout=True)
            assert json.loads(out.stdout)["members_known"] == 3
            missing = await trio.run_process(cli + ["nobody", "x"], capture_stderr=True,
                                             check=False)
            assert missing.returncode == 1 and b"no members" in missing.stderr
            nursery.cancel_scope.cancel()


def test_the_extensions_encoding_round_trips_and_refuses_garbage():
    assert relay_survey.parse_question(relay_survey.question("c", b"q\0r")) == ("c", b"q\0r")
    with pytest.raises(ValueError):
        relay_survey.parse_question(b"no separator")
    result = iris.SurveyResult({5: b"\xff", 7: b""}, 3)
    back = relay_survey.decode_result(relay_survey.encode_result(result))
    assert back == result and not back.complete and back.missing == 1
    with pytest.raises(iris.IrisError):
        relay_survey.decode_result(b"{}")
    fault = relay_survey.fault(iris.LimitExceededError("too big"))
    assert isinstance(relay_survey.error_of(iris.RemoteError(fault)), iris.LimitExceededError)
    assert type(relay_survey.error_of(iris.RemoteError("other: x"))) is iris.RemoteError
