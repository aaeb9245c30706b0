// Installs the pinned strata release once per runner (the tool cache),
// checked against its pinned SHA-256 before anything in it runs (docs/ci.md,
// "Getting the binary onto a runner"). In JavaScript, with no shell and no
// tar: the tarball is fetched, hashed, gunzipped and read here. Nothing to
// do when STRATA_BIN is set or the `install` input is false (strata from the
// PATH). release/build.sh --pin writes the two pins below.
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const os = require("os");
const path = require("path");
const zlib = require("zlib");

const VERSION = "0.1.0";
const SHA256 = "47003ce249f57edcc0069d6f5b3aee760bdfc3be96ed45a9b2a0d9aa04ec19f8";
const TARGET = "x86_64-unknown-linux-gnu";

// The file named `name` at the top of a ustar archive (the release holds
// one); null if it has none.
function fileInTar(tar, name) {
  for (let at = 0; at + 512 <= tar.length; ) {
    const header = tar.subarray(at, at + 512);
    if (header.every((b) => b === 0)) break;
    const field = (from, len) => header.subarray(from, from + len).toString("latin1").replace(/\0.*$/s, "");
    const size = parseInt(field(124, 12).trim() || "0", 8);
    const type = field(156, 1);
    const entry = field(0, 100).replace(/^\.\//, "");
    if (entry === name && (type === "0" || type === "")) {
      return tar.subarray(at + 512, at + 512 + size);
    }
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return null;
}

// The strata to run: STRATA_BIN, `strata` from the PATH (install: false),
// or the pinned release, installed if this runner does not have it yet.
// `input` reads the action's inputs. Throws, naming what went wrong, when
// the download fails or its checksum is not the pinned one.
async function install(input) {
  if (process.env.STRATA_BIN) return process.env.STRATA_BIN;
  if (input("install") === "false") return "strata";
  let [version, sha256] = [VERSION, SHA256];
  if (input("version")) {
    version = input("version");
    sha256 = input("sha256");
    if (!sha256) throw new Error("`version` needs `sha256`, the SHA-256 of its tarball");
  }
  const cache = process.env.RUNNER_TOOL_CACHE || path.join(os.homedir(), ".cache");
  const home = path.join(cache, "strata-bin", sha256);
  const bin = path.join(home, "strata");
  if (fs.existsSync(bin)) return bin;
  if (process.platform !== "linux" || process.arch !== "x64") {
    throw new Error(`no release for ${process.platform} ${process.arch}: build strata and set STRATA_BIN`);
  }
  const base = input("release-url") || `https://github.com/ORG/strata/releases/download/v${version}`;
  const url = `${base}/strata-${version}-${TARGET}.tar.gz`;
  let res;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new Error(`cannot download ${url}: ${e.cause ? e.cause.message : e.message}`);
  }
  if (!res.ok) throw new Error(`cannot download ${url}: HTTP ${res.status}`);
  const tarball = Buffer.from(await res.arrayBuffer());
  const got = crypto.createHash("sha256").update(tarball).digest("hex");
  if (got !== sha256) {
    throw new Error(`${url} has SHA-256 ${got}, not the pinned ${sha256}: refused, nothing in it run`);
  }
  const file = fileInTar(zlib.gunzipSync(tarball), "strata");
  if (!file) throw new Error(`${url} holds no strata`);
  // Into place whole; another job on this runner may have put it there first.
  fs.mkdirSync(path.dirname(home), { recursive: true });
  const tmp = fs.mkdtempSync(`${home}.tmp-`);
  fs.writeFileSync(path.join(tmp, "strata"), file, { mode: 0o755 });
  try {
    fs.renameSync(tmp, home);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    if (!fs.existsSync(bin)) throw e;
  }
  return bin;
}

module.exports = { install, fileInTar, VERSION, SHA256 };
