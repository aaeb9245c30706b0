//! The web page's token on the wire (docs/deploy.md, "The web page"): the
//! login form's body, the `Set-Cookie` value that keeps the token, and the
//! token read back from a request's `Cookie` headers. It parses and
//! formats; which tokens are valid is the server's and `access`'s to say.

/// The cookie the page keeps the token in.
pub const COOKIE: &str = "strata_token";

/// The longest token the form takes, in bytes.
pub const MAX_TOKEN: usize = 4096;

/// Whether `b` may appear in a cookie's value (RFC 6265, section 4.1.1,
/// `cookie-octet`): printable ASCII but space, `"`, `,`, `;` and `\`. A
/// token holding any other byte cannot be kept in a cookie without
/// changing its meaning (a `;` would start an attribute of its own).
pub fn cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// The token of a login form's body, `token=…` (the form posts
/// `text/plain`, so there is nothing to decode), surrounding whitespace
/// ignored. `None` for any other body, an empty token, one longer than
/// `MAX_TOKEN`, or one with a byte no cookie value may hold.
pub fn login_token(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    let token = text.trim().strip_prefix("token=")?.trim();
    let fits = !token.is_empty() && token.len() <= MAX_TOKEN;
    (fits && token.bytes().all(cookie_octet)).then_some(token)
}

/// The `Set-Cookie` value that keeps `token` (from `login_token`) for the
/// page's paths: `HttpOnly`, `SameSite=Strict`, and `Secure` when the page
/// is served over HTTPS.
pub fn set_cookie(token: &str, secure: bool) -> String {
    debug_assert!(token.bytes().all(cookie_octet));
    format!(
        "{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The token in a request's `Cookie` header values (`name=value` pairs
/// separated by `;`): the first `strata_token` whose value is a token
/// `login_token` would take.
pub fn cookie_token<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    headers
        .into_iter()
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .find(|t| !t.is_empty() && t.len() <= MAX_TOKEN && t.bytes().all(cookie_octet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_body_gives_the_token() {
        assert_eq!(
            login_token(b"token=abc.DEF-123_x\r\n"),
            Some("abc.DEF-123_x")
        );
        assert_eq!(login_token(b"  token= s3cret \n"), Some("s3cret"));
        assert_eq!(login_token(b"token="), None);
        assert_eq!(login_token(b"tok=abc"), None);
        assert_eq!(login_token(b"token=\xff\xfe"), None);
        let long = format!("token={}", "a".repeat(MAX_TOKEN + 1));
        assert_eq!(login_token(long.as_bytes()), None);
    }

    // A token that would add attributes to the cookie the server sets
    // (RFC 6265: `;` separates attributes; space, `"`, `,` and `\` are not
    // cookie octets) is no token.
    #[test]
    fn a_token_that_would_change_the_cookie_is_refused() {
        for body in [
            &b"token=x; Domain=example.com; Path=/"[..],
            b"token=x;Max-Age=999999999",
            b"token=a b",
            b"token=a,b",
            b"token=\"a\"",
            b"token=a\\b",
        ] {
            assert_eq!(login_token(body), None, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn the_cookie_round_trips() {
        let set = set_cookie("tok-1", true);
        assert_eq!(
            set,
            "strata_token=tok-1; Path=/ui; HttpOnly; SameSite=Strict; Secure"
        );
        let value = set.split(';').next().unwrap();
        assert_eq!(cookie_token([value]), Some("tok-1"));
        assert_eq!(
            cookie_token(["a=1; strata_tokenx=2", "b=2;strata_token=tok-2"]),
            Some("tok-2")
        );
        assert_eq!(cookie_token(["strata_token="]), None);
        assert_eq!(cookie_token(["other=1"]), None);
    }
}
