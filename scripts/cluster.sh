#!/usr/bin/env bash
# A callgate cluster on this machine, without Docker, on loopback only: PostgreSQL (run as the
# postgres user, which PostgreSQL requires, data in /tmp), Kamailio on 127.0.0.2:5060 with
# deploy/kamailio/kamailio.cfg, and two nodes on 127.0.0.3 and 127.0.0.4 built from the
# shipped config/callgate.toml, sharing the call log and the recordings directory.
#
#   scripts/cluster.sh up       start everything (builds the release binary when missing)
#   scripts/cluster.sh status   what runs, and each node's /healthz
#   scripts/cluster.sh down     stop everything
#   scripts/cluster.sh config DIR [URL] [RECORDINGS]
#                               only write the nodes' configs and Kamailio's lists into DIR
#                               (what docker-compose.cluster.yml mounts)
#
# Kamailio record-routes: a trunk's requests inside a call must follow the Record-Route of the
# 200 (sipp's built-in uac scenario does not; a scenario with rrs="true" and [routes] does).
# Needs root (PostgreSQL runs as postgres through runuser), kamailio and postgresql
# (scripts/setup.sh installs both). CALLGATE_BIN picks another binary; CLUSTER_DIR the state
# directory (target/cluster); PGPORT PostgreSQL's port (25432).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=$(realpath -m "${CLUSTER_DIR:-target/cluster}")
PGPORT=${PGPORT:-25432}
PGDIR=/tmp/callgate-cluster-pg
BIN=${CALLGATE_BIN:-target/release/callgate}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
PASSWORD=callgate-cluster
URL="postgres://callgate:${PASSWORD}@127.0.0.1:${PGPORT}/callgate"
NODES=(a b)
declare -A NODE_IP=([a]=127.0.0.3 [b]=127.0.0.4)

as_postgres() { runuser -u postgres -- "$@"; }

pg_up() {
  if [ ! -d "$PGDIR/data" ]; then
    mkdir -p "$PGDIR"
    echo "$PASSWORD" >"$PGDIR/pw"
    chown -R postgres:postgres "$PGDIR"
    as_postgres "$PGBIN/initdb" -D "$PGDIR/data" -U callgate --pwfile "$PGDIR/pw" \
      -A scram-sha-256 -E UTF8 >/dev/null
  fi
  as_postgres "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -o \
    "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1" start >/dev/null
  PGPASSWORD=$PASSWORD as_postgres "$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U callgate \
    callgate 2>/dev/null || true
}

node_config() {
  local name=$1 ip=$2 url=${3:-$URL} recordings=${4:-$STATE/recordings}
  # The shipped configuration, moved to the node's address, with the cluster's keys.
  sed -e "s|^listen = \"127.0.0.1:5060\"|listen = \"$ip:5060\"|" \
    -e "s|^listen = \"127.0.0.1:8080\"|listen = \"$ip:8080\"\n# Where browsers reach this node: pages fail over to the others, supervisors monitor here.\npublic_url = \"http://$ip:8080\"|" \
    -e "s|^listen = \"127.0.0.1:10000\"|listen = \"$ip:10000\"|" \
    -e "s|^bind = \"127.0.0.1\"|bind = \"$ip\"|" \
    -e "s|^directory = \"recordings\"|directory = \"$recordings\"|" \
    -e "s|^database = \"data/callgate.db\"|backend = \"postgres\"\nurl = \"$url\"|" \
    config/callgate.toml
  cat <<EOF

# The cluster's SIP edge: agents' DIDs are registered there, calls come from it.
[[trunk]]
name = "kamailio"
inbound_from = ["127.0.0.2/32"]
outbound_proxy = "sip:127.0.0.2:5060"
options_interval = 0
register_expires = 60
dial_plan = ["+1*"]

[cluster]
node = "$name"
registrar = "kamailio"
EOF
}

# The nodes' configs and Kamailio's lists, into $1.
write_config() {
  local dir=$1 url=${2:-$URL} recordings=${3:-$STATE/recordings}
  mkdir -p "$dir"
  for name in "${NODES[@]}"; do
    node_config "$name" "${NODE_IP[$name]}" "$url" "$recordings" >"$dir/$name.toml"
  done
  printf '1 sip:127.0.0.3:5060\n1 sip:127.0.0.4:5060\n' >"$dir/nodes.list"
  # Trunks allowed to send calls in: the loopback softphones and sipp of a demo.
  printf '1 127.0.0.1 32 0\n' >"$dir/trunks.list"
}

up() {
  command -v kamailio >/dev/null && [ -n "$PGBIN" ] ||
    { echo "kamailio and postgresql are needed: scripts/setup.sh installs them" >&2; exit 1; }
  [ -x "$BIN" ] || cargo build --release
  mkdir -p "$STATE/recordings"
  pg_up
  write_config "$STATE"
  setsid kamailio -f deploy/kamailio/kamailio.cfg -DD -E -m 512 -M 8 -w "$STATE" \
    -P "$STATE/kamailio.pid" -l udp:127.0.0.2:5060 \
    -A "DISPATCHER_LIST=\"$STATE/nodes.list\"" \
    -A "TRUNKS_LIST=\"$STATE/trunks.list\"" >/dev/null 2>"$STATE/kamailio.log" &
  echo $! >"$STATE/kamailio.group"
  for name in "${NODES[@]}"; do
    "$BIN" check-config "$STATE/$name.toml" >/dev/null
    "$BIN" serve --config "$STATE/$name.toml" >>"$STATE/$name.log" 2>&1 &
    echo $! >"$STATE/$name.pid"
  done
  for name in "${NODES[@]}"; do
    for _ in $(seq 1 100); do
      curl -fsS "http://${NODE_IP[$name]}:8080/healthz" >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
  status
  echo "trunks send to sip:<DID>@127.0.0.2:5060; agents sign in at http://127.0.0.3:8080/ or http://127.0.0.4:8080/"
}

status() {
  for name in "${NODES[@]}"; do
    if curl -fsS "http://${NODE_IP[$name]}:8080/healthz" >/dev/null 2>&1; then
      echo "node $name: up (sip ${NODE_IP[$name]}:5060, http ${NODE_IP[$name]}:8080)"
    else
      echo "node $name: down (log: $STATE/$name.log)"
    fi
  done
  if [ -f "$STATE/kamailio.group" ] && kill -0 "$(cat "$STATE/kamailio.group")" 2>/dev/null; then
    echo "kamailio: up (127.0.0.2:5060)"
  else
    echo "kamailio: down (log: $STATE/kamailio.log)"
  fi
  if as_postgres "$PGBIN/pg_ctl" -D "$PGDIR/data" status >/dev/null 2>&1; then
    echo "postgresql: up (127.0.0.1:$PGPORT)"
  else
    echo "postgresql: down"
  fi
}

down() {
  for name in "${NODES[@]}"; do
    [ -f "$STATE/$name.pid" ] && kill "$(cat "$STATE/$name.pid")" 2>/dev/null || true
  done
  # The nodes end their calls (BYE) and write them to the log before PostgreSQL goes.
  for name in "${NODES[@]}"; do
    [ -f "$STATE/$name.pid" ] || continue
    for _ in $(seq 1 300); do
      kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null || break
      sleep 0.1
    done
  done
  # Kamailio's workers share its process group: all of them go.
  [ -f "$STATE/kamailio.group" ] && kill -- -"$(cat "$STATE/kamailio.group")" 2>/dev/null || true
  [ -d "$PGDIR/data" ] && as_postgres "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast stop >/dev/null 2>&1 || true
  rm -f "$STATE"/*.pid "$STATE/kamailio.group"
  echo "cluster stopped"
}

case "${1:-}" in
  up) up ;;
  status) status ;;
  down) down ;;
  config) write_config "${2:?config DIR [URL] [RECORDINGS]}" "${3:-$URL}" "${4:-$STATE/recordings}" ;;
  *) echo "usage: $0 up|status|down|config DIR [URL] [RECORDINGS]" >&2; exit 2 ;;
esac
