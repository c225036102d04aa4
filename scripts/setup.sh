#!/usr/bin/env bash
# One-time, idempotent set-up for stackha on Debian 12 (as root):
#   1. the Debian packages stackha drives, installed with service start-up blocked
#      (a policy-rc.d that exits 101, so no postinst starts a daemon in the root namespace);
#   2. a venv in .venv with stackha and its dev dependencies.
# Quick when everything is already there: each step checks before it works.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(haproxy keepalived mariadb-server mariadb-client galera-4 rsync rabbitmq-server
      pacemaker corosync crmsh resource-agents fence-agents socat iproute2 iputils-arping
      iputils-ping procps psmisc util-linux curl python3-venv
      openssh-server openssh-client sudo nftables)
# OpenStack services (Zed in Debian 12), memcached (Keystone's cache) and the real clients (LAB-NOTES "OpenStack services",
# "Swift", "Masakari", "Tempest").  nova-compute itself drags libvirt and qemu: compute hosts run
# python3-nova's nova-compute with the fake driver instead.  Masakari (instance HA): the API and
# engine, the host and process monitors and the client (`openstack segment …`).  Not
# pacemaker-remote: Debian's package Conflicts with pacemaker (the lab's hosts share one set of
# packages), and installing one removes the other.
OS_PKGS=(keystone memcached python3-openstackclient uwsgi uwsgi-plugin-python3
         swift swift-proxy swift-account swift-container swift-object python3-swiftclient
         python3-keystonemiddleware
         glance-api placement-api nova-api nova-conductor nova-scheduler python3-nova neutron-server
         tempest
         masakari-api masakari-engine masakari-host-monitor masakari-process-monitor
         python3-masakariclient)

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: must run as root (the lab creates namespaces and cgroups); try: sudo $0" >&2
    exit 1
fi

missing=()
for p in "${PKGS[@]}" "${OS_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    # Block service start-up by postinst scripts for the duration of the install.
    restore_policy=""
    if [ -e /usr/sbin/policy-rc.d ]; then
        cp -a /usr/sbin/policy-rc.d /usr/sbin/policy-rc.d.stackha-saved
        restore_policy=1
    fi
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'if [ -n "$restore_policy" ]; then mv -f /usr/sbin/policy-rc.d.stackha-saved /usr/sbin/policy-rc.d; else rm -f /usr/sbin/policy-rc.d; fi' EXIT
    # Preseed the OpenStack packages' debconf questions to "no" (no db, no endpoint registration).
    for q in keystone:keystone/configure_db keystone:keystone/register-endpoint \
             keystone:keystone/create-admin-tenant glance-common:glance/configure_db \
             glance-api:glance/register-endpoint placement-common:placement/configure_db \
             placement-api:placement/register-endpoint nova-common:nova/configure_db \
             nova-api:nova/register-endpoint neutron-common:neutron/configure_db \
             neutron-server:neutron/register-endpoint masakari-common:masakari/configure_db \
             masakari-api:masakari/configure_api-endpoint; do
        echo "${q%%:*} ${q#*:} boolean false" | debconf-set-selections 2>/dev/null || true
    done
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Some postinst scripts start daemons without invoke-rc.d; stop any that did
    # (they would run in the root namespace, outside any lab).
    for pidf in /run/rabbitmq/pid /run/mysqld/mysqld.pid /run/haproxy.pid /run/keepalived.pid \
                /run/memcached/memcached.pid; do
        [ -s "$pidf" ] && kill "$(cat "$pidf")" 2>/dev/null || true
    done
fi

# pacemaker-remoted for compute hosts in the lab: Debian's pacemaker-remote Conflicts with pacemaker,
# which the lab's controllers need from the same /usr, so its one binary is unpacked beside it
# (it runs on pacemaker 2.1.5's libraries; LAB-NOTES "Masakari").  Real compute hosts install the
# package itself.
REMOTED_DIR=/opt/stackha/pacemaker-remote
if [ ! -x "$REMOTED_DIR/usr/sbin/pacemaker-remoted" ]; then
    echo "setup: unpacking pacemaker-remoted into $REMOTED_DIR"
    tmp=$(mktemp -d)
    chmod 755 "$tmp"  # apt's _apt user downloads into it
    if (cd "$tmp" && apt-get download -qq pacemaker-remote) && mkdir -p "$REMOTED_DIR" \
            && dpkg-deb -x "$tmp"/pacemaker-remote_*.deb "$REMOTED_DIR"; then
        :
    else
        echo "setup: warning: could not unpack pacemaker-remote; lab compute hosts cannot join a Pacemaker cluster" >&2
    fi
    rm -rf "$tmp"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.stackha-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev]'
    touch "$stamp"
fi
echo "setup: ok (Debian packages present, venv at .venv)"
