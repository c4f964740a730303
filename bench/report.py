#!/usr/bin/env python3
"""Helpers of bench/run.sh (standard library only).

    report.py h2load OUT LOG                     one h2load run as a JSON result line
    report.py report META RAW STARTUP OUT.json   the markdown table on stdout, all data in OUT.json

Every figure of a scenario is first computed per round; an arm's figure is the median over
rounds, and a ratio or difference between arms is computed within each round (the arms of a
round ran back to back, so drift on the shared machine hits both) and then its median is taken.
"""

import json
import re
import statistics
import sys


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 1))))
    return float(sorted_values[rank - 1])


def h2load(out_path, log_path):
    text = open(out_path).read()
    rps = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", text)
    reqs = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        text,
    )
    if not (rps and reqs):
        print(json.dumps({"count": 0, "errors": 1, "first_error": text[-500:]}))
        return
    durations = []
    try:
        with open(log_path) as log:
            for line in log:
                parts = line.split("\t")
                if len(parts) >= 3:
                    durations.append(int(parts[2]))
    except FileNotFoundError:
        pass
    durations.sort()
    done, succeeded = int(reqs.group(3)), int(reqs.group(4))
    print(
        json.dumps(
            {
                "count": done,
                "rps": float(rps.group(1)),
                # "done" counts every request that ended, "succeeded" those answered 2xx/3xx.
                "errors": max(0, done - succeeded) + int(reqs.group(6)) + int(reqs.group(7)),
                "p50_us": percentile(durations, 0.50),
                "p99_us": percentile(durations, 0.99),
                "p999_us": percentile(durations, 0.999),
                "max_us": percentile(durations, 1.0),
                "logged": len(durations),
            }
        )
    )


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rows_of(raw):
    """One row per measurement; an SSE run gives two: first byte and event transit."""
    rows = []
    for rec in raw:
        res = rec["result"]
        if rec["kind"] == "sse":
            for part, name in (("ttfb", "first byte"), ("event_transit", "event transit")):
                r = dict(res[part])
                rows.append(dict(rec, scenario=f"{rec['scenario']}: {name}", result=r))
        else:
            rows.append(rec)
    return rows


def fmt(value, digits=0, suffix=""):
    if value is None:
        return "—"
    return f"{value:,.{digits}f}{suffix}"


def summarize(rows, main_arm):
    scenarios = []
    order = {}
    for row in rows:
        order.setdefault(row["scenario"], []).append(row)
    for name, recs in order.items():
        arms = []
        for rec in recs:
            if rec["arm"] not in arms:
                arms.append(rec["arm"])
        by = {}  # (arm, round) -> result
        for rec in recs:
            by[(rec["arm"], rec["round"])] = rec["result"]
        rounds = sorted({rec["round"] for rec in recs})
        kind = recs[0]["kind"]
        out_arms = {}
        for arm in arms:
            res = [by[(arm, r)] for r in rounds if (arm, r) in by]
            entry = {
                "rounds": len(res),
                "errors": sum(x.get("errors", 0) or 0 for x in res),
                "count": sum(x.get("count", 0) or 0 for x in res),
            }
            for key in ("rps", "p50_us", "p99_us", "p999_us", "max_us"):
                entry[key] = median([x.get(key) for x in res])
            errors = [x.get("first_error") for x in res if x.get("first_error")]
            if errors:
                entry["first_error"] = errors[0]
            if arm.startswith("C"):
                for ref in ("A", "B"):
                    if ref not in arms:
                        continue
                    pairs = [(by[(arm, r)], by[(ref, r)]) for r in rounds
                             if (arm, r) in by and (ref, r) in by]
                    def ratio(key):
                        return median([c[key] / b[key] for c, b in pairs
                                       if c.get(key) and b.get(key)])
                    def diff(key):
                        return median([c[key] - b[key] for c, b in pairs
                                       if c.get(key) is not None and b.get(key) is not None])
                    if kind == "closed":
                        entry[f"rps_ratio_{ref}"] = ratio("rps")
                    for key in ("p50_us", "p99_us", "p999_us"):
                        entry[f"{key}_ratio_{ref}"] = ratio(key)
                        entry[f"{key}_added_{ref}"] = diff(key)
            out_arms[arm] = entry
        scenarios.append({"scenario": name, "kind": kind, "arms": out_arms})
    return scenarios


def targets(scenarios, startup, main_arm):
    found = {s["scenario"]: s for s in scenarios}
    checks = []

    def arm(scenario, name=main_arm):
        return found.get(scenario, {}).get("arms", {}).get(name)

    def check(what, value, limit, unit, le=True):
        if value is None:
            return
        met = value <= limit if le else value >= limit
        checks.append({"target": what, "value": value, "limit": limit, "unit": unit, "met": met})

    for s in scenarios:
        if s["kind"] == "closed":
            for name, a in s["arms"].items():
                if "rps_ratio_B" in a:
                    check(f"{s['scenario']}: {name} req/s ÷ B ≥ 1.0", a["rps_ratio_B"], 1.0, "×",
                          le=False)
    for proto in ("h1", "h2"):
        a = arm(f"seq 1conn {proto}")
        if a:
            check(f"seq 1conn {proto}: added p99 vs A ≤ 100 µs", a.get("p99_us_added_A"), 100, "µs")
        a = arm(f"1k/s {proto}")
        if a:
            check(f"1k/s {proto}: added p50 vs A ≤ 50 µs", a.get("p50_us_added_A"), 50, "µs")
            check(f"1k/s {proto}: added p99 vs A ≤ 300 µs", a.get("p99_us_added_A"), 300, "µs")
    a = arm("sse 1conn h1: first byte")
    if a:
        check("SSE first byte: added p99 vs A ≤ 250 µs", a.get("p99_us_added_A"), 250, "µs")
    a = arm("sse 1conn h1: event transit")
    if a:
        check("SSE event transit: added p99 vs A ≤ 1000 µs", a.get("p99_us_added_A"), 1000, "µs")
        check("SSE event transit: added p99.9 vs A ≤ 1000 µs", a.get("p999_us_added_A"), 1000, "µs")
    boot = [s for s in startup if "startup_ms" in s]
    if boot:
        keys = boot[0]["keys"]
        check(f"startup with {keys:,} keys ≤ 2 s", median([s["startup_ms"] for s in boot]), 2000,
              "ms")
        check(f"RSS with {keys:,} keys ≤ 300 MB", median([s["rss_kib"] for s in boot]) / 1024,
              300, "MiB")
    return checks


def report(meta_path, raw_path, startup_path, out_path):
    meta = json.load(open(meta_path))
    raw = [json.loads(line) for line in open(raw_path) if line.strip()]
    startup = [json.loads(line) for line in open(startup_path) if line.strip()]
    main_arm = meta["main_arm"]
    scenarios = summarize(rows_of(raw), main_arm)
    checks = targets(scenarios, startup, main_arm)

    m = meta["machine"]
    print(f"## keygate benchmark {meta['timestamp']}{' (quick)' if meta['quick'] else ''}\n")
    print(f"{m['nproc']} cores ({m['cpu']}), {m['mem_gib']} GiB, Linux {m['kernel']}, "
          f"load average at start {m['loadavg_at_start']}; keygate {meta['versions']['keygate_commit']} "
          f"({meta['versions'].get('keygate_build', 'release')}), "
          f"nginx {meta['versions']['nginx']}, wrk {meta['versions']['wrk']}, "
          f"h2load {meta['versions']['h2load']}. {meta['rounds']} rounds, "
          f"{meta['duration_s']} s per measurement after {meta['warmup_s']} s of warm-up; "
          f"closed loop at {meta['connections']} connections.\n")
    print("A = straight to the upstream, B = nginx proxy_pass with keepalive, "
          "C-N = keygate with N keys in its store (auth, rate limit, metering). "
          "Figures are medians over rounds; ratios (C÷B, C÷A) and added latency (C−A) are "
          "computed within each round, then the median is taken. Latency in µs.\n")
    head = ("| scenario | arm | req/s | p50 | p99 | p99.9 | req/s C÷B | req/s C÷A | "
            "p99 C÷B | p50 C−A | p99 C−A | p99 C−B |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for s in scenarios:
        for name, a in s["arms"].items():
            flag = f" ⚠ {a['errors']} errors" if a["errors"] else ""
            cells = [
                s["scenario"], name + flag,
                fmt(a["rps"]) if s["kind"] != "sse" else "—",
                fmt(a["p50_us"]), fmt(a["p99_us"]), fmt(a["p999_us"]),
                fmt(a.get("rps_ratio_B"), 2, "×") if "rps_ratio_B" in a else "",
                fmt(a.get("rps_ratio_A"), 2, "×") if "rps_ratio_A" in a else "",
                fmt(a.get("p99_us_ratio_B"), 2, "×") if "p99_us_ratio_B" in a else "",
                fmt(a.get("p50_us_added_A"), 0) if "p50_us_added_A" in a else "",
                fmt(a.get("p99_us_added_A"), 0) if "p99_us_added_A" in a else "",
                fmt(a.get("p99_us_added_B"), 0) if "p99_us_added_B" in a else "",
            ]
            print("| " + " | ".join(cells) + " |")
    print()
    boot = [s for s in startup if "startup_ms" in s]
    if boot:
        print(f"keygate serve with {boot[0]['keys']:,} keys, until the admin socket answers "
              f"(3 starts): startup {', '.join(fmt(s['startup_ms'], 0) for s in boot)} ms; "
              f"VmRSS {', '.join(fmt(s['rss_kib'] / 1024, 1) for s in boot)} MiB "
              f"(peak VmHWM {', '.join(fmt(s['hwm_kib'] / 1024, 1) for s in boot)} MiB).")
    after = [s for s in startup if "after_load_rss_kib" in s]
    if after:
        print("VmRSS after the load: " + ", ".join(
            f"{s['keys']:,} keys {fmt(s['after_load_rss_kib'] / 1024, 1)} MiB" for s in after) + ".")
    print("\n| target | measured | met |\n|---|---|---|")
    for c in checks:
        digits = 2 if c["unit"] == "×" else 0
        print(f"| {c['target']} | {fmt(c['value'], digits)} {c['unit']} | "
              f"{'yes' if c['met'] else '**no**'} |")
    print("\nKey verification (≤ 1 µs at 1M keys) is measured by `cargo bench --bench micro`.")
    json.dump({"meta": meta, "startup": startup, "summary": scenarios, "targets": checks,
               "raw": raw}, open(out_path, "w"), indent=1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["h2load"]:
        h2load(*sys.argv[2:4])
    elif sys.argv[1:2] == ["report"]:
        report(*sys.argv[2:6])
    else:
        sys.exit(__doc__)
