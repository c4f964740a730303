#!/usr/bin/env python3
"""Oversized and malformed HTTP/1.1 requests against keygate, at a fixed rate, for a fixed time.

Part of bench/attack/slowloris.sh, which runs it alongside slowhttptest while measuring a
legitimate client's latency. Each request goes on a new TCP connection, cycling through the
cases below. The cases that fail authentication are sent from --bind and the ones carrying the
valid --key from --bind-keyed: two loopback addresses of their own, so that the per-IP
failed-authentication guard (server.auth_failure_limit) stops the first kind, as it should, but
neither the second kind nor the legitimate client, which comes from yet another address.

  huge_header        one 20 KiB header, beyond server.max_header_bytes   -> 431 expected
  many_headers       150 headers, beyond server.max_headers              -> 431
  declared_huge_body Content-Length over server.max_body_bytes (valid key) -> 413
  chunked_huge_body  a chunked body that grows past max_body_bytes (valid key) -> 413
  garbage_line       a request line that is not HTTP                     -> 400
  bad_content_length Content-Length: abc                                 -> 400
  two_content_lengths  Content-Length: 5 and Content-Length: 6           -> 400
  cl_and_te          Content-Length and Transfer-Encoding: chunked both  -> 200: hyper drops
                     the length, reads the body as chunked and closes the connection after
                     the answer (RFC 9112 §6.3 allows this or a 400)
  bad_checksum_key   a key whose checksum is wrong                       -> 401, then 429
  unknown_key        a well-formed key (right checksum) nobody issued    -> 401, then 429
  no_key             no key at all                                       -> 401, then 429

Prints one JSON object: requests sent, achieved rate, and for each case the count of each
outcome (an HTTP status, "closed" when the server closed without answering, "reset",
"timeout", "connect_error").

  flood.py --port P --key VALID_KEY [--host 127.0.0.1] [--bind 127.0.0.2]
           [--bind-keyed 127.0.0.3] [--rate 300] [--duration 30] [--max-body BYTES]
           [--threads 16] [--only CASE,CASE]
"""

import argparse
import itertools
import json
import random
import resource
import socket
import string
import threading
import time
import zlib
from collections import Counter, defaultdict

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
PATH = "/v1/chat/completions"
BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'


def base62(n, width):
    out = []
    for _ in range(width):
        n, d = divmod(n, 62)
        out.append(ALPHABET[d])
    return "".join(reversed(out))


def random_body():
    return "".join(random.choice(ALPHABET) for _ in range(22))


def unknown_key(prefix="sk-kg-"):
    """A key with a valid checksum (CRC32 of prefix+body in 6 base62 digits) that no one issued."""
    body = random_body()
    return prefix + body + base62(zlib.crc32((prefix + body).encode()), 6)


def bad_checksum_key(prefix="sk-kg-"):
    return prefix + random_body() + "000000"


def request(method, headers, body=b""):
    head = f"{method} {PATH} HTTP/1.1\r\nHost: keygate\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode() + b"\r\n" + body


class Cases:
    def __init__(self, key, max_body):
        self.key = key
        self.max_body = max_body

    def auth(self):
        return [("Authorization", f"Bearer {self.key}"), ("Content-Type", "application/json")]

    # Each case returns a list of byte strings to send in turn.
    def huge_header(self):
        return [request("POST", [("X-Pad", "a" * 20480), ("Content-Length", len(BODY))], BODY)]

    def many_headers(self):
        hs = [(f"X-H{i}", "v") for i in range(150)] + [("Content-Length", len(BODY))]
        return [request("POST", hs, BODY)]

    def declared_huge_body(self):
        return [request("POST", self.auth() + [("Content-Length", self.max_body * 2)])]

    def chunked_huge_body(self):
        head = request("POST", self.auth() + [("Transfer-Encoding", "chunked")])
        chunk = 64 * 1024
        piece = f"{chunk:x}\r\n".encode() + b"a" * chunk + b"\r\n"
        n = self.max_body // chunk + 2
        return [head] + [piece] * n + [b"0\r\n\r\n"]

    def garbage_line(self):
        return [b"\x16\x03\x01\x02\x00 GARBAGE /\x00\xff HTTP/9.9\r\n\r\n"]

    def bad_content_length(self):
        return [request("POST", self.auth() + [("Content-Length", "abc")], BODY)]

    def two_content_lengths(self):
        return [request("POST", self.auth() + [("Content-Length", "5"), ("Content-Length", "6")], b"123456")]

    def cl_and_te(self):
        body = f"{len(BODY):x}\r\n".encode() + BODY + b"\r\n0\r\n\r\n"
        hs = self.auth() + [("Content-Length", "5"), ("Transfer-Encoding", "chunked")]
        return [request("POST", hs, body)]

    def bad_checksum_key(self):
        hs = [("Authorization", f"Bearer {bad_checksum_key()}"), ("Content-Length", len(BODY))]
        return [request("POST", hs, BODY)]

    def unknown_key(self):
        hs = [("Authorization", f"Bearer {unknown_key()}"), ("Content-Length", len(BODY))]
        return [request("POST", hs, BODY)]

    def no_key(self):
        return [request("POST", [("Content-Length", len(BODY))], BODY)]

    # Cases sent with the valid key, from --bind-keyed.
    KEYED = {"declared_huge_body", "chunked_huge_body", "cl_and_te"}

    NAMES = [
        "huge_header", "many_headers", "declared_huge_body", "chunked_huge_body",
        "garbage_line", "bad_content_length", "two_content_lengths", "cl_and_te",
        "bad_checksum_key", "unknown_key", "no_key",
    ]


def attempt(host, port, bind, parts, timeout):
    """Sends PARTS on a new connection and returns the outcome: a status code or a word."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if bind:
            s.bind((bind, 0))
        try:
            s.connect((host, port))
        except OSError:
            return "connect_error"
        for part in parts:
            try:
                s.sendall(part)
            except OSError:
                # The server answered early and closed (413, 431): read what it said.
                break
        try:
            data = b""
            while b"\r\n" not in data and len(data) < 4096:
                got = s.recv(4096)
                if not got:
                    break
                data += got
        except socket.timeout:
            return "timeout"
        except ConnectionResetError:
            return "reset" if not data else status_of(data)
        return status_of(data) if data else "closed"
    finally:
        s.close()


def status_of(data):
    line = data.split(b"\r\n", 1)[0].split()
    if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit():
        return line[1].decode()
    return "garbage"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bind", default="127.0.0.2", help="source address ('' for any)")
    ap.add_argument("--bind-keyed", default="127.0.0.3", help="source of the keyed cases")
    ap.add_argument("--rate", type=float, default=300, help="requests per second, all cases")
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--key", required=True, help="a valid key, for the keyed cases")
    ap.add_argument("--max-body", type=int, default=10485760, help="server.max_body_bytes")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=5)
    ap.add_argument("--only", default="", help="comma-separated cases (default: all)")
    args = ap.parse_args()

    cases = Cases(args.key, args.max_body)
    names = args.only.split(",") if args.only else Cases.NAMES
    outcomes = defaultdict(Counter)
    lock = threading.Lock()
    schedule = itertools.count()
    start = time.monotonic()
    end = start + args.duration
    gap = 1.0 / args.rate
    late = 0

    def worker():
        nonlocal late
        while True:
            with lock:
                i = next(schedule)
            due = start + i * gap
            if due >= end:
                return
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            elif now - due > 0.1:
                with lock:
                    late += 1
            name = names[i % len(names)]
            bind = args.bind_keyed if name in Cases.KEYED else args.bind
            outcome = attempt(args.host, args.port, bind, getattr(cases, name)(), args.timeout)
            with lock:
                outcomes[name][outcome] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    total = sum(sum(c.values()) for c in outcomes.values())
    print(json.dumps({
        "sent": total,
        "rate": round(total / elapsed, 1),
        "late_over_100ms": late,
        "cpu_s": round(sum(getattr(resource.getrusage(resource.RUSAGE_SELF), f)
                           for f in ("ru_utime", "ru_stime")), 2),
        "bind": args.bind,
        "bind_keyed": args.bind_keyed,
        "outcomes": {n: dict(outcomes[n]) for n in names},
    }, sort_keys=False))


if __name__ == "__main__":
    main()
