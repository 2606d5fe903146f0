"""The link policy (overlay.link_policy): which frames go ahead on a link."""

import inspect

import pytest

import iris.core.messages
import overlay.messages
from overlay.link_policy import BULK, CONTROL, PRIORITY_OF, LinkPolicy
from overlay.wire import Message


def message_classes(module):
    return [cls for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, Message) and cls.__module__ == module.__name__]


INTENDED = {
    "Heartbeat": CONTROL, "Ping": CONTROL, "Pong": CONTROL, "Departed": CONTROL,
    "RowRequest": CONTROL, "RowReply": CONTROL, "JoinRequest": CONTROL, "JoinReply": CONTROL,
    "Hello": CONTROL, "Leave": CONTROL, "RouteAck": CONTROL, "Addresses": CONTROL,
    "Route": BULK, "Direct": BULK, "Lookup": BULK,
}


def test_every_overlay_message_has_its_own_entry():
    """A new overlay message must be given a priority on purpose, not fall to the default."""
    assert set(PRIORITY_OF) == set(message_classes(overlay.messages))


@pytest.mark.parametrize("cls", message_classes(overlay.messages), ids=lambda cls: cls.__name__)
def test_overlay_messages_get_the_intended_priority(cls):
    msg = cls(*(None for _ in cls.SPEC))  # the policy looks at the class only
    assert LinkPolicy().priority(msg) is INTENDED[cls.__name__]


@pytest.mark.parametrize("cls", message_classes(iris.core.messages), ids=lambda cls: cls.__name__)
def test_messaging_layer_messages_are_bulk(cls):
    msg = cls(*(None for _ in cls.SPEC))
    assert LinkPolicy().priority(msg) is BULK


def test_a_routed_control_message_is_bulk():
    """What a route carries travels as the route does: in turn with the other routed traffic."""
    routed = overlay.messages.Route(1, 2, 3, 0, overlay.messages.Ping(1, False, True))
    assert LinkPolicy().priority(routed) is BULK
