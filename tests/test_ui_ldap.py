"""UI login through the school's directory: a real slapd (Debian) on loopback, ldap3 simple bind.
Direct-bind and search-bind modes, group -> role, a pre-created directory user keeps its role and
scope, wrong/empty passwords, a user without a role, a directory that is down (503, not 'wrong
password')."""
from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from collector.api.app import create_app
from collector.store.sqlite import SQLiteStore
from collector.store.users import UserStore
from collector.ui.settings import UISettings
from tests.peers_ldap import Slapd, available

pytestmark = pytest.mark.skipif(not available(), reason="needs slapd and ldap-utils (apt-get install slapd ldap-utils)")

SUFFIX = "dc=school,dc=cn"
LDIF = f"""dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: school
o: School

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{SUFFIX}
objectClass: organizationalUnit
ou: groups

dn: ou=services,{SUFFIX}
objectClass: organizationalUnit
ou: services

dn: uid=wang,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: wang
cn:: 546L5Lyf
sn: Wang
userPassword: wang-pass-1234

dn: uid=zhou,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: zhou
cn: Zhou Min
sn: Zhou
userPassword: zhou-pass-1234

dn: uid=li,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: li
cn: Li Na
sn: Li
userPassword: li-pass-12345

dn: uid=nobody,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: nobody
cn: No Role
sn: Nobody
userPassword: nobody-pass-1

dn: cn=campus-sense,ou=services,{SUFFIX}
objectClass: inetOrgPerson
cn: campus-sense
sn: service
userPassword: service-pass-1

dn: cn=net-admins,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: net-admins
member: uid=wang,ou=people,{SUFFIX}

dn: cn=guards,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: guards
member: uid=zhou,ou=people,{SUFFIX}
"""
GROUPS = {"admin": f"cn=net-admins,ou=groups,{SUFFIX}", "security": f"cn=guards,ou=groups,{SUFFIX}"}


@pytest.fixture
def slapd(tmp_path):
    s = Slapd(tmp_path / "ldap", SUFFIX).start()
    s.add(LDIF)
    yield s
    s.stop()


def make_app(tmp_path, ldap: dict):
    store = SQLiteStore(str(tmp_path / "c.db"))
    app = create_app(store)
    app.state.ui_settings = UISettings.model_validate({"ldap": ldap})
    return app, store


def login(c: TestClient, user: str, pw: str):
    tok = re.search(r'name="csrf" value="([^"]+)"', c.get("/ui/login").text).group(1)
    return c.post("/ui/login", data={"username": user, "password": pw, "csrf": tok}, follow_redirects=False)


def test_direct_bind_groups_roles_and_scope(tmp_path, slapd):
    app, store = make_app(tmp_path, {"url": slapd.url, "user_dn": "uid={user},ou=people," + SUFFIX,
                                     "group_base_dn": "ou=groups," + SUFFIX, "groups": GROUPS})
    try:
        c = TestClient(app)
        assert "统一身份" in c.get("/ui/login").text          # the form says a school account works
        r = login(c, "wang", "wang-pass-1234")
        assert r.status_code == 303, r.text
        page = c.get("/ui/").text
        assert "王伟" in page and "管理员" in page              # display name from cn, role admin from the group
        me = UserStore(store.path).user("wang")
        assert me["source"] == "ldap" and me["role"] == "admin" and me["password_hash"] is None
        assert c.get("/api/v1/agents").status_code == 200

        c2 = TestClient(app)
        assert login(c2, "zhou", "zhou-pass-1234").status_code == 303
        assert c2.get("/api/v1/agents").status_code == 403    # guards -> security
        # wrong password, empty password (an unauthenticated bind must not log in), unknown user,
        # and a filter/DN injection attempt
        for user, pw in (("wang", "wrong"), ("wang", ""), ("ghost", "x-pass-1234"), ("wang,ou=people", "x"),
                         ("*", "wang-pass-1234")):
            assert login(TestClient(app), user, pw).status_code == 401, (user, pw)
        # in the directory but in no mapped group and not pre-created: no role, no login
        r = login(TestClient(app), "nobody", "nobody-pass-1")
        assert r.status_code == 401 and "没有角色" in r.text
        # pre-created as a directory user with role and scope: gets exactly that
        UserStore(store.path).user_add("li", "it", None, ["A"], source="ldap")
        c3 = TestClient(app)
        assert login(c3, "li", "li-pass-12345").status_code == 303
        assert "范围：A" in c3.get("/ui/").text
        # the directory goes away: 503 and a message that says so
        slapd.stop()
        r = login(TestClient(app), "wang", "wang-pass-1234")
        assert r.status_code == 503 and "无法连接" in r.text
        assert c.get("/ui/").status_code == 200               # existing sessions keep working
    finally:
        app.state.ui_auth.close()
        store.close()


def test_search_bind_with_service_account(tmp_path, slapd):
    (tmp_path / "ldap.pass").write_text("service-pass-1\n")
    app, store = make_app(tmp_path, {"url": slapd.url, "bind_dn": "cn=campus-sense,ou=services," + SUFFIX,
                                     "bind_password_file": str(tmp_path / "ldap.pass"),
                                     "base_dn": "ou=people," + SUFFIX, "user_filter": "(uid={user})",
                                     "group_base_dn": "ou=groups," + SUFFIX, "groups": GROUPS})
    try:
        assert login(TestClient(app), "zhou", "zhou-pass-1234").status_code == 303
        assert login(TestClient(app), "zhou", "nope").status_code == 401
        assert login(TestClient(app), "z*", "zhou-pass-1234").status_code == 401   # filter escaped
        # a wrong service password is the directory's problem, not the user's
        (tmp_path / "ldap.pass").write_text("wrong\n")
        assert login(TestClient(app), "zhou", "zhou-pass-1234").status_code == 503
    finally:
        app.state.ui_auth.close()
        store.close()


def test_ldap_settings_need_a_mode():
    with pytest.raises(ValueError, match="user_dn"):
        UISettings.model_validate({"ldap": {"url": "ldap://127.0.0.1:1"}})
    with pytest.raises(ValueError, match="bind_password"):
        UISettings.model_validate({"ldap": {"url": "ldap://127.0.0.1:1", "bind_dn": "cn=x", "base_dn": "dc=x"}})
    with pytest.raises(ValueError, match="time zone"):
        UISettings.model_validate({"timezone": "Mars/Olympus"})
