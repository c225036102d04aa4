"""clouds.yaml for the deployed cloud: an admin cloud whose auth_url is the Keystone VIP.

Written (mode 0600: it holds the admin password) to ``<state>/deployments/<lab>/clouds.yaml`` and to
``/srv/stackha/clouds.yaml`` on the lab's client host, where the real python-openstackclient uses
it: ``stackha lab exec <lab>-client -- env OS_CLIENT_CONFIG_FILE=/srv/stackha/clouds.yaml openstack
--os-cloud <cloud> token issue``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

CLIENT_PATH = "/srv/stackha/clouds.yaml"


def cloud_name(lab: str) -> str:
    """The cloud's name in clouds.yaml: ``stackha-<lab>``."""
    return f"stackha-{lab}"


def clouds_yaml(auth_url: str, password: str, name: str, region: str = "RegionOne") -> str:
    """The clouds.yaml text for the bootstrap admin (project admin, domain Default, identity v3)."""
    doc = {"clouds": {name: {
        "auth": {"auth_url": auth_url, "username": "admin", "password": password, "project_name": "admin",
                 "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": region, "identity_api_version": 3, "interface": "public",
    }}}
    return yaml.safe_dump(doc, sort_keys=False)


def write_clouds_yaml(deployment) -> Path | None:
    """Write clouds.yaml for ``deployment`` if it has a Keystone application with a VIP.

    Returns the state-directory path, or None when there is no Keystone to point at."""
    from stackha.services import operator_for

    ctxs = deployment.contexts()
    ks = next((c for c in ctxs.values() if c.kind == "keystone" and c.vip is not None), None)
    if ks is None:
        return None
    op = operator_for("keystone")
    text = clouds_yaml(op.public_url(ks), op.admin_password(ks), cloud_name(deployment.name))
    path = deployment.dir / "clouds.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.chmod(0o600)
    tmp.write_text(text)
    tmp.replace(path)
    deployment.client.write_file(CLIENT_PATH, text, mode=0o600)
    return path


def openstack_argv(lab: str, *args: str) -> list[str]:
    """argv running the real openstack client on the client host against the deployed cloud."""
    return ["env", f"OS_CLIENT_CONFIG_FILE={CLIENT_PATH}", "openstack", "--os-cloud", cloud_name(lab), *args]
