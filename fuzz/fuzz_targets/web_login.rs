//! The web page's login body and cookies (`protocol::web`): a body the
//! form accepts gives a token whose cookie has exactly the server's own
//! attributes and reads back as the same token; a `Cookie` header of any
//! bytes yields only a token the form would accept.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::protocol::web::{cookie_octet, cookie_token, login_token, set_cookie, MAX_TOKEN};

fuzz_target!(|data: &[u8]| {
    if let Some(token) = login_token(data) {
        assert!(!token.is_empty() && token.len() <= MAX_TOKEN);
        for secure in [false, true] {
            let cookie = set_cookie(token, secure);
            let parts: Vec<&str> = cookie.split(';').map(str::trim).collect();
            let mut want = vec!["Path=/ui", "HttpOnly", "SameSite=Strict"];
            if secure {
                want.push("Secure");
            }
            assert_eq!(parts[1..], want[..], "{cookie}");
            assert_eq!(cookie_token([parts[0]]), Some(token));
        }
    }
    let text = String::from_utf8_lossy(data);
    if let Some(token) = cookie_token(text.split('\n')) {
        assert!(!token.is_empty() && token.len() <= MAX_TOKEN);
        assert!(token.bytes().all(cookie_octet), "{token:?}");
        assert_eq!(login_token(format!("token={token}").as_bytes()), Some(token));
    }
});
