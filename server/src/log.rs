//! The server's one way to say something: every line it logs (requests,
//! scheduled gc) goes through `line`, to stderr, prefixed `strata serve:`.
//! Library code never prints; the server logs what the library returns.

/// Logs one line.
pub(crate) fn line(what: std::fmt::Arguments<'_>) {
    eprintln!("strata serve: {what}");
}
