"""The lab's BMC: a Redfish endpoint (sushy-tools' emulator) whose systems are the lab's hosts.

So the real fence agents fence lab hosts end to end (LAB-NOTES "BMC emulation"), every lab may
have one BMC host ``<prefix>-bmc`` running ``sushy-emulator`` (sushy-tools from PyPI: its Flask
application, its Redfish resources and templates, its HTTP basic authentication) with a systems
driver of stackha's, :class:`LabSystemsDriver`: one Redfish ``ComputerSystem`` per lab host
(identity = the host's name, ``/redfish/v1/Systems/<prefix>-m0``), ``PowerState`` from the lab's
fence gateway (``status``), and ``ComputerSystem.Reset`` mapped to the gateway's ``off`` (ForceOff,
GracefulShutdown, PushPowerButton when on), ``on`` (On, ForceOn, PushPowerButton when off) and
``reboot`` (ForceRestart, GracefulRestart, PowerCycle).  The gateway
(:mod:`stackha.hosts.labfence`) powers hosts off exactly as ``LabHost.power_off`` does and records
every action in the lab's fence history with the requesting host (here: the BMC host); the BMC
adds its own history (``/srv/stackha/bmc/history.jsonl`` on its disk: time, system, reset type,
the client's address and User-Agent).

- It listens on the BMC host's lab address, port :data:`PORT`, over HTTPS with a self-signed
  certificate made at first start (so ``fence_redfish`` is used with ``ssl_insecure``): nothing
  listens outside the lab.
- Credentials: user :data:`USERNAME`, a generated password kept in ``<lab dir>/bmc/password``
  (0600, root namespace; :func:`password`), stored by the emulator as a bcrypt hash (0600).
- The emulator is a daemon started at every power-on of the BMC host (``enable_at_boot``).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from stackha.hosts import labfence

BMC_HOST = "bmc"
PORT = 8443
USERNAME = "admin"
DAEMON = "redfish"
HOST_DIR = "/srv/stackha/bmc"
_RESETS = {"On": "on", "ForceOn": "on", "ForceOff": "off", "GracefulShutdown": "off", "ForceRestart": "reboot",
           "GracefulRestart": "reboot", "PowerCycle": "reboot"}


@dataclass(frozen=True)
class BmcInfo:
    """Where the lab's BMC answers: ``address`` (the BMC host's lab address), ``port``,
    ``username``; the password is read with :func:`password`."""

    address: str
    port: int
    username: str


def password_path(lab) -> Path:
    return lab.dir / "bmc" / "password"


def password(lab) -> str:
    """The lab BMC's password (from its 0600 file; never printed)."""
    return password_path(lab).read_text().strip()


def ensure_bmc(lab) -> BmcInfo:
    """Start the lab's BMC unless it answers (creates the BMC host, certificate, password and
    config the first time); returns where it answers.  Raises
    :class:`stackha.hosts.base.HostError` if the emulator does not listen within 30 s."""
    import bcrypt

    from stackha.polling import wait_until

    lab.fence_gateway()
    name = f"{lab.prefix}-{BMC_HOST}"
    host = lab.hosts.get(name) or lab.add_host(BMC_HOST)
    pw_file = password_path(lab)
    if not pw_file.exists():
        pw_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
    host.run(["mkdir", "-p", HOST_DIR], check=True)
    host.run(["chmod", "700", HOST_DIR], check=True)
    cert, key = f"{HOST_DIR}/cert.pem", f"{HOST_DIR}/key.pem"
    if not host.exists(cert):
        host.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365", "-subj",
                  f"/CN={host.address}", "-keyout", key, "-out", cert], check=True, timeout=60)
    auth = f"{HOST_DIR}/htpasswd"
    current = (host.read_file(auth) or b"").decode().strip()
    if not current.startswith(f"{USERNAME}:") or not bcrypt.checkpw(password(lab).encode(),
                                                                     current.split(":", 1)[1].encode()):
        hashed = bcrypt.hashpw(password(lab).encode(), bcrypt.gensalt(rounds=6)).decode()
        host.write_file(auth, f"{USERNAME}:{hashed}\n", mode=0o600)
    config = {"SUSHY_EMULATOR_LISTEN_IP": str(host.address), "SUSHY_EMULATOR_LISTEN_PORT": PORT,
              "SUSHY_EMULATOR_SSL_CERT": cert, "SUSHY_EMULATOR_SSL_KEY": key, "SUSHY_EMULATOR_AUTH_FILE": auth,
              "SUSHY_EMULATOR_FEATURE_SET": "minimum", "STACKHA_BMC_HOST": name,
              "STACKHA_FENCE_SOCKET": labfence.HOST_SOCKET, "STACKHA_HISTORY": f"{HOST_DIR}/history.jsonl"}
    conf = f"{HOST_DIR}/emulator.json"
    host.write_file(conf, json.dumps(config, indent=1), mode=0o600)
    repo = str(Path(__file__).resolve().parents[2])
    host.enable_at_boot(DAEMON, [sys.executable, "-m", "stackha.hosts.labbmc", conf], env={"PYTHONPATH": repo})
    wait_until(lambda: f"{host.address}:{PORT} " in host.run(["ss", "-Htln"]).stdout, 30,
               what=f"the lab BMC listening on {host.address}:{PORT}")
    return BmcInfo(str(host.address), PORT, USERNAME)


def history(lab) -> list[dict]:
    """The BMC's Redfish power actions (oldest first), read from the BMC host's disk."""
    path = lab.host(BMC_HOST).disk / HOST_DIR.lstrip("/") / "history.jsonl"
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


# --------------------------------------------------------------------------- the emulator side
def _driver_class():
    """:class:`LabSystemsDriver` (built lazily: sushy-tools is imported only in the BMC daemon)."""
    import flask
    from sushy_tools import error
    from sushy_tools.emulator.resources.systems.base import AbstractSystemsDriver

    class LabSystemsDriver(AbstractSystemsDriver):
        """Redfish systems = the lab's hosts, powered through the lab's fence gateway."""

        @classmethod
        def initialize(cls, config, logger, *args, **kwargs):
            cls._config, cls._logger = config, logger
            return cls

        def _ask(self, line: str) -> list[str]:
            try:
                return labfence.request(self._config["STACKHA_FENCE_SOCKET"], line)
            except labfence.FenceError as exc:
                raise error.FishyError(f"lab fence gateway: {exc}", code=500) from None

        def _name(self, identity: str) -> str:
            for name in self.systems:
                if identity in (name, self.uuid(name)):
                    return name
            raise error.NotFound(f"no lab host {identity!r}")

        @property
        def driver(self):
            return "<stackha lab>"

        @property
        def systems(self):
            return [n for n in self._ask("list") if n != self._config["STACKHA_BMC_HOST"]]

        def uuid(self, identity):
            return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{identity}.stackha-lab"))

        def name(self, identity):
            return self._name(identity)

        def get_power_state(self, identity):
            return "On" if self._ask(f"status {self._name(identity)}")[0] == "on" else "Off"

        def set_power_state(self, identity, state):
            name = self._name(identity)
            action = _RESETS.get(state)
            if state == "PushPowerButton":
                action = "off" if self.get_power_state(name) == "On" else "on"
            if action is None:
                raise error.NotSupportedError(f"reset type {state} is not supported")
            t0 = time.monotonic()
            result = "ok " + self._ask(f"{action} {name}")[0]
            req = flask.request
            with open(self._config["STACKHA_HISTORY"], "a") as f:
                f.write(json.dumps({"t": time.time(), "system": name, "reset": state, "action": action,
                                    "client": req.remote_addr, "user_agent": req.headers.get("User-Agent", ""),
                                    "result": result, "seconds": round(time.monotonic() - t0, 4)}) + "\n")

        def get_boot_device(self, identity):
            return "Hdd"

        def set_boot_device(self, identity, boot_source):
            raise error.NotSupportedError("the lab boots from its disk only")

    return LabSystemsDriver


def serve(config_path: str) -> int:
    """Run sushy-tools' emulator with :class:`LabSystemsDriver` and the config ``config_path``
    (JSON written by :func:`ensure_bmc`) until killed."""
    from sushy_tools.emulator import main as emulator

    config = json.loads(Path(config_path).read_text())
    emulator.app.config.update(config)
    driver = _driver_class().initialize(emulator.app.config, emulator.app.logger)()
    emulator.Application.systems = property(lambda self: driver)
    sys.argv = ["sushy-emulator", "--interface", config["SUSHY_EMULATOR_LISTEN_IP"],
                "--port", str(config["SUSHY_EMULATOR_LISTEN_PORT"])]
    return emulator.main()


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
