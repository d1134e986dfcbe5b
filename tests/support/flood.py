"""Opens and holds connections to a Unix socket, as a local user flooding it.

Usage: python3 flood.py SOCKET COUNT

Raises its own open-file limit to the hard limit, opens up to COUNT
connections (retrying while the listen backlog is full, and stopping early
if it runs out of descriptors or the server accepts nothing for ten
seconds), and prints `opened N`. Then, for each line read from standard
input, it prints `open N`: how many of its connections the server has not
closed. It exits when standard input closes. It sends nothing: the
connections are as idle as connections get.
"""

import errno
import resource
import socket
import sys
import time


def still_open(conn):
    """False once the server has closed or reset the connection."""
    try:
        while True:
            if not conn.recv(65536):
                return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def connect(path):
    """A non-blocking connection to `path`, or None when none can be had."""
    deadline = time.monotonic() + 10
    while True:
        try:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as e:
            print(f"stopped: {e}", file=sys.stderr)
            return None
        conn.setblocking(False)
        try:
            conn.connect(path)
            return conn
        except OSError as e:
            conn.close()
            # A Unix socket refuses a non-blocking connect while the listen
            # backlog is full: the server has not caught up yet.
            if e.errno != errno.EAGAIN or time.monotonic() > deadline:
                print(f"stopped: {e}", file=sys.stderr)
                return None
            time.sleep(0.01)


def main():
    path, count = sys.argv[1], int(sys.argv[2])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    conns = []
    for _ in range(count):
        conn = connect(path)
        if conn is None:
            break
        conns.append(conn)
    print(f"opened {len(conns)}", flush=True)
    for _ in sys.stdin:
        conns = [c for c in conns if still_open(c)]
        print(f"open {len(conns)}", flush=True)


if __name__ == "__main__":
    main()
