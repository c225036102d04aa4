"""The lab: stackha's embedded machine provider.

A lab has a prefix (``demo``) and hosts (``demo-h1`` …).  Each host is a network namespace plus
mount, UTS and pid namespaces (PID 1 is :mod:`stackha.hosts.labinit`) and its own cgroup v2, with
a veth to a bridge that lives in the lab's own network namespace ``stackha-<prefix>-lan``: nothing
of a lab is visible in the root network namespace (no address, no veth end, no route).

Addressing (see README "The lab"): every lab leases one /24 of 198.18.0.0/15 (the benchmarking
range, RFC 2544) so concurrent labs never collide; host *i* gets ``.10+i`` (at most
:data:`MAX_HOSTS`), and ``.200``–``.254`` are left for VIPs.  IPv6 is off; there is no default
route, no NAT and no forwarding.

Power-off is real (LAB-NOTES "Hosts"): ``cgroup.kill`` kills every process of the host at once,
then its link goes down and its addresses (including a VIP it held) are flushed.  Power-on boots a
fresh PID 1 with empty /run, /dev/shm and /tmp and the boot address only; persistent directories
(the host's "disk": /srv, /etc/corosync, /var/lib/pacemaker …) survive.

State lives in ``<state_dir>/labs/<prefix>/`` (``lab.json``, per-host disks) and subnet leases
in ``/run/stackha/subnets`` (tmpfs: namespaces and leases vanish together at a reboot).
Teardown works from the kernel's view (namespaces, cgroups named after the prefix), so it is
complete even after a crash that left ``lab.json`` behind or missing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import pwd
import grp
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Iterator, Sequence

from pydantic import BaseModel, Field
from pyroute2 import NetNS, netns

from stackha.errors import InvalidInput, UserError
from stackha.hosts.provider import default_state_dir
from stackha.polling import WaitTimeout, wait_until
from stackha.hosts.base import (
    DAEMON_LOG_DIR,
    DAEMON_NAME_RE,
    DAEMON_RUN_DIR,
    HOST_ENV,
    CommandResult,
    CommandTimeout,
    CommandError,
    Daemon,
    Host,
    HostDown,
    HostError,
    ProcessInfo,
    describe,
    host_path,
    parse_ps,
    to_argv,
)

LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
HOST_OFFSET = 10
MAX_HOSTS = 189  # .11 … .199; .200 … .254 are for VIPs
VIP_FIRST, VIP_LAST = 200, 254
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
HOST_SUFFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,15}$")
NETNS_PREFIX = "stackha-"
LEASE_DIR = Path("/run/stackha/subnets")
INIT_PYTHON = "/usr/bin/python3"
BOOT_DIR = "/srv/stackha/boot"  # daemons started at every power-on (LabHost.enable_at_boot)
INIT_SCRIPT = Path(__file__).with_name("labinit.py")
BOOT_TIMEOUT_S = 10.0

# Directories private to each host and persistent across power cycles (its disk).  "seed": copied
# with ``cp -a`` from the root filesystem the first time (keeps hacluster:haclient ownership);
# "empty": same owner and mode, no content.  Paths absent from the root filesystem are skipped.
_OPENSTACK = ("keystone", "glance", "placement", "nova", "neutron", "swift", "masakari")
SEEDED_DIRS = ("/etc/corosync", "/var/lib/corosync", "/var/lib/pacemaker", "/etc/haproxy",
               "/etc/keepalived", "/var/lib/keystone", "/etc/masakarimonitors", "/etc/sudoers.d",
               *(f"/etc/{s}" for s in _OPENSTACK))
EMPTY_DIRS = ("/srv", "/var/tmp", "/var/lib/mysql", "/var/lib/rabbitmq", "/var/log/corosync",
              "/var/log/pacemaker", "/var/log/mysql", "/var/log/rabbitmq", "/var/cache/swift",
              *(f"/var/lib/{s}" for s in _OPENSTACK if s != "keystone"), *(f"/var/log/{s}" for s in _OPENSTACK))


def cgroup2_root() -> Path:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` or, on a hybrid system,
    ``/sys/fs/cgroup/unified``).  Raises :class:`UserError` if there is none."""
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[2] == "cgroup2":
                return Path(parts[1])
    raise UserError("no cgroup v2 hierarchy is mounted; the lab needs one (mount -t cgroup2 none /sys/fs/cgroup)")


def require_root() -> None:
    """Raise :class:`UserError` unless running as root (namespaces, cgroups, mounts need it)."""
    if os.geteuid() != 0:
        raise UserError("the lab needs root (it creates namespaces, cgroups and mounts); run as root")


class LabHostRecord(BaseModel):
    """A lab host as recorded in lab.json: ``index`` fixes its address (``.10+index``)."""

    name: str
    index: int
    failure_domain: str
    parent: str | None = None  # a container host's machine: powering the parent off powers it off


class LabRecord(BaseModel):
    """A lab as recorded in ``<state_dir>/labs/<prefix>/lab.json``."""

    prefix: str
    subnet: str
    created: float = Field(default_factory=time.time)
    hosts: dict[str, LabHostRecord] = Field(default_factory=dict)


# --------------------------------------------------------------------------- subnet leases
def _lease_path(k: int) -> Path:
    return LEASE_DIR / str(k)


def _subnet_index(subnet: ipaddress.IPv4Network) -> int:
    return (int(subnet.network_address) - int(LAB_RANGE.network_address)) >> 8


def lease_subnet(prefix: str, subnet: str | None = None) -> ipaddress.IPv4Network:
    """Lease a /24 of 198.18.0.0/15 for lab ``prefix``: ``subnet`` if given (InvalidInput if
    it is not a /24 inside the range, UserError if another lab holds it), else the first free one.
    A lease is a file created with O_EXCL, so two labs created at once never get the same /24."""
    LEASE_DIR.mkdir(parents=True, exist_ok=True)
    if subnet is not None:
        try:
            net = ipaddress.IPv4Network(subnet)
        except ValueError as exc:
            raise InvalidInput(f"--subnet {subnet!r}: {exc}; give a /24 such as 198.18.100.0/24") from None
        if net.prefixlen != 24 or not net.subnet_of(LAB_RANGE):
            raise InvalidInput(f"--subnet {subnet}: must be a /24 inside {LAB_RANGE} (e.g. 198.18.100.0/24)")
        candidates = [_subnet_index(net)]
    else:
        # 198.18.100.0/24 and up are left for labs whose subnet is named by a bundle's VIP.
        candidates = list(range(1, 100)) + list(range(256, 512))
    for k in candidates:
        try:
            fd = os.open(_lease_path(k), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as f:
            f.write(prefix)
        return ipaddress.IPv4Network((int(LAB_RANGE.network_address) + (k << 8), 24))
    if subnet is not None:
        holder = _lease_path(candidates[0]).read_text().strip()
        raise UserError(f"subnet {subnet} is in use by lab {holder!r}; choose another or tear that lab down")
    raise UserError("every /24 of 198.18.0.0/15 is leased; tear a lab down first")


def release_subnets(prefix: str) -> None:
    """Release every subnet lease held by ``prefix``."""
    if not LEASE_DIR.is_dir():
        return
    for p in LEASE_DIR.iterdir():
        with contextlib.suppress(OSError):
            if p.read_text().strip() == prefix:
                p.unlink()


# --------------------------------------------------------------------------- cgroups
def _cgroup_pids(cg: Path) -> list[int]:
    try:
        return [int(x) for x in (cg / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def _kill_cgroup(cg: Path, deadline_s: float = 5.0) -> None:
    """SIGKILL every process of cgroup ``cg`` (and below) with cgroup.kill; wait until empty."""
    if not cg.is_dir():
        return
    (cg / "cgroup.kill").write_text("1")
    wait_until(lambda: not _cgroup_pids(cg) and "populated 0" in (cg / "cgroup.events").read_text(),
               deadline_s, 0.005, error=lambda _: HostError(
                   f"processes of {cg} survived cgroup.kill for {deadline_s} s: {_cgroup_pids(cg)}"))


def _remove_cgroup_tree(cg: Path) -> None:
    if not cg.is_dir():
        return
    for child in [p for p in cg.iterdir() if p.is_dir()]:
        _remove_cgroup_tree(child)
    _kill_cgroup(cg)

    def removed() -> bool:
        try:
            cg.rmdir()
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            return False  # the kernel has not released the emptied cgroup yet

    wait_until(removed, 5, 0.01, error=lambda _: HostError(f"cgroup {cg} still busy 5 s after its processes were killed"))


# --------------------------------------------------------------------------- the host
class LabHost(Host):
    """One lab host (see the module docstring).  Obtain hosts from :class:`Lab`."""

    def __init__(self, lab: "Lab", rec: LabHostRecord):
        self.lab = lab
        self.rec = rec
        self.name = rec.name
        self.failure_domain = rec.failure_domain
        self._init_pid: int | None = None
        self._boot_proc: subprocess.Popen | None = None

    # ----------------------------------------------------------------- identity and paths
    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}{self.name}"

    @property
    def veth(self) -> str:
        return f"v{self.rec.index}"

    @property
    def dir(self) -> Path:
        return self.lab.dir / "hosts" / self.name

    @property
    def disk(self) -> Path:
        """The host's persistent directories, as seen from the root namespace."""
        return self.dir / "disk"

    @property
    def cgroup(self) -> Path:
        return self.lab.cgroup / self.name

    @property
    def address(self) -> ipaddress.IPv4Address:
        return self.lab.subnet.network_address + HOST_OFFSET + self.rec.index

    @property
    def interface(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(f"{self.address}/{self.lab.subnet.prefixlen}")

    def log_path(self, daemon: str) -> Path:
        """The log of daemon ``daemon`` as seen from the root namespace (readable when off)."""
        return self.disk / DAEMON_LOG_DIR.lstrip("/") / f"{daemon}.log"

    # ----------------------------------------------------------------- PID 1
    def _read_init_pid(self) -> int | None:
        try:
            pid = int((self.dir / "init.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None
        if pid in _cgroup_pids(self.cgroup):
            return pid
        return None

    @property
    def init_pid(self) -> int:
        """PID (root namespace view) of the host's PID 1.  Raises :class:`HostDown` when off."""
        if self._init_pid is None or self._init_pid not in _cgroup_pids(self.cgroup):
            self._init_pid = self._read_init_pid()
        if self._init_pid is None:
            raise HostDown(f"{self.name} is powered off")
        return self._init_pid

    def is_on(self) -> bool:
        try:
            self.init_pid
        except HostDown:
            return False
        return True

    def _root(self, path: str) -> Path:
        """``path`` inside the host, reached from the root namespace through /proc/<pid1>/root."""
        return Path(f"/proc/{self.init_pid}/root") / str(host_path(path)).lstrip("/")

    # ----------------------------------------------------------------- provisioning
    def _prepare_disk(self) -> list[list[str]]:
        binds: list[list[str]] = []
        for path in SEEDED_DIRS + EMPTY_DIRS:
            real = Path(path)
            if not real.is_dir():
                continue
            mine = self.disk / path.lstrip("/")
            if not mine.exists():
                mine.parent.mkdir(parents=True, exist_ok=True)
                if path in SEEDED_DIRS:
                    subprocess.run(["cp", "-a", str(real), str(mine)], check=True)
                else:
                    st = real.stat()
                    mine.mkdir()
                    os.chown(mine, st.st_uid, st.st_gid)
                    os.chmod(mine, st.st_mode & 0o7777)
            binds.append([str(mine), path])
        if any(dst == "/srv" for _, dst in binds):
            # Fencing path: the lab's fence-gateway directory, bound over a directory of the host's
            # own disk (nothing is mounted on a shared path) — see stackha.hosts.labfence.
            from stackha.hosts import labfence

            gw_dir = labfence.fence_dir(self.lab)
            gw_dir.mkdir(parents=True, exist_ok=True)
            (self.disk / labfence.HOST_FENCE_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
            binds.append([str(gw_dir), labfence.HOST_FENCE_DIR])
        binds.append([str(self.lab.hosts_file), "/etc/hosts"])
        return binds

    # ----------------------------------------------------------------- volumes (own file systems)
    def _volume_image(self, path: str) -> Path:
        return self.dir / "volumes" / (urllib.parse.quote(path, safe="") + ".img")

    def _volumes(self) -> list[tuple[Path, str]]:
        """(image, path inside the host) of every volume made by :meth:`ensure_volume`."""
        found = []
        for img in sorted((self.dir / "volumes").glob("*.img")):
            found.append((img, urllib.parse.unquote(img.name[: -len(".img")])))
        return found

    def _attach(self, img: Path, deadline_s: float = 10.0) -> str:
        """Attach ``img`` to a free loop device in the root namespace; returns the device.  Waits
        (bounded) until no loop device holds ``img`` any more: after a power-off the kernel
        releases the old mount namespace, and with it the old device, asynchronously, and two
        devices on one ext4 image would corrupt it.  Raises :class:`HostError`."""
        def free() -> bool:
            r = subprocess.run(["losetup", "-j", str(img)], capture_output=True, text=True)
            return r.returncode == 0 and not r.stdout.strip()
        wait_until(free, deadline_s, 0.05, what=f"{self.name}: {img} released by its old loop device",
                   error=HostError)
        r = subprocess.run(["losetup", "--find", "--show", str(img)], capture_output=True, text=True)
        if r.returncode != 0:
            raise HostError(f"{self.name}: losetup {img}: {r.stderr.strip()}")
        return r.stdout.strip()

    @staticmethod
    def _autoclear(dev: str) -> None:
        """Detach ``dev`` once its last mount is gone (``losetup -d`` of a busy device sets the
        kernel's autoclear flag): the host's mount namespace dying at power-off releases it."""
        subprocess.run(["losetup", "-d", dev], capture_output=True)

    def ensure_volume(self, path: str, size_bytes: int) -> bool:
        """The lab's volume: a sparse ext4 image (``<host dir>/volumes/*.img``, no reserved
        blocks) attached to a loop device and mounted on ``path`` inside the host only — nothing is
        mounted in the root namespace.  Every power-on mounts it again; a power-off releases it
        with the host's mount namespace.  An existing ``path`` is left as it is (data is never
        moved).  Returns True if ``path`` is on a file system of its own afterwards.  Raises
        :class:`HostError` if mkfs, losetup or mount fails.  mkfs + mount of 4 GiB took 0.06 s on a 1-host lab (exercised by
        tests/lab/test_lab.py test_volume_fills_up_alone_survives_power_cycles_and_goes_with_the_lab)."""
        if self.own_filesystem(path):
            return True
        if self.exists(path):
            return False
        img = self._volume_image(path)
        img.parent.mkdir(parents=True, exist_ok=True)
        if not img.exists():
            with open(img, "wb") as f:
                f.truncate(size_bytes)
            r = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(img)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                img.unlink()
                raise HostError(f"{self.name}: mkfs.ext4 {img}: {r.stderr.strip()}")
        (self.disk / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
        dev = self._attach(img)
        try:
            self.run(["mkdir", "-p", path], check=True)
            self.run(["mount", dev, path], check=True)
        finally:
            self._autoclear(dev)
        return True

    def _set_sysctls(self) -> None:
        script = (
            "for f in /proc/sys/net/ipv6/conf/all/disable_ipv6 /proc/sys/net/ipv6/conf/default/disable_ipv6;"
            " do [ -e $f ] && echo 1 > $f; done; echo 1 > /proc/sys/net/ipv4/ip_nonlocal_bind;"
            " echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore; echo 2 > /proc/sys/net/ipv4/conf/all/arp_announce"
        )
        subprocess.run(["nsenter", f"--net=/run/netns/{self.netns}", "/bin/sh", "-c", script],
                       check=True, capture_output=True)

    def create(self) -> None:
        """Create the host's network namespace and its veth to the lab bridge, then boot it."""
        netns.create(self.netns)
        self._set_sysctls()
        with NetNS(self.lab.lan_netns) as lan:
            lan.link("add", ifname=self.veth, kind="veth",
                     peer={"ifname": "eth0", "net_ns_fd": self.netns})
            br = lan.link_lookup(ifname="br0")[0]
            idx = lan.link_lookup(ifname=self.veth)[0]
            lan.link("set", index=idx, master=br, state="up")
        self.cgroup.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.power_on()

    def _boot(self) -> None:
        devices = [(self._attach(img), path) for img, path in self._volumes()]
        try:
            self._boot_with(devices)
        finally:
            for dev, _ in devices:
                self._autoclear(dev)

    def _boot_with(self, volumes: list[tuple[str, str]]) -> None:
        cfg = {
            "hostname": self.name,
            "binds": self._prepare_disk(),
            "volumes": [[dev, path] for dev, path in volumes],
            "run_dirs": [[DAEMON_RUN_DIR, "755", ""]],
            "keep": passthrough_paths(),
        }
        log_dir = self.disk / DAEMON_LOG_DIR.lstrip("/")
        log_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            "/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.cgroup / "cgroup.procs"),
            "nsenter", f"--net=/run/netns/{self.netns}",
            "unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc", "--propagation", "private",
            INIT_PYTHON, "-I", "-S", str(INIT_SCRIPT), json.dumps(cfg),
        ]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, env=HOST_ENV)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], BOOT_TIMEOUT_S)
        line = proc.stdout.readline().decode(errors="replace").strip() if ready else ""
        if line != "ready":
            rest = b""
            with contextlib.suppress(Exception):
                if select.select([proc.stdout], [], [], 0.5)[0]:
                    rest = proc.stdout.read1(4096)
            _kill_cgroup(self.cgroup)
            proc.wait(5)
            raise HostError(f"{self.name}: boot failed: {line or 'no answer in %.0f s' % BOOT_TIMEOUT_S} "
                            f"{rest.decode(errors='replace').strip()}".strip())
        proc.stdout.close()
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        if len(children) != 1:
            raise HostError(f"{self.name}: cannot find PID 1 of the host (unshare children: {children})")
        self._init_pid = int(children[0])
        (self.dir / "init.pid").write_text(str(self._init_pid))
        self._boot_proc = proc  # kept so the unshare parent is reaped, never waited on here

    # ----------------------------------------------------------------- addresses
    def _eth0(self, ns: NetNS) -> int:
        found = ns.link_lookup(ifname="eth0")
        if not found:
            raise HostError(f"{self.name}: eth0 is missing from {self.netns}")
        return found[0]

    def addresses(self) -> list[ipaddress.IPv4Interface]:
        with NetNS(self.netns) as ns:
            out = []
            for a in ns.get_addr(family=2):
                if a.get("index") == 1:  # lo
                    continue
                out.append(ipaddress.IPv4Interface(f"{a.get('address')}/{a['prefixlen']}"))
            return out

    def link_up(self) -> bool:
        """True if the host's eth0 is administratively up and has carrier."""
        with NetNS(self.netns) as ns:
            link = ns.get_links(self._eth0(ns))[0]
            return link.get("operstate") == "UP"

    # ----------------------------------------------------------------- power
    def power_off(self) -> float:
        """The link goes down first, then every process dies: a machine that loses power sends
        nothing more, so its peers see no FIN or RST from the sockets the kill closes (they find
        out by their own timeouts, as after a real power loss).  Then the addresses are flushed
        (a VIP it held must not come back with it).  Returns the time taken (s)."""
        t0 = time.monotonic()
        with NetNS(self.netns) as ns:
            idx = self._eth0(ns)
            ns.link("set", index=idx, state="down")
            (self.cgroup / "cgroup.kill").write_text("1")
            ns.flush_addr(index=idx)
        _kill_cgroup(self.cgroup)
        self._init_pid = None
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "init.pid").unlink()
        if self._boot_proc is not None:
            self._boot_proc.wait(5)
            self._boot_proc = None
        for child in self.lab.children_of(self.name):
            child.power_off()
        return time.monotonic() - t0

    def power_on(self) -> float:
        t0 = time.monotonic()
        if self.rec.parent and not self.lab.host(self.rec.parent).is_on():
            raise HostDown(f"{self.name} is a container on {self.rec.parent}, which is off; power that on first")
        if self.is_on():
            return 0.0
        _kill_cgroup(self.cgroup)  # stray processes of a half-failed boot
        with NetNS(self.netns) as ns:
            idx = self._eth0(ns)
            ns.flush_addr(index=idx)
        # A machine's firewall rules are RAM state, but the lab's network namespace outlives its
        # processes: without this, a packet-loss table set before a fence survived the power cycle
        # and kept the node losing 30 % of its packets (Corosync never rejoined; stackha verify,
        # controller-packet-loss on the keystone + hacluster bundle).
        subprocess.run(["nsenter", f"--net=/run/netns/{self.netns}", "nft", "flush", "ruleset"],
                       check=True, capture_output=True, timeout=20)
        self._boot()
        with NetNS(self.netns) as ns:
            lo = ns.link_lookup(ifname="lo")[0]
            ns.link("set", index=lo, state="up")
            idx = self._eth0(ns)
            ns.addr("add", index=idx, address=str(self.address), prefixlen=self.lab.subnet.prefixlen)
            ns.link("set", index=idx, state="up")
        self._start_boot_daemons()
        return time.monotonic() - t0

    # ----------------------------------------------------------------- daemons started at boot
    def _boot_dir(self) -> Path:
        return self.disk / BOOT_DIR.lstrip("/")

    def enable_at_boot(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None) -> Daemon:
        """Run daemon ``name`` (``argv``, as root) now and after every power-on, as a machine runs
        the services enabled at boot (sshd, a BMC).  Recorded on the host's disk
        (``/srv/stackha/boot/<name>.json``).  Returns the running daemon."""
        self._daemon_files(name)
        self._boot_dir().mkdir(parents=True, exist_ok=True)
        (self._boot_dir() / f"{name}.json").write_text(json.dumps({"argv": list(map(str, argv)), "env": env or {}}))
        return self.spawn(name, argv, env=env)

    def _start_boot_daemons(self) -> None:
        d = self._boot_dir()
        for path in sorted(d.glob("*.json")) if d.is_dir() else []:
            spec = json.loads(path.read_text())
            self.spawn(path.stem, spec["argv"], env=spec.get("env") or None)

    def machine(self) -> "LabHost":
        """The machine this host runs on: its parent for a container host, else itself."""
        return self.lab.host(self.rec.parent) if self.rec.parent else self

    def containers(self) -> list["LabHost"]:
        """The container hosts placed on this machine (they go down with it)."""
        return self.lab.children_of(self.name)

    def fence_device(self):
        """The STONITH device that fences this host from a peer host of the lab (pure): a
        :class:`stackha.hosts.labfence.FenceDevice` — agent ``fence_stackha_lab``, its parameters,
        the agent file to install on cluster nodes.  :meth:`ensure_fencing` makes it work."""
        from stackha.hosts import labfence

        return labfence.device_for(self.name)

    def ensure_fencing(self) -> None:
        """Start the lab's fence gateway if it is not running (raises
        :class:`stackha.hosts.labfence.FenceError` if it does not start)."""
        self.lab.fence_gateway()

    # ----------------------------------------------------------------- network faults
    def _bridge_port(self, up: bool) -> None:
        with NetNS(self.lab.lan_netns) as lan:
            idx = lan.link_lookup(ifname=self.veth)[0]
            lan.link("set", index=idx, state="up" if up else "down")

    def partition(self) -> None:
        """Cut the cable at the switch: the bridge-side veth goes down (the host keeps running,
        its eth0 loses carrier, its addresses stay)."""
        self._bridge_port(False)

    def heal(self) -> None:
        self._bridge_port(True)

    # ----------------------------------------------------------------- commands
    def _wrap(self, argv: Sequence[str] | str, user: str | None) -> list[str]:
        cmd = to_argv(argv)
        if user and user != "root":
            cmd = ["setpriv", f"--reuid={user}", f"--regid={_primary_group(user)}", "--init-groups", *cmd]
        return [
            "/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.cgroup / "cgroup.procs"),
            "nsenter", "-t", str(self.init_pid), "--net", "--mount", "--uts", "--pid", "--wd=/",
            "--", *cmd,
        ]

    def run(self, argv, *, timeout=60.0, input=None, env=None, user=None, check=False) -> CommandResult:
        full = self._wrap(argv, user)
        data = input.encode() if isinstance(input, str) else input
        t0 = time.monotonic()
        proc = subprocess.Popen(
            full, stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            env={**HOST_ENV, **(env or {})},
        )
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise CommandTimeout(f"{self.name}: `{describe(argv)}` did not finish in {timeout} s") from None
        result = CommandResult(describe(argv), proc.returncode, out.decode(errors="replace"),
                               err.decode(errors="replace"), time.monotonic() - t0)
        if check and not result.ok:
            raise CommandError(self.name, result)
        return result

    def write_file(self, path, content, *, mode=0o644, owner=None, group=None) -> bool:
        data = content.encode() if isinstance(content, str) else content
        target = self._root(path)
        uid = pwd.getpwnam(owner).pw_uid if owner else 0
        gid = grp.getgrnam(group).gr_gid if group else (pwd.getpwnam(owner).pw_gid if owner else 0)
        try:
            st = target.stat()
            same = (target.read_bytes() == data and (st.st_mode & 0o7777) == mode
                    and st.st_uid == uid and st.st_gid == gid)
        except FileNotFoundError:
            same = False
        if same:
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.stackha-tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        return True

    def read_file(self, path) -> bytes | None:
        try:
            return self._root(path).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, path: str) -> bool:
        return self._root(path).exists()

    # ----------------------------------------------------------------- daemons
    def _daemon_files(self, name: str) -> tuple[str, str, str]:
        if not DAEMON_NAME_RE.match(name):
            raise ValueError(f"daemon name {name!r}: a lower-case letter, then letters, digits, '-' and '_' (≤ 64)")
        return (f"{DAEMON_RUN_DIR}/{name}.pid", f"{DAEMON_RUN_DIR}/{name}.json", f"{DAEMON_LOG_DIR}/{name}.log")

    def _proc_start(self, pid: int) -> str | None:
        """Start time (clock ticks since boot) of host-PID ``pid``, None if gone or a zombie."""
        try:
            stat = self._root(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return None
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            return None
        return fields[19]

    def daemon(self, name: str) -> Daemon | None:
        if not self.is_on():
            return None
        pidfile, meta, log = self._daemon_files(name)
        raw = self.read_file(meta)
        if raw is None:
            return None
        info = json.loads(raw)
        if self._proc_start(info["pid"]) != info["start"]:
            return None
        return Daemon(name=name, pid=info["pid"], log_path=log, argv=tuple(info["argv"]))

    def spawn(self, name, argv, *, env=None, user=None, cwd="/") -> Daemon:
        running = self.daemon(name)
        if running is not None:
            return running
        pidfile, meta, log = self._daemon_files(name)
        if self.read_file(pidfile) is not None:
            self._root(pidfile).unlink()
        self.run(["mkdir", "-p", DAEMON_LOG_DIR, DAEMON_RUN_DIR], check=True)
        cmd = to_argv(argv)
        if user and user != "root":
            cmd = ["setpriv", f"--reuid={user}", f"--regid={_primary_group(user)}", "--init-groups", *cmd]
        # setsid -f forks: the daemon is re-parented to the host's PID 1, which reaps it.
        launcher = 'cd "$3" || exit 1; echo $$ > "$1"; log=$2; shift 3; exec "$@" >> "$log" 2>&1 < /dev/null'
        self.run(["setsid", "-f", "/bin/sh", "-c", launcher, "sh", pidfile, log, cwd, *cmd],
                 env=env, check=True, timeout=15)
        def launched() -> tuple[int, float | None] | None:
            """(pid, its start time, None if it already exited) once the launcher wrote the pidfile."""
            raw = self.read_file(pidfile)
            if not (raw and raw.strip()):
                return None
            pid = int(raw)
            return pid, self._proc_start(pid)

        try:
            pid, start = wait_until(launched, 5, 0.01, what=f"{name}'s pidfile")
        except WaitTimeout:
            start = None
        if start is not None:
            self.write_file(meta, json.dumps({"pid": pid, "start": start, "argv": list(map(str, argv))}))
            return Daemon(name=name, pid=pid, log_path=log, argv=tuple(map(str, argv)))
        tail = (self.read_file(log) or b"").decode(errors="replace").strip().splitlines()[-5:]
        raise HostError(f"{self.name}: daemon {name} (`{describe(argv)}`) exited at once: {' | '.join(tail)}")

    def _root_pid(self, host_pid: int) -> int | None:
        for pid in _cgroup_pids(self.cgroup):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("NSpid:"):
                        if int(line.split()[-1]) == host_pid:
                            return pid
                        break
        return None

    def signal(self, name: str, sig: str = "TERM") -> bool:
        """Send signal ``sig`` (TERM, KILL, HUP …) to daemon ``name``; True if it was running."""
        d = self.daemon(name)
        if d is None:
            return False
        rp = self._root_pid(d.pid)
        if rp is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(rp, getattr(signal, f"SIG{sig.upper().removeprefix('SIG')}"))
        return True

    def stop(self, name, *, timeout=15.0, sig="TERM") -> bool:
        if not self.is_on():
            raise HostDown(f"{self.name} is powered off")
        if not self.signal(name, sig):
            return False
        gone = lambda: self.daemon(name) is None  # noqa: E731
        try:
            wait_until(gone, timeout, 0.02, what=f"{name} stopped")
        except WaitTimeout:
            self.signal(name, "KILL")
            with contextlib.suppress(WaitTimeout):
                wait_until(gone, 5, 0.02, what=f"{name} killed")
        return True

    def processes(self) -> list[ProcessInfo]:
        if not self.is_on():
            return []
        return parse_ps(self.run(["ps", "-eo", "pid=,comm=,args="], check=True).stdout)


def passthrough_paths() -> list[str]:
    """stackha's checkout and venv when they lie below /tmp or /run, which lab hosts mount
    privately: they stay visible in the hosts, so probes and clients can run the venv's python
    there (a CI clone under /tmp, for instance).  Nested paths are given once, outermost."""
    import stackha

    roots = {Path(sys.prefix).resolve(), Path(stackha.__file__).resolve().parents[1]}
    private = (Path("/tmp"), Path("/run"), Path("/dev/shm"))
    hidden = sorted(p for p in roots if any(p.is_relative_to(m) and p != m for m in private))
    return [str(p) for p in hidden if not any(p != q and p.is_relative_to(q) for q in hidden)]


def _primary_group(user: str) -> str:
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


# --------------------------------------------------------------------------- the lab
class Lab:
    """A lab of hosts on one private bridge.  Create with :meth:`create`, find with :meth:`load`.

    ``prefix`` names everything of the lab: netns ``stackha-<prefix>-lan`` (the bridge) and
    ``stackha-<prefix>-<host>`` (hosts), cgroup ``<cgroup2>/stackha/<prefix>/<host>``.
    """

    def __init__(self, record: LabRecord, state_dir: Path):
        self.record = record
        self.prefix = record.prefix
        self.state_dir = Path(state_dir)
        self.subnet = ipaddress.IPv4Network(record.subnet)
        self._hosts: dict[str, LabHost] = {n: LabHost(self, r) for n, r in record.hosts.items()}

    # ----------------------------------------------------------------- paths
    @property
    def dir(self) -> Path:
        return lab_dir(self.state_dir, self.prefix)

    @property
    def lan_netns(self) -> str:
        return f"{NETNS_PREFIX}{self.prefix}-lan"

    @property
    def cgroup(self) -> Path:
        return cgroup2_root() / "stackha" / self.prefix

    @property
    def hosts_file(self) -> Path:
        return self.dir / "etc-hosts"

    # ----------------------------------------------------------------- hosts
    @property
    def hosts(self) -> dict[str, LabHost]:
        return dict(self._hosts)

    def host(self, name: str) -> LabHost:
        """The host called ``name`` (``demo-h1``; the bare suffix ``h1`` works too).
        Raises :class:`UserError` naming the lab's hosts if there is none."""
        h = self._hosts.get(name) or self._hosts.get(f"{self.prefix}-{name}")
        if h is None:
            raise UserError(f"lab {self.prefix!r} has no host {name!r}; its hosts: {', '.join(self._hosts) or 'none'}")
        return h

    def children_of(self, name: str) -> list[LabHost]:
        return [h for h in self._hosts.values() if h.rec.parent == name]

    def fence_gateway(self) -> Path:
        """Ensure the lab's fence gateway runs (lazily started in the cgroup
        ``<lab cgroup>/fence-gw``, so teardown kills it); returns its socket path in the root
        namespace.  Hosts reach it at ``/srv/stackha/fence/fence.sock``.  See
        :mod:`stackha.hosts.labfence`."""
        from stackha.hosts import labfence

        return labfence.ensure_gateway(self)

    def vip_addresses(self) -> list[ipaddress.IPv4Address]:
        """The addresses this lab leaves for VIPs (.200 … .254 of its subnet)."""
        base = self.subnet.network_address
        return [base + i for i in range(VIP_FIRST, VIP_LAST + 1)]

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "lab.json.tmp"
        tmp.write_text(self.record.model_dump_json(indent=2))
        os.replace(tmp, self.dir / "lab.json")
        lines = ["127.0.0.1\tlocalhost"] + [f"{h.address}\t{h.name}" for h in self._hosts.values()]
        text = "\n".join(lines) + "\n"
        # In place (not rename): hosts bind-mount this inode over their /etc/hosts.
        with open(self.hosts_file, "a+") as f:
            f.seek(0)
            if f.read() != text:
                f.seek(0)
                f.truncate()
                f.write(text)

    def add_host(self, suffix: str | None = None, *, failure_domain: str | None = None,
                 parent: str | None = None) -> LabHost:
        """Create and boot a new host ``<prefix>-<suffix>`` (default ``h<next index>``).

        ``parent``: the host this one is a container of (its failure domain; powering the parent
        off powers this host off).  Raises :class:`InvalidInput` for a bad or taken name,
        :class:`UserError` when the subnet is full.  On failure nothing of the new host remains.
        """
        require_root()
        with self._lock():
            index = max((h.rec.index for h in self._hosts.values()), default=0) + 1
            if index > MAX_HOSTS:
                raise UserError(f"lab {self.prefix!r} is full: at most {MAX_HOSTS} hosts per /24 "
                                f"(.{HOST_OFFSET + 1}-.{HOST_OFFSET + MAX_HOSTS}; .{VIP_FIRST}+ are VIPs)")
            suffix = suffix or f"h{index}"
            if not HOST_SUFFIX_RE.match(suffix):
                raise InvalidInput(f"host name {suffix!r}: use a lower-case letter then letters/digits (max 16)")
            name = f"{self.prefix}-{suffix}"
            if name in self._hosts:
                raise InvalidInput(f"lab {self.prefix!r} already has a host {name!r}")
            if parent is not None:
                parent = self.host(parent).name
            rec = LabHostRecord(name=name, index=index, parent=parent,
                                failure_domain=failure_domain or (self._hosts[parent].failure_domain if parent else name))
            host = LabHost(self, rec)
            self._hosts[name] = host
            self.record.hosts[name] = rec
            self._save()
            try:
                host.create()
            except BaseException:
                self._discard_host(host)
                raise
            return host

    def _discard_host(self, host: LabHost) -> None:
        with contextlib.suppress(Exception):
            _remove_cgroup_tree(host.cgroup)
        with contextlib.suppress(Exception), NetNS(self.lan_netns) as lan:
            for idx in lan.link_lookup(ifname=host.veth):
                lan.link("del", index=idx)
        with contextlib.suppress(Exception):
            netns.remove(host.netns)
        shutil.rmtree(host.dir, ignore_errors=True)
        self._hosts.pop(host.name, None)
        self.record.hosts.pop(host.name, None)
        self._save()

    def remove_host(self, name: str) -> None:
        """Power off and delete host ``name`` with its disk (and its containers)."""
        host = self.host(name)
        with self._lock():
            for child in self.children_of(host.name):
                self._discard_host(child)
            self._discard_host(host)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ----------------------------------------------------------------- lifecycle
    @classmethod
    def create(cls, prefix: str, n_hosts: int, *, state_dir: Path | None = None,
               subnet: str | None = None) -> "Lab":
        """Build a lab of ``n_hosts`` hosts named ``<prefix>-h1`` …; returns it booted.

        Raises :class:`UserError` when not root or the prefix is in use, :class:`InvalidInput`
        for a bad prefix, host count or subnet.  On any failure everything built is torn down.
        """
        require_root()
        state_dir = Path(state_dir or default_state_dir())
        validate_prefix(prefix)
        if not 0 <= n_hosts <= MAX_HOSTS:
            raise InvalidInput(f"--hosts {n_hosts}: a lab holds 0 to {MAX_HOSTS} hosts (one /24, .{VIP_FIRST}+ kept for VIPs)")
        if prefix_in_use(prefix, state_dir):
            raise UserError(f"lab prefix {prefix!r} is in use; choose another or run `stackha lab down {prefix}`")
        for tool in ("nsenter", "unshare", "mount", "setsid", "setpriv"):
            if shutil.which(tool) is None:
                raise UserError(f"{tool} is missing (util-linux); run `make setup`")
        if not Path(INIT_PYTHON).exists():
            raise UserError(f"{INIT_PYTHON} is missing; run `make setup`")
        net = lease_subnet(prefix, subnet)
        lab = cls(LabRecord(prefix=prefix, subnet=str(net)), state_dir)
        try:
            lab._save()
            netns.create(lab.lan_netns)
            subprocess.run(["nsenter", f"--net=/run/netns/{lab.lan_netns}", "/bin/sh", "-c",
                            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6;"
                            " echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"],
                           check=True, capture_output=True)
            with NetNS(lab.lan_netns) as lan:
                lan.link("add", ifname="br0", kind="bridge")
                br = lan.link_lookup(ifname="br0")[0]
                lan.link("set", index=br, state="up")
            lab.cgroup.mkdir(parents=True, exist_ok=True)
            for _ in range(n_hosts):
                lab.add_host()
        except BaseException:
            teardown(prefix, state_dir)
            raise
        return lab

    @classmethod
    def load(cls, prefix: str, state_dir: Path | None = None) -> "Lab":
        """The recorded lab ``prefix``.  Raises :class:`UserError` if there is none."""
        state_dir = Path(state_dir or default_state_dir())
        path = lab_dir(state_dir, prefix) / "lab.json"
        try:
            record = LabRecord.model_validate_json(path.read_text())
        except FileNotFoundError:
            known = ", ".join(r.prefix for r in list_labs(state_dir)) or "none"
            raise UserError(f"no lab {prefix!r} in {state_dir} (labs: {known}); create it with `stackha lab up`") from None
        return cls(record, state_dir)

    def destroy(self) -> None:
        """Tear the lab down completely (see :func:`teardown`)."""
        teardown(self.prefix, self.state_dir)


def validate_prefix(prefix: str) -> None:
    """Raise :class:`InvalidInput` unless ``prefix`` is 1–10 of [a-z0-9], starting with a letter."""
    if not PREFIX_RE.match(prefix or ""):
        raise InvalidInput(f"lab prefix {prefix!r}: use 1-10 lower-case letters and digits, starting with a letter")


def lab_dir(state_dir: Path, prefix: str) -> Path:
    return Path(state_dir) / "labs" / prefix


def prefix_in_use(prefix: str, state_dir: Path) -> bool:
    """True if any trace of lab ``prefix`` exists: its record, a namespace or a cgroup."""
    if (lab_dir(state_dir, prefix) / "lab.json").exists():
        return True
    if any(n.startswith(f"{NETNS_PREFIX}{prefix}-") for n in netns.listnetns()):
        return True
    with contextlib.suppress(UserError):
        if (cgroup2_root() / "stackha" / prefix).exists():
            return True
    return False


def list_labs(state_dir: Path | None = None) -> list[LabRecord]:
    """Every lab recorded under ``state_dir``."""
    root = Path(state_dir or default_state_dir()) / "labs"
    out = []
    if root.is_dir():
        for p in sorted(root.glob("*/lab.json")):
            with contextlib.suppress(Exception):
                out.append(LabRecord.model_validate_json(p.read_text()))
    return out


def teardown(prefix: str, state_dir: Path | None = None) -> list[str]:
    """Remove every trace of lab ``prefix``: processes (cgroup.kill), cgroups, veths, the bridge,
    network namespaces, the subnet lease and the state directory.  Idempotent; works from the
    kernel's view, so it is complete after a crash.  Returns what it removed (for messages)."""
    require_root()
    validate_prefix(prefix)
    removed: list[str] = []
    cg = cgroup2_root() / "stackha" / prefix
    if cg.exists():
        _remove_cgroup_tree(cg)
        removed.append(f"cgroup {cg}")
    names = [n for n in netns.listnetns() if n.startswith(f"{NETNS_PREFIX}{prefix}-")]
    lan = f"{NETNS_PREFIX}{prefix}-lan"
    if lan in names:
        with NetNS(lan) as ns:
            for link in ns.get_links():
                if link.get("ifname") != "lo":
                    with contextlib.suppress(Exception):
                        ns.link("del", index=link["index"])
    for n in names:
        netns.remove(n)
        removed.append(f"netns {n}")
    with contextlib.suppress(OSError):  # the shared parent, once no lab uses it
        cg.parent.rmdir()
    release_subnets(prefix)
    d = lab_dir(Path(state_dir or default_state_dir()), prefix)
    if d.exists():
        shutil.rmtree(d)
        removed.append(f"state {d}")
    return removed
