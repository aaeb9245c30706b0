//! Small helpers every layer may use: names and bytes that no other
//! thread, process or machine picks (temporary file names, nonces, pack
//! salts), the clock every record's time comes from, `Buffers`, a
//! bounded pool of reusable buffers for work in flight, and
//! `yield_to_small_jobs`, the CPU priority of bulk work, and
//! `write_in_pieces`, the size of the calls that write a buffer to a file,
//! and the modes strata's own files and directories get (`private_dir`,
//! `private_file`). Knows nothing about stores, objects or files' contents.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// At most `n` byte buffers out at once: `take` waits while all are out;
/// a `Buffer` goes back when dropped, keeping its memory for the next
/// taker. Bounds what a pipeline holds in flight, and spares it a fresh
/// allocation (and the kernel's zeroing of fresh pages) for every batch.
/// Shared through an `Arc` so a buffer can travel with its work, across
/// threads.
#[derive(Debug)]
pub(crate) struct Buffers {
    /// Buffers not out (at most `n`) and how many more may be made.
    free: Mutex<(Vec<Vec<u8>>, usize)>,
    freed: Condvar,
}

/// A buffer of `Buffers`, held until dropped. Its bytes are whatever the
/// last holder left (its length too): only a holder's own writes mean
/// anything to it.
#[derive(Debug)]
pub(crate) struct Buffer {
    pub(crate) bytes: Vec<u8>,
    home: Arc<Buffers>,
}

impl Buffers {
    pub(crate) fn new(n: usize) -> Arc<Buffers> {
        Arc::new(Buffers {
            free: Mutex::new((Vec::new(), n.max(1))),
            freed: Condvar::new(),
        })
    }

    /// Waits for a buffer and takes it.
    pub(crate) fn take(self: &Arc<Self>) -> Buffer {
        let mut free = self.free.lock().expect("poisoned");
        loop {
            if let Some(bytes) = free.0.pop() {
                return Buffer {
                    bytes,
                    home: self.clone(),
                };
            }
            if free.1 > 0 {
                free.1 -= 1;
                return Buffer {
                    bytes: Vec::new(),
                    home: self.clone(),
                };
            }
            free = self.freed.wait(free).expect("poisoned");
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        self.home.free.lock().expect("poisoned").0.push(bytes);
        self.home.freed.notify_one();
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name for a temporary file that no other thread or process uses:
/// `<prefix><pid>-<hex nanos>-<counter>`.
pub(crate) fn unique_tmp_name(prefix: &str) -> String {
    TmpNames::reserve(prefix, 1).name(0)
}

/// `count` names like `unique_tmp_name`'s, reserved at once and made when
/// asked: a million files being written need not hold a million names.
#[derive(Debug)]
pub(crate) struct TmpNames {
    prefix: String,
    first: u64,
    count: u64,
}

impl TmpNames {
    pub(crate) fn reserve(prefix: &str, count: usize) -> TmpNames {
        let first = COUNTER.fetch_add(count as u64, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        TmpNames {
            prefix: format!("{prefix}{}-{nanos:x}-", std::process::id()),
            first,
            count: count as u64,
        }
    }

    /// The `i`th name reserved.
    pub(crate) fn name(&self, i: usize) -> String {
        assert!(
            (i as u64) < self.count,
            "only {} names reserved",
            self.count
        );
        format!("{}{}", self.prefix, self.first + i as u64)
    }
}

/// 32 bytes no other call returns: the OS's randomness mixed with the
/// time, the process id and a counter (so two processes, or a machine
/// without `/dev/urandom`, never pick the same).
pub(crate) fn random_bytes() -> [u8; 32] {
    let mut seed = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut seed);
    }
    let mut h = blake3::Hasher::new();
    h.update(&seed);
    h.update(&std::process::id().to_le_bytes());
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(&t.as_nanos().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    *h.finalize().as_bytes()
}

/// 64 random bits as 16 hex digits, for keys only one writer uses.
pub fn nonce() -> String {
    let b = random_bytes();
    let mut s = String::with_capacity(16);
    for x in &b[..8] {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_write_goes_in_small_calls() {
        struct Calls(Vec<usize>, Vec<u8>);
        impl std::io::Write for Calls {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.push(buf.len());
                self.1.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let data: Vec<u8> = (0..2 * WRITE_PIECE + 7).map(|i| i as u8).collect();
        let mut w = Calls(Vec::new(), Vec::new());
        write_in_pieces(&mut w, &data).unwrap();
        assert_eq!(w.0, [WRITE_PIECE, WRITE_PIECE, 7]);
        assert_eq!(w.1, data);
    }

    #[test]
    fn buffers_bound_the_holders_and_come_back_with_their_memory() {
        let buffers = Buffers::new(2);
        let (mut a, b) = (buffers.take(), buffers.take());
        a.bytes.extend_from_slice(b"kept");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let buffers = buffers.clone();
            std::thread::spawn(move || {
                let c = buffers.take();
                tx.send(c.bytes.clone()).unwrap();
            })
        };
        // Both buffers are out: the third taker waits.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(50))
            .is_err());
        drop(a);
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a dropped buffer lets the waiter in");
        assert_eq!(got, b"kept", "the buffer came back, not a new one");
        waiter.join().unwrap();
        drop(b);
        let free = buffers.free.lock().unwrap();
        assert_eq!((free.0.len(), free.1), (2, 0));
    }

    #[test]
    fn bulk_work_lowers_its_priority_once_and_small_work_does_not() {
        use rustix::process::getpriority_process;
        // On a thread of its own: Linux keeps nice per thread.
        std::thread::spawn(|| {
            let before = getpriority_process(None).unwrap();
            yield_to_small_jobs(BULK_BYTES - 1);
            assert_eq!(getpriority_process(None).unwrap(), before);
            yield_to_small_jobs(BULK_BYTES);
            let after = getpriority_process(None).unwrap();
            assert_eq!(after, (before + BULK_NICE).min(19));
            let pool = rayon::broadcast(|_| getpriority_process(None).unwrap());
            assert!(pool.iter().all(|p| *p >= after), "{pool:?}");
            // Once per process: a second bulk job lowers nothing more.
            yield_to_small_jobs(BULK_BYTES);
            assert_eq!(getpriority_process(None).unwrap(), after);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn nonces_and_names_do_not_repeat() {
        let a: std::collections::HashSet<String> = (0..1000).map(|_| nonce()).collect();
        assert_eq!(a.len(), 1000);
        assert!(a.iter().all(|n| n.len() == 16));
        assert_ne!(unique_tmp_name("x"), unique_tmp_name("x"));
        assert_ne!(random_bytes(), random_bytes());
    }
}

/// Where a store gets the time (Unix seconds): retention, gc and records
/// all read it, so tests set it instead of waiting.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's clock.
    #[default]
    System,
    /// Always this instant (`$STRATA_NOW` in the CLI).
    Fixed(i64),
    /// Whatever the shared cell holds; a test moves it.
    Manual(Arc<std::sync::atomic::AtomicI64>),
    /// The Unix seconds a file holds, read at every call
    /// (`$STRATA_NOW=@FILE`): a test moves a server's clock from outside
    /// its process. An unreadable file reads as the system's clock.
    File(std::path::PathBuf),
}

impl Clock {
    /// Unix seconds.
    pub fn now(&self) -> i64 {
        match self {
            Clock::System => system_clock(),
            Clock::Fixed(t) => *t,
            Clock::Manual(t) => t.load(std::sync::atomic::Ordering::SeqCst),
            Clock::File(path) => std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or_else(system_clock),
        }
    }
}

/// Work of this many bytes or more is bulk work (`yield_to_small_jobs`).
pub const BULK_BYTES: u64 = 64 << 20;
/// How much lower bulk work's CPU priority is: at nice 5 a thread gets
/// about a third of the CPU time of one at nice 0 when both want it.
pub const BULK_NICE: i32 = 5;

/// Lowers the CPU priority (nice) of this thread, of threads it starts
/// from now on, and of rayon's pool by `BULK_NICE`, when `bytes` of work
/// is bulk work; once per process. On a busy runner a small attach then
/// gets most of the CPU while a large persist runs, shortest job first,
/// and a job alone still gets all of it (docs/architecture.md,
/// "Concurrency"). Best effort: a refused call changes nothing.
pub fn yield_to_small_jobs(bytes: u64) {
    static LOWERED: std::sync::Once = std::sync::Once::new();
    if bytes < BULK_BYTES {
        return;
    }
    LOWERED.call_once(|| {
        // Linux keeps a nice value per thread; `None` is the caller.
        let lower = || {
            use rustix::process::{getpriority_process, setpriority_process};
            if let Ok(nice) = getpriority_process(None) {
                let _ = setpriority_process(None, (nice + BULK_NICE).min(19));
            }
        };
        lower();
        rayon::broadcast(|_| lower());
    });
}

/// The system's time in Unix seconds (0 before 1970).
pub fn system_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The most one `write` call hands the kernel when a whole object is
/// written at once (`write_in_pieces`).
pub const WRITE_PIECE: usize = 512 << 10;

/// Writes `data` in pieces of at most `WRITE_PIECE` bytes. The kernel
/// sizes the page-cache folios of a buffered write by the length of the
/// call, and on the virtual machine the benchmarks run on, calls of 2 MiB
/// and more cost ten times the system time of the same bytes in calls of
/// 1 MiB or less (docs/benchmarks.md, "Packs written in 512 KiB calls").
/// The `zstd` command line writes 128 KiB at a time.
pub fn write_in_pieces(w: &mut impl std::io::Write, data: &[u8]) -> std::io::Result<()> {
    data.chunks(WRITE_PIECE)
        .try_for_each(|piece| w.write_all(piece))
}

/// Whether strata's own files may be shared with the group
/// (`set_group_access`).
static GROUP_ACCESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lets the group read and write what strata creates for itself (a store,
/// the runner's caches, temporary directories): directories 0770 and files
/// 0660 instead of 0700 and 0600, for a store that runners of several
/// users share through a group (`--group-access`). It sets the process's
/// umask to 007, so the group bits survive it; files a tree is attached
/// into keep their layer's modes either way.
pub fn set_group_access() {
    GROUP_ACCESS.store(true, Ordering::Relaxed);
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o007));
}

/// The mode of a directory strata creates for itself.
pub(crate) fn dir_mode() -> u32 {
    match GROUP_ACCESS.load(Ordering::Relaxed) {
        true => 0o770,
        false => 0o700,
    }
}

/// The mode of a file strata creates for itself.
pub(crate) fn file_mode() -> u32 {
    match GROUP_ACCESS.load(Ordering::Relaxed) {
        true => 0o660,
        false => 0o600,
    }
}

/// Creates `dir` and its missing parents, private to this user (or the
/// group, `set_group_access`): a store or cache holds every persisted
/// file's bytes, secrets included. Directories already there keep their
/// modes.
pub(crate) fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(dir_mode())
        .create(dir)
}

/// Opens a new file at `path` for writing, private as `private_dir`; one
/// already there is truncated.
pub(crate) fn private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(file_mode())
        .open(path)
}
