// Feed hook calls to agentspool's OpenCode plugin outside OpenCode, in OpenCode's own
// Bun (`BUN_BE_BUN=1 opencode.exe opencode_replay.js PLUGIN CALLS OUT`): the queue-file
// contract test and the bench use it.
//
// CALLS is a JSON file: a list of hook calls, each ["event", event] or
// ["chat.message", input, output], as OpenCode makes them. OUT gets a JSON object:
// {"ns": [the duration of each call, in nanoseconds, timed around the hook call]}.
// Each call is awaited before the next, as a single OpenCode event loop would run them.

import fs from "node:fs";

const [pluginPath, callsPath, outPath] = process.argv.slice(2);
const { AgentspoolPlugin } = await import(pluginPath);
const hooks = await AgentspoolPlugin({ directory: process.cwd() });
const calls = JSON.parse(fs.readFileSync(callsPath, "utf8"));
const ns = [];
for (const [name, ...args] of calls) {
  const hook = name === "event" ? hooks.event : hooks[name];
  const hookArgs = name === "event" ? [{ event: args[0] }] : args;
  const started = Bun.nanoseconds();
  const done = hook(...hookArgs);
  ns.push(Bun.nanoseconds() - started);
  await done;
}
fs.writeFileSync(outPath, JSON.stringify({ ns }));
