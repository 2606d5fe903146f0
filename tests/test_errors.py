"""The errors raised to applications (iris.errors)."""

import builtins

import trio

import iris
import iris.testing


def test_the_timeout_error_is_the_builtin_one_too():
    assert issubclass(iris.TimeoutError, builtins.TimeoutError)
    assert issubclass(iris.TimeoutError, iris.IrisError)


async def test_a_request_that_times_out_is_caught_as_the_builtin_timeout_error():
    class Stuck:
        async def handle_request(self, data: bytes) -> bytes:
            await trio.sleep_forever()

    async with iris.testing.local_nodes(2) as nodes:
        await nodes[1].register("stuck", Stuck())
        caught = None
        try:
            await nodes[0].request("stuck", b"x", timeout=0.2)
        except TimeoutError as exc:  # the builtin: this module does not import iris's name
            caught = exc
        assert isinstance(caught, iris.TimeoutError)
