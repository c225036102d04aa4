"""Lab hosts that look like real machines: sshd, a sudo user, a BMC — for the SSH provider's tests.

:func:`make_machines` turns hosts of a lab into machines the SSH provider can use exactly as it uses
servers in a datacenter, and writes the inventory for them:

- **sshd** (Debian's openssh-server) runs in each host as a daemon started at every power-on
  (:meth:`~stackha.hosts.lab.LabHost.enable_at_boot`), listening on the host's lab address only
  (``ListenAddress``), with the host's own ed25519 host key kept on its disk
  (``/srv/stackha/sshd/``, so it survives power cycles and known_hosts stays right), key
  authentication only, no root login, no PAM;
- **a non-root login** :data:`SSH_USER` with passwordless sudo *inside the lab hosts only*: the
  account exists on the machine (lab hosts share /etc/passwd) with no password and no home, its
  authorized key is in the host's ``/srv/stackha/sshd/authorized_keys/<user>``, and its sudoers
  rule lives in the host's private ``/etc/sudoers.d`` (the lab seeds a copy per host), so it can
  do nothing outside a lab host;
- **the operator's workstation** is the lab's client host: stackha runs there (``stackha lab exec
  <prefix>-client -- stackha deploy … --inventory …``) with the private key, the known_hosts file
  and the BMC password in the client's private ``/srv/stackha/ssh/`` (mode 0600);
- **a BMC per host**: one Redfish endpoint (:mod:`stackha.hosts.labbmc`) with a system per host.

Everything binds on lab addresses (198.18.0.0/15) inside the lab's namespaces: nothing listens
outside the lab.
"""

from __future__ import annotations

import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from stackha.hosts.lab import Lab, LabHost
from stackha.polling import wait_until

SSH_USER = "stackha-op"
SSHD_DIR = "/srv/stackha/sshd"
SSHD_CONFIG = f"{SSHD_DIR}/sshd_config"
HOST_KEY = f"{SSHD_DIR}/ssh_host_ed25519_key"
SUDOERS = f"/etc/sudoers.d/{SSH_USER}"
WORKSTATION_DIR = "/srv/stackha/ssh"
DAEMON = "sshd"


def ensure_user(user: str = SSH_USER) -> None:
    """Create the login ``user`` on the machine if missing: a system account, shell /bin/sh, no
    home, password field ``*`` (no password login; not "locked", which sshd would refuse)."""
    try:
        pwd.getpwnam(user)
        return
    except KeyError:
        pass
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh",
                    user], check=True, capture_output=True)
    subprocess.run(["usermod", "-p", "*", user], check=True, capture_output=True)


def sshd_config(host: LabHost, user: str) -> str:
    """sshd_config for ``host``: its lab address only, key authentication for ``user`` only."""
    return "\n".join([
        f"ListenAddress {host.address}",
        "Port 22",
        f"HostKey {HOST_KEY}",
        "PidFile /run/stackha-sshd.pid",
        f"AuthorizedKeysFile {SSHD_DIR}/authorized_keys/%u",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin no",
        f"AllowUsers {user}",
        "UsePAM no",
        "StrictModes yes",
        "MaxSessions 10",
        "MaxStartups 50:30:100",
        "ClientAliveInterval 10",
        "LogLevel INFO",
        "",
    ])


def serve_ssh(host: LabHost, public_key: str, user: str = SSH_USER) -> str:
    """Make ``host`` answer SSH for ``user`` with ``public_key`` (see the module docstring);
    idempotent.  Returns its known_hosts line (``<address> ssh-ed25519 AAAA…``)."""
    ensure_user(user)
    host.run(["mkdir", "-p", f"{SSHD_DIR}/authorized_keys"], check=True)
    host.run(["chmod", "755", SSHD_DIR, f"{SSHD_DIR}/authorized_keys"], check=True)
    if not host.exists(HOST_KEY):
        host.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", HOST_KEY], check=True)
    host.write_file(SSHD_CONFIG, sshd_config(host, user), mode=0o644)
    host.write_file(f"{SSHD_DIR}/authorized_keys/{user}", public_key.strip() + "\n", mode=0o644)
    host.write_file(SUDOERS, f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n", mode=0o440)
    host.run(["/bin/sh", "-c", f"mkdir -p /run/sshd && chmod 755 /run/sshd && /usr/sbin/sshd -t -f {SSHD_CONFIG}"],
             check=True)
    host.enable_at_boot(DAEMON, ["/bin/sh", "-c", "mkdir -p /run/sshd && chmod 755 /run/sshd && "
                                 f"exec /usr/sbin/sshd -D -e -f {SSHD_CONFIG}"])
    wait_until(lambda: f"{host.address}:22 " in host.run(["ss", "-Htln"]).stdout, 15,
               what=f"sshd listening on {host.address}:22")
    pub = (host.read_file(HOST_KEY + ".pub") or b"").decode().split()
    return f"{host.address} {pub[0]} {pub[1]}"


@dataclass
class Workstation:
    """Where stackha runs for the SSH provider: the lab's client host, with its key, known_hosts
    and BMC password file (paths inside the client host) and the inventory it wrote."""

    host: LabHost
    key: str
    known_hosts: str
    inventory: str
    bmc_password: str | None = None


def make_machines(lab: Lab, machines: dict[str, LabHost], client: LabHost, *, name: str,
                  bmc: bool = True, user: str = SSH_USER) -> Workstation:
    """Serve SSH on every host of ``machines`` (bundle machine key → lab host) and on ``client``,
    give each a Redfish BMC when ``bmc``, and write on ``client`` an inventory for deployment
    ``name`` (``/srv/stackha/ssh/inventory.yaml``).  Returns the :class:`Workstation`."""
    client.run(["mkdir", "-p", WORKSTATION_DIR], check=True)
    client.run(["chmod", "700", WORKSTATION_DIR], check=True)
    key = f"{WORKSTATION_DIR}/id_ed25519"
    if not client.exists(key):
        client.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"stackha@{client.name}", "-f", key], check=True)
    public = (client.read_file(key + ".pub") or b"").decode()
    lines = [serve_ssh(h, public, user) for h in [*machines.values(), client]]
    known = f"{WORKSTATION_DIR}/known_hosts"
    client.write_file(known, "\n".join(lines) + "\n", mode=0o644)
    bmc_info = None
    if bmc:
        from stackha.hosts import labbmc

        bmc_info = labbmc.ensure_bmc(lab)
        pw = f"{WORKSTATION_DIR}/bmc-password"
        client.write_file(pw, labbmc.password(lab) + "\n", mode=0o600)
    doc: dict = {"name": name, "defaults": {"user": user, "key": key, "known_hosts": known, "interface": "eth0",
                                             "connect_timeout": 5}}
    if bmc_info is not None:
        doc["defaults"]["bmc"] = {"type": "redfish", "address": str(bmc_info.address), "port": bmc_info.port,
                                  "username": bmc_info.username, "password_file": pw, "ssl_insecure": True}
    doc["machines"] = {}
    for k, h in machines.items():
        entry: dict = {"name": h.name, "address": str(h.address)}
        if bmc_info is not None:
            entry["bmc"] = {"systems_uri": f"/redfish/v1/Systems/{h.name}"}
        doc["machines"][k] = entry
    doc["client"] = {"name": client.name, "address": str(client.address)}
    inventory = f"{WORKSTATION_DIR}/inventory.yaml"
    client.write_file(inventory, yaml.safe_dump(doc, sort_keys=False), mode=0o600)
    return Workstation(client, key, known, inventory, pw if bmc_info else None)


def client_path(ws: Workstation, path: str) -> Path:
    """``path`` inside the workstation (client host) as seen from the root namespace."""
    return ws.host.disk / path.lstrip("/") if path.startswith("/srv/") else Path(path)


#: The state directory stackha uses on the workstation (the client host's own disk).
WORKSTATION_STATE = "/srv/stackha/state"


def build(prefix: str, machine_keys: Sequence[str], *, state_dir: Path, subnet: str | None = None,
          bmc: bool = True) -> tuple[Lab, Workstation]:
    """A lab ``prefix`` whose hosts ``<prefix>-m<key>`` (one per bundle machine key) and
    ``<prefix>-client`` are machines for the SSH provider (:func:`make_machines`); the inventory
    names deployment ``prefix``.  Torn down again if anything fails."""
    from stackha.hosts.lab import teardown

    lab = Lab.create(prefix, 0, state_dir=state_dir, subnet=subnet)
    try:
        hosts = {k: lab.add_host(f"m{k}") for k in machine_keys}
        client = lab.add_host("client")
        return lab, make_machines(lab, hosts, client, name=prefix, bmc=bmc)
    except BaseException:
        teardown(prefix, state_dir)
        raise


def run_stackha(ws: Workstation, *args: str, timeout: float = 900.0):
    """Run this checkout's ``stackha`` CLI on the workstation with its state directory
    (:data:`WORKSTATION_STATE`); returns the :class:`~stackha.hosts.base.CommandResult`."""
    import sys

    repo = str(Path(__file__).resolve().parents[2])
    cli = str(Path(sys.executable).with_name("stackha"))
    return ws.host.run(["env", f"PYTHONPATH={repo}", cli, "--state-dir", WORKSTATION_STATE, *args], timeout=timeout)
