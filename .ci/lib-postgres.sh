# Sourced by scripts that need a PostgreSQL server of their own: `pg_start` installs PostgreSQL
# (and Mosquitto) with apt-get when missing, starts a server on a free loopback port with its own
# data directory, and sets PG_URL (postgres://postgres@127.0.0.1:PORT/postgres); `pg_stop`
# stops it and removes the directory (callers trap it on EXIT).

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

install_peers() {
  local missing=()
  [ -n "$(pg_bin)" ] || missing+=(postgresql)
  [ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

pg_start() {
  install_peers
  pg_dir=$(mktemp -d)
  local bin port
  bin=$(pg_bin)
  port=$(free_port)
  # initdb refuses to run as root: the server runs as Debian's postgres user then.
  pg_as_owner=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$pg_dir"
    pg_as_owner=(runuser -u postgres --)
  fi
  "${pg_as_owner[@]}" "$bin/initdb" -D "$pg_dir/db" -U postgres --auth=trust >/dev/null
  "${pg_as_owner[@]}" "$bin/pg_ctl" -D "$pg_dir/db" -l "$pg_dir/server.log" -w \
    -o "-p $port -k $pg_dir -c listen_addresses=127.0.0.1" start >/dev/null
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
  PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

pg_stop() {
  if [ -n "${pg_dir:-}" ]; then
    "${pg_as_owner[@]}" "$(pg_bin)/pg_ctl" -D "$pg_dir/db" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
  fi
}
