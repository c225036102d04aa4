"""Power through a machine's BMC with the real fence agents (fence-agents from Debian).

stackha never speaks Redfish or IPMI itself: a power action runs the same agent Pacemaker's fencer
runs — ``fence_redfish`` (Redfish ``ComputerSystem.Reset`` ForceOff / On, ``PowerState``) or
``fence_ipmilan`` (IPMI v2 ``lanplus``) — so the path stackha uses for a power-off fault is the
path STONITH uses in production.  Options go to the agent on stdin as ``name=value`` lines (the
fencing library's own interface, as Pacemaker feeds it), so the password never appears in a
process list; it is read from the inventory's 0600 file or environment variable at each call and
never logged.

Agent exit codes (fencing library): ``status`` 0 = on, 2 = off, 1 = failure; ``on``/``off``
0 = done (the agent polls the power state until it matches).  Every power action is appended to a
history file (JSON lines: time, host, action, agent, BMC address, result, seconds) when the
caller gives one.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from stackha.hosts.base import FenceDevice, HostError
from stackha.hosts.inventory import Bmc

AGENTS = {"redfish": "fence_redfish", "ipmi": "fence_ipmilan"}
AGENT_TIMEOUT_S = 60.0
ACTIONS = ("on", "off", "status")


class BmcError(HostError):
    """A BMC refused or failed a power action (the agent's last error line is quoted)."""


def agent_params(bmc: Bmc, password: str) -> dict[str, str]:
    """The fence agent's instance parameters for ``bmc`` (Pacemaker's names, which the agents
    also read on stdin)."""
    params = {"ip": bmc.address, "ipport": str(bmc.port), "username": bmc.username, "password": password}
    if bmc.type == "redfish":
        if bmc.systems_uri:
            params["systems_uri"] = bmc.systems_uri
        if bmc.ssl_insecure:
            params["ssl_insecure"] = "1"
    else:
        params["lanplus"] = "1"
    return params


def fence_device(bmc: Bmc, node: str) -> FenceDevice:
    """The Pacemaker STONITH device fencing ``node`` through ``bmc``: ``stonith:fence_redfish`` or
    ``stonith:fence_ipmilan`` (shipped by fence-agents: no file to install).  Its params hold the
    password: they are rendered only into the 0600 CIB section."""
    params = {**agent_params(bmc, bmc.password()), "pcmk_host_list": node}
    return FenceDevice(agent=AGENTS[bmc.type], params=params)


def power(bmc: Bmc, action: str, *, host: str = "", history: Path | None = None,
          timeout_s: float = AGENT_TIMEOUT_S) -> tuple[str, float]:
    """Run the fence agent's ``action`` (on | off | status) against ``bmc``.

    Returns ``(state, seconds)``: state ``on`` or ``off`` after the action.  Raises
    :class:`BmcError` when the agent fails or does not finish in ``timeout_s`` seconds."""
    if action not in ACTIONS:
        raise ValueError(f"BMC action {action!r}: use one of {', '.join(ACTIONS)}")
    agent = AGENTS[bmc.type]
    lines = [f"{k}={v}" for k, v in agent_params(bmc, bmc.password()).items()] + [f"action={action}"]
    t0 = time.monotonic()
    try:
        proc = subprocess.run([agent], input="\n".join(lines) + "\n", capture_output=True, text=True,
                              timeout=timeout_s)
    except FileNotFoundError:
        raise BmcError(f"{host}: {agent} is not installed (Debian package fence-agents)") from None
    except subprocess.TimeoutExpired:
        raise BmcError(f"{host}: {agent} {action} via {bmc.address}:{bmc.port} did not finish in {timeout_s:g} s") from None
    secs = time.monotonic() - t0
    if action == "status":
        if proc.returncode not in (0, 2):
            raise BmcError(f"{host}: {agent} status via {bmc.address}:{bmc.port} failed: {_last_error(proc)}")
        return ("on" if proc.returncode == 0 else "off"), secs
    state = "off" if action == "off" else "on"
    result = "ok" if proc.returncode == 0 else f"failed: {_last_error(proc)}"
    if history is not None:
        history.parent.mkdir(parents=True, exist_ok=True)
        with open(history, "a") as f:
            f.write(json.dumps({"t": time.time(), "host": host, "action": action, "agent": agent,
                                "bmc": f"{bmc.address}:{bmc.port}", "systems_uri": bmc.systems_uri,
                                "result": result, "seconds": round(secs, 3)}) + "\n")
    if proc.returncode != 0:
        raise BmcError(f"{host}: {agent} {action} via {bmc.address}:{bmc.port} failed: {_last_error(proc)}")
    return state, secs


def _last_error(proc: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else f"exit {proc.returncode}"


def history(path: Path) -> list[dict]:
    """The power actions recorded in ``path`` (oldest first); empty if there is none."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
