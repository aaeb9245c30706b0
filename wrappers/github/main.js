// Before the job's steps: restore the cache (with `key`), or attach the
// upstream jobs' files.
"use strict";
const { input, lines, strata } = require("./strata.js");

// `only`: one path or glob per line, each its own `--only=` argument.
const only = lines("only").map((p) => `--only=${p}`);
if (input("key")) {
  const keys = [input("key"), ...lines("restore-keys")];
  strata(["cache", "restore", ...keys.map((k) => `--key=${k}`), ...only]);
} else if (input("attach")) {
  strata(["attach", `--at=${input("attach")}`, ...only]);
}
