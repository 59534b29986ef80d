"""PostgreSQL for the production topology's Prefect server: the OS package's binaries (Debian:
/usr/lib/postgresql/<major>/bin), a cluster of our own under $HYBRIDOPS_HOME/data/postgres listening on 127.0.0.1
only (no Unix socket), a role and database for Prefect created idempotently, and Prefect's migrations.

PostgreSQL refuses to run as root. When hybridops runs as root the cluster belongs to the OS `postgres` user
(the package creates it) and every PostgreSQL program runs as that user (setpriv), so $HYBRIDOPS_HOME must be
reachable by it (chmod o+x on its folders). Passwords (scram-sha-256) live in $HOME/run/*.secret (0600) and
reach the programs through their environment or a file only the cluster's owner reads, never argv.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

from hybridops.infra.binaries import InstallError
from hybridops.infra.local_secrets import read_or_create_secret
from hybridops.infra.services import Service, ServiceError, prefect_service
from hybridops.tasks.core.settings import Settings

OS_USER = "postgres"
ADMIN_ROLE = "postgres"
DATABASE = ROLE = "prefect"
DATABASE_URL_VAR = "PREFECT_API_DATABASE_CONNECTION_URL"
INSTALL_HINT = ("install it with `HYBRIDOPS_TOPOLOGY=production bash infra/setup.sh` (as root: apt-get install "
                "postgresql) or put its bin folder (pg_ctl, initdb, postgres) on the PATH")


def bin_dir() -> Path:
    """Where the server programs are: on the PATH (a symlink is followed), else Debian's newest version."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if versions:
        return versions[-1].parent
    raise InstallError(f"PostgreSQL is not installed: {INSTALL_HINT}")


def data_dir(settings: Settings) -> Path:
    return (settings.home / "data" / "postgres").resolve()


def _as_owner() -> list[str]:
    """Prefix that runs a PostgreSQL program as the cluster's owner: the `postgres` user when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        raise InstallError(f"running as root needs the OS user {OS_USER!r} the PostgreSQL package creates: "
                           f"{INSTALL_HINT}") from None
    return ["setpriv", f"--reuid={OS_USER}", f"--regid={OS_USER}", "--init-groups", "--"]


def _admin_password(settings: Settings) -> str:
    return read_or_create_secret(settings.run_dir / "postgres-admin.secret")


def prefect_password(settings: Settings) -> str:
    if settings.postgres_password is not None:
        return settings.postgres_password.get_secret_value()
    return read_or_create_secret(settings.run_dir / "postgres-prefect.secret")


def database_url(settings: Settings) -> str:
    """Prefect's database URL (DATABASE_URL_VAR), for asyncpg, which Prefect itself depends on."""
    return (f"postgresql+asyncpg://{ROLE}:{quote(prefect_password(settings), safe='')}@127.0.0.1:"
            f"{settings.postgres_port}/{DATABASE}")


def _run(command: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise ServiceError(f"{what} failed (exit {result.returncode}): {(result.stderr or result.stdout).strip()[-2000:]}")
    return result


def init_cluster(settings: Settings) -> bool:
    """initdb once (True when it ran): superuser `postgres` with a generated password, scram-sha-256 for all."""
    folder = data_dir(settings)
    if (folder / "PG_VERSION").exists():
        return False
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    owner = _as_owner()
    if owner:
        shutil.chown(folder, OS_USER, OS_USER)
        if subprocess.run([*owner, "test", "-w", str(folder)]).returncode != 0:
            raise ServiceError(f"the OS user {OS_USER!r} cannot reach {folder}: make the folders above it "
                               f"traversable (chmod o+x) or choose another HYBRIDOPS_HOME")
    with tempfile.TemporaryDirectory(prefix="hybridops-initdb-") as scratch:
        pwfile = Path(scratch) / "pw"
        pwfile.write_text(_admin_password(settings) + "\n")
        pwfile.chmod(0o600)
        if owner:
            shutil.chown(scratch, OS_USER, OS_USER)
            shutil.chown(pwfile, OS_USER, OS_USER)
        _run([*owner, str(bin_dir() / "initdb"), "-D", str(folder), "-U", ADMIN_ROLE, "--auth=scram-sha-256",
              f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C"], "initdb")
    return True


def _ready(settings: Settings) -> bool:
    command = [str(bin_dir() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(settings.postgres_port)]
    return subprocess.run(command, capture_output=True).returncode == 0


def _version() -> str:
    result = subprocess.run([str(bin_dir() / "postgres"), "--version"], capture_output=True, text=True)
    return result.stdout.strip()


def postgres_service(settings: Settings) -> Service:
    """The postmaster in the foreground (its own PID is the one `down` stops; SIGINT is its fast shutdown)."""
    return Service(
        name="postgres",
        url=f"postgresql://127.0.0.1:{settings.postgres_port}",
        health_path="",
        ports={"sql": settings.postgres_port},
        command=lambda: [*_as_owner(), str(bin_dir() / "postgres"), "-D", str(data_dir(settings)),
                         "-p", str(settings.postgres_port), "-c", "listen_addresses=127.0.0.1",
                         "-c", "unix_socket_directories="],
        version=_version,
        marker="postgres",
        probe=lambda: _ready(settings),
        stop_signal=signal.SIGINT,
    )


def _psql(settings: Settings, sql: str, database: str = "postgres") -> str:
    """Run SQL as the superuser over TCP (statements on stdin: the passwords in them stay out of argv)."""
    env = {**os.environ, "PGPASSWORD": _admin_password(settings), "PGCONNECT_TIMEOUT": "10"}
    command = [str(bin_dir() / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
               "-p", str(settings.postgres_port), "-U", ADMIN_ROLE, "-d", database]
    return _run(command, "psql", input=sql, env=env).stdout.strip()


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def ensure_database(settings: Settings) -> dict:
    """Role and database for Prefect, created when missing; the role's password set to the current one."""
    password = _literal(prefect_password(settings))
    had_role = _psql(settings, f"SELECT 1 FROM pg_roles WHERE rolname = {_literal(ROLE)};") == "1"
    verb = "ALTER" if had_role else "CREATE"
    _psql(settings, f"{verb} ROLE {ROLE} LOGIN PASSWORD {password};")
    had_database = _psql(settings, f"SELECT 1 FROM pg_database WHERE datname = {_literal(DATABASE)};") == "1"
    if not had_database:
        _psql(settings, f"CREATE DATABASE {DATABASE} OWNER {ROLE};")
    return {"role": "kept" if had_role else "created", "database": "kept" if had_database else "created"}


def prefect_on_postgres(settings: Settings) -> Service:
    """The Prefect server with its database on this PostgreSQL (migrated by `migrate`, not on each start)."""
    base = prefect_service(settings)
    return replace(base, env=base.env | {"PREFECT_API_DATABASE_MIGRATE_ON_START": "false"},
                   secret_env=lambda: {DATABASE_URL_VAR: database_url(settings)})


def migrate(settings: Settings) -> None:
    """Prefect's database migrations up to this Prefect version (idempotent)."""
    server = prefect_on_postgres(settings)
    env = {**os.environ, **server.env, **server.secret_env()}
    _run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"], "prefect server database upgrade",
         env=env, cwd=settings.home, timeout=600)
