#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the `postgres` rotation tests.
#
#   eval "$(scripts/postgres.sh start DIR)"   # prints SIGIL_TEST_PG_* exports
#   scripts/postgres.sh stop DIR
#
# stdout carries only the `export` lines, so `eval` is safe; everything else
# goes to stderr. The cluster listens on 127.0.0.1 (a free port) and on a Unix
# socket in DIR/run, authenticates every connection with SCRAM-SHA-256, and
# logs every statement to DIR/log so tests can prove that no password reaches
# the server's log. sigil gets `sigil_admin` (LOGIN CREATEROLE, not SUPERUSER),
# the least a rotation generator needs.
#
# Layout of DIR: data/ (the cluster), run/ (socket), log, superuser.pw (the
# bootstrap superuser's password, 0600), env (the exports, 0600).
#
# PostgreSQL refuses to run as root, so as root the cluster runs as the
# `postgres` system user and DIR is handed to it; then every parent of DIR must
# be traversable by that user (a DIR under /root is not: use e.g. /tmp/...).
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }
log() { echo "postgres.sh: $*" >&2; }

usage() { die "usage: $0 start|stop DIR"; }

[ $# -eq 2 ] || usage
cmd=$1
case $cmd in start | stop) ;; *) usage ;; esac
if [ "$cmd" = stop ] && [ ! -d "$2" ]; then
  echo "postgres.sh: no cluster in $2" >&2
  exit 0
fi
# Absolute, so the paths written into postgresql.conf and DIR/env hold from any
# working directory; the pg user may not be able to resolve a relative one.
mkdir -p -- "$2"
dir=$(cd -- "$2" && pwd -P)
# The directory goes into a single-quoted postgresql.conf value, and a socket
# path must fit in sun_path (107 bytes, with "/run/.s.PGSQL.NNNNN" appended).
case $dir in
  *[!A-Za-z0-9/._-]*) die "DIR must use only letters, digits and / . _ - ($dir)" ;;
esac
[ ${#dir} -le 80 ] || die "DIR path is too long for a Unix socket path: $dir"

data=$dir/data
rundir=$dir/run
logfile=$dir/log
pwfile=$dir/superuser.pw
envfile=$dir/env

# Stopping never installs anything: without a cluster there is nothing to do.
if [ "$cmd" = stop ] && [ ! -f "$data/PG_VERSION" ]; then
  log "no cluster in $dir"
  exit 0
fi

# initdb, pg_ctl and psql from one installation: Debian keeps them out of PATH
# in /usr/lib/postgresql/<major>/bin; prefer the newest major there.
find_bindir() {
  local d
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname -- "$(readlink -f -- "$(command -v initdb)")"
    return 0
  fi
  return 1
}

if ! bindir=$(find_bindir); then
  [ "$cmd" = start ] || die "initdb/pg_ctl not found"
  [ "$(id -u)" -eq 0 ] || die "initdb not found; install PostgreSQL (Debian: apt-get install postgresql)"
  log "initdb not found; installing Debian's postgresql package"
  # The package may start its own cluster on 5432; ours never uses that port.
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >&2
  bindir=$(find_bindir) || die "initdb still not found after installing postgresql"
fi
psql=$(command -v psql || true)
[ -x "$bindir/psql" ] && psql=$bindir/psql
[ -n "$psql" ] || die "psql not found"

# Root runs the server tools as `postgres` (setpriv keeps the environment, so
# PATH and PG* variables pass through); anyone else runs them as themselves.
if [ "$(id -u)" -eq 0 ]; then
  pg_user=postgres
  # An existing cluster keeps running as whoever owns it.
  [ ! -d "$data" ] || pg_user=$(stat -c %U -- "$data")
  as_pg() { (cd / && setpriv --reuid="$pg_user" --regid="$pg_user" --init-groups -- "$@"); }
else
  pg_user=$(id -un)
  as_pg() { (cd / && "$@"); }
fi

running() { [ -f "$data/PG_VERSION" ] && as_pg "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; }

stop_cluster() {
  if running; then
    log "stopping the cluster in $data"
    as_pg "$bindir/pg_ctl" -D "$data" -m fast -w -t 60 stop >&2
  else
    log "no cluster running in $dir"
  fi
}

# A free loopback port: the kernel picks one for a socket bound to port 0.
# There is a short window before the server binds it; a clash fails the start
# loudly, and a retry picks another port.
free_port() {
  local py
  for py in /usr/bin/python3 python3; do
    if command -v "$py" >/dev/null 2>&1; then
      "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' && return 0
    fi
  done
  # No python: probe random high ports; a refused connection means free.
  local port _
  for _ in $(seq 1 50); do
    port=$(( 20000 + RANDOM % 40000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return 0; fi
  done
  return 1
}

random_password() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }

# Every directory above DIR must let the pg user through, or the server
# cannot reach its data, socket or log.
check_traversable() {
  local d=$dir
  while [ "$d" != / ]; do
    d=$(dirname -- "$d")
    as_pg test -x "$d" || die "$pg_user cannot enter $d; choose a DIR it can reach (e.g. under /tmp)"
  done
}

init_cluster() {
  [ -z "$(ls -A -- "$dir")" ] || die "$dir is not empty and holds no cluster from this script; remove it or pick another DIR"
  id -u "$pg_user" >/dev/null 2>&1 || {
    log "creating the system user $pg_user"
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /usr/sbin/nologin "$pg_user"
  }
  check_traversable
  [ "$(id -u)" -ne 0 ] || chown "$pg_user:" "$dir"
  chmod 0700 "$dir"
  as_pg mkdir -m 0700 "$data" "$rundir"
  (umask 077 && random_password | as_pg tee "$pwfile" >/dev/null)
  log "initdb in $data ($bindir)"
  # --no-locale: containers often lack locales; C collation is fine for tests.
  as_pg "$bindir/initdb" -D "$data" -U postgres --pwfile="$pwfile" \
    --auth=scram-sha-256 -E UTF8 --no-locale --no-instructions >&2

  local port
  port=$(free_port) || die "no free loopback port found"
  # fsync and full-page writes off: a test cluster is thrown away after a
  # crash, and this makes it much faster. log_statement = 'all' lets tests
  # check that no secret ever appears in a logged statement.
  as_pg tee -a "$data/postgresql.conf" >/dev/null <<EOF

# --- added by scripts/postgres.sh (throwaway test cluster) ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$rundir'
fsync = off
full_page_writes = off
synchronous_commit = off
log_statement = 'all'
log_line_prefix = '%m [%p] %q%u@%d '
EOF
}

# Connects as the bootstrap superuser over the Unix socket; the SQL comes on
# stdin, so no password shows up in a process listing.
superuser_psql() {
  PGPASSWORD=$(as_pg cat "$pwfile") as_pg "$psql" -X -q -v ON_ERROR_STOP=1 \
    -h "$rundir" -p "$(port_of_cluster)" -U postgres -d postgres >&2
}

port_of_cluster() { sed -n "s/^port = \([0-9]*\)$/\1/p" "$data/postgresql.conf" | tail -n 1; }

create_admin() {
  local password=$1
  # The superuser turns statement logging off for its own session first, so
  # the admin password in CREATE ROLE never reaches DIR/log (psql sends each
  # stdin statement separately, so the SETs apply to the statements after).
  superuser_psql <<EOF
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
CREATE ROLE sigil_admin LOGIN CREATEROLE NOSUPERUSER PASSWORD '$password';
EOF
}

write_env() {
  local port=$1 password=$2
  (umask 077 && cat >"$envfile" <<EOF
export SIGIL_TEST_PG_HOST=127.0.0.1
export SIGIL_TEST_PG_PORT=$port
export SIGIL_TEST_PG_USER=sigil_admin
export SIGIL_TEST_PG_PASSWORD=$password
export SIGIL_TEST_PG_DBNAME=postgres
export SIGIL_TEST_PG_LOG=$logfile
EOF
  )
}

start_cluster() {
  if [ -f "$envfile" ] && running; then
    log "cluster in $dir already running"
    cat "$envfile"
    return 0
  fi
  local fresh=no
  if [ ! -f "$data/PG_VERSION" ]; then
    init_cluster
    fresh=yes
  elif [ ! -f "$envfile" ]; then
    die "$data holds a cluster this script did not finish setting up; remove $dir and start again"
  fi
  log "starting PostgreSQL on 127.0.0.1:$(port_of_cluster), log in $logfile"
  as_pg "$bindir/pg_ctl" -D "$data" -w -t 60 -l "$logfile" start >&2 \
    || die "the server did not start; see $logfile"
  if [ $fresh = yes ]; then
    local password
    password=$(random_password)
    create_admin "$password"
    write_env "$(port_of_cluster)" "$password"
  fi
  cat "$envfile"
}

case $cmd in
  start) start_cluster ;;
  stop) stop_cluster ;;
  *) usage ;;
esac
