#!/usr/bin/env python3
"""What one connection costs a running server, in resident memory.

Opens N connections to the server, then sends one request on each (all in flight at once)
and reads every answer, and prints the server's RSS growth per connection after each step.

    scripts/connection-memory.py PID ADDR [N] [PATH]

PID is the server's process, ADDR its host:port; N defaults to 500 and PATH to
/api/v1/compute/fast (POSTed {"number": 42}). Run it against floodgate and against
`target/release/examples/bare_axum` to compare with the framework alone.
"""
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no process {pid}")


def settled_rss(pid):
    # Let the server finish what the last step started before reading.
    time.sleep(0.5)
    return rss_kib(pid)


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    pid, addr = int(sys.argv[1]), sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    path = sys.argv[4] if len(sys.argv) > 4 else "/api/v1/compute/fast"
    host, port = addr.rsplit(":", 1)
    body = b'{"number": 42}'
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    idle = rss_kib(pid)
    connections = [socket.create_connection((host, int(port))) for _ in range(n)]
    opened = settled_rss(pid)
    for c in connections:
        c.sendall(request)
    for c in connections:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = c.recv(4096)
            if not chunk:
                raise SystemExit("the server closed a connection")
            head += chunk
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"unexpected answer: {head.splitlines()[0]!r}")
    served = settled_rss(pid)

    def per(kib):
        return f"{(kib - idle) * 1024 / n / 1024:.1f} KiB per connection"

    print(f"idle: {idle / 1024:.1f} MiB")
    print(f"{n} connections open: {opened / 1024:.1f} MiB, {per(opened)}")
    print(f"one request served on each: {served / 1024:.1f} MiB, {per(served)}")


if __name__ == "__main__":
    main()
