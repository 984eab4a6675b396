"""A throwaway PostgreSQL server for tests: `initdb` into a temp directory, `pg_ctl start` on a
free port and a Unix socket of its own, stopped and removed afterwards.

    with temporary_postgres() as url:      # postgresql://gateway@127.0.0.1:PORT/gateway
        ...

PostgreSQL refuses to run as root, so when the tests run as root (CI does) the server runs as the
`postgres` user that Debian's package creates. Debian keeps the server binaries under
/usr/lib/postgresql/<version>/bin; scripts/setup.sh installs the package where it is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks.resources import free_port


def postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


@contextlib.contextmanager
def temporary_postgres() -> Iterator[str]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql; scripts/setup.sh does)")
    # Its own directory right under /tmp: pytest's tmp dirs are private to root, which the
    # `postgres` user could not enter.
    directory = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
    data, sockets = directory / "pgdata", directory / "pgsock"
    sockets.mkdir(parents=True)
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(directory, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()

    def run(*argv: str) -> None:
        subprocess.run([*as_user, *argv], check=True, capture_output=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "gateway", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(directory / "pg.log"), "-w", "start")
    try:
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "gateway", "gateway")
        yield f"postgresql://gateway@127.0.0.1:{port}/gateway"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(directory, ignore_errors=True)
