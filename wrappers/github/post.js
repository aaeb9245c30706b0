// After the job's steps, when they succeeded: save the cache (with `key`),
// or persist `path`.
"use strict";
const { input, lines, strata } = require("./strata.js");

const paths = lines("path");
if (input("key")) {
  if (paths.length > 0) strata(["cache", "save", `--key=${input("key")}`, "--", ...paths]);
} else if (paths.length > 0) {
  strata(["persist", "--", ...paths]);
}
