"""`iris chaos`: real `iris node` processes, a workload with checks, faults on a schedule.

The pieces, each its own module: `topology` (network namespaces, addresses, cuts), `processes`
(starting, pausing, killing and always removing the processes), `agent` (the workload process
beside each node), `records` (what the agents write), `report` (figures and checks computed
from the records alone) and `harness` (the schedule that ties them together).
"""
