"""zh-CN and en for the UI and the reports: flat JSON catalogs in ``i18n/<lang>.json``.

Language: the ``cs_lang`` cookie (set by the switch on every page), else the browser's
``Accept-Language`` (first of zh* / en* by q), else ``ui.default_lang``. ``t(key, **kw)`` formats
with ``str.format``; a key missing in a catalog falls back to en, then to the key itself
(tests/test_ui_pages.py checks both catalogs have every key the code uses).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

LANGS = ("zh-CN", "en")
LANG_COOKIE = "cs_lang"
DIR = Path(__file__).with_name("i18n")


@lru_cache(maxsize=None)
def catalog(lang: str) -> dict[str, str]:
    return json.loads((DIR / f"{lang}.json").read_text(encoding="utf-8"))


def negotiate(cookie: str | None, accept: str | None, default: str = "zh-CN") -> str:
    if cookie in LANGS:
        return cookie  # type: ignore[return-value]
    best, best_q = None, -1.0
    for i, part in enumerate((accept or "").split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower()
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        lang = "zh-CN" if tag.startswith("zh") else "en" if tag.startswith("en") else None
        if lang and q > best_q and q > 0:
            best, best_q = lang, q
    return best or default


class T:
    def __init__(self, lang: str):
        self.lang = lang if lang in LANGS else "en"
        self.cat = catalog(self.lang)
        self.en = catalog("en")

    def __call__(self, key: str, **kw) -> str:
        s = self.cat.get(key) or self.en.get(key) or key
        if kw:
            try:
                return s.format(**kw)
            except (KeyError, IndexError, ValueError):
                return s
        return s

    def opt(self, key: str, default: str) -> str:
        """A translation when the catalog has one (e.g. check titles), else ``default``."""
        return self.cat.get(key) or default

    def message(self, finding: dict) -> str:
        """A compliance finding's message in this language: ``msg.<key>`` of the catalog with the
        finding's arguments (collector/compliance/results.py ``CheckResult.say``), else its English text."""
        m = finding.get("msg")
        tmpl = self.cat.get("msg." + m["key"]) if isinstance(m, dict) and self.lang != "en" else None
        if tmpl:
            try:
                args = dict(m.get("args") or {})
                if m.get("parts"):    # {parts}: sub-messages ({"key", "args"}) joined by msg.sep
                    args["parts"] = self.cat.get("msg.sep", "; ").join(
                        self.cat["msg." + p["key"]].format(**p["args"]) for p in m["parts"])
                text = tmpl.format(**args)
                return f"{m['prefix']}：{text}" if m.get("prefix") else text
            except (KeyError, IndexError, ValueError, TypeError, AttributeError):
                pass
        return finding.get("message") or ""
