"""Register an OpenStack service in Keystone: one process, openstacksdk, idempotent.

A self-contained script run ON A LAB (or real) HOST with Debian's interpreter (``/usr/bin/python3``,
which has python3-openstacksdk), reading one JSON document on stdin — never on the command line,
which ``ps`` shows::

    {"auth": {"auth_url", "username", "password", "project_name",
              "user_domain_name", "project_domain_name"},
     "region": "RegionOne",
     "user": {"name": "glance", "password": "…"},          # the service user
     "project": "service", "roles": ["admin", "service"],
     "services": [{"type": "image", "name": "glance",
                   "endpoints": {"public": URL, "internal": URL, "admin": URL}}]}

It makes what is missing and corrects what differs: the ``service`` project, the user (its
password is checked by authenticating as it, and set only when that fails — setting it every time
would revoke the user's tokens), its roles (``admin``, and ``service``: the role Keystone's
middleware requires of a service token — Nova sends one with its calls to Neutron — when
``service_token_roles_required`` is true, as stackha sets it), each catalog service and its
three endpoints.  It prints one JSON document: ``{"changes": ["created user glance", …]}`` (empty when
everything was already so).  Exit 1 with a one-line message on stderr on failure.

It imports nothing from stackha (stackha's interpreter may not have openstacksdk).
LAB-NOTES: the same registration through 22 CLI calls took 40 s, one openstacksdk process 11 s.
"""

from __future__ import annotations

import json
import sys


def made(find, create):
    """``create()``, or what ``find()`` gives when another registration (stackha deploys services
    concurrently) made it first — Keystone answers 409 Conflict for a project, user or role name
    that exists."""
    from openstack import exceptions as sdk_exc

    try:
        return create()
    except sdk_exc.ConflictException:
        found = find()
        if found is None:
            raise
        return found


def main() -> int:
    import openstack
    from keystoneauth1 import exceptions as ks_exc

    req = json.load(sys.stdin)
    auth = req["auth"]
    conn = openstack.connect(auth=auth, region_name=req["region"], auth_type="password",
                             identity_interface="public", api_timeout=30)
    changes: list[str] = []
    domain = conn.identity.find_domain(auth.get("user_domain_name", "Default")) or conn.identity.get_domain("default")
    project = conn.identity.find_project(req["project"], domain_id=domain.id)
    if project is None:
        project = made(lambda: conn.identity.find_project(req["project"], domain_id=domain.id),
                       lambda: conn.identity.create_project(name=req["project"], domain_id=domain.id,
                                                            description="OpenStack service users"))
        changes.append(f"created project {req['project']}")
    u = req["user"]
    user = conn.identity.find_user(u["name"], domain_id=domain.id)
    if user is None:
        user = conn.identity.create_user(name=u["name"], password=u["password"], domain_id=domain.id,
                                         default_project_id=project.id)
        changes.append(f"created user {u['name']}")
    else:
        probe = openstack.connect(auth={**auth, "username": u["name"], "password": u["password"],
                                        "project_name": req["project"]},
                                  region_name=req["region"], auth_type="password")
        try:
            probe.authorize()
        except ks_exc.Unauthorized:
            conn.identity.update_user(user, password=u["password"])
            changes.append(f"set the password of user {u['name']}")
    for name in req["roles"]:
        role = conn.identity.find_role(name)
        if role is None:
            role = made(lambda: conn.identity.find_role(name), lambda: conn.identity.create_role(name=name))
            changes.append(f"created role {name}")
        assigned = list(conn.identity.role_assignments(user_id=user.id, scope_project_id=project.id,
                                                       role_id=role.id))
        if not assigned:
            conn.identity.assign_project_role_to_user(project, user, role)
            changes.append(f"granted {name} on {req['project']} to {u['name']}")
    for svc in req.get("services", []):
        service = next((s for s in conn.identity.services() if s.type == svc["type"] and s.name == svc["name"]), None)
        if service is None:
            service = conn.identity.create_service(type=svc["type"], name=svc["name"], enabled=True)
            changes.append(f"created service {svc['name']} ({svc['type']})")
        existing = {e.interface: e for e in conn.identity.endpoints(service_id=service.id)
                    if e.region_id in (None, req["region"])}
        for interface, url in svc["endpoints"].items():
            ep = existing.get(interface)
            if ep is None:
                conn.identity.create_endpoint(service_id=service.id, interface=interface, url=url,
                                              region_id=req["region"], enabled=True)
                changes.append(f"created {interface} endpoint {url} for {svc['name']}")
            elif ep.url != url:
                conn.identity.update_endpoint(ep, url=url)
                changes.append(f"set {interface} endpoint of {svc['name']} to {url}")
    json.dump({"changes": changes}, sys.stdout)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except Exception as exc:  # one line for the operator's error message
        print(f"{type(exc).__name__}: {exc}".splitlines()[0][:300], file=sys.stderr)
        sys.exit(1)
