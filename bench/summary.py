#!/usr/bin/python3
"""bench/summary.py RESULTS: the ratios of one make bench run (bench/run.sh).

RESULTS holds one key=value line per row (pigato-bench, nats-bench,
pigato-conns). Prints one line per ratio, each with its target where the
issue sets one, then the rows as a Markdown table for bench/RESULTS.md.
Rows missing from the run (no NATS, no Node, BENCH_SCALE=0) are left out."""
import sys

rows, order = {}, []
for line in open(sys.argv[1]):
    fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    if "label" in fields:
        rows[fields["label"]] = fields
        order.append(fields["label"])


def value(label, key):
    try:
        return float(rows[label][key])
    except (KeyError, ValueError):
        return None


def mean(*values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def ratio(name, numerator, denominator, target="", unit=""):
    if numerator is None or denominator is None or denominator == 0:
        return
    print("ratio %s: %.2f%s%s" % (name, numerator / denominator, unit,
                                  "  (target %s)" % target if target else ""))


def rps(label):
    return value(label, "rps")


def p50(label):
    return value(label, "p50_us")


def cpu(label):
    return value(label, "server_cpu_s_per_100k")


framings = [f for f in ("0.0.46", "native", "auto") if "broker-acl-" + f in rows]
f46 = "0.0.46" if "0.0.46" in framings else "auto"
fn = "native" if "native" in framings else f46

# 0.0.46 framing against the zero-logic relay (same framing)
ratio("0.0.46 CURVE+ACL broker/relay throughput", rps("broker-acl-" + f46), rps("relay-curve"), ">= 0.85")
ratio("0.0.46 CURVE --allow-any broker/relay throughput", rps("broker-curve-" + f46), rps("relay-curve"))
ratio("0.0.46 plaintext broker/relay throughput", rps("broker-plain-" + f46), rps("relay-plain"))
ratio("0.0.46 CURVE+ACL 4 clients broker/relay throughput", rps("broker-acl-4c-" + f46), rps("relay-curve-4c"))
ratio("0.0.46 CURVE+ACL broker/relay CPU per request", cpu("broker-acl-" + f46), cpu("relay-curve"))
for f in framings:
    # The ACL against the mean of the --allow-any runs before and after it
    any_mean = mean(rps("broker-curve-" + f), rps("broker-curve2-" + f))
    ratio("%s ACL (1,000 ids, 100 rules)/--allow-any throughput" % f, rps("broker-acl-" + f), any_mean)
if fn != f46:
    ratio("native/0.0.46 CURVE+ACL throughput", rps("broker-acl-native"), rps("broker-acl-" + f46))
    ratio("native/0.0.46 CURVE+ACL 4 clients throughput", rps("broker-acl-4c-native"), rps("broker-acl-4c-" + f46))
# Against the transport floor: one native-sized batch around the same ring
# with no logic (bench/floor.c)
ratio("%s CURVE+ACL broker/transport floor (CURVE) throughput" % fn, rps("broker-acl-" + fn), rps("floor-curve"))
ratio("%s plaintext broker/transport floor (plain) throughput" % fn, rps("broker-plain-" + fn), rps("floor-plain"))
ratio("nats-tls/transport floor (CURVE) throughput", rps("nats-tls"), rps("floor-curve"))
# The NATS comparisons again in interleaved rounds (abN-broker,
# abN-nats-tls, abN-floor, abN-broker-plain, abN-nats-plain): medians, and
# the median of the per-round ratios


def round_numbers(prefix):
    """The N of rows labelled PREFIX<N>-..., sorted."""
    return sorted({int(label[len(prefix):label.index("-")]) for label in rows
                   if label.startswith(prefix) and "-" in label
                   and label[len(prefix):label.index("-")].isdigit()})


rounds = round_numbers("ab")


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def interleaved(name, numerator, denominator, target=""):
    """Ratio of the medians of rows abN-NUMERATOR and abN-DENOMINATOR, and
    the median of the per-round ratios."""
    top = [rps("ab%d-%s" % (r, numerator)) for r in rounds]
    bottom = [rps("ab%d-%s" % (r, denominator)) for r in rounds]
    ratio("%s throughput, interleaved medians" % name, median(top), median(bottom), target)
    paired = [t / b for t, b in zip(top, bottom) if t and b]
    if paired:
        print("ratio %s throughput, median of per-round ratios: %.2f%s"
              % (name, median(paired), "  (target %s)" % target if target else ""))


if rounds:
    medians = [median([rps("ab%d-%s" % (r, row)) for r in rounds]) for row in ("broker", "nats-tls", "floor")]
    print("interleaved, %d rounds: native CURVE+ACL broker %s, nats-tls %s, CURVE floor %s req/s (medians)"
          % (len(rounds), *("%.0f" % m if m else "-" for m in medians)))
    interleaved("native CURVE+ACL broker/nats-tls", "broker", "nats-tls", ">= 1")
    interleaved("native CURVE+ACL broker/transport floor (CURVE)", "broker", "floor")
    interleaved("nats-tls/transport floor (CURVE)", "nats-tls", "floor")
    interleaved("native plaintext broker/nats-plain", "broker-plain", "nats-plain", ">= 1")
# Native framing against NATS over TLS 1.3
ratio("%s CURVE+ACL broker/nats-tls throughput" % fn, rps("broker-acl-" + fn), rps("nats-tls"), ">= 1")
ratio("%s CURVE+ACL broker/nats-tls p50 latency" % fn, p50("broker-acl-" + fn), p50("nats-tls"), "<= 1")
ratio("%s CURVE+ACL broker/nats-tls CPU per request" % fn, cpu("broker-acl-" + fn), cpu("nats-tls"))
ratio("%s plaintext broker/nats-plain throughput" % fn, rps("broker-plain-" + fn), rps("nats-plain"))
for f in framings:
    ratio("sequential %s CURVE broker/nats-tls p50 latency" % f, p50("broker-curve-seq-" + f), p50("nats-tls-seq"), "<= 1")
ratio("sequential native CURVE --busy-poll 200 broker/nats-tls p50 latency", p50("broker-curve-seq-native-busypoll"), p50("nats-tls-seq"), "<= 1")
ratio("native CURVE+ACL --busy-poll 200 broker/nats-tls throughput", rps("broker-acl-native-busypoll"), rps("nats-tls"), ">= 1")
ratio("native CURVE+ACL requests with opts {\"timeout\":30000}/without opts throughput", rps("broker-acl-native-opts"), rps("broker-acl-native"))
# Node pigato 0.0.46's broker, same client and worker in 0.0.46 framing
ratio("0.0.46 plaintext pigato-broker/node-broker throughput", rps("broker-plain-" + f46), rps("node-plain"), ">= 20")
ratio("0.0.46 CURVE pigato-broker/node-broker throughput", rps("broker-curve-" + f46), rps("node-curve"), ">= 20")
ratio("0.0.46 CURVE node-broker/pigato-broker CPU per request", cpu("node-curve"), cpu("broker-curve-" + f46))
if fn != f46:
    # Not the same framing (Node speaks only 0.0.46): what a C peer gains
    ratio("native CURVE pigato-broker / 0.0.46 CURVE node-broker throughput", rps("broker-curve-native"), rps("node-curve"))
    ratio("0.0.46 CURVE node-broker / native CURVE pigato-broker CPU per request", cpu("node-curve"), cpu("broker-curve-native"))
# Scale: flatness pairs in interleaved rounds (scN-ids10, scN-ids10k,
# scN-svc1, scN-svc1000), or single rows from older runs
scale_rounds = round_numbers("sc")


def scale(name, large, small):
    top = [rps("sc%d-%s" % (r, large)) for r in scale_rounds]
    bottom = [rps("sc%d-%s" % (r, small)) for r in scale_rounds]
    paired = [t / b for t, b in zip(top, bottom) if t and b]
    if not paired:
        return
    print("%s, %d interleaved rounds: %s %s, %s %s req/s (medians)"
          % (name, len(paired), large, "%.0f" % median(top), small, "%.0f" % median(bottom)))
    ratio("%s throughput, interleaved medians" % name, median(top), median(bottom), "1 +- 0.10")
    print("ratio %s throughput, median of per-round ratios: %.2f (rounds: %s)  (target 1 +- 0.10)"
          % (name, median(paired), " ".join("%.2f" % p for p in paired)))


scale("identities 10,000/10 (1,000 rules)", "ids10k", "ids10")
scale("services 1,000 x 2 workers / 1 x 2,000 workers", "svc1000", "svc1")
ratio("identities 10,000/10 (1,000 rules) throughput", rps("broker-ids10k"), rps("broker-ids10"), "1 +- 0.10")
ratio("services 1,000 x 2 workers / 1 x 2,000 workers throughput", rps("broker-svc1000"), rps("broker-svc1"), "1 +- 0.10")
ratio("io-threads 2/1 throughput", rps("broker-io2"), rps("broker-io1"))
broker_conn, relay_conn = value("idle-broker", "per_conn_bytes"), value("idle-relay", "per_conn_bytes")
if broker_conn is not None and relay_conn is not None:
    print("idle clients: broker %.0f B/connection, relay (libzmq's own) %.0f B/connection, "
          "broker beyond libzmq %.0f B  (target <= 2048)" % (broker_conn, relay_conn, broker_conn - relay_conn))
zap_conn = value("idle-zaprelay", "per_conn_bytes")
if broker_conn is not None and zap_conn is not None:
    print("idle clients: libzmq with a ZAP handler (which pigato-broker requires) %.0f B/connection, "
          "broker beyond libzmq+ZAP %.0f B  (target <= 2048)" % (zap_conn, broker_conn - zap_conn))
ratio("idle-client handshakes broker/relay", value("idle-broker", "handshakes_per_s"), value("idle-relay", "handshakes_per_s"))
for label in ("storm-broker", "storm-relay"):
    if label in rows:
        print("%s: %d connections answered in %.2f s, %.0f handshakes/s"
              % (label, value(label, "answered"), value(label, "seconds"), value(label, "handshakes_per_s")))
ratio("storm handshakes/s broker/relay", value("storm-broker", "handshakes_per_s"), value("storm-relay", "handshakes_per_s"))

# The rows as a Markdown table
print()
print("| label | clients × in flight | req/s | p50 µs | p99 µs | p99.9 µs | server CPU s/100k | server peak RSS KiB |")
print("|---|---|---|---|---|---|---|---|")
for label in order:
    r = rows[label]
    if "rps" not in r or label[:2] in ("ab", "sc") and label[2:3].isdigit():
        continue
    print("| %s | %s × %s | %s | %s | %s | %s | %s | %s |" % (
        label, r.get("clients", "1"), r.get("inflight", ""), "{:,}".format(int(r["rps"])),
        "{:,}".format(int(r["p50_us"])), "{:,}".format(int(r["p99_us"])),
        "{:,}".format(int(r["p999_us"])), r.get("server_cpu_s_per_100k", "–"),
        "{:,}".format(int(r["server_hwm_kb"])) if "server_hwm_kb" in r else "–"))
conn_rows = [label for label in order if "per_conn_bytes" in rows[label]]
if conn_rows:
    print()
    print("| label | connections | answered | seconds | handshakes/s | RSS before KiB | RSS after KiB | bytes/connection |")
    print("|---|---|---|---|---|---|---|---|")
    for label in conn_rows:
        r = rows[label]
        print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label, "{:,}".format(int(r["connections"])), "{:,}".format(int(r["answered"])), r["seconds"],
            "{:,}".format(int(r["handshakes_per_s"])), "{:,}".format(int(r["rss_before_kb"])),
            "{:,}".format(int(r["rss_after_kb"])), "{:,}".format(int(float(r["per_conn_bytes"])))))
