#!/usr/bin/env python3
"""Checks a `firetrain train --timeline` file, independently of firetrain's writer: valid JSON
in the Chrome trace format, one process per rank, exactly the expected steps, every step's
phases in order inside the step, the layers' forward spans inside forward and their backward
spans inside backward in reverse order, and each gradient bucket started during backward or the
all-reduce wait (the last one, blocking, in the wait) and ended by the end of the wait, with
the gradient's bytes in all.

usage: check_trace.py FILE --ranks N --first S --steps K --bytes B [--checkpoint-steps a,b]
exit 0 with "PASS ..." or 1 with "FAIL: ..." naming the rank, step and event."""
import argparse
import json
import sys

PHASES = ["data", "forward", "loss", "backward", "allreduce wait", "gradient check",
          "optimizer", "stop flags"]
EPS = 0.002  # microseconds: ts and dur are printed with 3 decimals


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def end(e):
    return e["ts"] + e["dur"]


def inside(e, outer, what):
    if e["ts"] < outer["ts"] - EPS or end(e) > end(outer) + EPS:
        fail("%s: [%.3f, %.3f] is not inside %s [%.3f, %.3f]" %
             (what, e["ts"], end(e), outer["name"], outer["ts"], end(outer)))


def sequential(evs, what):
    for a, b in zip(evs, evs[1:]):
        if b["ts"] < end(a) - EPS:
            fail("%s: %s starts at %.3f before %s ends at %.3f" %
                 (what, b["name"], b["ts"], a["name"], end(a)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--ranks", type=int, required=True)
    ap.add_argument("--first", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--bytes", type=int, required=True)
    ap.add_argument("--checkpoint-steps", default="")
    a = ap.parse_args()
    ckpt = {int(s) for s in a.checkpoint_steps.split(",") if s}
    try:
        with open(a.file) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        fail("%s: not readable JSON: %s" % (a.file, e))
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        fail("no traceEvents array")
    evs = doc["traceEvents"]
    for e in evs:
        if e.get("ph") not in ("M", "X", "b", "e"):
            fail("unexpected phase type in %r" % e)
        if not isinstance(e.get("pid"), int) or not isinstance(e.get("name"), str):
            fail("event without an integer pid or a name: %r" % e)
        if e["ph"] == "X" and (e.get("dur", -1) < 0 or "ts" not in e):
            fail("complete event without ts or with a negative dur: %r" % e)
    pids = sorted({e["pid"] for e in evs})
    if pids != list(range(a.ranks)):
        fail("processes %s, expected ranks 0..%d" % (pids, a.ranks - 1))
    steps = list(range(a.first, a.first + a.steps))
    layer_names = None
    buckets_per_step = None
    for r in pids:
        mine = [e for e in evs if e["pid"] == r]
        names = [e["args"]["name"] for e in mine
                 if e["ph"] == "M" and e["name"] == "process_name"]
        if len(names) != 1 or not names[0].startswith("rank %d " % r):
            fail("rank %d: process_name metadata %s" % (r, names))
        timed = [e for e in mine if e["ph"] != "M"]
        got = sorted({e["args"].get("step") for e in timed})
        if got != steps:
            fail("rank %d: events of steps %s, expected %s" % (r, got, steps))
        for s in steps:
            se = [e for e in timed if e["args"]["step"] == s]
            where = "rank %d step %d" % (r, s)
            stepspan = [e for e in se if e.get("cat") == "step"]
            if len(stepspan) != 1 or stepspan[0]["name"] != "step %d" % s:
                fail("%s: step spans %s" % (where, [e["name"] for e in stepspan]))
            st = stepspan[0]
            ph = sorted([e for e in se if e.get("cat") == "phase"], key=lambda e: e["ts"])
            want = PHASES + (["checkpoint"] if s in ckpt else [])
            have = [e["name"] for e in ph if e["name"] != "log"]
            if have != want:
                fail("%s: phases %s, expected %s (plus log)" % (where, have, want))
            sequential(ph, where)
            for e in ph:
                inside(e, st, where + " phase " + e["name"])
            p = {e["name"]: e for e in ph}
            fwd = sorted([e for e in se if e.get("cat") == "forward"], key=lambda e: e["ts"])
            bwd = sorted([e for e in se if e.get("cat") == "backward"], key=lambda e: e["ts"])
            fnames = [e["name"] for e in fwd]
            if layer_names is None:
                layer_names = fnames
                if len(fnames) < 3:
                    fail("%s: only %d layers in forward" % (where, len(fnames)))
            if fnames != layer_names:
                fail("%s: forward layers %s differ from %s" % (where, fnames, layer_names))
            if [e["name"] for e in bwd] != layer_names[::-1]:
                fail("%s: backward layers %s are not the forward's reversed" %
                     (where, [e["name"] for e in bwd]))
            sequential(fwd, where + " forward")
            sequential(bwd, where + " backward")
            for e in fwd:
                inside(e, p["forward"], where + " forward " + e["name"])
            for e in bwd:
                inside(e, p["backward"], where + " backward " + e["name"])
            ready = [e for e in se if e.get("cat") == "comm"]
            if not ready:
                fail("%s: no reducer.ready spans" % where)
            for e in ready:
                inside(e, p["backward"], where + " reducer.ready")
            sequential(sorted(bwd + ready, key=lambda e: e["ts"]), where + " backward+ready")
            # Async ids are global in the format: rank in the high 32 bits, bucket below.
            for e in se:
                if e["ph"] in ("b", "e") and e["id"] >> 32 != r:
                    fail("%s: async id %#x does not carry the rank" % (where, e["id"]))
            begins = {e["id"] & 0xffffffff: e for e in se if e["ph"] == "b"}
            ends = {e["id"] & 0xffffffff: e for e in se if e["ph"] == "e"}
            nb = sum(1 for e in se if e["ph"] == "b")
            ne = sum(1 for e in se if e["ph"] == "e")
            if a.ranks == 1:
                if nb or ne:
                    fail("%s: one rank sends nothing, yet %d bucket events" % (where, nb + ne))
                continue
            if nb != len(begins) or ne != len(ends) or set(begins) != set(ends) or not begins:
                fail("%s: bucket begins %s and ends %s do not pair" %
                     (where, sorted(begins), sorted(ends)))
            if buckets_per_step is None:
                buckets_per_step = len(begins)
            if len(begins) != buckets_per_step:
                fail("%s: %d buckets, earlier steps had %d" %
                     (where, len(begins), buckets_per_step))
            if sorted(begins) != list(range(len(begins))):
                fail("%s: bucket ids %s" % (where, sorted(begins)))
            total = 0
            for i, b in begins.items():
                e = ends[i]
                total += b["args"]["bytes"]
                if e["ts"] < b["ts"]:
                    fail("%s: bucket %d ends before it starts" % (where, i))
                last = i == len(begins) - 1
                if b["args"]["blocking"] != last:
                    fail("%s: bucket %d blocking=%s" % (where, i, b["args"]["blocking"]))
                # Started during backward once complete (or in the wait, queued behind the
                # cap on buckets in flight); the last one, blocking, in the wait.
                lo = p["allreduce wait"]["ts"] if last else p["backward"]["ts"]
                if not (lo - EPS <= b["ts"] <= end(p["allreduce wait"]) + EPS):
                    fail("%s: bucket %d starts at %.3f, outside [%.3f, %.3f]" %
                         (where, i, b["ts"], lo, end(p["allreduce wait"])))
                if e["ts"] > end(p["allreduce wait"]) + EPS:
                    fail("%s: bucket %d ends at %.3f after the all-reduce wait" %
                         (where, i, e["ts"]))
            if total != a.bytes:
                fail("%s: buckets carry %d bytes, expected %d" % (where, total, a.bytes))
    print("PASS: %d ranks x %d steps, %d layers, %s buckets per step, %d events" %
          (a.ranks, a.steps, len(layer_names), buckets_per_step or 0, len(evs)))


main()
