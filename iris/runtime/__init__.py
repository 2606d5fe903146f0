"""The trio driver of the cores: transports, links, timers, and the public `Node` and `Tunnel`."""

from iris.runtime.node import Node, Registration, open_node, time_left
from iris.runtime.survey import SurveyResult
from iris.runtime.tunnel import Tunnel

__all__ = ["Node", "Registration", "SurveyResult", "Tunnel", "open_node", "time_left"]
