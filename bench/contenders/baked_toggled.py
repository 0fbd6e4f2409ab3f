"""Not a contender: the baked service as shipped, whose access line (SIGUSR1) and /metrics counting (SIGUSR2) a
signal turns off, and the same signal on again, in the running process, so that each default is priced against
the same process without it (defaults.py): two processes of the same code differ by up to 5 % on this VM."""

import signal
from collections.abc import Callable

from heaven.constants import DEFAULT
from heaven_plugins.logs import log_request
from heaven_plugins.metrics import Metrics
from heaven_service.app import app

observers = app.subdomains[DEFAULT].observers  # what the App calls once each request is answered
shipped = list(observers)


def toggle(default) -> Callable:
    def handler(signum, frame) -> None:
        if len(observers) == len(shipped):
            observers[:] = [o for o in shipped if o is not default and getattr(o, "__func__", None) is not default]
        else:
            observers[:] = shipped

    return handler


signal.signal(signal.SIGUSR1, toggle(log_request))
signal.signal(signal.SIGUSR2, toggle(Metrics.observe))
