//! The server's one way to say something: every line it logs (requests,
//! scheduled gc) goes through `line`, to stderr, prefixed `strata serve:`.
//! Library code never prints; the server logs what the library returns.

/// Logs one line. Control characters (a newline in a key a client sent)
/// are escaped, so no client can forge a line.
pub(crate) fn line(what: std::fmt::Arguments<'_>) {
    eprintln!("strata serve: {}", escape(&what.to_string()));
}

fn escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c.is_control() {
            true => c.escape_default().collect::<Vec<_>>(),
            false => vec![c],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            super::escape("PUT a/x\nstrata serve: FORGED\r\u{1b}[2J"),
            "PUT a/x\\nstrata serve: FORGED\\r\\u{1b}[2J"
        );
    }
}
