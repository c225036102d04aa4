"""Masakari and Nova calls for instance HA: a self-contained openstacksdk script.

Run ON A LAB (or real) HOST with Debian's interpreter (python3-openstacksdk 0.101: its
``instance_ha`` proxy speaks Masakari's API v1), one JSON document on stdin — credentials never on
the command line::

    {"auth": {...keystoneauth password values...}, "region": "RegionOne",
     "action": "ensure_segments" | "segments" | "host_down" | "notification" | "readmit", ...}

Actions (each prints one JSON document; exit 1 with a one-line message on stderr on failure):

- ``ensure_segments`` ``{"segments": [{"name", "recovery_method", "description", "enabled",
  "hosts": [Nova host], "reserved": [Nova host]}]}`` → ``{"changes": [...]}``.  Idempotent:
  creates a missing segment (service_type COMPUTE), corrects its recovery method, description
  and enabled flag, adds a missing host (type COMPUTE, control_attributes SSH; a reserved host's
  nova-compute service is disabled in Nova when it is added, so that nothing is scheduled on it
  until Masakari takes it — Masakari's reserved_host flow enables it).  Hosts already in a
  segment keep their ``reserved`` and ``on_maintenance`` flags: after a recovery these are
  Masakari's (it clears ``reserved`` on the host it took and puts the failed host
  on_maintenance); hosts not declared are left alone.
- ``segments`` → ``[{"name", "uuid", "recovery_method", "enabled", "hosts": [{"name",
  "reserved", "on_maintenance"}]}]``.
- ``host_down`` ``{"host": Nova host, "notify": true, "force_down": true}`` → ``{"forced_down_at"
  (null when ``force_down`` is false: Masakari's stock path, for the benchmark), "notified_at",
  "notification": uuid or null}``: Nova's compute service on ``host`` marked ``forced_down``
  (compute API 2.53, ``PUT /os-services/{id}``), then a COMPUTE_HOST notification
  (``{"event": "STOPPED", "host_status": "NORMAL", "cluster_status": "OFFLINE"}``, as
  masakari-hostmonitor sends for a host that is powered off) posted to Masakari.  With
  ``"rerun_of": uuid, "duplicate_interval_s": s`` (a notification whose engine died) it first
  waits until Masakari's duplicate window after that notification's generated_time has passed
  (``rerun_waited_s``) and clears the host's on_maintenance flag.  Call it only
  after the host is fenced: forced_down tells Nova the host is dead, and Nova then accepts
  evacuations at once (LAB-NOTES "OpenStack services": force down first, then disable, then
  evacuate; without it Nova refuses with HTTP 400 for ``service_down_time``).  Times: the
  host's clock (``time.time()``, s) when Nova answered the force-down and Masakari accepted
  the notification.
- ``notification`` ``{"id": uuid}`` → ``{"status", "type", "hostname", "payload"}``.
- ``readmit`` ``{"host": Nova host}`` → ``{"changes": [...]}``: the compute service's
  forced_down cleared and the service enabled in Nova, ``on_maintenance`` cleared on the host's
  Masakari entries (seed 004's re-admission of a repaired host).
- ``boot`` ``{"host": Nova host, "count": n, "name": str, "deadline_s": 600}`` → ``{"ids",
  "hosts", "booted_s"}``: ``count`` servers with metadata ``HA_Enabled=True`` pinned to ``host``
  (availability zone ``nova:HOST``, no network), from a 64 KiB raw image and a 64 MiB flavor
  created once (``stackha-ha-image``, ``stackha-ha-tiny``); the project's instance quota raised
  to 1000.  Waits until all are ACTIVE; RuntimeError when one goes ERROR.
- ``wait_evacuated`` ``{"host": failed host, "ids": [...], "deadline_s": 600, "interval_s":
  0.5}`` → ``{"done_at": time when the last server was ACTIVE (no task) on another host, or
  null at the deadline; "active_elsewhere_at": {id: time}; "where": {id: [host, status,
  task_state]}}`` — one server list per poll.
- ``delete_servers`` ``{"ids": [...]}`` → ``{"deleted"}``, once Nova lists none of them.
- ``evacuations`` ``{"ids": [...]}`` → ``{id: [start times (s since the epoch) of the server's
  ``evacuate`` instance actions]}``: when Nova's API accepted each evacuation.
- ``reserve`` ``{"host": Nova host}`` → ``{"changes"}``: the host's nova-compute disabled and its
  Masakari entries reserved again (a verify run puts back the reserved host it used).

Imports nothing from stackha.
"""

from __future__ import annotations

import datetime
import json
import sys
import time

COMPUTE_API = "2.53"  # services by id, forced_down in PUT /os-services/{id}


def _service(conn, host: str):
    for s in conn.compute.services(binary="nova-compute", host=host):
        if s.host == host and s.binary == "nova-compute":
            return s
    raise LookupError(f"Nova has no nova-compute service on host {host!r}")


def _host_entries(ha, name: str):
    """(segment, host) for every Masakari host entry named ``name``."""
    for seg in ha.segments():
        for h in ha.hosts(seg.uuid):
            if h.name == name:
                yield seg, h


def ensure_segments(conn, req: dict) -> dict:
    ha = conn.instance_ha
    changes: list[str] = []
    existing = {s.name: s for s in ha.segments()}
    for spec in req["segments"]:
        seg = existing.get(spec["name"])
        wanted = {"recovery_method": spec["recovery_method"], "description": spec.get("description") or None}
        if seg is None:
            seg = ha.create_segment(name=spec["name"], service_type="COMPUTE", **wanted)
            changes.append(f"created segment {spec['name']} ({spec['recovery_method']})")
        else:
            diff = {k: v for k, v in wanted.items() if getattr(seg, k) != v}
            if diff:
                seg = ha.update_segment(seg.uuid, **diff)
                changes.append(f"segment {spec['name']}: set {', '.join(f'{k}={v}' for k, v in diff.items())}")
        if seg.is_enabled is not None and bool(seg.is_enabled) != bool(spec.get("enabled", True)):
            ha.update_segment(seg.uuid, enabled=bool(spec.get("enabled", True)))
            changes.append(f"segment {spec['name']}: enabled={spec.get('enabled', True)}")
        have = {h.name for h in ha.hosts(seg.uuid)}
        for name, reserved in [(h, False) for h in spec["hosts"]] + [(h, True) for h in spec["reserved"]]:
            if name in have:
                continue
            if reserved:  # nothing is scheduled on a reserved host until Masakari takes it
                svc = _service(conn, name)
                if svc.status != "disabled":
                    conn.compute.disable_service(svc, disabled_reason=f"stackha: reserved host of segment {spec['name']}")
                    changes.append(f"disabled nova-compute on reserved host {name}")
            ha.create_host(seg.uuid, name=name, type="COMPUTE", control_attributes="SSH",
                           reserved=reserved, on_maintenance=False)
            changes.append(f"segment {spec['name']}: added {'reserved ' if reserved else ''}host {name}")
    return {"changes": changes}


def segments(conn, req: dict) -> list:
    ha = conn.instance_ha
    return [{"name": s.name, "uuid": s.uuid, "recovery_method": s.recovery_method, "enabled": s.is_enabled,
             "hosts": [{"name": h.name, "reserved": bool(h.reserved), "on_maintenance": bool(h.on_maintenance)}
                       for h in ha.hosts(s.uuid)]}
            for s in ha.segments()]


def host_down(conn, req: dict) -> dict:
    out = {"forced_down_at": None, "notification": None, "notified_at": None}
    if req.get("force_down", True):
        svc = _service(conn, req["host"])
        if not svc.is_forced_down:
            conn.compute.update_service_forced_down(svc, forced=True)
        out["forced_down_at"] = time.time()
    if req.get("notify", True):
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")
        payload = {"event": "STOPPED", "host_status": "NORMAL", "cluster_status": "OFFLINE"}
        if req.get("rerun_of"):
            # the engine running the first notification died: Masakari left the host on
            # maintenance (its manager sets it when it starts), and it refuses the same payload
            # for the same host as a duplicate (409) while the new generated_time is within
            # duplicate_notification_detection_interval of the first's (masakari/ha/api.py,
            # _is_duplicate_notification; the payload schema admits no extra key to tell them
            # apart): wait that window out, in whole seconds as Masakari stores them
            ha = conn.instance_ha
            first = ha.get_notification(req["rerun_of"])
            gen = datetime.datetime.fromisoformat(str(first.generated_time).replace("Z", "")[:19])
            gen = gen.replace(tzinfo=datetime.timezone.utc).timestamp()
            wait = gen + req.get("duplicate_interval_s", 180) + 1.0 - time.time()
            if wait > 0:
                time.sleep(wait)
                out["rerun_waited_s"] = round(wait, 2)
            for seg, h in _host_entries(ha, req["host"]):
                if h.on_maintenance:
                    ha.update_host(h.uuid, seg.uuid, on_maintenance=False)
            now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")
        n = conn.instance_ha.create_notification(
            type="COMPUTE_HOST", hostname=req["host"], generated_time=now, payload=payload)
        out["notification"] = n.notification_uuid
        out["notified_at"] = time.time()
    return out


def notification(conn, req: dict) -> dict:
    n = conn.instance_ha.get_notification(req["id"])
    return {"status": n.status, "type": n.type, "hostname": n.hostname, "payload": n.payload}


def host_notifications(conn, req: dict) -> list:
    """COMPUTE_HOST notifications for ``host`` created at or after ``since`` (s since the epoch),
    oldest first: uuid, status, payload, created_at (s since the epoch)."""
    out = []
    uuids = {h.uuid for _, h in _host_entries(conn.instance_ha, req["host"])}
    for n in conn.instance_ha.notifications(type="COMPUTE_HOST"):
        if n.source_host_uuid not in uuids:
            continue
        created = datetime.datetime.fromisoformat(str(n.created_at).replace("Z", "")).replace(
            tzinfo=datetime.timezone.utc).timestamp()
        if created >= req["since"] - 1:  # Masakari stores whole seconds
            out.append({"uuid": n.notification_uuid, "status": n.status, "payload": n.payload, "created_at": created})
    return sorted(out, key=lambda x: x["created_at"])


def readmit(conn, req: dict) -> dict:
    changes: list[str] = []
    host = req["host"]
    svc = _service(conn, host)
    # forced_down cleared first, then enabled: Nova's API removes the COMPUTE_STATUS_DISABLED
    # trait from the host's placement provider only when it enables a service that is up (an RPC
    # to the compute: nova/compute/api.py, _update_compute_provider_status, skips it for a service
    # that is down, and forced down is down); enabled while still forced down, the trait stayed on
    # the provider of the already restarted compute, and the scheduler answered "No valid host was found"
    # for the re-admitted host meanwhile (tests/lab/test_instance_ha_lab.py, twice)
    if svc.is_forced_down:
        conn.compute.update_service_forced_down(svc, forced=False)
        changes.append(f"cleared forced_down of nova-compute on {host}")
    if svc.status == "disabled":
        conn.compute.enable_service(svc)
        changes.append(f"enabled nova-compute on {host}")
    ha = conn.instance_ha
    for seg, h in _host_entries(ha, host):
        if h.on_maintenance:
            ha.update_host(h.uuid, seg.uuid, on_maintenance=False)
            changes.append(f"segment {seg.name}: {host} no longer on maintenance")
    return {"changes": changes}


IMAGE, FLAVOR = "stackha-ha-image", "stackha-ha-tiny"


def _until(what: str, fn, deadline_s: float, interval_s: float):
    """``fn()`` until it returns something true; that value.  RuntimeError naming ``what`` after
    ``deadline_s`` (this script imports nothing but Debian's openstacksdk: no tenacity here)."""
    end = time.monotonic() + deadline_s
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > end:
            raise RuntimeError(f"{what}: not done after {deadline_s:.0f} s")
        time.sleep(interval_s)


def _server_rows(conn, ids: set) -> dict:
    """{server id: (compute host, status, task_state)} of ``ids`` (one list call, all projects)."""
    return {s.id: (s.compute_host, s.status, s.task_state)
            for s in conn.compute.servers(details=True, all_projects=True) if s.id in ids}


def boot(conn, req: dict) -> dict:
    image = conn.image.find_image(IMAGE)
    if image is None:  # 64 KiB of zeros: the fake driver never reads it
        image = conn.image.create_image(name=IMAGE, disk_format="raw", container_format="bare", data=bytes(64 << 10))
    _until(f"image {IMAGE} active", lambda: conn.image.get_image(image.id).status == "active", 120, 1)
    flavor = conn.compute.find_flavor(FLAVOR)
    if flavor is None:
        flavor = conn.compute.create_flavor(name=FLAVOR, ram=64, vcpus=1, disk=1)
    project = conn.current_project_id
    conn.set_compute_quotas(project, instances=1000, cores=1000, ram=1 << 20)
    t0 = time.time()
    # "nova:HOST" pins the servers to the host (admin only; compute API 2.74's host field is newer
    # than this openstacksdk's servers)
    # a multi-create answers with the first server only: the servers are listed by name below
    conn.compute.create_server(
        name=req["name"], image_id=image.id, flavor_id=flavor.id, networks="none",
        availability_zone=f"nova:{req['host']}", metadata={"HA_Enabled": "True"},
        min_count=req["count"], max_count=req["count"])

    def active():
        # a multi-create names its servers NAME-1 … NAME-n (Nova's multi_instance_display_name_template)
        rows = list(conn.compute.servers(details=True, all_projects=True, name=f"^{req['name']}(-[0-9]+)?$"))
        bad = [s for s in rows if s.status == "ERROR"]
        if bad:
            raise RuntimeError(f"server {bad[0].id} ERROR: {(bad[0].fault or {}).get('message')}")
        return rows if len(rows) == req["count"] and all(s.status == "ACTIVE" for s in rows) else None

    rows = _until(f"{req['count']} servers {req['name']} ACTIVE", active, req.get("deadline_s", 600), 1)
    return {"ids": [s.id for s in rows], "hosts": sorted({s.compute_host for s in rows}), "booted_s": time.time() - t0}


def wait_evacuated(conn, req: dict) -> dict:
    ids, host = set(req["ids"]), req["host"]
    end = time.monotonic() + req.get("deadline_s", 600)
    out: dict = {"done_at": None, "active_elsewhere_at": {}}
    while time.monotonic() < end:
        rows = _server_rows(conn, ids)
        now = time.time()
        for i, (h, status, task) in rows.items():
            if status == "ACTIVE" and task is None and h not in (host, None):
                out["active_elsewhere_at"].setdefault(i, now)
            else:
                out["active_elsewhere_at"].pop(i, None)
        out["where"] = {i: list(v) for i, v in rows.items()}
        if len(out["active_elsewhere_at"]) == len(ids):
            out["done_at"] = max(out["active_elsewhere_at"].values(), default=now)
            break
        time.sleep(req.get("interval_s", 0.5))
    return out


def delete_servers(conn, req: dict) -> dict:
    ids = set(req["ids"])
    for i in ids:
        conn.compute.delete_server(i, ignore_missing=True)
    _until("servers deleted", lambda: not _server_rows(conn, ids), req.get("deadline_s", 300), 1)
    return {"deleted": len(ids)}


def evacuations(conn, req: dict) -> dict:
    out = {}
    for i in req["ids"]:
        # GET /servers/{id}/os-instance-actions directly: this openstacksdk's server_actions()
        # sends server_id as a query parameter, which Nova refuses ("Invalid query params")
        resp = conn.compute.get(f"/servers/{i}/os-instance-actions", microversion="2.21")
        resp.raise_for_status()
        starts = []
        for a in resp.json()["instanceActions"]:
            if a["action"] == "evacuate" and a.get("start_time"):
                t = datetime.datetime.fromisoformat(a["start_time"].replace("Z", "")[:26])
                starts.append(t.replace(tzinfo=datetime.timezone.utc).timestamp())
        out[i] = sorted(starts)
    return out


def reserve(conn, req: dict) -> dict:
    host, changes = req["host"], []
    svc = _service(conn, host)
    if svc.status != "disabled":
        conn.compute.disable_service(svc, disabled_reason="stackha: reserved host again")
        changes.append(f"disabled nova-compute on {host}")
    ha = conn.instance_ha
    for seg, h in _host_entries(ha, host):
        if not h.reserved:
            ha.update_host(h.uuid, seg.uuid, reserved=True)
            changes.append(f"segment {seg.name}: {host} reserved again")
    return {"changes": changes}


ACTIONS = {"ensure_segments": ensure_segments, "segments": segments, "host_down": host_down,
           "notification": notification, "readmit": readmit, "boot": boot, "wait_evacuated": wait_evacuated,
           "delete_servers": delete_servers, "evacuations": evacuations, "reserve": reserve,
           "host_notifications": host_notifications}


def main() -> int:
    import openstack

    req = json.load(sys.stdin)
    # 503 is what HAProxy answers while no unit of an API passes its check (a unit restarting,
    # or all busy): keystoneauth retries it, and connection failures, with a back-off.
    conn = openstack.connect(auth=req["auth"], region_name=req["region"], auth_type="password",
                             compute_api_version=COMPUTE_API, api_timeout=30, connect_retries=5,
                             status_code_retries=5)
    json.dump(ACTIONS[req["action"]](conn, req), sys.stdout)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # one line for the caller's error message
        print(f"{type(exc).__name__}: {exc}".splitlines()[0][:300], file=sys.stderr)
        sys.exit(1)
