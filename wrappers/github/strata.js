// What the action's two steps share: its inputs, and running strata with
// the store settings in its environment. No npm dependency: inputs arrive
// as INPUT_<NAME> variables, as GitHub documents for JavaScript actions.
"use strict";
const { spawnSync } = require("child_process");
const { install } = require("./install.js");

function input(name) {
  return (process.env[`INPUT_${name.replace(/ /g, "_").toUpperCase()}`] || "").trim();
}

function lines(name) {
  return input(name)
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
}

// A workflow command's message, escaped as the runner unescapes it, so a
// path holding a newline cannot start a command of its own.
function escape(text) {
  return String(text).replace(/%/g, "%25").replace(/\r/g, "%0D").replace(/\n/g, "%0A");
}

function fail(message) {
  console.log(`::error title=strata::${escape(message)}`);
  process.exit(1);
}

// Runs `strata ARGS` (no shell: every argument reaches strata as is),
// installing the pinned release first (`install.js`); a failure fails the
// step with strata's own message.
async function strata(args) {
  let bin;
  try {
    bin = await install(input);
  } catch (e) {
    fail(`cannot install strata: ${e.message}`);
  }
  const env = { ...process.env, STRATA_STORE: input("store") };
  if (input("token")) env.STRATA_TOKEN = input("token");
  const r = spawnSync(bin, args, { env, stdio: "inherit" });
  if (r.error) fail(`cannot run ${bin}: ${r.error.message}`);
  if (r.status !== 0) process.exit(r.status || 1);
}

module.exports = { escape, input, lines, strata };
