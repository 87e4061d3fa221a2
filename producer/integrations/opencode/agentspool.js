// agentspool's OpenCode plugin: logs every OpenCode session into the agentspool spool.
// Installed by `agentspool hook opencode --install`; shipped inside the agentspool
// Python package (agentspool/integrations/opencode/agentspool.js). Do not edit a copy:
// install again to update it.
//
// Every hook call writes synchronously, before it returns (no await anywhere): OpenCode
// does not wait for plugins at exit, and after a SIGKILL only what was written survives.
// A write is one SQLite insert into this OpenCode process's own queue file (WAL,
// synchronous=NORMAL: it survives the process being killed, not a power loss), in
// persist-queue 1.1.0's SQLiteAckQueue format, JSON items; agentspool's worker drains it
// (docs/EVENTS.md). One file per OpenCode process, named after it, with the process's
// pid and start time: when OpenCode dies, the worker sees its producer gone and seals
// the sessions it left unfinished as `abandoned`. Nothing here ever throws into OpenCode:
// a failure is counted (the file's `dropped` counter) and reported once on stderr.
//
// Mapping (one OpenCode session = one agentspool session, id = OpenCode's session id,
// agent "opencode"; docs/INTEGRATIONS.md):
//   session.created            -> session_start (parent_id = parentID of a task tool's child)
//   chat.message hook (user)   -> message, role user, content = its text parts
//   message.updated, assistant,
//     completed                -> message, role assistant, content = its text parts (or
//                                 null), metadata.model / usage (OpenCode's tokens) / cost_usd
//   message.part.updated tool  -> tool_started (running) and tool_finished (completed | error)
//                                 with OpenCode's own start and end times
//   session.idle               -> session_end, "error" when session.error came before it
// A session this process did not create (a continued session: `opencode run --session`)
// gets no session_start; its events are numbered from a base above every earlier
// process's numbers (milliseconds since 1970 shifted left by 19 bits, as the Python
// producer's resume_seq_base).

import { Database } from "bun:sqlite";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const AGENT = "opencode";
const FORMAT_VERSION = 1;
// The queue-file format (agentspool/producer/layout.py; a test checks these match).
const QUEUES_DIRNAME = "queues";
const DB_FILENAME = "data.db";
const QUEUE_SQL =
  "CREATE TABLE IF NOT EXISTS ack_queue_default (" +
  "_id INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB, timestamp FLOAT, status INTEGER)";
const META_SQL = "CREATE TABLE IF NOT EXISTS agentspool_producer (key TEXT PRIMARY KEY, value TEXT)";
const INSERT_SQL = "INSERT INTO ack_queue_default (data, timestamp, status) VALUES (CAST(? AS BLOB), ?, 0)";
const META_INSERT_SQL = "INSERT OR REPLACE INTO agentspool_producer (key, value) VALUES (?, ?)";
const BUSY_TIMEOUT_MS = 5000;
const RESUME_SEQ_SHIFT = 19n;
// The worker's size limits (producer/events.py): a field over 1 MiB is cut with a
// marker, an item over 8 MiB would be dead-lettered, so large fields are cut here first.
const MAX_FIELD_BYTES = 1 << 20;
const MAX_ITEM_BYTES = 8 << 20;
const LARGE_FIELDS = ["content", "input", "output", "error", "metadata"];

// One writer per process, shared by every instance that loads this plugin (OpenCode
// makes one per project directory; a plugin installed both globally and in the project
// registers once per directory, not twice).
const SHARED = Symbol.for("agentspool.opencode");

function spoolDir(env) {
  if (env.AGENTSPOOL_DIR) return expandHome(env.AGENTSPOOL_DIR);
  const stateHome = env.XDG_STATE_HOME || path.join(os.homedir(), ".local", "state");
  return path.join(stateHome, "agentspool");
}

function expandHome(p) {
  return p === "~" || p.startsWith("~/") ? path.join(os.homedir(), p.slice(1)) : p;
}

// The kernel's start time of this process (clock ticks since boot): with the pid, it
// tells the worker whether this producer is still running (a pid alone can be reused).
function processStartTime(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "latin1");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields.length > 19 ? fields[19] : "";
  } catch {
    return "";
  }
}

function fsyncPath(p) {
  const fd = fs.openSync(p, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

// Build the queue file aside and rename it into place whole (as queuefile.create_queue_file
// does), so the worker, which watches queues/, never opens a half-made file.
function createQueueFile(queueDir, meta) {
  const queues = path.dirname(queueDir);
  fs.mkdirSync(path.dirname(queues), { recursive: true, mode: 0o700 });
  fs.mkdirSync(queues, { recursive: true, mode: 0o700 });
  const building = path.join(queues, `.new-${path.basename(queueDir)}`);
  fs.rmSync(building, { recursive: true, force: true });
  fs.mkdirSync(building, { mode: 0o700 });
  const file = path.join(building, DB_FILENAME);
  // Created 0600 before SQLite opens it: SQLite gives -wal and -shm the same mode.
  const c = fs.constants;
  fs.closeSync(fs.openSync(file, c.O_CREAT | c.O_EXCL | c.O_WRONLY, 0o600));
  const db = new Database(file);
  try {
    db.exec("PRAGMA journal_mode=WAL");
    db.exec(QUEUE_SQL);
    db.exec(META_SQL);
    const put = db.prepare(META_INSERT_SQL);
    db.transaction(() => {
      for (const [k, v] of Object.entries(meta)) put.run(k, v);
    })();
  } finally {
    db.close(); // the last connection: checkpoints, so the file is complete alone
  }
  fsyncPath(file);
  fs.renameSync(building, queueDir);
  fsyncPath(queues);
}

class QueueWriter {
  constructor(env) {
    this.env = env;
    this.host = os.hostname();
    this.pid = process.pid;
    const random = Math.random().toString(16).slice(2, 10).padEnd(8, "0");
    this.producerId = `opencode-${this.host}-${this.pid}-${random}`;
    this.producerJson = JSON.stringify(this.producerId);
    this.pseq = 0;
    this.db = null;
    this.insert = null;
    this.broken = false;
    this.dropped = 0;
    this.droppedSaved = 0;
  }

  // Made when OpenCode loads the plugin, at its start: making it (directories, a new
  // SQLite file, fsyncs: tens of milliseconds) never lands on an event. A process that
  // runs no session leaves an empty file, which the worker removes once it exited.
  start() {
    if (this.db !== null || this.broken) return;
    try {
      this.open();
    } catch (err) {
      this.broken = true;
      warnOnce(`agentspool: cannot write to the spool (${spoolDir(this.env)}): ${err && err.message}`);
    }
  }

  open() {
    const queueDir = path.join(spoolDir(this.env), QUEUES_DIRNAME, this.producerId);
    createQueueFile(queueDir, {
      producer_id: this.producerId,
      pid: String(this.pid),
      host: this.host,
      process_start: processStartTime(this.pid),
      started_at: String(Date.now() / 1000),
      dropped: "0",
    });
    const db = new Database(path.join(queueDir, DB_FILENAME));
    db.exec(`PRAGMA busy_timeout=${BUSY_TIMEOUT_MS}`);
    db.exec("PRAGMA synchronous=NORMAL"); // a commit survives the process being killed
    this.insert = db.prepare(INSERT_SQL);
    this.saveMeta = db.prepare(META_INSERT_SQL);
    this.db = db;
  }

  // Append events (already numbered) in one transaction. Never throws.
  write(items) {
    if (this.broken) {
      this.dropped += items.length;
      return;
    }
    try {
      if (this.db === null) this.open();
      const now = Date.now() / 1000;
      if (items.length === 1 && this.dropped === this.droppedSaved) {
        this.insert.run(items[0], now);
        return;
      }
      this.db.transaction(() => {
        for (const item of items) this.insert.run(item, now);
        if (this.dropped !== this.droppedSaved) this.saveMeta.run("dropped", String(this.dropped));
      })();
      this.droppedSaved = this.dropped;
    } catch (err) {
      this.dropped += items.length;
      if (this.db === null) this.broken = true; // the spool cannot be written: stop trying
      warnOnce(`agentspool: cannot write to the spool (${spoolDir(this.env)}): ${err && err.message}`);
    }
  }

  // One event's queue item: the envelope, then its fields. `seq` may be a BigInt
  // (continued sessions number from above 2**53), so it is spliced in as text.
  encode(type, sessionId, seq, fields) {
    fields.ts = fields.ts ?? Date.now() / 1000;
    let body = JSON.stringify(fields);
    if (body.length * 3 > MAX_ITEM_BYTES && Buffer.byteLength(body) > MAX_ITEM_BYTES) {
      body = JSON.stringify(cutLargeFields(fields));
    }
    const pseq = this.pseq++;
    return (
      `{"v":${FORMAT_VERSION},"type":"${type}","session_id":${JSON.stringify(sessionId)},` +
      `"seq":${seq},"producer_id":${this.producerJson},"pseq":${pseq},${body.slice(1)}`
    );
  }
}

function cutLargeFields(fields) {
  const out = { ...fields };
  for (const name of LARGE_FIELDS) {
    const value = out[name];
    if (value === undefined || value === null) continue;
    const text = typeof value === "string" ? value : JSON.stringify(value);
    const bytes = Buffer.from(text, "utf8");
    if (bytes.length <= MAX_FIELD_BYTES) continue;
    let end = MAX_FIELD_BYTES;
    while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--; // never cut a character in half
    const cut = bytes.subarray(0, end).toString("utf8") + `…[truncated ${bytes.length - end} bytes]`;
    out[name] = name === "metadata" ? { truncated: cut } : cut;
  }
  return out;
}

let warned = false;
function warnOnce(text) {
  if (warned) return;
  warned = true;
  try {
    process.stderr.write(text + "\n");
  } catch {}
}

function textOf(parts) {
  const texts = [];
  for (const part of parts) if (part && part.type === "text" && typeof part.text === "string") texts.push(part.text);
  return texts.length ? texts.join("\n") : null;
}

function errorText(error) {
  if (error === undefined || error === null) return undefined;
  if (typeof error === "string") return error;
  const message = error.data && error.data.message;
  if (typeof message === "string") return error.name ? `${error.name}: ${message}` : message;
  return JSON.stringify(error);
}

function seconds(ms) {
  return typeof ms === "number" ? ms / 1000 : undefined;
}

// What this process knows of one OpenCode session.
class SessionLog {
  constructor(id, created) {
    this.id = id;
    // A session created here numbers from 0 (its session_start); one it did not
    // create (continued) from the resume base, above any earlier process's numbers.
    this.nextSeq = created ? 0n : BigInt(Date.now()) << RESUME_SEQ_SHIFT;
    this.started = false; // its session_start is written
    this.active = false; // events since its last end
    this.title = undefined;
    this.error = undefined;
    this.texts = new Map(); // assistant message id -> Map(part id -> text), until it completes
    this.loggedMessages = new Set(); // assistant message ids already written
    this.userMessages = new Set();
    this.toolsStarted = new Set();
    this.toolsFinished = new Set();
  }
}

class Recorder {
  constructor(writer) {
    this.writer = writer;
    this.sessions = new Map();
  }

  session(id, created = false) {
    let s = this.sessions.get(id);
    if (s === undefined) {
      s = new SessionLog(id, created);
      this.sessions.set(id, s);
    }
    return s;
  }

  item(s, type, fields) {
    const seq = s.nextSeq;
    s.nextSeq += 1n;
    if (type !== "session_end") s.active = true;
    return this.writer.encode(type, s.id, seq, fields);
  }

  // ---- the hooks ---------------------------------------------------------------

  event(event) {
    const props = event.properties || {};
    switch (event.type) {
      case "message.part.updated":
        return this.partUpdated(props.part);
      case "message.updated":
        return this.messageUpdated(props.info);
      case "session.created":
        return this.sessionCreated(props.info);
      case "session.updated":
        if (props.info && props.info.id && this.sessions.has(props.info.id)) {
          this.sessions.get(props.info.id).title = props.info.title;
        }
        return;
      case "session.error":
        if (props.sessionID) this.session(props.sessionID).error = errorText(props.error) || "session error";
        return;
      case "session.idle":
        return this.sessionIdle(props.sessionID);
    }
  }

  sessionCreated(info) {
    if (!info || !info.id) return;
    const s = this.session(info.id, true);
    if (s.started) return;
    s.started = true;
    s.title = info.title;
    const metadata = { title: info.title, directory: info.directory, opencode_version: info.version };
    if (info.agent) metadata.opencode_agent = info.agent;
    const fields = { agent: AGENT, host: this.writer.host, pid: this.writer.pid, metadata };
    if (info.parentID) fields.parent_id = info.parentID;
    if (info.time && info.time.created) fields.ts = seconds(info.time.created);
    // seq 0, even when events of this session were seen before it (they were
    // numbered as a continuation: the numbers never collide).
    const item = this.writer.encode("session_start", s.id, 0, fields);
    if (s.nextSeq === 0n) s.nextSeq = 1n;
    s.active = true;
    this.writer.write([item]);
  }

  chatMessage(input, output) {
    const message = output && output.message;
    const sessionId = (message && message.sessionID) || (input && input.sessionID);
    if (!sessionId || !message || message.role !== "user") return;
    const s = this.session(sessionId);
    if (s.userMessages.has(message.id)) return;
    s.userMessages.add(message.id);
    const metadata = { opencode_message_id: message.id };
    if (message.agent) metadata.opencode_agent = message.agent;
    const fields = { role: "user", content: textOf(output.parts || []), metadata };
    if (message.time && message.time.created) fields.ts = seconds(message.time.created);
    this.writer.write([this.item(s, "message", fields)]);
  }

  partUpdated(part) {
    if (!part || !part.sessionID) return;
    if (part.type === "text") {
      const s = this.sessions.get(part.sessionID) || this.session(part.sessionID);
      if (s.userMessages.has(part.messageID) || s.loggedMessages.has(part.messageID)) return;
      let texts = s.texts.get(part.messageID);
      if (texts === undefined) s.texts.set(part.messageID, (texts = new Map()));
      texts.set(part.id, part.text);
      return;
    }
    if (part.type !== "tool" || !part.state) return;
    const state = part.state;
    const status = state.status;
    if (status !== "running" && status !== "completed" && status !== "error") return;
    const s = this.session(part.sessionID);
    const callId = part.callID || part.id;
    if (s.toolsFinished.has(callId)) return; // a later update of a finished call
    const times = state.time || {};
    const items = [];
    if (!s.toolsStarted.has(callId)) {
      s.toolsStarted.add(callId);
      const started = { call_id: callId, name: part.tool || "unknown", input: state.input };
      if (times.start) started.started_at = seconds(times.start);
      items.push(this.item(s, "tool_started", started));
    }
    if (status !== "running") {
      s.toolsFinished.add(callId);
      const finished = { call_id: callId };
      if (status === "completed") finished.output = state.output ?? null;
      else finished.error = errorText(state.error) || "error";
      if (times.end) finished.ended_at = seconds(times.end);
      if (times.start && times.end) finished.duration_ms = times.end - times.start;
      items.push(this.item(s, "tool_finished", finished));
    }
    if (items.length) this.writer.write(items);
  }

  messageUpdated(info) {
    if (!info || info.role !== "assistant" || !info.time || !info.time.completed) return;
    const s = this.session(info.sessionID);
    if (s.loggedMessages.has(info.id)) return;
    s.loggedMessages.add(info.id);
    const texts = s.texts.get(info.id);
    s.texts.delete(info.id);
    const content = texts ? [...texts.values()].filter((t) => t).join("\n") || null : null;
    const metadata = { opencode_message_id: info.id, usage: info.tokens, cost_usd: info.cost };
    if (info.modelID) metadata.model = info.providerID ? `${info.providerID}/${info.modelID}` : info.modelID;
    if (info.finish) metadata.finish = info.finish;
    if (info.error) metadata.error = errorText(info.error);
    const fields = { role: "assistant", content, metadata, ts: seconds(info.time.completed) };
    this.writer.write([this.item(s, "message", fields)]);
  }

  sessionIdle(sessionId) {
    const s = sessionId && this.sessions.get(sessionId);
    if (!s || !s.active) return; // nothing of it was logged since its last end
    const fields = { status: s.error ? "error" : "completed", metadata: { title: s.title } };
    if (s.error) fields.error = s.error;
    s.error = undefined;
    s.active = false;
    s.texts.clear(); // parts of messages that never completed (an aborted step)
    this.writer.write([this.item(s, "session_end", fields)]);
  }
}

function shared() {
  let state = globalThis[SHARED];
  if (state === undefined) {
    state = { recorder: new Recorder(new QueueWriter(process.env)), directories: new Set() };
    globalThis[SHARED] = state;
  }
  return state;
}

// Hook calls never throw into OpenCode and never await.
function guarded(fn) {
  return async (...args) => {
    try {
      fn(...args);
    } catch (err) {
      warnOnce(`agentspool: ${err && err.stack ? err.stack : err}`);
    }
  };
}

export const AgentspoolPlugin = async (ctx) => {
  const state = shared();
  const directory = (ctx && ctx.directory) || "";
  if (state.directories.has(directory)) return {}; // installed twice (global and project)
  state.directories.add(directory);
  const recorder = state.recorder;
  recorder.writer.start();
  return {
    event: guarded(({ event }) => recorder.event(event)),
    "chat.message": guarded((input, output) => recorder.chatMessage(input, output)),
  };
};
