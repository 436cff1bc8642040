"""Debian's slapd as a real LDAP peer on loopback (a throwaway directory per test)."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from tests.peers import free_port, wait_port

SLAPD = "/usr/sbin/slapd"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")


def available() -> bool:
    return Path(SLAPD).exists() and shutil.which("ldapadd") is not None and \
        all(Path(f"/etc/ldap/schema/{s}.schema").exists() for s in SCHEMAS)


class Slapd:
    def __init__(self, workdir: Path, suffix: str = "dc=school,dc=cn", root_pw: str = "root-secret-x"):
        self.dir, self.suffix, self.root_pw = workdir, suffix, root_pw
        self.root_dn = f"cn=admin,{suffix}"
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Slapd":
        db = self.dir / "db"
        db.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "slapd.conf"
        conf.write_text("".join(f"include /etc/ldap/schema/{s}.schema\n" for s in SCHEMAS) + f"""
pidfile {self.dir}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 10485760
suffix "{self.suffix}"
rootdn "{self.root_dn}"
rootpw {self.root_pw}
directory {db}
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by * none
""")
        self.log = open(self.dir / "slapd.log", "ab")
        self.proc = subprocess.Popen([SLAPD, "-d", "0", "-h", f"{self.url}/", "-f", str(conf)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, 15)
        return self

    def add(self, ldif: str) -> None:
        subprocess.run(["ldapadd", "-x", "-H", self.url, "-D", self.root_dn, "-w", self.root_pw],
                       input=ldif, text=True, check=True, capture_output=True, timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        time.sleep(0)
