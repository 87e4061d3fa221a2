"""Row 16: what agentspool's plugin costs the real OpenCode, per event, on OpenCode's side.

A scripted ``opencode run`` session (opencode-ai 1.18.33, offline: tests/clients/opencode.py)
of ``BASH_CALLS`` model steps each calling bash ``true``, then a final text, against the
fake chat-completions API. The plugin is the one the package ships, loaded by a thin
timing plugin in ``.opencode/plugin/`` that wraps each of its hooks with
``Bun.nanoseconds()``: each sample is one real hook call, as OpenCode made it, timed
inside OpenCode's own process (the plugin writes synchronously, so the call is all of
its cost). The timings are appended to a file at each ``session.idle``. Floor: the same
wrapper around hooks that do nothing. Every session must land in the spool.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, Config, Ref, Row, percentile

GROUP = "opencode"
TARGET_P99_US = 1000.0  # issue 22: at most 1 ms per event at the 99th percentile
WRITING = {
    "message.part.updated",
    "message.updated",
    "session.created",
    "session.idle",
    "chat.message",
}

# The timing plugin: loads the plugin under test from outside plugin/ (so OpenCode does
# not load it a second time) and times each hook call.
TIMED_PLUGIN = """
import fs from "node:fs";
const TIMINGS = process.env.AGENTSPOOL_BENCH_TIMINGS;
const UNDER_TEST = process.env.AGENTSPOOL_BENCH_PLUGIN;
export const Timed = async (ctx) => {
  const loaded = UNDER_TEST ? await import(UNDER_TEST) : null;
  const initStarted = Bun.nanoseconds();
  const hooks = loaded ? await loaded.AgentspoolPlugin(ctx) : {
    event: async () => {}, "chat.message": async () => {},
  };
  let samples = [["plugin.init", Bun.nanoseconds() - initStarted]];
  const timed = (name, hook) => async (...args) => {
    const started = Bun.nanoseconds();
    const done = hook(...args);
    const ns = Bun.nanoseconds() - started;
    const kind = name === "event" ? args[0].event.type : name;
    samples.push([kind, ns]);
    if (kind === "session.idle") {
      fs.appendFileSync(TIMINGS, samples.map((s) => JSON.stringify(s)).join("\\n") + "\\n");
      samples = [];
    }
    return done;
  };
  return { event: timed("event", hooks.event), "chat.message": timed("chat.message", hooks["chat.message"]) };
};
"""


def run(cfg: Config) -> list[Row]:
    import sys

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.clients.opencode import OpenCodeHome, opencode_binary, plugin_file
    from tests.fakes.openai_chat_stream import FakeOpenAIChat
    from tests.netns import LoopbackNamespace

    rounds = cfg.size(4, 1)
    bash_calls = cfg.size(20, 3)
    t0 = time.monotonic()
    binary = opencode_binary()
    install_s = time.monotonic() - t0
    spool = cfg.workdir("opencode-spool")
    timings = {
        name: cfg.workdir(f"opencode-timings-{name}") / "timings.jsonl"
        for name in ("noop", "agentspool")
    }
    runs = 0
    with LoopbackNamespace() as namespace, FakeOpenAIChat(namespace.listen()) as api:
        homes = {}
        for name in timings:
            home = OpenCodeHome(
                binary,
                namespace,
                api.url,
                cfg.workdir(f"opencode-{name}"),
                spool,
                with_agentspool=False,
            )
            plugin_dir = home.project / ".opencode" / "plugin"
            plugin_dir.mkdir(parents=True, exist_ok=True)
            (plugin_dir / "timed.js").write_text(TIMED_PLUGIN)
            homes[name] = home
        plugin = str(plugin_file())
        for _ in range(rounds):
            for name, home in homes.items():  # interleaved: each sees the same load
                runs += 1
                prompt = f"bench run {runs}: {bash_calls} bash calls"
                api.script(_turns(bash_calls), when=prompt)
                env = {"AGENTSPOOL_BENCH_TIMINGS": str(timings[name])}
                if name == "agentspool":
                    env["AGENTSPOOL_BENCH_PLUGIN"] = plugin
                home.run(prompt, **env)
        if api.unscripted:
            raise AssertionError(f"{len(api.unscripted)} requests had no scripted turn")
    landed = _sessions_in_spool(spool)
    if landed != rounds:
        raise AssertionError(f"{rounds} sessions expected in the spool, found {landed}")

    samples = {name: _samples(path) for name, path in timings.items()}
    inits = sorted(ns / 1e6 for kind, ns in samples["agentspool"] if kind == "plugin.init")
    samples = {name: [s for s in found if s[0] != "plugin.init"] for name, found in samples.items()}
    ours = sorted(ns / 1000.0 for _, ns in samples["agentspool"])
    floor = sorted(ns / 1000.0 for _, ns in samples["noop"])
    writing = sorted(ns / 1000.0 for kind, ns in samples["agentspool"] if kind in WRITING)
    note = (
        f"{rounds} `opencode run` sessions of {bash_calls} bash calls, {len(ours)} hook calls "
        f"timed inside OpenCode; median {percentile(ours, 50):.1f} µs, max {ours[-1]:.0f} µs; "
        f"npm install (or the cached one) took {install_s:.1f} s"
    )
    note_init = (
        f"once per OpenCode process, at its start (not on an event): loading the plugin and "
        f"creating its queue file took median {percentile(inits, 50):.1f} ms, max {inits[-1]:.1f} ms"
    )
    return [
        Row(
            GROUP,
            "opencode.plugin.per_event.p99",
            "16. OpenCode plugin: cost on OpenCode's event handler per event, p99",
            percentile(ours, 99),
            "us",
            floor=Ref(percentile(floor, 99), "the same hooks doing nothing"),
            target=TARGET_P99_US,
            note=note,
        ),
        Row(
            GROUP,
            "opencode.plugin.writing_events.p99",
            "16. OpenCode plugin: events of the kinds it may write, p99",
            percentile(writing, 99),
            "us",
            note=f"{len(writing)} calls: message and part updates, chat.message, session created/idle",
        ),
        Row(
            GROUP,
            "opencode.plugin.start.p50",
            "16. OpenCode plugin: start (its queue file made), once per process, median",
            percentile(inits, 50),
            "ms",
            note=note_init,
        ),
    ]


def _turns(bash_calls: int) -> list[Any]:
    from tests.fakes.openai_chat_stream import text, tool_call, turn

    calls = [
        turn(tool_call("bash", {"command": "true", "description": f"step {i}"}))
        for i in range(bash_calls)
    ]
    return [*calls, turn(text("All steps done."))]


def _samples(path: Path) -> list[tuple[str, int]]:
    return [tuple(json.loads(line)) for line in path.read_text().splitlines() if line]  # type: ignore[misc]


def _sessions_in_spool(spool: Path) -> int:
    import sqlite3

    found = 0
    for db in (spool / "queues").glob("*/data.db"):
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT data FROM ack_queue_default").fetchall()  # noqa: S608
        finally:
            conn.close()
        found += sum(1 for (data,) in rows if json.loads(data)["type"] == "session_start")
    return found
