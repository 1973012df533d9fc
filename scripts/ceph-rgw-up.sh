#!/usr/bin/env bash
# Start a throw-away single-node Ceph cluster with an S3 gateway, for tests and local trials:
# one monitor, one OSD on memstore (RAM, nothing on disk survives a stop) and radosgw, all bound
# to 127.0.0.1, no cephx, no manager (RGW does not need one).
#
# Usage: ceph-rgw-up.sh DIR [PORT]
#   DIR   all state: config, monitor store, logs, admin sockets, pid files. Must be absent or empty.
#   PORT  the S3 port (default 7480; 0 picks a free one). The monitor always takes a free port, so
#         that several clusters (parallel test runs) can live side by side.
# Prints one line, the S3 endpoint (http://127.0.0.1:PORT), once RGW answers and the S3 user
# exists. The first bucket and PUT then create RGW's data pools (~0.5 s; tests/support/ceph.py waits).
# The OSDs take ports from Ceph's 6800-7300 range, on 127.0.0.1 too.
# The S3 user is ACCESS_KEY/SECRET_KEY from the environment (default testkey/testsecret).
# Stop with scripts/ceph-rgw-down.sh DIR. Needs the Debian packages radosgw, ceph-mon, ceph-osd
# (scripts/install-system-deps.sh). Run as root or as a user who can write DIR.
set -euo pipefail

DIR=${1:?usage: ceph-rgw-up.sh DIR [PORT]}
PORT=${2:-7480}
ACCESS_KEY=${ACCESS_KEY:-testkey}
SECRET_KEY=${SECRET_KEY:-testsecret}
# RGW can take a while to create its pools on a loaded machine; the default is generous.
READY_TIMEOUT_S=${READY_TIMEOUT_S:-120}
export PATH="$PATH:/usr/sbin:/sbin"

die() { echo "ceph-rgw-up: $*" >&2; exit 1; }

for tool in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool uuidgen curl python3; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-system-deps.sh installs Ceph)"
done
# Never `rm -rf` a directory we did not make: a wrong argument must not cost anyone their files.
if [[ -e "$DIR" && -n "$(ls -A "$DIR")" ]]; then
    die "$DIR is not empty; give a new directory (ceph-rgw-down.sh removes an old cluster's)"
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)  # the config must hold absolute paths: the daemons chdir to /
mkdir -p "$DIR"/{mon,osd,run,log,rgw}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
[[ "$PORT" == 0 ]] && PORT=$(free_port)
MON_PORT=$(free_port)
FSID=$(uuidgen)

# Only what differs from Ceph's defaults. Everything binds to loopback (public/cluster addr), the
# msgr v1 protocol only (one port per daemon), one replica of everything (one OSD).
cat >"$DIR/ceph.conf" <<CONF
[global]
fsid = $FSID
mon_host = v1:127.0.0.1:$MON_PORT
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_msgr2 = false
ms_bind_ipv6 = false
# The monitor batches map changes for paxos_propose_interval (1 s) before it commits them; RGW's
# start creates its pools one after another, each waiting for a commit, so the default makes the
# start take ~13 s and the first bucket and PUT another ~4 s. With 50 ms: ~1.6 s and ~0.3 s.
paxos_propose_interval = 0.05
osd_pool_default_pg_autoscale_mode = off  # the autoscaler runs in ceph-mgr, which RGW does not need
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
run_dir = $DIR/run
admin_socket = $DIR/run/\$name.asok
pid_file = $DIR/run/\$name.pid
log_file = $DIR/log/\$name.log
keyring = $DIR/keyring
mon_data = $DIR/mon/\$id
osd_data = $DIR/osd/\$id
osd_objectstore = memstore
memstore_device_bytes = 2147483648
# memstore already holds the data in RAM; the OSD's caches need not aim at the 4 GiB default.
osd_memory_target = 536870912
osd_crush_update_on_start = false
osd_class_update_on_start = false

[client.rgw.conveyor]
rgw_data = $DIR/rgw
rgw_frontends = beast endpoint=127.0.0.1:$PORT
# 512 threads by default, each with its stack: a test gateway serves a handful of clients.
rgw_thread_pool_size = 64
CONF
touch "$DIR/keyring"  # empty: with auth none nothing reads a key, but the path must exist
CONF=(-c "$DIR/ceph.conf")
LOG="$DIR/log/setup.log"
run() { "$@" >>"$LOG" 2>&1 || die "'$*' failed; see $LOG"; }

# On failure, stop whatever daemons did start; DIR stays for its logs (ceph-rgw-down.sh removes it).
ready=false
stop_started() {
    $ready && return
    local file
    for file in "$DIR"/run/*.pid; do
        if [[ -f "$file" ]]; then kill -KILL "$(cat "$file")" 2>/dev/null || true; fi
    done
}
trap stop_started EXIT

# Monitor: a one-monitor map, then its store, then the daemon (it forks; pid in run/).
run monmaptool --create --addv a "[v1:127.0.0.1:$MON_PORT]" --fsid "$FSID" "$DIR/monmap"
run ceph-mon "${CONF[@]}" --mkfs -i a --monmap "$DIR/monmap"
run ceph-mon "${CONF[@]}" -i a

# OSD 0: registered with the monitor under a new uuid, placed in the CRUSH map, formatted, started.
# The placement is done here, not by the OSD at start (osd_crush_update_on_start): the OSD sends
# that command so early that it can still lack the monitor map, and the monitor refuses it
# ("wrong fsid"), which ends the OSD.
OSD_UUID=$(uuidgen)
OSD_ID=$(ceph "${CONF[@]}" osd new "$OSD_UUID" 2>>"$LOG") || die "'ceph osd new' failed; see $LOG"
run ceph "${CONF[@]}" osd crush add "osd.$OSD_ID" 1.0 root=default host=localhost
mkdir -p "$DIR/osd/$OSD_ID"  # memstore keeps only its fsid and metadata files there
run ceph-osd "${CONF[@]}" -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID"
run ceph-osd "${CONF[@]}" -i "$OSD_ID"

# The gateway creates its own pools (.rgw.root, default.rgw.*) on first start.
run radosgw "${CONF[@]}" -n client.rgw.conveyor

deadline=$((SECONDS + READY_TIMEOUT_S))
until [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/")" == 200 ]]; do
    ((SECONDS < deadline)) || die "radosgw did not answer on 127.0.0.1:$PORT within ${READY_TIMEOUT_S} s; see $DIR/log"
    sleep 0.2
done
run radosgw-admin "${CONF[@]}" -n client.rgw.conveyor user create --uid=conveyor --display-name=conveyor \
    --access-key="$ACCESS_KEY" --secret="$SECRET_KEY"
ready=true
echo "http://127.0.0.1:$PORT"
