"""User and token changes made on the command line land in the audit log (who, when, before/after,
via cli) and never carry a password or token."""
import subprocess
import sys

from collector.store.audit import AuditStore
from tests.collector_util import write_config


def cli(cfg, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", "campus_sense", "collector", *args, "--config", str(cfg)],
                          input=stdin, capture_output=True, text=True, timeout=60)


def test_user_and_token_changes_are_audited(tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text("rules: []\n")
    cfg = write_config(tmp_path / "collector.yaml", 1883, "collector", "pw", tmp_path / "c.db",
                       extra=f"rules:\n  paths: [{rules.name}]\n  db: alerts.db\n")
    assert cli(cfg, "user", "add", "wang", "--role", "it", "--scope", "A", "--password-stdin",
               stdin="a-long-Secret-1234\n").returncode == 0
    assert cli(cfg, "user", "passwd", "wang", "--password-stdin", stdin="another-Secret-5678\n").returncode == 0
    assert cli(cfg, "user", "set", "wang", "--role", "security", "--campus").returncode == 0
    assert cli(cfg, "user", "disable", "wang").returncode == 0
    tok = cli(cfg, "token", "create", "--role", "admin", "--name", "ci")
    assert tok.returncode == 0
    assert cli(cfg, "token", "revoke", "ci").returncode == 0
    a = AuditStore(str(tmp_path / "alerts.db"))
    rows = a.entries()
    a.close()
    assert [r["action"] for r in rows] == ["user.add", "user.passwd", "user.set", "user.disable", "token.create",
                                           "token.revoke"]
    assert {r["via"] for r in rows} == {"cli"} and all(r["actor"] for r in rows)
    add, pw, st, dis = rows[:4]
    assert add["before"] is None and add["after"]["role"] == "it" and add["after"]["scope"] == ["A"]
    assert pw["after"]["password"] == "changed"
    assert st["before"]["role"] == "it" and st["after"]["role"] == "security" and st["after"]["scope"] == []
    assert dis["after"]["disabled"] and not dis["before"]["disabled"]
    text = repr(rows)
    assert "Secret" not in text and tok.stdout.strip() not in text and "scrypt" not in text
