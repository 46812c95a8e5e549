#!/usr/bin/env python3
"""Writes docs/reliability.md from what the last `make test` recorded.

Inputs (each written by the run, never by hand):
  fuzz/target/summary.json          fuzz/run.sh: executions and crashes per target
  .e2e/reliability/faults.jsonl     fault-injection e2e tests: one line per test
  .e2e/reliability/secrets.json     secret-scan: what was searched, where, hits

Missing inputs are reported as missing in the document, never invented.
"""
import datetime
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
STATE = pathlib.Path(
    __import__("os").environ.get("PORTHOLE_STATE", ROOT / ".e2e"))
OUT = ROOT / "docs" / "reliability.md"


def load_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_lines(path):
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def commit():
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fuzz_targets(summary):
    """[(name, executions, crashes)] from fuzz/run.sh's summary."""
    if not summary:
        return []
    targets = summary.get("targets", summary)
    rows = []
    items = targets.items() if isinstance(targets, dict) else (
        (t.get("target") or t.get("name"), t) for t in targets)
    for name, t in items:
        rows.append((name, int(t.get("executions", 0)), int(t.get("crashes", 0))))
    return sorted(rows)


def cell(text):
    """A table cell: no pipes or newlines from the figures."""
    return "" if text is None else str(text).replace("|", "/").replace("\n", " ")


STAGES = [("created", "sessions created"), ("starting", "starting"), ("open", "open"),
          ("expiring", "within 5 s of their deadline"),
          ("cleaning_up", "ended, proxy pod not yet deleted"), ("ended", "ended")]


def fault_details(f):
    """Lines about one test beyond its row: where random kills landed, how long
    an outage lasted."""
    lines = []
    kills = f.get("kills") or []
    if kills:
        lines += ["", f"`{f.get('test')}`: kill schedule seed {f.get('seed')} "
                  "(`PORTHOLE_FAULT_SEED` replays it); each kill and what the sessions "
                  "were doing at that moment:", "",
                  "| kill at (s) | " + " | ".join(label for _, label in STAGES) + " |",
                  "|---|" + "---|" * len(STAGES)]
        for k in kills:
            lines.append(f"| {k.get('at_secs', 0):.1f} | "
                         + " | ".join(str(k.get(key, 0)) for key, _ in STAGES) + " |")
        during = {key: sum(1 for k in kills if k.get(key, 0) > 0) for key, _ in STAGES}
        lines += ["", "Kills that came while some sessions were starting: "
                  f"{during['starting']}, open: {during['open']}, at their deadline: "
                  f"{during['expiring']}, being cleaned up: {during['cleaning_up']}."]
    if "outage_seconds" in f:
        lines += ["", f"`{f.get('test')}`: the outage lasted {f['outage_seconds']:.0f} s; "
                  f"the operator restarted {f.get('operator_restarts', 0)} time(s) "
                  "across it."]
    return lines


def main():
    fuzz = fuzz_targets(load_json(ROOT / "fuzz" / "target" / "summary.json"))
    faults = load_lines(STATE / "reliability" / "faults.jsonl")
    secrets = load_json(STATE / "reliability" / "secrets.json")

    inputs = sum(e for _, e, _ in fuzz)
    crashes = sum(c for _, _, c in fuzz)
    injected = sum(f.get("faults_injected", 0) for f in faults)
    run = sum(f.get("sessions_run", 0) for f in faults)
    lost = sum(f.get("sessions_lost", 0) for f in faults)
    orphans = sum(f.get("orphans_left", 0) for f in faults)
    found = secrets.get("places_with_secrets") if secrets else None

    def figure(value, missing="not recorded in this run"):
        return missing if value is None else f"{value:,}"

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        "# Reliability: hostile input, faults, secrets",
        "",
        f"Written by `make test` (`e2e/scripts/reliability-report.py`) from the run of {now} "
        f"at commit {commit()}. Do not edit: run `make test` again. The tests behind each "
        "figure fail `make test` when a goal is missed; this page only reports.",
        "",
        "| figure | this run | goal |",
        "|---|---|---|",
        f"| inputs tried by the fuzzers | {figure(inputs if fuzz else None)} | |",
        f"| fuzzer crashes | {figure(crashes if fuzz else None)} | 0 |",
        f"| faults injected | {figure(injected if faults else None)} | |",
        f"| sessions run under faults | {figure(run if faults else None)} | |",
        f"| sessions lost (not ended with the right reason on time) | {figure(lost if faults else None)} | 0 |",
        f"| orphans left (pods, Services, Secrets of ended sessions) | {figure(orphans if faults else None)} | 0 |",
        f"| places a secret was found (logs, Events, status) | {figure(found)} | 0 |",
        "",
        "## Fuzzing",
        "",
        "`fuzz/run.sh` runs each `cargo fuzz` target for a bounded time "
        "(`FUZZ_SECONDS`) from the committed seed corpus; a crash fails the run "
        "and becomes a regression test beside the parser.",
        "",
    ]
    if fuzz:
        lines += ["| target | executions | crashes |", "|---|---|---|"]
        lines += [f"| `{n}` | {e:,} | {c} |" for n, e, c in fuzz]
    else:
        lines.append("No fuzzing summary in this run (`fuzz/target/summary.json`).")
    lines += ["", "## Faults", ""]
    if faults:
        lines += [
            "Each fault-injection e2e test injects its fault into the running test bed, "
            "then checks what users see and that the cluster converges: every session "
            "ends with the right reason within 2 s of its deadline (else it counts as "
            "lost), none is left short of a final phase, and no pod, Service, Secret or "
            "NetworkPolicy outlives its session (else it counts as an orphan).",
            "",
            "| test | fault | outcome | injected | sessions | lost | orphans |",
            "|---|---|---|---|---|---|---|"]
        for f in faults:
            lines.append(
                f"| `{f.get('test')}` | {cell(f.get('fault'))} | {cell(f.get('outcome'))} | "
                f"{f.get('faults_injected', 0)} | {f.get('sessions_run', 0)} | "
                f"{f.get('sessions_lost', 0)} | {f.get('orphans_left', 0)} |")
        lines.append(
            f"| **total** | | | **{injected:,}** | **{run:,}** | **{lost:,}** | **{orphans:,}** |")
        for f in faults:
            lines += fault_details(f)
    else:
        lines.append("No fault-injection figures in this run (`.e2e/reliability/faults.jsonl`).")
    lines += ["", "## Secrets in logs, Events and status", ""]
    if secrets:
        lines.append(
            f"{secrets['secrets_known']:,} secret values (every Secret value the cluster held "
            "during the e2e run, and every credential the Proxmox simulators issued), searched "
            f"for as written and base64-encoded in {secrets['log_files']:,} log files (the "
            "components', every archived container's, and every Event and ConsoleSession "
            "status recorded as it happened during the run), "
            f"{secrets['container_logs']:,} container logs and {secrets['api_objects']:,} "
            f"Events and statuses ({secrets['bytes_scanned']:,} bytes): found in "
            f"{secrets['places_with_secrets']} places.")
    else:
        lines.append("No secret scan in this run (`.e2e/reliability/secrets.json`).")
    lines += ["", "## Hostile input", "",
              "Covered by tests that fail on a miss rather than by figures: "
              "`proxy/tests/malformed.rs` (malformed, oversized, unmasked and fragmented "
              "control frames, garbage and slow HTTP, 2,000 wrong tokens with the rate "
              "limit holding and no upstream dial), `e2e/suite/tests/hostile.rs` "
              "(cross-session tokens, names at the apiserver's limit), "
              "`e2e/suite/tests/lifecycle.rs` (invalid and huge fields rejected by the "
              "apiserver), `e2e/suite/tests/proxmox.rs` (wrong certificates, a hypervisor "
              "refusing, timing out or failing each way), `proxy/tests/pod_mode.rs` "
              "(run-once replays, exclusive viewers).", ""]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
