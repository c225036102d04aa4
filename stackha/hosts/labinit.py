"""PID 1 of a lab host (standard library only; run by Debian's /usr/bin/python3).

The lab starts it as ``nsenter --net=/run/netns/<ns> unshare --mount --uts --pid --fork
--mount-proc --propagation private /usr/bin/python3 labinit.py '<json>'``, so it is the first
process of a fresh pid, mount and UTS namespace inside the host's network namespace.  At boot it:

1. sets the hostname;
2. bind-mounts the host's persistent directories (its "disk") over the shared paths, e.g.
   /srv, /etc/corosync, /var/lib/pacemaker, and the lab's hosts file over /etc/hosts;
   then mounts the host's own volumes (loop devices the lab attached, see
   ``LabHost.ensure_volume``) on their paths;
3. lazily unmounts every mount under /run that the new mount namespace copied from the root
   (other labs' ``/run/netns/*`` nsfs mounts among them: a copy would keep those namespaces alive
   after their lab deleted them — see LAB-NOTES "Hosts");
4. mounts fresh tmpfs on /run, /dev/shm and /tmp (RAM: lost at power-off; libqb names its shm
   files from PIDs, which repeat across pid namespaces, so /dev/shm must be private);
5. mounts a sysfs of its own network namespace on /sys;
6. prints ``ready`` on stdout, then reaps orphaned processes until SIGTERM.

The JSON argument: ``{"hostname": str, "binds": [[src, dst], …], "volumes": [[device, dst], …], "run_dirs": [[path, mode,
owner], …], "keep": [path, …]}`` — ``keep``: root-namespace paths below /run or /tmp that must stay
visible in the host (stackha's checkout and venv when they live under /tmp).  On a failure it prints ``error: <reason>`` and exits 1.
"""

import json
import os
import signal
import socket
import subprocess
import sys


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _mountpoints_under(prefix: str) -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == prefix or mp.startswith(prefix.rstrip("/") + "/"):
                points.append(mp)
    # Deepest first, so children go before their parents.
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def boot(cfg: dict) -> None:
    socket.sethostname(cfg["hostname"])
    # Binds first: a bind source may live below /run or /tmp of the root namespace.  Every source
    # is held by an O_PATH descriptor before any bind, so binding one directory (/var/tmp) cannot
    # hide the source of another (a state directory below /var/tmp).
    sources = [(os.open(src, os.O_PATH), dst) for src, dst in cfg.get("binds", [])]
    for fd, dst in sources:
        _mount("--no-canonicalize", "--bind", f"/proc/{os.getpid()}/fd/{fd}", dst)
        os.close(fd)
    for dev, dst in cfg.get("volumes", []):  # a host's own file systems (LabHost.ensure_volume)
        os.makedirs(dst, exist_ok=True)
        _mount(dev, dst)
    for mp in _mountpoints_under("/run"):
        subprocess.run(["umount", "-l", mp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Paths of the root namespace that must stay visible although they lie below a directory
    # made private here (stackha's own checkout or venv under /tmp, as in a CI clone): held by an
    # O_PATH descriptor now, bound back once the tmpfs is in place.
    kept = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY)) for path in cfg.get("keep", [])]
    _mount("-t", "tmpfs", "-o", "mode=0755,nosuid,nodev,size=256m", "tmpfs", "/run")
    os.makedirs("/run/lock", mode=0o1777, exist_ok=True)
    os.chmod("/run/lock", 0o1777)
    _mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev,size=256m", "tmpfs", "/dev/shm")
    _mount("-t", "sysfs", "-o", "nosuid,nodev,noexec", "sysfs", "/sys")
    _mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev,size=512m", "tmpfs", "/tmp")
    for path, fd in kept:
        os.makedirs(path, exist_ok=True)
        _mount("--no-canonicalize", "--bind", f"/proc/{os.getpid()}/fd/{fd}", path)
        os.close(fd)
    for path, mode, owner in cfg.get("run_dirs", []):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, int(mode, 8))
        if owner:
            subprocess.run(["chown", owner, path], check=False)


def reap_forever() -> None:
    watched = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    while True:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        info = signal.sigtimedwait(watched, 30)
        if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
            return


def main() -> int:
    try:
        boot(json.loads(sys.argv[1]))
    except subprocess.CalledProcessError as exc:
        err = (exc.stderr or b"").decode(errors="replace").strip()
        print(f"error: {' '.join(exc.cmd)}: {err}", flush=True)
        return 1
    except Exception as exc:  # report any boot failure on the ready pipe
        print(f"error: {exc}", flush=True)
        return 1
    print("ready", flush=True)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    reap_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
