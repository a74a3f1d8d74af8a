"""How long a psycopg pool goes on failing once Postgres is back, with psycopg_pool's default
`reconnect_timeout` and with the bridge's (bridge/settings.py).

    .venv/bin/python bench/pool_reconnect.py [--url postgres://bridge:bridge@127.0.0.1:5432/bridge]
                                             [--outage 6 25 70]

Postgres is cut off through a TCP proxy on 127.0.0.1 (tests/tcp_proxy.py) while a client asks
for a connection every second, then restored; the figure is the time from the restore to the
first query that works. A script, not a test: it takes about twice the sum of the outages."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psycopg_pool import ConnectionPool

from tests.tcp_proxy import TcpProxy


def query_once(pool: ConnectionPool) -> bool:
    try:
        with pool.connection(timeout=1) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:  # PoolTimeout or a cut connection: what a request would have seen
        return False


def bridge_pool_options(url: str) -> dict[str, Any]:
    """The pool options bridge/settings.py gives Django for this database."""
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DEBUG", "1")  # no SECRET_KEY or ALLOWED_HOSTS needed to read them
    settings = importlib.import_module("bridge.settings")
    options = settings.DATABASES["default"]["OPTIONS"]
    if "pool" not in options:
        raise SystemExit("no pool to measure: unset DATABASE_POOL_SIZE=0")
    return dict(options["pool"])


def lag_after(url: str, outage: float, **pool_options: Any) -> float:
    parts = urlsplit(url)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    conninfo = url.replace(parts.netloc.rsplit("@", 1)[-1], f"127.0.0.1:{proxy.port}", 1)
    pool = ConnectionPool(
        conninfo, check=ConnectionPool.check_connection, open=True, **pool_options
    )
    try:
        pool.wait()
        proxy.down()
        went_down = time.monotonic()
        while time.monotonic() - went_down < outage:
            query_once(pool)
        proxy.up()
        back = time.monotonic()
        while not query_once(pool):
            pass
        return time.monotonic() - back
    finally:
        pool.close()
        proxy.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgres://bridge:bridge@127.0.0.1:5432/bridge")
    parser.add_argument("--outage", type=float, nargs="+", default=[6, 25, 70])
    args = parser.parse_args()
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    print("outage s | still failing after the restore, s: default | bridge")
    bridge_options = bridge_pool_options(args.url)
    default_options = {k: v for k, v in bridge_options.items() if k != "reconnect_timeout"}
    for outage in args.outage:
        default = lag_after(args.url, outage, **default_options)
        bridge = lag_after(args.url, outage, **bridge_options)
        print(f"{outage:8.0f} | {default:.2f} | {bridge:.2f}", flush=True)


if __name__ == "__main__":
    main()
