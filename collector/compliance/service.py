"""Coverage / compliance inside the running collector.

``ComplianceService(store, settings, offline_after_s)``:

* ``import_files()`` — the ``campus:`` files of collector.yaml into the collector DB
  (``CampusStore`` tables next to the collector's own). Non-strict by default: bad rows are
  logged (file, row, column) and skipped, the rest is imported. Strict: a file set with any bad
  row is not imported at all (the stored model stays). Unreadable files are logged; the
  collector keeps running either way.
* ``inputs()`` — campus model + registry (from the DB, cached until the next import),
  an ``Observations`` snapshot from the live store (cached ``cache_s``), policy, catalog.
* ``snapshot()`` — both reports appended to ``compliance_history``; ``start()`` runs it every
  ``snapshot_interval_s`` (the first one at most 5 min after start) on a daemon thread,
  ``stop()`` ends it.
* ``mount(app)`` — the routes of ``collector.compliance.api`` under ``/api/v1``: admin and it
  read, admin writes (snapshot, import); security gets 403. ``app.state.compliance`` = self.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from campus_sense.yamlconf import ConfigError

from collector.campus.model import CampusImportError, CampusModel, Registry, load_campus, load_registry
from collector.store.campus import CampusStore
from collector.compliance.api import Inputs, make_router, record_snapshot
from collector.compliance.build import observations_from_store, with_remembered
from collector.compliance.settings import CampusSettings
from collector.store.sqldb import shared_target

log = logging.getLogger("collector.compliance")

READ_ROLES = ("admin", "it")
WRITE_ROLES = ("admin",)


class ComplianceService:
    def __init__(self, store: Any, settings: CampusSettings | None = None, offline_after_s: float = 180.0):
        from collector.compliance.firmware import Catalog, load_catalog
        from collector.compliance.policy import DEFAULT_FIRMWARE_DIR, Policy, load_policy

        self.store = store
        self.settings = settings or CampusSettings()
        self.offline_after_s = offline_after_s
        # the collector's SQLite file, or the PostgreSQL database several collectors share (issue 15)
        self.campus_store = CampusStore(shared_target(store))
        self._lock = threading.Lock()
        self._model: tuple[CampusModel, Registry] | None = None
        self._obs: tuple[float, Any] | None = None
        self._fp: tuple = ()                  # campus_store.fingerprint() of the cached model
        self._fp_at = float("-inf")
        self._remembered_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_import: dict[str, Any] | None = None
        self.last_snapshot: dict[str, Any] | None = None
        try:
            self.policy = load_policy(self.settings.policy)
        except ConfigError as e:
            log.error("campus.policy: %s; using the built-in defaults", e)
            self.policy = Policy()
        try:
            self.catalog = load_catalog(self.settings.firmware_dir or DEFAULT_FIRMWARE_DIR,
                                        strict=self.settings.strict)
            for e in self.catalog.errors:
                log.error("firmware catalog: %s", e)
        except ConfigError as e:
            log.error("campus.firmware_dir: %s; firmware checks report unknown", e)
            self.catalog = Catalog()

    # ------------------------------------------------------------------ import
    def import_files(self) -> dict[str, Any]:
        """Import the configured model/registry files into the DB; never raises for bad input."""
        s = self.settings
        out: dict[str, Any] = {"time": time.time(), "model": list(s.model), "registry": list(s.registry),
                               "issues": [], "errors": [], "imported": {}}

        def issue(i) -> None:
            out["issues"].append({"severity": i.severity, "file": i.file, "row": i.row, "column": i.column,
                                  "message": i.message, "text": str(i)})
            (log.warning if i.severity == "warning" else log.error)("campus import: %s", i)

        with self._lock:
            declared, _ = self._declared(sync=not s.prune)   # what the agents declare (rooms, types)
            if s.model:
                try:
                    res = load_campus(s.model, strict=s.strict, declared=declared,
                                      base=declared if s.prune else self.campus_store.load_campus())
                    for i in res.issues:
                        issue(i)
                    stats = self.campus_store.save_campus(res.value, prune=s.prune)
                    out["imported"]["model"] = {k: {"added": len(v.added), "updated": len(v.updated),
                                                    "removed": len(v.removed)} for k, v in stats.items()}
                except CampusImportError as e:
                    for i in e.issues:
                        issue(i)
                    out["errors"].append(f"campus model not imported (strict): {len(e.issues)} bad row(s)")
                    log.error("campus model not imported (strict mode): %d bad row(s)", len(e.issues))
                except (ConfigError, OSError, ValueError) as e:
                    out["errors"].append(f"campus model: {e}")
                    log.error("campus model not imported: %s", e)
            if s.registry:
                try:
                    res = load_registry(s.registry, strict=s.strict, campus=self.campus_store.load_campus())
                    for i in res.issues:
                        issue(i)
                    st = self.campus_store.save_registry(res.value, prune=s.prune)
                    out["imported"]["registry"] = {"added": len(st.added), "updated": len(st.updated),
                                                   "removed": len(st.removed)}
                except CampusImportError as e:
                    for i in e.issues:
                        issue(i)
                    out["errors"].append(f"registry not imported (strict): {len(e.issues)} bad row(s)")
                    log.error("registry not imported (strict mode): %d bad row(s)", len(e.issues))
                except (ConfigError, OSError, ValueError) as e:
                    out["errors"].append(f"registry: {e}")
                    log.error("registry not imported: %s", e)
            self._model = None
            self._obs = None
        c, r = self.model()
        out["counts"] = {"buildings": len(c.buildings), "rooms": len(c.rooms), "devices": len(c.devices),
                         "ports": len(c.ports), "assets": len(r.assets)}
        if s.model or s.registry:
            log.info("campus import: %(buildings)d buildings, %(rooms)d rooms, %(devices)d devices, "
                     "%(ports)d ports, %(assets)d assets", out["counts"])
        self.last_import = out
        return out

    # ------------------------------------------------------------------ inputs
    def _declared(self, sync: bool = True) -> tuple[CampusModel | None, bool]:
        """collector.campus.declared: (the agents' model, whether new devices were added to the stored
        model: with ``sync``). Never raises (the collector keeps running with the stored model)."""
        from collector.campus.declared import declared_model
        from collector.campus.declared import sync as sync_declared
        self._declared_at = time.monotonic()
        try:
            changed = bool(sync and sum(sync_declared(self.campus_store, self.store).values()))
            if changed:
                self._model = None
            return declared_model(self.store), changed
        except Exception:  # noqa: BLE001
            log.exception("campus model: agents' declarations")
            return None, False

    def model(self) -> tuple[CampusModel, Registry]:
        if time.monotonic() - getattr(self, "_declared_at", float("-inf")) >= self.settings.declared_sync_s:
            with self._lock:
                _, changed = self._declared()
            if changed and self.settings.model:
                # campus.yaml entries that only now have their agent's device (type, room) import now
                self.import_files()
        with self._lock:
            now = time.monotonic()
            if self._model is not None and now - self._fp_at >= self.settings.model_check_s:
                # another collector (shared PostgreSQL) or a CLI import may have changed the stored model
                self._fp_at = now
                try:
                    if self.campus_store.fingerprint() != self._fp:
                        self._model = self._obs = None
                except Exception:  # noqa: BLE001 - a busy database: keep the model we have
                    log.warning("campus model: cannot check for changes", exc_info=True)
            if self._model is None:
                self._fp = self.campus_store.fingerprint()
                self._fp_at = now
                self._model = (self.campus_store.load_campus(), self.campus_store.load_registry())
            return self._model

    def observations(self, fresh: bool = False):
        campus, _ = self.model()
        now = time.time()
        with self._lock:
            if not fresh and self._obs is not None and now - self._obs[0] < self.settings.cache_s:
                return self._obs[1]
        obs = observations_from_store(self.store, campus, now, self.offline_after_s, self.settings.topology_fresh_s)
        # "missing for N days" needs days: remember last-seen per MAC (written at most every 5 min)
        remember = now - self._remembered_at >= 300.0
        obs = with_remembered(obs, campus, self.campus_store, self.policy, remember=remember)
        if remember:
            self._remembered_at = now
        with self._lock:
            self._obs = (now, obs)
        return obs

    def inputs(self, fresh: bool = False) -> Inputs:
        campus, registry = self.model()
        return Inputs(campus=campus, registry=registry, obs=self.observations(fresh), catalog=self.catalog,
                      policy=self.policy, store=self.campus_store)

    # ------------------------------------------------------------------ history
    def snapshot(self) -> dict[str, Any]:
        res = record_snapshot(self.inputs(fresh=True))
        self.last_snapshot = res
        log.info("compliance snapshot: coverage %s, compliance %s (%d history rows)",
                 res["coverage"].get("score"), res["compliance"].get("score"), res["history_rows"])
        return res

    def start(self) -> "ComplianceService":
        def declared() -> None:   # the agents' rooms/types reach the model (and port roles) without a reader
            while not self._stop.wait(self.settings.declared_sync_s):
                try:
                    self.model()
                except Exception:  # noqa: BLE001
                    log.exception("campus model refresh failed")
        threading.Thread(target=declared, name="campus-declared", daemon=True).start()
        iv = self.settings.snapshot_interval_s
        if iv > 0:
            self._thread = threading.Thread(target=self._run, args=(iv,), name="compliance", daemon=True)
            self._thread.start()
        return self

    #: the first scheduled snapshot comes this soon after start (data needs a few polls to arrive)
    FIRST_SNAPSHOT_S = 300.0

    def _run(self, interval: float) -> None:
        wait = min(interval, self.FIRST_SNAPSHOT_S)
        while not self._stop.wait(wait):
            wait = interval
            try:
                sing = getattr(self.store, "singleton", None)   # several collectors: one takes snapshots
                if (sing is None or sing("compliance")) and self.model()[0].buildings:
                    self.snapshot()
            except Exception:  # noqa: BLE001 - the next interval tries again
                log.exception("compliance snapshot failed")

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ HTTP
    def open_alerts(self, app: Any, building: str) -> int | None:
        """Active alerts of a building from the alert engine, if one is wired (app.state.alerting)."""
        al = getattr(app.state, "alerting", None)
        if al is None:
            return None
        eng = getattr(al, "engine", al)
        fn = getattr(eng, "alerts", None)
        if fn is None:
            return None
        try:
            return len(fn({"building": building}))
        except Exception as e:  # noqa: BLE001 - health must answer without the alert count
            log.warning("open alerts for building %s: %s", building, e)
            return None

    def device_extra(self, device_id: str) -> dict | None:
        d = self.store.device(device_id)
        if d is None:
            return None
        ev = self.store.events(device_id, None, None, None, None, 20)
        return {"agent": d.get("agent"), "reachable": d.get("reachable"), "last_poll_ms": d.get("last_poll_ms"),
                "last_seen_ms": d.get("last_seen_ms"), "driver": d.get("driver"), "reason": d.get("reason"),
                "error": d.get("error"), "recent_events": ev}

    def mount(self, app: Any) -> None:
        from fastapi import Depends

        from collector.api.app import require_role

        app.state.compliance = self
        router = make_router(self.inputs, read=[Depends(require_role(*READ_ROLES))],
                             write=[Depends(require_role(*WRITE_ROLES))],
                             alerts=lambda b: self.open_alerts(app, b), device_extra=self.device_extra,
                             importer=self.import_files)
        app.include_router(router, prefix="/api/v1")


def attach(app: Any, store: Any, settings: CampusSettings | None, offline_after_s: float = 180.0) -> ComplianceService:
    """Collector start-up: import the configured files, mount the routes, start the history job."""
    svc = ComplianceService(store, settings, offline_after_s)
    svc.import_files()
    svc.mount(app)
    return svc.start()
