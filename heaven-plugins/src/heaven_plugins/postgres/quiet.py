"""asyncpg's pool logger made quiet: one line, not a traceback each retry, for a floor it cannot restore."""

import logging
from typing import TYPE_CHECKING

from .errors import explain

if TYPE_CHECKING:
    from .plugin import Postgres


class QuietFloor(logging.Filter):
    """On asyncpg's pool logger: its "Failed to restore the pool connection floor; retrying" comes once a
    retry, each with a 30-line traceback. During an outage the plugin's own WARNING says it all: dropped.
    Otherwise it is one line, and the running plugins look into it with a probe."""

    def __init__(self) -> None:
        super().__init__()
        self.plugins: set[Postgres] = set()

    def watch(self, plugin: "Postgres") -> None:
        """Filter the records about `plugin`'s pool (its startup)."""
        self.plugins.add(plugin)
        logging.getLogger("asyncpg.pool").addFilter(self)

    def forget(self, plugin: "Postgres") -> None:
        """No more (its shutdown); the filter leaves the logger with the last plugin."""
        self.plugins.discard(plugin)
        if not self.plugins:
            logging.getLogger("asyncpg.pool").removeFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Failed to restore the pool connection floor") or not record.exc_info:
            return True
        _, failure, trace = record.exc_info
        # asyncpg logs it where the pool caught the failure, in a method of its own: that frame's `self`.
        pool = trace.tb_frame.f_locals.get("self") if trace else None
        if any(replica.pool is pool for plugin in self.plugins for replica in plugin.replicas):
            return False  # a replica's pool: the replica's own WARNING says it is down
        plugins = [plugin for plugin in self.plugins if plugin.pool is pool]
        if len(plugins) == 1:
            record.postgres = plugins[0]  # which plugin's pool, as on the plugin's own records
        plugins = plugins or list(self.plugins)
        if any(not plugin.available for plugin in plugins):
            return False
        record.msg, record.args = f"{record.msg}: %s", (explain(failure),)
        record.exc_info = record.exc_text = None
        for plugin in plugins:
            plugin._floor_failed(failure)
        return True


quiet_floor = QuietFloor()
