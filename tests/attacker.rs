//! strata tried as an attacker would: a job that can persist, or a client
//! that can write to a server, must not reach outside what it owns. Each
//! scenario is a hole found by hand and closed (issue 10).

#[path = "attacker/connections.rs"]
mod connections;
#[path = "attacker/pull_requests.rs"]
mod pull_requests;
#[path = "attacker/server.rs"]
mod server;
use crate::support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::Value;
use strata_store::backend::http::{HttpOptions, HttpStore};
use strata_store::backend::Backend;
use strata_store::format::keys::{cache_prefix, hex_key, manifest_key, pack_key};
use strata_store::format::manifest::{
    ChunkRef, Entry, EntryKind, Manifest, ManifestRoot, Mtime, RelPath, Totals,
};
use strata_store::format::pack::{FrameBuilder, PackBuilder};
use strata_store::format::records::{CacheRecord, LayerRecord, Record};
use strata_store::id::ChunkId;
use support::{Client, Server};

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn chmod(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

/// A local store and a scratch directory, with run `r` of jobs a and b:a.
fn local() -> (tempfile::TempDir, Client) {
    let d = tempfile::tempdir().unwrap();
    let client = Client::new(
        d.path().join("store").to_str().unwrap(),
        &d.path().join("cache"),
    );
    client.ok(&["run", "create", "--run", "r", "--job", "a", "--job", "b:a"]);
    (d, client)
}

// An earlier step of the job hardlinked a file from outside the workspace
// into it; attaching a layer with the same content but another mode must
// not change the file outside.
#[test]
fn a_hardlink_into_the_target_is_replaced_not_chmodded() {
    let (d, c) = local();
    let src = d.path().join("src");
    fs::create_dir_all(src.join("out")).unwrap();
    fs::write(src.join("out/tool"), "same bytes").unwrap();
    chmod(&src.join("out/tool"), 0o755);
    c.persist("r", "a", &src, "out");

    let outside = d.path().join("outside");
    fs::write(&outside, "same bytes").unwrap();
    chmod(&outside, 0o600);
    filetime::set_file_mtime(&outside, filetime::FileTime::from_unix_time(1_000_000, 0)).unwrap();
    let at = d.path().join("at");
    fs::create_dir_all(at.join("out")).unwrap();
    fs::hard_link(&outside, at.join("out/tool")).unwrap();
    // A directory of the layer reached through a symlink to outside.
    let outside_dir = d.path().join("outside-dir");
    fs::create_dir_all(&outside_dir).unwrap();
    chmod(&outside_dir, 0o700);

    c.attach("r", "b", &at);
    assert_eq!(mode(&outside), 0o600, "the file outside --at changed mode");
    let m = fs::metadata(&outside).unwrap();
    assert_eq!(m.mtime(), 1_000_000, "the file outside --at changed mtime");
    assert_eq!(m.nlink(), 1, "the target still shares the outside inode");
    assert_eq!(mode(&at.join("out/tool")), 0o755);
    assert_eq!(fs::read(at.join("out/tool")).unwrap(), b"same bytes");

    // The same with the target's directory a symlink to outside: the link
    // is replaced by a directory, the outside one keeps its mode.
    fs::remove_dir_all(&at).unwrap();
    fs::create_dir_all(&at).unwrap();
    std::os::unix::fs::symlink(&outside_dir, at.join("out")).unwrap();
    c.attach("r", "b", &at);
    assert_eq!(mode(&outside_dir), 0o700);
    assert!(fs::symlink_metadata(at.join("out")).unwrap().is_dir());
    assert!(fs::read_dir(&outside_dir).unwrap().next().is_none());
}

// A job persists a setuid binary and a setgid directory; a later job
// (often root) attaches them without the bits unless it asks to keep them.
#[test]
fn setuid_and_setgid_are_dropped_unless_kept() {
    let (d, c) = local();
    let src = d.path().join("src");
    fs::create_dir_all(src.join("out/shared")).unwrap();
    fs::create_dir_all(src.join("out/tmp")).unwrap();
    fs::write(src.join("out/su"), "#!/bin/sh\n").unwrap();
    fs::write(src.join("out/sg"), "#!/bin/sh\n").unwrap();
    chmod(&src.join("out/su"), 0o4755);
    chmod(&src.join("out/sg"), 0o2755);
    chmod(&src.join("out/shared"), 0o2775);
    chmod(&src.join("out/tmp"), 0o1777);
    c.persist("r", "a", &src, "out");

    let at = d.path().join("at");
    c.attach("r", "b", &at);
    assert_eq!(mode(&at.join("out/su")), 0o755);
    assert_eq!(mode(&at.join("out/sg")), 0o755);
    assert_eq!(mode(&at.join("out/shared")), 0o775);
    assert_eq!(mode(&at.join("out/tmp")), 0o1777, "sticky stays");

    // Asked for, the bits are kept; attaching again without the flag drops
    // them from files already in place too.
    let kept = d.path().join("kept");
    c.ok(&[
        "attach",
        "--run",
        "r",
        "--job",
        "b",
        "--keep-setuid",
        "--at",
        kept.to_str().unwrap(),
    ]);
    assert_eq!(mode(&kept.join("out/su")), 0o4755);
    assert_eq!(mode(&kept.join("out/sg")), 0o2755);
    assert_eq!(mode(&kept.join("out/shared")), 0o2775);
    c.attach("r", "b", &kept);
    assert_eq!(mode(&kept.join("out/su")), 0o755);

    // Cache restores follow the same rule.
    c.ok(&[
        "cache",
        "save",
        "--key",
        "k",
        "--root",
        src.to_str().unwrap(),
        "out",
    ]);
    let restored = d.path().join("restored");
    c.ok(&[
        "cache",
        "restore",
        "--key",
        "k",
        "--at",
        restored.to_str().unwrap(),
    ]);
    assert_eq!(mode(&restored.join("out/su")), 0o755);
}

// An attach was killed and left its temporary files and staging directory
// in the target; the next attach into the same target removes them, and
// nothing of the user's that merely looks similar.
#[test]
fn a_later_attach_removes_a_killed_attachs_temp_files() {
    let (d, c) = local();
    let src = d.path().join("src");
    fs::create_dir_all(src.join("out/deep")).unwrap();
    fs::write(src.join("out/deep/f"), "f").unwrap();
    c.persist("r", "a", &src, "out");
    let at = d.path().join("at");
    fs::create_dir_all(at.join("out/deep")).unwrap();
    // Names as attach gives them: .strata-tmp-<pid>-<hex nanos>-<counter>.
    fs::write(at.join(".strata-tmp-4242-1a2b3c-0"), "half").unwrap();
    fs::write(at.join("out/deep/.strata-tmp-4242-1a2b3c-17"), "half").unwrap();
    std::os::unix::fs::symlink("nowhere", at.join("out/.strata-tmp-99-ff-3")).unwrap();
    // Not ours: other names, and a directory.
    fs::write(at.join("out/.strata-tmp-notes"), "mine").unwrap();
    fs::create_dir_all(at.join("out/.strata-tmp-1-a-2")).unwrap();
    // The staging directory an attach into an empty target builds in, at
    // the top (and only there: below, a directory of that name is the user's).
    fs::create_dir_all(at.join(".strata-staging-4242-1a2b3c-5/out/deep")).unwrap();
    fs::write(at.join(".strata-staging-4242-1a2b3c-5/out/deep/f"), "h").unwrap();
    fs::create_dir_all(at.join("out/.strata-staging-4242-1a2b3c-6")).unwrap();

    let report: Value = c.attach("r", "b", &at);
    assert_eq!(report["stale_temp_files_removed"], 4, "{report}");
    assert!(!at.join(".strata-staging-4242-1a2b3c-5").exists());
    assert!(at.join("out/.strata-staging-4242-1a2b3c-6").is_dir());
    assert!(!at.join(".strata-tmp-4242-1a2b3c-0").exists());
    assert!(!at.join("out/deep/.strata-tmp-4242-1a2b3c-17").exists());
    assert!(fs::symlink_metadata(at.join("out/.strata-tmp-99-ff-3")).is_err());
    assert_eq!(fs::read(at.join("out/.strata-tmp-notes")).unwrap(), b"mine");
    assert!(at.join("out/.strata-tmp-1-a-2").is_dir());
    assert_eq!(fs::read(at.join("out/deep/f")).unwrap(), b"f");
}

fn path(s: &str) -> RelPath {
    RelPath::new(s.as_bytes().to_vec()).unwrap()
}

/// Uploads, as a crafted client would, a manifest whose file names a
/// chunk never uploaded: the manifest's own chunks in a pack, then its
/// root. Returns the manifest id.
fn upload_hollow_manifest(http: &HttpStore) -> strata_store::ManifestId {
    let absent = ChunkId::of(b"bytes nobody uploaded");
    let entry = |p: &str, kind| Entry {
        path: path(p),
        mode: 0o644,
        mtime: Mtime::default(),
        kind,
    };
    let manifest = Manifest {
        entries: vec![
            entry("out", EntryKind::Dir),
            entry(
                "out/secret",
                EntryKind::File {
                    size: 21,
                    chunks: vec![ChunkRef {
                        id: absent,
                        len: 21,
                    }],
                },
            ),
        ],
    };
    let (id, body) = manifest.encode();
    let chunk = ChunkId::of(&body);
    let mut frame = FrameBuilder::default();
    frame.push(chunk, &body);
    let mut pack = PackBuilder::new();
    pack.push(frame.seal(&mut zstd::bulk::Compressor::new(3).unwrap()));
    let (pack_id, pack_bytes, _) = pack.finish();
    http.put(&pack_key(&pack_id), &pack_bytes).unwrap();
    let root = ManifestRoot {
        len: body.len() as u64,
        chunks: vec![ChunkRef {
            id: chunk,
            len: body.len() as u32,
        }],
    };
    http.put(&manifest_key(&id), &root.encode()).unwrap();
    id
}

// A client uploads a manifest and a layer ref (or a cache entry) but not
// the packs holding the files' chunks: the server refuses the ref (409,
// read back as Incomplete), naming the missing chunk, and no layer becomes
// visible.
#[test]
fn the_server_refuses_a_ref_to_data_it_does_not_hold() {
    let d = tempfile::tempdir().unwrap();
    let server = Server::start(d.path().join("srv").to_str().unwrap(), &[], &[]);
    let client = Client::new(&server.ns("team"), &d.path().join("cache"));
    client.ok(&["run", "create", "--run", "r", "--job", "a", "--job", "b:a"]);
    let http = HttpStore::new(&server.ns("team"), HttpOptions::default()).unwrap();
    let manifest = upload_hollow_manifest(&http);
    let totals = Totals {
        files: 1,
        dirs: 1,
        bytes: 21,
        ..Totals::default()
    };
    let layer = LayerRecord {
        manifest,
        created: 1_790_000_000,
        totals,
        writer: None,
    }
    .encode();
    let err = http
        .put("runs/r/layers/a/0000000001-00ff00ff00ff00ff", &layer)
        .unwrap_err();
    // The server's Incomplete, read back as itself (docs/protocol.md, "Errors").
    assert_eq!(err.kind(), strata_store::ErrorKind::Incomplete, "{err}");
    let err = err.to_string();
    let absent = ChunkId::of(b"bytes nobody uploaded");
    assert!(
        err.contains(&absent.to_hex()) && err.contains("out/secret"),
        "{err}"
    );
    let ls = client.json(&["ls", "--run", "r"]);
    assert!(ls.to_string().contains("\"layers\":[]"), "{ls}");
    assert!(!http
        .exists("runs/r/layers/a/0000000001-00ff00ff00ff00ff")
        .unwrap());

    let entry = CacheRecord {
        key: "deps".into(),
        manifest,
        created: 1_790_000_000,
        totals,
    }
    .encode();
    let key = format!(
        "{}/001790000000-00ff00ff00ff00ff",
        cache_prefix(&hex_key("deps"))
    );
    let err = http.put(&key, &entry).unwrap_err();
    assert_eq!(err.kind(), strata_store::ErrorKind::Incomplete, "{err}");
    assert!(err.to_string().contains(&absent.to_hex()), "{err}");
    let restored = client.json(&[
        "cache",
        "restore",
        "--key",
        "deps",
        "--at",
        d.path().join("r").to_str().unwrap(),
    ]);
    assert!(restored["matched"].is_null(), "{restored}");
}

// `rerun --from r1 --run r1`, and a rerun into a run that already holds
// other work, are refused naming the run; nothing is written.
#[test]
fn a_rerun_into_itself_or_into_another_runs_work_is_refused() {
    let (d, c) = local();
    let src = d.path().join("src");
    fs::create_dir_all(src.join("out")).unwrap();
    fs::write(src.join("out/f"), "a's").unwrap();
    c.persist("r", "a", &src, "out");
    c.ok(&[
        "job", "finish", "--run", "r", "--job", "a", "--status", "success",
    ]);

    let err = c.fails(&["run", "rerun", "--from", "r", "--run", "r", "--jobs", "b"]);
    assert!(
        err.contains("cannot rerun into run r") && err.contains("itself"),
        "{err}"
    );
    let ls = c.json(&["ls", "--run", "r"]);
    assert!(ls["rerun_of"].is_null(), "{ls}");

    // r2 exists with a layer of its own for job a.
    c.ok(&["run", "create", "--run", "r2", "--job", "a", "--job", "b:a"]);
    fs::write(src.join("out/f"), "r2's own").unwrap();
    c.persist("r2", "a", &src, "out");
    let err = c.fails(&["run", "rerun", "--from", "r", "--run", "r2", "--jobs", "b"]);
    assert!(
        err.contains("cannot rerun into run r2") && err.contains("other content"),
        "{err}"
    );
    // r3 holds a layer of the job the rerun would run again.
    c.ok(&["run", "create", "--run", "r3", "--job", "a", "--job", "b:a"]);
    c.persist("r3", "a", &src, "out");
    let err = c.fails(&["run", "rerun", "--from", "r", "--run", "r3", "--jobs", "a"]);
    assert!(err.contains("cannot rerun into run r3"), "{err}");

    // A rerun run again with the same arguments (interrupted, or repeated)
    // is still fine, and so is a rerun into a new run.
    c.ok(&["run", "rerun", "--from", "r", "--run", "r4", "--jobs", "b"]);
    c.ok(&["run", "rerun", "--from", "r", "--run", "r4", "--jobs", "b"]);
    let at = d.path().join("at");
    c.attach("r4", "b", &at);
    assert_eq!(fs::read(at.join("out/f")).unwrap(), b"a's");
    // r4 is now a rerun of r: a rerun into it from another run is refused.
    let err = c.fails(&["run", "rerun", "--from", "r2", "--run", "r4", "--jobs", "b"]);
    assert!(
        err.contains("cannot rerun into run r4") && err.contains("already a rerun of r"),
        "{err}"
    );
}
