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
- ``host_down`` ``{"host": Nova host, "notify": true}`` → ``{"forced_down_at", "notified_at",
  "notification": uuid or null}``: Nova's compute service on ``host`` marked ``forced_down``
  (compute API 2.53, ``PUT /os-services/{id}``), then a COMPUTE_HOST notification
  (``{"event": "STOPPED", "host_status": "NORMAL", "cluster_status": "OFFLINE"}``, as
  masakari-hostmonitor sends for a host that is powered off) posted to Masakari.  Call it only
  after the host is fenced: forced_down tells Nova the host is dead, and Nova then accepts
  evacuations at once (LAB-NOTES "OpenStack services": force down first, then disable, then
  evacuate; without it Nova refuses with HTTP 400 for ``service_down_time``).  Times: the
  host's clock (``time.time()``, s) when Nova answered the force-down and Masakari accepted
  the notification.
- ``notification`` ``{"id": uuid}`` → ``{"status", "type", "hostname", "payload"}``.
- ``readmit`` ``{"host": Nova host}`` → ``{"changes": [...]}``: the compute service's
  forced_down cleared and the service enabled in Nova, ``on_maintenance`` cleared on the host's
  Masakari entries (seed 004's re-admission of a repaired host).

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
    svc = _service(conn, req["host"])
    if not svc.is_forced_down:
        conn.compute.update_service_forced_down(svc, forced=True)
    out = {"forced_down_at": time.time(), "notification": None, "notified_at": None}
    if req.get("notify", True):
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")
        n = conn.instance_ha.create_notification(
            type="COMPUTE_HOST", hostname=req["host"], generated_time=now,
            payload={"event": "STOPPED", "host_status": "NORMAL", "cluster_status": "OFFLINE"})
        out["notification"] = n.notification_uuid
        out["notified_at"] = time.time()
    return out


def notification(conn, req: dict) -> dict:
    n = conn.instance_ha.get_notification(req["id"])
    return {"status": n.status, "type": n.type, "hostname": n.hostname, "payload": n.payload}


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
    for seg in ha.segments():
        for h in ha.hosts(seg.uuid):
            if h.name == host and h.on_maintenance:
                ha.update_host(h.uuid, seg.uuid, on_maintenance=False)
                changes.append(f"segment {seg.name}: {host} no longer on maintenance")
    return {"changes": changes}


ACTIONS = {"ensure_segments": ensure_segments, "segments": segments, "host_down": host_down,
           "notification": notification, "readmit": readmit}


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
