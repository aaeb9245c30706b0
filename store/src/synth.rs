//! Generated `node_modules`-like trees, for the demo, tests and the
//! benchmark's `--synthetic` scale runs.
//!
//! Deterministic for a given seed. The size mix follows a real Next.js
//! `node_modules` (82% of files under 4 KiB, a long tail up to 2 MiB),
//! and contents are JavaScript-like text, so they compress about as well
//! as real code. Knows nothing about stores.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// splitmix64: small, fast, and good enough to shape test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (the same seed, the same numbers).
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

const WORDS: &[&str] = &[
    "function",
    "return",
    "const",
    "let",
    "var",
    "if",
    "else",
    "for",
    "while",
    "this",
    "module",
    "exports",
    "require",
    "undefined",
    "null",
    "true",
    "false",
    "new",
    "typeof",
    "props",
    "state",
    "value",
    "options",
    "callback",
    "error",
    "result",
    "buffer",
    "length",
    "index",
    "object",
    "string",
    "number",
    "promise",
    "resolve",
    "reject",
    "async",
    "await",
    "default",
    "import",
    "from",
    "export",
    "class",
    "extends",
    "super",
    "constructor",
];

/// A file size drawn from the `node_modules` mix: 82% under 4 KiB, a mean
/// near next-a's 11.5 KiB (391 MiB over 34k files).
fn file_size(rng: &mut Rng) -> u64 {
    match rng.range(0, 1000) {
        0..=499 => rng.range(60, 1500),
        500..=819 => rng.range(1500, 4096),
        820..=964 => rng.range(4096, 32 << 10),
        965..=997 => rng.range(32 << 10, 256 << 10),
        _ => rng.range(256 << 10, 2 << 20),
    }
}

/// JavaScript-like text of exactly `size` bytes.
pub fn js_text(rng: &mut Rng, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(size as usize + 32);
    while (out.len() as u64) < size {
        let w = WORDS[rng.range(0, WORDS.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        match rng.range(0, 12) {
            0 => out.extend_from_slice(b";\n"),
            1 => out.extend_from_slice(format!("_{:x}", rng.range(0, 4096)).as_bytes()),
            2 => out.extend_from_slice(b"("),
            3 => out.extend_from_slice(b") {\n  "),
            _ => out.push(b' '),
        }
    }
    out.truncate(size as usize);
    out
}

/// What a generated tree holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Writes about `files` files under `root/node_modules`.
pub fn generate(root: &Path, files: u64, seed: u64) -> io::Result<Summary> {
    generate_capped(root, files, seed, u64::MAX)
}

/// `generate` with no file larger than `max_size` bytes: the same paths,
/// for a tree of many files that fits a small disk.
pub fn generate_capped(root: &Path, files: u64, seed: u64, max_size: u64) -> io::Result<Summary> {
    let mut rng = Rng::new(seed);
    let mut summary = Summary::default();
    let mut pkg = 0u64;
    while summary.files < files {
        let dir = root.join(format!("node_modules/pkg-{pkg:05}"));
        fs::create_dir_all(dir.join("lib"))?;
        let manifest = format!(
            "{{\n  \"name\": \"pkg-{pkg:05}\",\n  \"version\": \"1.{}.0\",\n  \"main\": \"lib/index.js\"\n}}\n",
            rng.range(0, 30)
        );
        fs::write(dir.join("package.json"), &manifest)?;
        summary.files += 1;
        summary.bytes += manifest.len() as u64;
        let n = rng.range(3, 20).min(files - summary.files);
        for f in 0..n {
            let size = file_size(&mut rng).min(max_size);
            fs::write(dir.join(format!("lib/m{f}.js")), js_text(&mut rng, size))?;
            summary.files += 1;
            summary.bytes += size;
        }
        pkg += 1;
    }
    Ok(summary)
}

/// Changes a tree the way a dependency bump does: rewrites about
/// `fraction` of the files under `root` (some in place, some appended to)
/// and adds one new package. Returns the files touched.
pub fn mutate(root: &Path, fraction: f64, seed: u64) -> io::Result<Vec<PathBuf>> {
    let mut rng = Rng::new(seed);
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    files.sort();
    let mut touched = Vec::new();
    for f in &files {
        if (rng.range(0, 1_000_000) as f64) < fraction * 1_000_000.0 {
            let mut data = fs::read(f)?;
            if data.len() > 64 && rng.range(0, 2) == 0 {
                let at = rng.range(0, data.len() as u64) as usize;
                data.splice(at..at, b"/* patched */".iter().copied());
            } else {
                data.extend_from_slice(&js_text(&mut rng, 200));
            }
            fs::write(f, data)?;
            touched.push(f.clone());
        }
    }
    let dir = root.join(format!("node_modules/new-{seed:x}"));
    fs::create_dir_all(&dir)?;
    let p = dir.join("index.js");
    let size = file_size(&mut rng);
    fs::write(&p, js_text(&mut rng, size))?;
    touched.push(p);
    Ok(touched)
}
