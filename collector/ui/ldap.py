"""Log in through the school's directory: LDAP simple bind with ``ldap3`` (pure Python).

``authenticate(settings, user, password) -> DirectoryUser | None``: binds as the user (direct
DN from ``user_dn`` or found by a service account's search), then reads the display name and the
groups that list the user to pick a role. Wrong password, unknown user, or an empty password
(an LDAP "unauthenticated bind" would succeed!) give None; a directory that cannot be reached
raises ``DirectoryError`` (the login page says so instead of "wrong password").
"""
from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

from .settings import LDAPSettings

log = logging.getLogger("collector.ui.ldap")

ROLE_ORDER = ("admin", "security", "it")


class DirectoryError(RuntimeError):
    pass


@dataclass
class DirectoryUser:
    name: str
    dn: str
    display_name: str | None
    role: str | None          # from group membership; None: not in any mapped group


def _server(s: LDAPSettings):
    import ldap3
    tls = None
    if s.url.startswith("ldaps://") or s.start_tls:
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=s.ca_file)
    return ldap3.Server(s.url, use_ssl=s.url.startswith("ldaps://"), tls=tls, connect_timeout=s.timeout_s,
                        get_info=ldap3.NONE)


def _conn(s: LDAPSettings, dn: str, password: str):
    import ldap3
    c = ldap3.Connection(_server(s), user=dn, password=password, authentication=ldap3.SIMPLE,
                         receive_timeout=s.timeout_s, raise_exceptions=False, auto_bind=ldap3.AUTO_BIND_NONE)
    c.open()
    if s.start_tls and not s.url.startswith("ldaps://"):
        c.start_tls()
    return c


def authenticate(s: LDAPSettings, user: str, password: str) -> DirectoryUser | None:
    import ldap3
    from ldap3.core.exceptions import LDAPException
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import escape_rdn

    if not user or not password or len(user) > 256 or len(password) > 1024:
        return None
    try:
        if s.user_dn:
            dn = s.user_dn.replace("{user}", escape_rdn(user))
        else:
            svc = _conn(s, s.bind_dn or "", s.bind_password.reveal() if s.bind_password else "")
            try:
                if not svc.bind():
                    raise DirectoryError(f"service bind as {s.bind_dn} refused: {svc.result.get('description')}")
                svc.search(s.base_dn, s.user_filter.replace("{user}", escape_filter_chars(user)),
                           search_scope=ldap3.SUBTREE, attributes=[], size_limit=2)
                found = [e.entry_dn for e in svc.entries]
            finally:
                svc.unbind()
            if len(found) != 1:
                return None
            dn = found[0]
        c = _conn(s, dn, password)
        try:
            if not c.bind():
                code = c.result.get("result")
                if code == 49:          # invalidCredentials
                    return None
                raise DirectoryError(f"bind refused: {c.result.get('description')} ({code})")
            display = None
            if c.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=[s.name_attribute]) and c.entries:
                v = c.entries[0][s.name_attribute].value if s.name_attribute in c.entries[0] else None
                display = v[0] if isinstance(v, list) else v
            role = None
            if s.groups and s.group_base_dn:
                f = (f"(|(member={escape_filter_chars(dn)})(uniqueMember={escape_filter_chars(dn)})"
                     f"(memberUid={escape_filter_chars(user)}))")
                c.search(s.group_base_dn, f, search_scope=ldap3.SUBTREE, attributes=[])
                mine = {e.entry_dn.lower() for e in c.entries}
                role = next((r for r in ROLE_ORDER if s.groups.get(r, "").lower() in mine), None)
            return DirectoryUser(name=user, dn=dn, display_name=display, role=role)
        finally:
            c.unbind()
    except DirectoryError:
        raise
    except (LDAPException, OSError) as e:
        raise DirectoryError(f"{s.url}: {e}") from None
