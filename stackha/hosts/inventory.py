"""The inventory: which real machine carries each bundle machine, and how to reach and power it.

``stackha deploy BUNDLE --inventory FILE`` deploys on the machines an inventory names (the SSH
provider, :mod:`stackha.hosts.ssh`).  The format (YAML)::

    name: prod                    # the deployment's name (default: the file's stem)
    defaults:                     # merged under every machine (and the client, but for bmc), key by key
      user: stackha               # SSH login; a non-root user runs commands through sudo -n
      key: ~/.ssh/id_ed25519      # private key (relative paths: to this file)
      known_hosts: ~/.ssh/known_hosts   # host keys are always checked against this file
      port: 22
      interface: eth0             # where VIPs go (keepalived, Pacemaker's IPaddr2)
      connect_timeout: 10         # seconds
      bmc: {type: redfish, username: admin, password_file: /etc/stackha/bmc.pass}
    machines:
      "0":                        # a bundle machine id (or a container key "1/lxd/0", "new:app/0")
        name: ctl1                # its host name: cluster node name, shown by status
        address: 192.0.2.11
        bmc:                      # power and fencing: fence_redfish / fence_ipmilan
          type: redfish           # redfish | ipmi
          address: 198.51.100.11
          port: 443               # default 443 (redfish) / 623 (ipmi)
          systems_uri: /redfish/v1/Systems/1   # redfish: the system (default: the first)
          password_env: BMC_PASSWORD          # or password_file: a 0600 file
          ssl_insecure: false     # redfish: accept a self-signed certificate
    client:                       # the host probes and the OpenStack client run from
      name: ws1
      address: 192.0.2.5

Validation collects every problem and raises one :class:`InventoryError` listing them, one line
each, ``FILE: path: message (fix: …)`` — the same shape as bundle errors
(:class:`stackha.model.problems.Problem`).  BMC passwords are read only from a file no one but its
owner can read (mode 0600 or 0400) or from an environment variable, and are never printed.
What the inventory cannot tell (a machine that does not answer, a key the machine refuses, a host
key that changed) is checked by :meth:`stackha.hosts.ssh.SshProvider.check` before anything runs.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from stackha.errors import InvalidInput
from stackha.model.problems import Problem

__all__ = ["Bmc", "Inventory", "InventoryError", "Target", "load_inventory", "parse_inventory"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")
_DEPLOYMENT_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_IFACE_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
_KEY_RE = re.compile(r"^(\d+(/lxd/\d+)?|new:[a-z][a-z0-9-]*/\d+)$")
BMC_TYPES = ("redfish", "ipmi")
BMC_PORTS = {"redfish": 443, "ipmi": 623}


class InventoryError(InvalidInput):
    """An inventory that cannot be used (exit code 2); ``problems`` lists every problem found,
    ``str()`` is one line per problem."""

    def __init__(self, problems: list[Problem]):
        if not problems:
            raise ValueError("InventoryError needs at least one problem")
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# --------------------------------------------------------------------------- raw documents
class _RawBmc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["redfish", "ipmi"] | None = None
    address: StrictStr | None = None
    port: StrictInt | None = Field(default=None, ge=1, le=65535)
    systems_uri: StrictStr | None = None
    username: StrictStr | None = None
    password_file: StrictStr | None = None
    password_env: StrictStr | None = None
    ssl_insecure: StrictBool | None = None


class _RawTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr | None = None
    address: StrictStr | None = None
    user: StrictStr | None = None
    key: StrictStr | None = None
    known_hosts: StrictStr | None = None
    port: StrictInt | None = Field(default=None, ge=1, le=65535)
    interface: StrictStr | None = None
    connect_timeout: float | None = Field(default=None, gt=0, le=120)
    bmc: _RawBmc | None = None


class _RawInventory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr | None = None
    defaults: _RawTarget | None = None
    machines: dict[str, _RawTarget | None] = Field(default_factory=dict)
    client: _RawTarget | None = None


_FIXES = {
    "type": "use redfish or ipmi",
    "port": "give a TCP port 1-65535",
    "connect_timeout": "give seconds, e.g. 10",
    "ssl_insecure": "give true or false",
    "name": "give the machine's host name",
    "address": "give the machine's IPv4 address",
}


# --------------------------------------------------------------------------- resolved
@dataclass(frozen=True)
class Bmc:
    """A machine's BMC: ``type`` redfish | ipmi, ``address``, ``port``, ``username``,
    ``systems_uri`` (redfish; None: the first system), ``ssl_insecure``, and where the password is
    (``password_file`` or ``password_env``; read by :meth:`password`, never stored here)."""

    type: str
    address: str
    port: int
    username: str
    password_file: str | None = None
    password_env: str | None = None
    systems_uri: str | None = None
    ssl_insecure: bool = False

    def password(self) -> str:
        """The BMC password, read now from its 0600 file or its environment variable.
        Raises :class:`InvalidInput` naming the source (never the password) when unreadable."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if not value:
                raise InvalidInput(f"BMC {self.address}: environment variable {self.password_env} is not set")
            return value
        assert self.password_file is not None
        try:
            return Path(self.password_file).read_text().strip()
        except OSError as exc:
            raise InvalidInput(f"BMC {self.address}: cannot read password file {self.password_file}: "
                               f"{exc.strerror}") from None


@dataclass(frozen=True)
class Target:
    """How to reach one machine: ``key`` (its inventory key, e.g. ``"0"`` or ``client``),
    ``path`` (``machines.0``: for messages), ``name``, ``address``, SSH ``port``, ``user``,
    ``key_file``, ``known_hosts``, ``interface`` (for VIPs), ``connect_timeout`` (s), ``bmc``."""

    key: str
    path: str
    name: str
    address: ipaddress.IPv4Address
    port: int
    user: str
    key_file: str
    known_hosts: str
    interface: str
    connect_timeout: float
    bmc: Bmc | None = None

    def where(self) -> str:
        """``machines.0 (ctl1, 192.0.2.11:22)``: the start of every message about this machine."""
        return f"{self.path} ({self.name}, {self.address}:{self.port})"


@dataclass(frozen=True)
class Inventory:
    """A validated inventory: ``name`` (the deployment), ``machines`` by key, ``client``,
    ``source`` (the file, for messages)."""

    name: str
    machines: dict[str, Target]
    client: Target
    source: str

    def targets(self) -> list[Target]:
        """Every machine, then the client."""
        return [*self.machines.values(), self.client]


# --------------------------------------------------------------------------- loading
def load_inventory(path: str | Path) -> Inventory:
    """Read and validate the inventory file ``path``; raises :class:`InventoryError` listing
    every problem (a file that cannot be read included)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InventoryError([Problem(path=str(p), message=f"cannot read the inventory: {reason}",
                                      fix="give the path of a readable YAML file")]) from None
    return parse_inventory(text, source=str(p), base_dir=p.resolve().parent, default_name=p.stem)


def _merge(defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    out = {**defaults, **{k: v for k, v in own.items() if k != "bmc"}}
    if defaults.get("bmc") is not None or own.get("bmc") is not None:
        out["bmc"] = {**(defaults.get("bmc") or {}), **(own.get("bmc") or {})}
    return out


def parse_inventory(text: str, *, source: str = "<inventory>", base_dir: Path | None = None,
                    default_name: str = "ssh") -> Inventory:
    """Validate inventory ``text`` (see the module docstring); ``base_dir`` resolves relative key,
    known_hosts and password file paths.  Raises :class:`InventoryError` listing every problem."""
    problems: list[Problem] = []

    def bad(path: str, message: str, fix: str) -> None:
        problems.append(Problem(path=path, message=message, fix=fix, source=source))

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(document)"
        raise InventoryError([Problem(path=where, message=f"malformed YAML: {getattr(exc, 'problem', None) or exc}",
                                      fix="correct the YAML syntax", source=source)]) from None
    if not isinstance(raw, dict):
        raise InventoryError([Problem(path="(document)", message="an inventory must be a mapping",
                                      fix="give machines: and client: (see `stackha deploy --help`)",
                                      source=source)])
    if isinstance(raw.get("machines"), dict):
        raw["machines"] = {str(k): v for k, v in raw["machines"].items()}
    try:
        doc = _RawInventory.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            path = ".".join(str(x) for x in err["loc"])
            last = next((str(x) for x in reversed(err["loc"]) if isinstance(x, str)), "")
            if err["type"] == "extra_forbidden":
                bad(path, f"unknown key {last!r}", "remove it or correct its spelling (see `stackha deploy --help`)")
            else:
                bad(path, f"{err['msg']} (got {err['input']!r})", _FIXES.get(last, f"correct {last or 'the value'}"))
        raise InventoryError(problems) from None

    name = doc.name or default_name
    if not _DEPLOYMENT_RE.match(name):
        bad("name", f"deployment name {name!r} is not 1-32 lower-case letters, digits and '-'",
            "give e.g. name: prod")
    if not doc.machines:
        bad("machines", "no machine is given", "map each bundle machine to a host: machines: {'0': {name: …, address: …}}")
    if doc.client is None:
        bad("client", "no client host is given",
            "name the host probes and the OpenStack client run from (never part of the cloud)")
    defaults = doc.defaults.model_dump(exclude_none=True) if doc.defaults else {}
    base = base_dir or Path.cwd()

    def resolve_path(value: str) -> str:
        p = Path(os.path.expanduser(value))
        return str(p if p.is_absolute() else base / p)

    def target(key: str, path: str, rt: _RawTarget | None) -> Target | None:
        own = rt.model_dump(exclude_none=True) if rt else {}
        # defaults.bmc is the machines' (the client is never powered off: its own bmc only).
        m = _merge({k: v for k, v in defaults.items() if k != "bmc" or key != "client"}, own)
        ok = True
        for req in ("name", "address", "user", "key"):
            if not m.get(req):
                fix = {"name": "give its host name (the cluster node name)", "address": "give its IPv4 address",
                       "user": "give the SSH login (defaults.user or per machine)",
                       "key": "give the SSH private key file (defaults.key or per machine)"}[req]
                bad(f"{path}.{req}", f"missing {req}", fix)
                ok = False
        if not ok:
            return None
        if not _NAME_RE.match(m["name"]):
            bad(f"{path}.name", f"host name {m['name']!r} is not a host name", "use letters, digits, '.' and '-'")
            ok = False
        try:
            address = ipaddress.IPv4Address(m["address"])
        except ValueError:
            bad(f"{path}.address", f"{m['address']!r} is not an IPv4 address", "give e.g. 192.0.2.11")
            ok = False
        iface = m.get("interface", "eth0")
        if not _IFACE_RE.match(iface):
            bad(f"{path}.interface", f"{iface!r} is not an interface name", "give e.g. eth0 or bond0.100")
            ok = False
        key_file = resolve_path(m["key"])
        if not os.access(key_file, os.R_OK):
            bad(f"{path}.key", f"private key {key_file} cannot be read", "give a readable SSH private key file")
            ok = False
        known = resolve_path(m.get("known_hosts", "~/.ssh/known_hosts"))
        if not os.access(known, os.R_OK):
            bad(f"{path}.known_hosts", f"known_hosts file {known} cannot be read",
                "give the file holding the machines' host keys (ssh-keyscan, checked by hand); host keys are always checked")
            ok = False
        bmc = _bmc(m.get("bmc"), f"{path}.bmc", resolve_path, bad)
        if not ok or bmc is False:
            return None
        return Target(key=key, path=path, name=m["name"], address=address, port=m.get("port", 22), user=m["user"],
                      key_file=key_file, known_hosts=known, interface=iface,
                      connect_timeout=float(m.get("connect_timeout", 10)), bmc=bmc or None)

    machines: dict[str, Target] = {}
    for key, rt in doc.machines.items():
        if not _KEY_RE.match(key):
            bad(f"machines.{key}", f"{key!r} is not a bundle machine key",
                "use the bundle's machine ids ('0', '1', …) or container keys such as '1/lxd/0'")
            continue
        t = target(key, f"machines.{key}", rt)
        if t is not None:
            machines[key] = t
    client = target("client", "client", doc.client) if doc.client is not None else None
    everyone = [*machines.values(), *([client] if client else [])]
    seen_names: dict[str, str] = {}
    seen_addr: dict[tuple, str] = {}
    for t in everyone:
        if t.name in seen_names:
            bad(f"{t.path}.name", f"host name {t.name!r} is also {seen_names[t.name]}'s", "give every machine its own name")
        seen_names.setdefault(t.name, t.path)
        if (t.address, t.port) in seen_addr:
            bad(f"{t.path}.address", f"{t.address}:{t.port} is also {seen_addr[(t.address, t.port)]}'s",
                "give every machine its own address")
        seen_addr.setdefault((t.address, t.port), t.path)
    if problems:
        raise InventoryError(problems)
    assert client is not None
    return Inventory(name=name, machines=machines, client=client, source=source)


def _bmc(m: dict | None, path: str, resolve_path, bad) -> Bmc | None | bool:
    """The BMC of a machine (None: none given; False: invalid, problems reported)."""
    if not m:
        return None
    ok = True
    kind = m.get("type")
    if kind is None:
        bad(f"{path}.type", "missing BMC type", "use redfish or ipmi")
        return False
    for req in ("address", "username"):
        if not m.get(req):
            bad(f"{path}.{req}", f"missing {req}", f"give the BMC's {req}")
            ok = False
    if m.get("systems_uri") and kind != "redfish":
        bad(f"{path}.systems_uri", "systems_uri is a Redfish setting", "remove it, or use type: redfish")
        ok = False
    if bool(m.get("password_file")) == bool(m.get("password_env")):
        bad(path, "give exactly one of password_file and password_env",
            "store the BMC password in a 0600 file (password_file) or an environment variable (password_env)")
        return False
    pw_file = None
    if m.get("password_file"):
        pw_file = resolve_path(m["password_file"])
        try:
            st = os.stat(pw_file)
        except OSError as exc:
            bad(f"{path}.password_file", f"cannot read {pw_file}: {exc.strerror}", "give the 0600 file holding the password")
            return False
        if stat.S_IMODE(st.st_mode) & 0o077:
            bad(f"{path}.password_file", f"{pw_file} is readable by others (mode {stat.S_IMODE(st.st_mode):04o})",
                f"chmod 600 {pw_file}")
            ok = False
    elif not os.environ.get(m["password_env"]):
        bad(f"{path}.password_env", f"environment variable {m['password_env']} is not set",
            f"export {m['password_env']} with the BMC password")
        ok = False
    if not ok:
        return False
    return Bmc(type=kind, address=m["address"], port=m.get("port", BMC_PORTS[kind]), username=m["username"],
               password_file=pw_file, password_env=m.get("password_env"), systems_uri=m.get("systems_uri"),
               ssl_insecure=bool(m.get("ssl_insecure", False)))
