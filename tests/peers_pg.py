"""A throwaway PostgreSQL cluster (Debian's postgresql: initdb + pg_ctl) on loopback and a unix
socket in its own temp dir, password auth over TCP. Run as the ``postgres`` user when we are root
(initdb refuses root)."""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.peers import free_port


def pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def available() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return pg_bin("initdb") is not None and pg_bin("pg_ctl") is not None


class Postgres:
    def __init__(self, port: int | None = None):
        if not available():
            raise RuntimeError("PostgreSQL or psycopg is not installed (scripts/install.sh installs them)")
        self.port = port or free_port()
        self.password = secrets.token_hex(12)
        self.user = "campus"
        # not under pytest's 0700 tmp dir: the server runs as another user when we are root
        self.dir = Path(tempfile.mkdtemp(prefix="pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        os.chmod(self.dir, 0o700)
        self.data = self.dir / "data"

    def _run(self, *cmd: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_user, *cmd], check=True, capture_output=True, text=True, **kw)

    def init(self) -> "Postgres":
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self.as_user:
            pw = pwd.getpwnam("postgres")
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        os.chmod(pwfile, 0o600)
        self._run(pg_bin("initdb"), "-D", str(self.data), "-U", self.user, "--pwfile", str(pwfile),
                  "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale")
        pwfile.unlink()
        return self

    def start(self) -> "Postgres":
        if not self.data.exists():
            self.init()
        opts = (f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c max_connections=200 -c shared_buffers=32MB")
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "pg.log"), "-w", "-t", "60",
                  "-o", opts, "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        try:
            self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        except subprocess.CalledProcessError:
            pass

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} password={self.password} dbname=postgres"

    def create_db(self, name: str) -> str:
        """A fresh database; returns its DSN."""
        import psycopg
        with psycopg.connect(self.dsn, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}"')
            c.execute(f'CREATE DATABASE "{name}"')
        return self.dsn.replace("dbname=postgres", f"dbname={name}")
