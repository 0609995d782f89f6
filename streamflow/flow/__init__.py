"""Flow control: credit windows, tickets and slots.

The layer under both the operator algebra (``streamflow.ops``) and the
transports: a source takes credit before it reads, a step takes a slot before
it runs, and both give them back when the work is done. Nothing here knows
about events, reactivex or I/O.
"""

from streamflow.flow._adaptive import AdaptiveConcurrency, AdaptiveStatistics
from streamflow.flow._credit import CreditStatistics, CreditWindow, Ticket
from streamflow.flow._slots import Slots

__all__ = [
    "AdaptiveConcurrency",
    "AdaptiveStatistics",
    "CreditStatistics",
    "CreditWindow",
    "Slots",
    "Ticket",
]
