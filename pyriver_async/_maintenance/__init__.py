"""Maintenance: liveness, leader election and the services the leader runs.

One module per service (``heartbeat``, ``queues``, ``leader``, ``scheduler``,
``rescuer``, ``cleaner``, ``periodic``, ``vacuumer``), all with the start/stop shape of
:class:`~.service.Service`, owned by :class:`Maintenance`.
"""

from .maintenance import Maintenance

__all__ = ["Maintenance"]
