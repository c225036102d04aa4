"""The application options stackha reads, their validation and typed accessors.

Juju passes ``options:`` to the charm; stackha reads the keys below and keeps every other option
as given (the analysis lists the ones it does not read).  Keys marked *extension* are stackha's
own (a Juju deployment of the same bundle would need them removed, e.g. by keeping them in an
overlay only stackha reads).

===================== ============ ==========================================================
key                   on           meaning
===================== ============ ==========================================================
``vip``               any          virtual IP(s) the application is reached on; several VIPs
                                   (one per network) are separated by spaces (OpenStack charms);
                                   ``""`` means no VIP, as in the charms' config.yaml
``vip_cidr``          any          prefix length of the VIP's network (OpenStack charms;
                                   default 24)
``vip_provider``      any          *extension*: who holds the VIP, ``keepalived`` (a related
                                   keepalived subordinate, VRRP) or ``pacemaker`` (a related
                                   hacluster subordinate); default: whichever is related
``zone``              any          *extension*: the availability zone of the units whose machine
                                   gives none — one value for all units, or a list, one per unit
``balance``           any          *extension*: haproxy balance algorithm for this application's
                                   frontend: ``roundrobin``, ``leastconn``, ``source``, ``uri``
``unit_availability`` any          *extension*: availability of one unit of this application
                                   (0 < a < 1), overriding the global setting
``failover_seconds``  any          *extension*: failover time of this application's VIP or active
                                   unit, seconds
``router_id``         keepalived   VRRP virtual router id, 1–255 (keepalived charm; default 51 —
                                   the value of keepalived's documented example)
``virtual_ip``        keepalived   the VIP, ``address[/prefix]`` (keepalived charm)
``corosync_mcastaddr`` hacluster   Corosync multicast address (hacluster charm; default
                                   226.94.1.1 when the transport is multicast)
``corosync_transport`` hacluster   ``multicast``/``udp`` or ``unicast``/``udpu`` (hacluster charm)
``cluster_count``     hacluster    peers needed before the cluster forms (hacluster charm;
                                   default 3)
``segments``          masakari     *extension*: Masakari failover segments, a list of
                                   ``{name, recovery_method, hosts, reserved_hosts}``;
                                   ``recovery_method`` one of ``reserved_host``, ``auto``,
                                   ``rh_priority``, ``auto_priority``; ``hosts`` and
                                   ``reserved_hosts`` name nova-compute applications (all their
                                   units) or units (``nova-compute/2``); a host in one segment only
``evacuate-all-instances`` masakari *extension*: Masakari's ``[host_failure]
                                   evacuate_all_instances`` (default true: HA_Enabled servers
                                   first, then the others; false: only HA_Enabled ones)
===================== ============ ==========================================================
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from stackha.model.problems import Problem, excerpt

__all__ = [
    "DEFAULT_MCASTADDR",
    "DEFAULT_ROUTER_ID",
    "READ_OPTIONS",
    "check_options",
    "check_segments",
    "cluster_count",
    "dns_ha",
    "corosync_mcast",
    "failover_seconds",
    "router_id",
    "unit_availability",
    "vip_addresses",
    "vip_provider",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: keepalived's VRRP router id when the option is unset (keepalived's documented example value).
DEFAULT_ROUTER_ID = 51
#: the hacluster charm's default Corosync multicast address.
DEFAULT_MCASTADDR = "226.94.1.1"
#: the hacluster charm's default ``cluster_count``.
DEFAULT_CLUSTER_COUNT = 3

_ANY = ("vip", "vip_cidr", "vip_provider", "zone", "balance", "unit_availability", "failover_seconds")
#: Options stackha reads, by kind (``"*"``: on any application).
READ_OPTIONS: dict[str, tuple[str, ...]] = {
    "*": _ANY,
    "keepalived": ("router_id", "virtual_ip"),
    "hacluster": ("corosync_mcastaddr", "corosync_transport", "cluster_count", "resources", "proxy",
                  "fence_agent", "fence_bmc", "stonith_action", "interface"),
    "keystone": ("processes", "token-expiration", "fernet-max-active-keys"),
    "swift-proxy": ("replicas", "zone-assignment", "partition-power", "min-hours", "workers"),
    "swift-storage": ("weight", "workers", "replicator-interval", "auditor-interval", "updater-interval"),
    "glance": ("workers",),
    "placement": ("processes",),
    "nova-cloud-controller": ("processes", "workers"),
    "neutron-api": ("workers", "flat-network-providers"),
    "nova-compute": ("compute-driver",),
    "masakari": ("processes", "segments", "evacuate-all-instances"),
}

#: Masakari's recovery methods as the bundle spells them (the API's are upper case).
RECOVERY_METHODS = ("reserved_host", "auto", "rh_priority", "auto_priority")
_SEGMENT_KEYS = ("name", "recovery_method", "hosts", "reserved_hosts", "description", "enabled")

BALANCE = ("roundrobin", "leastconn", "source", "uri")
PROVIDERS = ("keepalived", "pacemaker")
_MULTICAST_TRANSPORTS = ("multicast", "udp")
_UNICAST_TRANSPORTS = ("unicast", "udpu")


def read_options(kind: str | None) -> tuple[str, ...]:
    """The option keys stackha reads on an application of ``kind``."""
    return READ_OPTIONS["*"] + (READ_OPTIONS.get(kind or "", ()))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _as_int(v: Any) -> int | None:
    if _is_int(v):
        return int(v)
    if isinstance(v, str) and v.strip().isdigit():
        return int(v.strip())
    return None


def _as_float(v: Any) -> float | None:
    """A finite float from a number or a numeric string, else None (also for inf, nan, 1e400)."""
    if isinstance(v, bool):
        return None
    try:
        f = float(v) if isinstance(v, (int, float, str)) else None
    except (ValueError, OverflowError):
        return None
    return f if f is not None and math.isfinite(f) else None


def vip_addresses(options: dict[str, Any], kind: str | None = None) -> list[IPAddress]:
    """The VIPs an application declares (``vip``; ``virtual_ip`` on keepalived), parsed.

    Invalid entries are skipped here (the loader rejects them).
    """
    out: list[IPAddress] = []
    raw = options.get("vip")
    if isinstance(raw, str):
        for part in raw.split():
            try:
                out.append(ipaddress.ip_address(part))
            except ValueError:
                pass
    if kind == "keepalived" and isinstance(options.get("virtual_ip"), str):
        for part in options["virtual_ip"].split():
            try:
                out.append(ipaddress.ip_interface(part).ip)
            except ValueError:
                pass
    return out


#: Options of the OpenStack charms that make an application highly available by DNS instead of a
#: VIP (the charms' ``dns-ha`` with MAAS-managed ``os-{public,internal,admin,access}-hostname``).
DNS_HA_OPTIONS = ("dns-ha", "os-public-hostname", "os-internal-hostname", "os-admin-hostname",
                  "os-access-hostname")


def dns_ha(options: dict[str, Any]) -> bool:
    """The application is reached by DNS names an hacluster keeps pointed at live units: option
    ``dns-ha`` true, or an ``os-*-hostname`` given (OpenStack charms' DNS HA)."""
    flag = options.get("dns-ha")
    if flag is True or (isinstance(flag, str) and flag.strip().lower() in ("true", "yes", "1")):
        return True
    return any(isinstance(options.get(k), str) and options[k].strip() for k in DNS_HA_OPTIONS[1:])


def vip_provider(options: dict[str, Any]) -> str | None:
    """The declared ``vip_provider`` ("keepalived" or "pacemaker"), or None when not declared."""
    v = options.get("vip_provider")
    return str(v) if v is not None else None


def router_id(options: dict[str, Any], vip: IPAddress | None = None) -> int:
    """A keepalived application's VRRP router id: option ``router_id``; else, when its VIP is
    known, the id the keepalived operator allocates for it (:func:`allocate_router_id`); else
    :data:`DEFAULT_ROUTER_ID` (the keepalived charm's default)."""
    v = _as_int(options.get("router_id"))
    if v is not None:
        return v
    return allocate_router_id(vip) if vip is not None else DEFAULT_ROUTER_ID


VRID_MAX = 255


def allocate_router_id(vip: Any, taken: Any = ()) -> int:
    """A VRRP ``virtual_router_id`` (1–255) for ``vip`` that is not in ``taken``.

    Deterministic: the VIP's last octet (``198.18.7.250`` → 250; 0 counts as 255), or, when that is
    taken, the next free id counting upwards and wrapping from 255 to 1.  Distinct VIPs of one /24
    (the lab's .200–.254 VIP range) therefore never collide with each other, and re-running gives
    the same answer.  Raises ValueError when all 255 ids are taken.
    """
    ip = ipaddress.ip_interface(str(vip)).ip
    taken = set(taken)
    start = int(ip) & 0xFF or VRID_MAX
    for k in range(VRID_MAX):
        vrid = (start - 1 + k) % VRID_MAX + 1
        if vrid not in taken:
            return vrid
    raise ValueError(f"no free VRRP virtual_router_id for {ip}: all {VRID_MAX} are taken")


def corosync_mcast(options: dict[str, Any]) -> str | None:
    """A hacluster application's Corosync multicast address, or None when it uses unicast.

    Multicast when ``corosync_transport`` is multicast/udp, or unset with ``corosync_mcastaddr``
    given (seed 000); the address defaults to :data:`DEFAULT_MCASTADDR`.
    """
    transport = options.get("corosync_transport")
    addr = options.get("corosync_mcastaddr")
    if transport is None and addr is None:
        return None
    if transport is not None and str(transport) in _UNICAST_TRANSPORTS:
        return None
    return str(addr) if addr is not None else DEFAULT_MCASTADDR


def cluster_count(options: dict[str, Any]) -> int:
    """A hacluster application's ``cluster_count`` (default :data:`DEFAULT_CLUSTER_COUNT`)."""
    v = _as_int(options.get("cluster_count"))
    return v if v is not None else DEFAULT_CLUSTER_COUNT


def unit_availability(options: dict[str, Any]) -> float | None:
    """The per-application ``unit_availability`` option, or None when unset."""
    return _as_float(options.get("unit_availability"))


def failover_seconds(options: dict[str, Any]) -> float | None:
    """The per-application ``failover_seconds`` option, or None when unset."""
    return _as_float(options.get("failover_seconds"))


def check_options(app: str, kind: str | None, options: dict[str, Any]) -> list[Problem]:
    """Validate the options stackha reads on one application; one :class:`Problem` per bad value.

    Paths are ``applications.<app>.options.<key>``.  Never raises.
    """
    problems: list[Problem] = []

    def bad(key: str, message: str, fix: str) -> None:
        problems.append(Problem(path=f"applications.{app}.options.{key}", message=message, fix=fix))

    if options.get("vip") is not None:  # null or "" (or only spaces): no VIP, as in the charms
        raw = options["vip"]
        if not isinstance(raw, str):
            bad("vip", f"vip {excerpt(raw)} is not an IP address", "give the VIP as an address, e.g. "
                "198.18.100.250 (several VIPs: separated by spaces; \"\" for none)")
        else:
            for part in raw.split():
                try:
                    ipaddress.ip_address(part)
                except ValueError:
                    bad("vip", f"vip {excerpt(part)} is not an IP address",
                        "give the VIP as an address, e.g. 198.18.100.250")
    cidr = None
    if "vip_cidr" in options:
        cidr = _as_int(options["vip_cidr"])
        if cidr is None or not 1 <= cidr <= 128:
            bad("vip_cidr", f"vip_cidr {excerpt(options['vip_cidr'])} is not a prefix length",
                "give the prefix length of the VIP's network, e.g. 24")
            cidr = None
    if cidr is not None:
        for addr in vip_addresses(options):
            maxlen = addr.max_prefixlen
            if cidr > maxlen:
                bad("vip_cidr", f"vip_cidr {cidr} is longer than an IPv{addr.version} address",
                    f"give a prefix length of at most {maxlen}")
                continue
            net = ipaddress.ip_network(f"{addr}/{cidr}", strict=False)
            if addr.version == 4 and cidr <= 30 and addr in (net.network_address, net.broadcast_address):
                bad("vip", f"vip {addr} is the network or broadcast address of {net}",
                    f"pick a host address inside {net}")
    if "vip_provider" in options and options["vip_provider"] not in PROVIDERS:
        bad("vip_provider", f"vip_provider {excerpt(options['vip_provider'])} is not a VIP provider",
            "use keepalived (VRRP, with a related keepalived) or pacemaker (with a related hacluster)")
    if "balance" in options and options["balance"] not in BALANCE:
        bad("balance", f"balance {excerpt(options['balance'])} is not a haproxy algorithm stackha "
            "supports", "use one of " + ", ".join(BALANCE))
    if "zone" in options:
        z = options["zone"]
        items = z if isinstance(z, list) else [z]
        if not items or any(not isinstance(i, (str, int)) or isinstance(i, bool) for i in items):
            bad("zone", f"zone {excerpt(z)} is not a zone name or a list of them",
                "give one zone name for all units, or a list with one per unit")
    if "unit_availability" in options:
        a = _as_float(options["unit_availability"])
        if a is None or not 0 < a < 1:
            bad("unit_availability", f"unit_availability {excerpt(options['unit_availability'])} is "
                "not a probability strictly between 0 and 1", "give e.g. 0.999 (a unit is up "
                "99.9 % of the time)")
    if "failover_seconds" in options:
        f = _as_float(options["failover_seconds"])
        if f is None or f < 0:
            bad("failover_seconds", f"failover_seconds {excerpt(options['failover_seconds'])} is not "
                "a non-negative number of seconds", "give e.g. 5")
    if kind == "keepalived":
        if "router_id" in options:
            r = _as_int(options["router_id"])
            if r is None or not 1 <= r <= 255:
                bad("router_id", f"router_id {excerpt(options['router_id'])} is not a VRRP router id",
                    "give a whole number from 1 to 255, unique on the network segment")
        if options.get("virtual_ip") is not None:  # "" (or null): no VIP
            vip_text = options["virtual_ip"]
            for part in vip_text.split() if isinstance(vip_text, str) else [vip_text]:
                try:
                    ipaddress.ip_interface(part if isinstance(part, str) else "-")
                except ValueError:
                    bad("virtual_ip", f"virtual_ip {excerpt(part)} is not an address or address/prefix",
                        "give e.g. 198.18.100.250/24")
    if kind == "masakari" and "segments" in options:
        for key, message, fix in check_segments(options["segments"]):
            bad(key, message, fix)
    if kind == "masakari" and "evacuate-all-instances" in options and not isinstance(
            options["evacuate-all-instances"], bool):
        bad("evacuate-all-instances", f"evacuate-all-instances {excerpt(options['evacuate-all-instances'])} "
            "is not true or false", "give true (every instance, HA_Enabled first) or false")
    if kind == "hacluster":
        if "corosync_mcastaddr" in options:
            try:
                addr = options["corosync_mcastaddr"]
                ok = isinstance(addr, str) and ipaddress.ip_address(addr).is_multicast
            except ValueError:
                ok = False
            if not ok:
                bad("corosync_mcastaddr", f"corosync_mcastaddr {excerpt(options['corosync_mcastaddr'])} "
                    "is not a multicast address", "give an address in 224.0.0.0/4, e.g. 226.94.1.2")
        if "corosync_transport" in options and str(options["corosync_transport"]) not in (
                _MULTICAST_TRANSPORTS + _UNICAST_TRANSPORTS):
            bad("corosync_transport", f"corosync_transport {excerpt(options['corosync_transport'])} is "
                "not a Corosync transport", "use unicast (udpu) or multicast (udp)")
        if "cluster_count" in options:
            c = _as_int(options["cluster_count"])
            if c is None or c < 1:
                bad("cluster_count", f"cluster_count {excerpt(options['cluster_count'])} is not a "
                    "positive whole number", "give the number of units of the principal, e.g. 3")
    return problems


def _names(value: Any) -> list[str] | None:
    """A list of non-empty strings (a single string counts as a list of one), else None."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items):
        return None
    return [i.strip() for i in items]


def check_segments(raw: Any) -> list[tuple[str, str, str]]:
    """Validate the masakari ``segments`` option (module docstring); one ``(key, message, fix)``
    per problem, ``key`` relative to ``options`` (``segments[1].recovery_method``).  Only the
    shape is checked here: whether a name is a nova-compute application or unit is checked
    against the deployment (:func:`stackha.instanceha.segments.resolve`).  Never raises."""
    out: list[tuple[str, str, str]] = []
    if not isinstance(raw, list) or not raw:
        return [("segments", f"segments {excerpt(raw)} is not a list of segments",
                 "give a list, e.g. [{name: seg1, recovery_method: auto, hosts: [nova-compute]}]")]
    seen_names: set[str] = set()
    seen_hosts: dict[str, str] = {}
    for i, seg in enumerate(raw):
        key = f"segments[{i}]"
        if not isinstance(seg, dict):
            out.append((key, f"{key} {excerpt(seg)} is not a mapping",
                        "give name, recovery_method and hosts"))
            continue
        unknown = sorted(set(seg) - set(_SEGMENT_KEYS))
        if unknown:
            out.append((f"{key}.{unknown[0]}", f"{key} has unknown key {unknown[0]!r}",
                        "use only " + ", ".join(_SEGMENT_KEYS)))
        name = seg.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            out.append((f"{key}.name", f"{key} has no name", "give the segment a name (1-255 characters)"))
        elif name in seen_names:
            out.append((f"{key}.name", f"segment name {name!r} is given twice", "give each segment its own name"))
        else:
            seen_names.add(name)
        method = seg.get("recovery_method")
        if method not in RECOVERY_METHODS:
            out.append((f"{key}.recovery_method", f"{key}.recovery_method {excerpt(method)} is not a "
                        "Masakari recovery method", "use one of " + ", ".join(RECOVERY_METHODS)))
        hosts = _names(seg.get("hosts"))
        if hosts is None or not hosts:
            out.append((f"{key}.hosts", f"{key}.hosts {excerpt(seg.get('hosts'))} is not a list of "
                        "nova-compute applications or units", "give e.g. [nova-compute] or [nova-compute/0]"))
            hosts = []
        reserved = _names(seg.get("reserved_hosts", []))
        if reserved is None:
            out.append((f"{key}.reserved_hosts", f"{key}.reserved_hosts {excerpt(seg.get('reserved_hosts'))} "
                        "is not a list of nova-compute applications or units", "give e.g. [nova-compute/2]"))
            reserved = []
        if method in ("reserved_host", "rh_priority") and not reserved:
            out.append((f"{key}.reserved_hosts", f"{key} recovers with {method} but has no reserved host",
                        "name at least one reserved host, or use recovery_method auto"))
        if "enabled" in seg and not isinstance(seg["enabled"], bool):
            out.append((f"{key}.enabled", f"{key}.enabled {excerpt(seg['enabled'])} is not true or false",
                        "give true or false"))
        for h in hosts + reserved:
            where = seen_hosts.get(h)
            if where is not None and where != key:
                out.append((key, f"{h} is in {where} and {key}: Masakari finds a host by name, in one "
                            "segment only", f"remove {h} from one of them"))
            elif where == key and h in hosts and h in reserved:
                out.append((key, f"{h} is both a host and a reserved host of {key}",
                            "list it under reserved_hosts only"))
            seen_hosts.setdefault(h, key)
    return out
