#!/usr/bin/env python3
"""Summaries of the bench/attack/ scripts: reads what a run left in its work dir, prints a
markdown report on stdout and writes the raw figures as JSON. Standard library only.

  report.py slowloris WORK_DIR OUT_JSON --rate R --conns C --flood-rate F --duration S
  report.py rapid_reset WORK_DIR OUT_JSON --rate R --procs P
  report.py ratelimit WORK_DIR OUT_JSON --clients C --streams M --duration S
"""

import argparse
import csv
import glob
import json
import os
import re
import statistics
from collections import Counter


def load(path):
    with open(path) as f:
        return json.load(f)


def statuses(path):
    out = Counter()
    if os.path.exists(path):
        for line in open(path):
            parts = line.split()
            if len(parts) == 2:
                out[parts[0]] += int(float(parts[1]))
    return out


def slow_runs(work, tag):
    """slowhttptest runs of one attacked phase: per run, the connections it ended with closed by
    the server, the most it held at once, and how it ended."""
    runs = []
    for path in sorted(glob.glob(os.path.join(work, f"slow-{tag}-*.csv")),
                       key=lambda p: int(re.search(r"-(\d+)\.csv$", p).group(1))):
        rows = list(csv.DictReader(open(path)))
        if not rows:
            continue
        exit_path = path[:-4] + ".exit"
        out_path = path[:-4] + ".out"
        ended = open(exit_path).read().strip() if os.path.exists(exit_path) else ""
        cpu_path = path[:-4] + ".cpu"
        cpu = open(cpu_path).read().split() if os.path.exists(cpu_path) else []
        text = open(out_path, errors="replace").read() if os.path.exists(out_path) else ""
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)
        runs.append({
            "seconds": int(rows[-1]["Seconds"]),
            "closed_by_server": int(rows[-1]["Closed"]),
            "max_connected": max(int(r["Connected"]) for r in rows),
            "connected_at_end": int(rows[-1]["Connected"]),
            "cpu_s": sum(float(x) for x in cpu[-2:]) if len(cpu) >= 2 else 0.0,
            "ended": ended,
            "service_unavailable_seen": re.search(r"service available:\s+NO", text) is not None,
        })
    return runs


def samples(work, tag):
    path = os.path.join(work, f"samples-{tag}")
    if not os.path.exists(path):
        return {}
    rows = [line.split() for line in open(path) if len(line.split()) == 3]
    conns = [int(r[1]) for r in rows]
    return {"max_open_attack_connections": max(conns) if conns else 0}


def probe(work, tag):
    """The new-connection probe of a phase: count, failures, median and max seconds."""
    path = os.path.join(work, f"probe-{tag}")
    if not os.path.exists(path):
        return {}
    rows = [line.split() for line in open(path) if len(line.split()) == 2]
    times = [float(t) for t, code in rows if code == "200"]
    return {"probe_requests": len(rows), "probe_failed": sum(1 for _, c in rows if c != "200"),
            "probe_median_ms": round(1000 * statistics.median(times), 1) if times else None,
            "probe_max_ms": round(1000 * max(times), 1) if times else None}


def slowloris(args):
    work = args.work
    phases = []
    for path in sorted(glob.glob(os.path.join(work, "phase-*.json"))):
        p = load(path)
        tag = p["tag"]
        legit = load(os.path.join(work, f"legit-{tag}.json"))
        p["legit"] = legit
        before = statuses(os.path.join(work, f"status-before-{tag}"))
        after = statuses(os.path.join(work, f"status-after-{tag}"))
        p["keygate_statuses"] = {s: after[s] - before[s] for s in sorted(after) if after[s] - before[s]}
        p.setdefault("target", "keygate" if p["attack"] else "none")
        if p["target"] == "decoy":
            before = statuses(os.path.join(work, f"decoy-status-before-{tag}"))
            after = statuses(os.path.join(work, f"decoy-status-after-{tag}"))
            p["decoy_statuses"] = {s: after[s] - before[s] for s in sorted(after) if after[s] - before[s]}
        p["keygate_cpu_pct"] = round(100 * p["keygate_cpu_s"] / p["seconds"], 1)
        p.update(samples(work, tag))
        p.update(probe(work, tag))
        if p["attack"]:
            p["slowloris"] = slow_runs(work, f"H-{tag}")
            p["slow_body"] = slow_runs(work, f"B-{tag}")
            flood = os.path.join(work, f"flood-{tag}.json")
            p["flood"] = load(flood) if os.path.exists(flood) and os.path.getsize(flood) else None
            p["attackers_cpu_s"] = round(sum(r["cpu_s"] for r in p["slowloris"] + p["slow_body"])
                                         + ((p["flood"] or {}).get("cpu_s") or 0), 2)
        phases.append(p)
    order = {"none": 0, "keygate": 1, "decoy": 2}
    phases.sort(key=lambda p: (int(p["tag"].rsplit("-", 1)[1]), order[p["target"]]))
    p99 = lambda target: [p["legit"]["p99_us"] for p in phases if p["target"] == target]
    quiet, attacked, control = p99("none"), p99("keygate"), p99("decoy")
    base, under = statistics.median(quiet), statistics.median(attacked)
    ctrl = statistics.median(control) if control else None
    ratio = under / base
    summary = {
        "baseline_p99_us": base,
        "under_attack_p99_us": under,
        "control_p99_us": ctrl,
        "ratio": round(ratio, 2),
        "control_ratio": round(ctrl / base, 2) if ctrl else None,
        "attack_over_control": round(under / ctrl, 2) if ctrl else None,
        "target": "under-attack p99 <= 2x baseline p99",
        "met": ratio <= 2.0,
    }

    print(f"## Slow connections and malformed requests vs a legitimate {args.rate} req/s load"
          + (" (pinned: keygate and the legitimate side on CPU 0, attackers and decoy on the last)"
             if args.pin else "") + "\n")
    print("| phase | legit p50 µs | p99 µs | p99.9 µs | max µs | errors | late sends | keygate CPU | "
          "attackers' CPU | attack conns open (max) | new-conn probe ok/all, median/max ms | upstream reqs | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in phases:
        lg = p["legit"]
        print(f"| {p['tag']} | {lg['p50_us']:.0f} | {lg['p99_us']:.0f} | {lg['p999_us']:.0f} | "
              f"{lg['max_us']:.0f} | {lg['errors']} | {lg['late_sends']} | {p['keygate_cpu_pct']}% | "
              + (f"{100 * p['attackers_cpu_s'] / p['seconds']:.0f}% | " if "attackers_cpu_s" in p else "– | ")
              + f"{p.get('max_open_attack_connections', '')} | "
              f"{p.get('probe_requests', 0) - p.get('probe_failed', 0)}/{p.get('probe_requests', 0)}, "
              f"{p.get('probe_median_ms')}/{p.get('probe_max_ms')} | {p['upstream_requests']} | {p['loadavg']} |")
    print()
    print(f"- baseline p99 (median of {len(quiet)} quiet phases): **{base:.0f} µs**")
    print(f"- under-attack p99 (median of {len(attacked)} attacked phases): **{under:.0f} µs**")
    print(f"- ratio: **{ratio:.2f}×** — target ≤ 2×: **{'met' if summary['met'] else 'MISSED'}**")
    if ctrl:
        print(f"- control (the same attack on a decoy keygate; median of {len(control)}): "
              f"**{ctrl:.0f} µs**, {summary['control_ratio']:.2f}× quiet: what the attackers' own "
              f"load on the machine costs the legitimate client")
        print(f"- under attack ÷ control: **{summary['attack_over_control']:.2f}×**: what being the "
              f"target costs keygate's legitimate traffic beyond that")
    print()

    print("### What the attackers got back\n")
    for p in (p for p in phases if p["attack"]):
        answered = p.get("decoy_statuses", p["keygate_statuses"])
        who = ("the decoy answered" if p["target"] == "decoy"
               else "keygate answered (all listeners, legitimate load included)")
        print(f"**{p['tag']}** — {who}: " + ", ".join(f"{s}: {n}" for s, n in answered.items()))
        for mode, label in (("slowloris", f"slowhttptest -H, {args.conns} conns"),
                            ("slow_body", f"slowhttptest -B with a valid key, {args.conns} conns")):
            runs = p[mode]
            if not runs:
                print(f"- {label}: no run recorded")
                continue
            ends = Counter(r["ended"] for r in runs)
            print(f"- {label}: {len(runs)} run(s); connections closed by keygate: "
                  f"{sum(r['closed_by_server'] for r in runs)}; most held at once: "
                  f"{max(r['max_connected'] for r in runs)}; still open when the run ended: "
                  f"{sum(r['connected_at_end'] for r in runs)}; ended: "
                  + "; ".join(f"{e or '?'} ×{n}" for e, n in ends.items())
                  + ("; the probe saw the service UNAVAILABLE" if any(r["service_unavailable_seen"] for r in runs) else ""))
        f = p.get("flood")
        if f:
            print(f"- flood.py: {f['sent']} requests at {f['rate']}/s from {f['bind']} (unauthenticated) "
                  f"and {f['bind_keyed']} (keyed):")
            for case, outcomes in f["outcomes"].items():
                print(f"  - {case}: " + ", ".join(f"{o} ×{n}" for o, n in sorted(outcomes.items())))
        print()

    with open(args.out, "w") as out:
        json.dump({"scenario": "slowloris", "options": vars(args), "summary": summary,
                   "phases": phases}, out, indent=1)


def rapid_reset(args):
    work = args.work
    phases = []
    for path in glob.glob(os.path.join(work, "phase-*.json")):
        p = load(path)
        tag = p["tag"]
        p["legit"] = load(os.path.join(work, f"legit-{tag}.json"))
        attacker = os.path.join(work, f"attacker-{tag}.json")
        p["attacker"] = load(attacker) if os.path.exists(attacker) and os.path.getsize(attacker) else None
        p["keygate_cpu_pct"] = round(100 * p["keygate_cpu_s"] / p["seconds"], 1)
        phases.append(p)
    order = {"quiet": 0, "burst": 1, "tight": 2, "paced": 3, "limited": 4}
    phases.sort(key=lambda p: (int(p["tag"].rsplit("-", 1)[1]), order.get(p["variant"], 9)))

    print(f"## HTTP/2 rapid reset vs a legitimate {args.rate} req/s h2 load\n")
    print("| phase | attack streams/s | conns | GOAWAYs (code) | streams sent before GOAWAY "
          "min/med/max | server last_stream_id → streams | keygate CPU | attack reqs at upstream | "
          "upstream TCP conns (TIME-WAIT at end) | legit p50 µs | legit p99 µs | legit errors | RSS MiB | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in phases:
        a, lg = p["attacker"], p["legit"]
        if a:
            codes = ", ".join(f"{c} ×{n}" for c, n in a["goaway_codes"].items()) or "none"
            sent = a["streams_sent_before_goaway"]
            seen = a["streams_server_processed_before_goaway"]
            fmt = lambda m: f"{m['min']:g}/{m['median']:g}/{m['max']:g}" if m else "–"
            cols = [f"{a['streams_per_s']:,}", str(a["connections"]), f"{a['goaways']} ({codes})",
                    fmt(sent), fmt(seen)]
        else:
            cols = ["–"] * 5
        legit = ([f"{lg['p50_us']:.0f}", f"{lg['p99_us']:.0f}", str(lg["errors"])]
                 if "p99_us" in lg else ["failed"] * 3)
        print(f"| {p['tag']} | " + " | ".join(cols) + f" | {p['keygate_cpu_pct']}% | "
              f"{p['attack_upstream_requests']} | {p['upstream_connections']:,} ({p['time_wait']:,}) | "
              + " | ".join(legit)
              + f" | {p['rss_kib'] / 1024:.1f} | {p['loadavg']} |")
    print()
    quiet = [p["legit"]["p99_us"] for p in phases if p["variant"] == "quiet" and "p99_us" in p["legit"]]
    summary = {"baseline_p99_us": statistics.median(quiet) if quiet else None, "variants": {}}
    for v in ("burst", "tight", "paced", "limited"):
        ps = [p for p in phases if p["variant"] == v]
        if not ps:
            continue
        p99 = [p["legit"]["p99_us"] for p in ps if "p99_us" in p["legit"]]
        summary["variants"][v] = {
            "legit_p99_us": statistics.median(p99) if p99 else None,
            "keygate_cpu_pct": statistics.median(p["keygate_cpu_pct"] for p in ps),
            "attack_streams": sum(p["attacker"]["streams"] for p in ps if p["attacker"]),
            "attack_upstream_requests": sum(p["attack_upstream_requests"] for p in ps),
            "upstream_connections": sum(p["upstream_connections"] for p in ps),
            "goaways": sum(p["attacker"]["goaways"] for p in ps if p["attacker"]),
            "legit_errors": sum(p["legit"].get("errors", 0) for p in ps),
        }
    if summary["baseline_p99_us"]:
        print(f"- legitimate p99 quiet (median): **{summary['baseline_p99_us']:.0f} µs**")
    for v, x in summary["variants"].items():
        ratio = (x["legit_p99_us"] / summary["baseline_p99_us"]
                 if x["legit_p99_us"] and summary["baseline_p99_us"] else float("nan"))
        print(f"- {v}: {x['attack_streams']:,} streams reset, {x['goaways']} GOAWAYs, "
              f"{x['attack_upstream_requests']} requests and {x['upstream_connections']:,} TCP connections "
              f"reached the upstream; keygate CPU {x['keygate_cpu_pct']}% "
              f"(median); legit p99 {x['legit_p99_us']:.0f} µs ({ratio:.2f}× quiet), "
              f"{x['legit_errors']} legit errors")
    alive = all(p["alive"] for p in phases)
    print(f"- keygate still running at the end: {'yes' if alive else 'NO'}")
    for name in ("goaway-warnings.txt", "metrics-end.txt"):
        path = os.path.join(work, name)
        if os.path.exists(path):
            summary[name.split(".")[0]] = open(path).read().strip()
    print(f"- keygate's log has {summary.get('goaway-warnings', '?')} h2 warnings "
          "\"remotely-reset pending-accept streams reached limit (20)\"")
    with open(args.out, "w") as out:
        json.dump({"scenario": "rapid_reset", "options": vars(args), "summary": summary,
                   "phases": phases}, out, indent=1)


UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text):
    """keygate's durations: 500ms, 60s, 5m, 1h30m..."""
    total = 0.0
    for n, unit in re.findall(r"(\d+)(ms|s|m|h|d)", text):
        total += int(n) * UNITS[unit]
    return total


def ratelimit(args):
    work = args.work
    runs = []
    for path in sorted(glob.glob(os.path.join(work, "run-*.json")),
                       key=lambda p: int(re.search(r"run-(\d+)", p).group(1))):
        run = load(path)
        i = re.search(r"run-(\d+)", path).group(1)
        amount, interval = run["limit"].split("/")
        burst, interval_s = int(amount), seconds(interval)
        rate = burst / interval_s
        first, last, logged = None, None, Counter()
        for line in open(os.path.join(work, f"h2load-{i}.log")):
            cols = line.split()
            if len(cols) < 3:
                continue
            start, status, took = int(cols[0]), cols[1], int(cols[2])
            logged[status] += 1
            first = start if first is None else min(first, start)
            last = start + took if last is None else max(last, start + took)
        client_elapsed = (last - first) / 1e6 if first is not None else 0.0
        up = run["upstream"]
        elapsed = (up["last_us"] - up["first_us"]) / 1e6 if up["chat_completions"] else 0.0
        delta = {s: run["after"].get(s, 0) - run["before"].get(s, 0) for s in run["after"]}
        allowed = up["chat_completions"]
        expected = burst + rate * elapsed
        out = open(os.path.join(work, f"h2load-{i}.out")).read()
        m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
        runs.append({
            "limit": run["limit"], "burst": burst, "rate_per_s": rate,
            "elapsed_s": round(elapsed, 4),
            "expected": round(expected, 1),
            "allowed": allowed,
            "error_pct": round(100 * (allowed - expected) / expected, 3),
            "client_elapsed_s": round(client_elapsed, 4),
            "client_expected": round(burst + rate * client_elapsed, 1),
            "keygate_200": delta.get("200", 0),
            "refused_429": delta.get("429", 0),
            "other_statuses": {s: n for s, n in delta.items() if s not in ("200", "429") and n},
            "h2load_logged": dict(logged),
            "h2load_req_per_s": float(m.group(3)) if m else None,
            "loadavg": run["loadavg"],
        })
    print(f"## Rate-limit accuracy under h2 multiplexing: h2load -c {args.clients} -m {args.streams} "
          f"-D {args.duration:g}\n")
    print("| limit | burst | rate/s | elapsed s | expected | allowed | error | keygate 200 | 429 | other | "
          "h2load 200/429 logged | h2load first send→last answer s (expected) | offered req/s | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        lg = r["h2load_logged"]
        print(f"| {r['limit']} | {r['burst']} | {r['rate_per_s']:g} | {r['elapsed_s']:.3f} | "
              f"{r['expected']:,.0f} | {r['allowed']:,} | {r['error_pct']:+.3f}% | {r['keygate_200']:,} | "
              f"{r['refused_429']:,} | {r['other_statuses'] or '–'} | {lg.get('200', 0):,}/{lg.get('429', 0):,} | "
              f"{r['client_elapsed_s']:.3f} ({r['client_expected']:,.0f}) | {r['h2load_req_per_s'] or '?'} | "
              f"{r['loadavg']} |")
    print()
    for r in runs:
        ok = abs(r["error_pct"]) <= 1.0
        print(f"- {r['limit']}: expected {r['expected']:,.0f}, allowed {r['allowed']:,}, "
              f"error {r['error_pct']:+.3f}% — target within 1%: **{'met' if ok else 'MISSED'}**")
    with open(args.out, "w") as f:
        json.dump({"scenario": "ratelimit_h2", "options": vars(args), "runs": runs}, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("slowloris")
    s.add_argument("work")
    s.add_argument("out")
    s.add_argument("--rate", type=int)
    s.add_argument("--conns", type=int)
    s.add_argument("--flood-rate", type=int)
    s.add_argument("--duration", type=float)
    s.add_argument("--pin", type=int, default=0)
    r = sub.add_parser("rapid_reset")
    r.add_argument("work")
    r.add_argument("out")
    r.add_argument("--rate", type=int)
    r.add_argument("--procs", type=int)
    q = sub.add_parser("ratelimit")
    q.add_argument("work")
    q.add_argument("out")
    q.add_argument("--clients", type=int)
    q.add_argument("--streams", type=int)
    q.add_argument("--duration", type=float)
    args = ap.parse_args()
    {"slowloris": slowloris, "rapid_reset": rapid_reset, "ratelimit": ratelimit}[args.cmd](args)


if __name__ == "__main__":
    main()
