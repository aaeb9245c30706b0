// Before the job's steps: restore the cache (with `key`), or attach the
// upstream jobs' files.
"use strict";
const { input, lines, strata } = require("./strata.js");

if (input("key")) {
  const keys = [input("key"), ...lines("restore-keys")];
  strata(["cache", "restore", ...keys.map((k) => `--key=${k}`)]);
} else if (input("attach")) {
  strata(["attach", `--at=${input("attach")}`]);
}
