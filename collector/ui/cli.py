"""``campus-sense collector user add|list|passwd|disable|enable`` (UI logins, in the collector DB).

    campus-sense collector user add wang --role it [--scope A --scope B] [--name "王老师"]
        password: asked twice on a terminal, or one line on stdin (--password-stdin), or
        --generate (a random one, printed once)
    campus-sense collector user add li --ldap --role security --scope A
        a directory user (no local password): role/scope used when the directory's groups give none
    campus-sense collector user list
    campus-sense collector user passwd wang [--password-stdin | --generate]
    campus-sense collector user disable wang     (ends the user's sessions)  /  enable wang
    campus-sense collector user set wang [--role R] [--scope A ... | --campus]

There are no default users: the first admin is made with ``user add``.
"""
from __future__ import annotations

import argparse
import getpass
import sys
import time

from . import passwords


def configure(sub) -> None:
    u = sub.add_parser("user", help="people who log in to the web UI (stored in the collector database)")
    us = u.add_subparsers(dest="user_cmd", metavar="{add,list,passwd,disable,enable,set}", required=True)

    def pw_opts(p):
        g = p.add_mutually_exclusive_group()
        g.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
        g.add_argument("--generate", action="store_true", help="generate a random password and print it once")

    a = us.add_parser("add", help="add a user")
    a.add_argument("name")
    a.add_argument("--role", required=True, choices=("admin", "it", "security"))
    a.add_argument("--scope", action="append", default=[], metavar="SITE_OR_BUILDING",
                   help="limit the user to this site or building (repeat; default: the whole campus)")
    a.add_argument("--name", dest="display_name", help="display name")
    a.add_argument("--ldap", action="store_true", help="a directory user: no local password")
    pw_opts(a)
    us.add_parser("list", help="list users")
    p = us.add_parser("passwd", help="set a local user's password (ends their sessions)")
    p.add_argument("name")
    pw_opts(p)
    d = us.add_parser("disable", help="disable a user and end their sessions")
    d.add_argument("name")
    en = us.add_parser("enable", help="enable a disabled user")
    en.add_argument("name")
    s = us.add_parser("set", help="change role or scope (ends their sessions)")
    s.add_argument("name")
    s.add_argument("--role", choices=("admin", "it", "security"))
    s.add_argument("--scope", action="append", metavar="SITE_OR_BUILDING")
    s.add_argument("--campus", action="store_true", help="remove the scope: the whole campus")
    for x in (u, *us.choices.values()):
        x.add_argument("--config", "-c", default=argparse.SUPPRESS, help="collector.yaml")


def _password(args) -> str | None:
    if args.generate:
        pw = passwords.generate_password()
        print(pw)
        print("(generated password: store it now, it is not shown again)", file=sys.stderr)
        return pw
    if args.password_stdin or not sys.stdin.isatty():
        pw = sys.stdin.readline().rstrip("\r\n")
    else:
        pw = getpass.getpass("password: ")
        if getpass.getpass("again: ") != pw:
            print("passwords differ", file=sys.stderr)
            return None
    why = passwords.check_new_password(pw)
    if why:
        print(why, file=sys.stderr)
        return None
    return pw


def _view(u: dict | None) -> dict | None:
    """What the audit log keeps of a user: never the password hash."""
    if u is None:
        return None
    return {k: u.get(k) for k in ("name", "role", "scope", "source", "disabled", "display_name")}


def run(args, cfg) -> int:
    from ..store.audit import record_cli
    from ..store.sqldb import Pg
    from ..store.users import UserExists, UserStore
    # where the collector keeps them: its SQLite file, or the shared PostgreSQL database
    us = UserStore(Pg(lambda: cfg.store.dsn.reveal()) if cfg.store.kind == "postgres" else cfg.store.path)
    pre = f"campus-sense collector user {args.user_cmd}"
    before = _view(us.user(args.name)) if hasattr(args, "name") else None

    def audit(after: dict | None = None) -> None:
        record_cli(cfg, f"user.{args.user_cmd}", f"user:{args.name}", before, after or _view(us.user(args.name)))

    try:
        if args.user_cmd == "add":
            h = None
            if not args.ldap:
                pw = _password(args)
                if pw is None:
                    return 2
                h = passwords.hash_password(pw)
            try:
                uid = us.user_add(args.name, args.role, h, args.scope, source="ldap" if args.ldap else "local",
                                  display_name=args.display_name)
            except UserExists as e:
                print(f"{pre}: {e}", file=sys.stderr)
                return 1
            audit()
            print(f"user {args.name} (id {uid}, role {args.role}"
                  f"{', scope ' + ','.join(args.scope) if args.scope else ''}) added", file=sys.stderr)
        elif args.user_cmd == "list":
            for u in us.users():
                last = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(u["last_login_ms"] / 1000)) \
                    if u["last_login_ms"] else "-"
                print(f"{u['name']}\t{u['role']}\t{u['source']}\t{'disabled' if u['disabled'] else 'active'}\t"
                      f"{','.join(u['scope']) or '*'}\t{last}\t{u['display_name'] or ''}")
        elif args.user_cmd == "passwd":
            u = us.user(args.name)
            if u is None or u["source"] != "local":
                print(f"{pre}: no local user {args.name!r}", file=sys.stderr)
                return 1
            pw = _password(args)
            if pw is None:
                return 2
            us.user_update(args.name, password_hash=passwords.hash_password(pw))
            audit({**(before or {}), "password": "changed"})
            print(f"password of {args.name} changed; their sessions ended", file=sys.stderr)
        elif args.user_cmd in ("disable", "enable"):
            if not us.user_update(args.name, disabled=args.user_cmd == "disable"):
                print(f"{pre}: no user {args.name!r}", file=sys.stderr)
                return 1
            audit()
            print(f"user {args.name} {args.user_cmd}d", file=sys.stderr)
        elif args.user_cmd == "set":
            ch = {}
            if args.role:
                ch["role"] = args.role
            if args.campus:
                ch["scope"] = []
            elif args.scope:
                ch["scope"] = args.scope
            if not ch:
                print(f"{pre}: nothing to change (--role, --scope, --campus)", file=sys.stderr)
                return 2
            if not us.user_update(args.name, **ch):
                print(f"{pre}: no user {args.name!r}", file=sys.stderr)
                return 1
            audit()
            print(f"user {args.name} changed; their sessions ended", file=sys.stderr)
        return 0
    finally:
        us.close()
