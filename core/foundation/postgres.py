"""What every PostgreSQL-backed store here shares: connection defaults (`connect`), the URL shown without its
password and the error for a failed first connection, the optional psycopg import, and running a write again when the server aborted it.

Used by the support prediction log (core.mlops.feedback_postgres), the shared model registry
(core.mlops.registry_postgres) and the finance monitor's store (solutions.finance.monitor.store_postgres).
Leaves out: the stores' tables and their rules.
"""

from __future__ import annotations

import re
import time
from functools import wraps

from core.foundation.errors import UserError

RETRIES = 8  # attempts of a write the server aborted (deadlock, serialization failure)
# libpq settings unless the URL gives its own: a server that does not answer (a network partition,
# not a refused connection) costs a connect or a write at most about this long before a store
# counts it as an outage, so a request thread is not held for the kernel's TCP timeouts.
CONNECTION = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
              "keepalives_count": 3, "tcp_user_timeout": 5000}
URL_PREFIXES = ("postgresql://", "postgres://")


def is_database_url(target) -> bool:
    """True for a PostgreSQL URL (postgresql://... or postgres://...)."""
    return isinstance(target, str) and target.startswith(URL_PREFIXES)


def redacted(dsn: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", dsn)


def connect(psycopg, dsn: str, **kwargs):
    """A psycopg connection with CONNECTION defaults under the URL's own parameters (the URL wins)."""
    return psycopg.connect(**(CONNECTION | psycopg.conninfo.conninfo_to_dict(dsn)), **kwargs)


def cannot_connect(what: str, dsn: str, exc: Exception) -> UserError:
    """The error for a first connection that failed: `what` at the URL without its password (a URL
    parse error quotes the URL, so it is redacted in the message too)."""
    shown = redacted(dsn)
    return UserError(f"cannot connect to {what} at {shown}: {str(exc).strip().replace(dsn, shown)}")


def import_psycopg(needed_by: str):
    """The psycopg module, or a UserError saying that `needed_by` needs the [scale] extra."""
    try:
        import psycopg  # lazy: an optional extra ([scale]); SQLite users never load it
    except ImportError:
        raise UserError(f"{needed_by} needs psycopg: pip install -e '.[scale]'") from None
    return psycopg


def retried(method):
    """Run a write (a method) again, up to RETRIES times with a short backoff, when the server
    aborted its transaction (deadlock, serialization failure)."""

    @wraps(method)
    def run(self, *args, **kwargs):
        rollback = import_psycopg("a PostgreSQL store").errors.TransactionRollback
        for attempt in range(RETRIES):
            try:
                return method(self, *args, **kwargs)
            except rollback:
                if attempt == RETRIES - 1:
                    raise
                time.sleep(0.01 * 2 ** attempt)
    return run
