//! Measures chunker parameters on a real tree and its next version:
//! `cargo run --release -p strata-store --example chunk_sizes -- BASE NEXT`.
//! For each candidate (min/avg/max) it prints the chunks of BASE, the bytes
//! of NEXT's chunks that BASE lacks (what a next-run persist uploads), and
//! BASE's size with every chunk compressed on its own (the store's size).
//! docs/format.md records the result that chose the defaults.

use std::collections::HashSet;
use std::path::Path;

use rayon::prelude::*;
use strata_store::format::chunking::{chunk_slice, ChunkerParams};
use strata_store::ChunkId;

fn files(root: &Path) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

fn chunks(root: &Path, p: ChunkerParams, compress: bool) -> Vec<(ChunkId, u64, u64)> {
    files(root)
        .par_iter()
        .flat_map_iter(|f| {
            let data = std::fs::read(f).unwrap_or_default();
            let mut out = vec![];
            chunk_slice(&data, p, &mut |id, b| {
                let z = if compress {
                    zstd::bulk::compress(b, 3).unwrap().len().min(b.len())
                } else {
                    0
                };
                out.push((id, b.len() as u64, z as u64));
                Ok(())
            })
            .unwrap();
            out
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (base, next) = (Path::new(&args[1]), Path::new(&args[2]));
    println!("| min / avg / max | chunks (base) | unique stored (base, zstd per chunk) | next: new chunk bytes |");
    println!("|---|---|---|---|");
    for (min, avg, max) in [
        (4, 16, 64),
        (8, 32, 128),
        (16, 64, 256),
        (32, 128, 512),
        (64, 256, 1024),
    ] {
        let p = ChunkerParams {
            min: min << 10,
            avg: avg << 10,
            max: max << 10,
        };
        let a = chunks(base, p, true);
        let mut seen = HashSet::new();
        let stored: u64 = a.iter().filter(|c| seen.insert(c.0)).map(|c| c.2).sum();
        let b = chunks(next, p, false);
        let mut fresh = HashSet::new();
        let new_bytes: u64 = b
            .iter()
            .filter(|c| !seen.contains(&c.0) && fresh.insert(c.0))
            .map(|c| c.1)
            .sum();
        println!(
            "| {min} / {avg} / {max} KiB | {} | {:.1} MiB | {:.2} MiB |",
            a.len(),
            stored as f64 / 1048576.0,
            new_bytes as f64 / 1048576.0
        );
    }
}
