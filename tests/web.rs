//! The web page (issue 32): a real headless Chromium, started by the test
//! with a fresh profile, opens each page of a server that holds a run;
//! the pages list the run, its job, its files; a file and a directory's
//! `.tar.zst` and `.zip` download byte-identical to what was persisted; a path and a
//! cache key holding `<script>` are shown as text. Each page's screenshot
//! is kept under target/ui-screenshots/.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::http::{bearer, request};
use crate::support::{write_files, Client, Server};

const READ: &str = "a-read-token-0123456789";
const WRITE: &str = "a-write-token-0123456789";
const OTHER: &str = "b-read-token-0123456789";

const SCRIPT_FILE: &str = "<script>alert(1)<b>.txt";

/// Chromium, or why it cannot run here (a failure under `CI=true`).
fn chromium() -> Option<&'static str> {
    let bin = "/usr/bin/chromium";
    if Path::new(bin).exists() {
        return Some(bin);
    }
    let why = "no /usr/bin/chromium (apt-get install -y chromium chromium-driver)";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the web page's browser tests cannot run, and CI=true requires them: {why}");
    }
    eprintln!("skipped: {why}");
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests");
    let line = format!("web: {why}\n");
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    f.write_all(line.as_bytes()).unwrap();
    None
}

/// Where screenshots go (kept as the test's artifacts).
fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Chromium's DOM of `url` after it loaded, and a screenshot of it as
/// `name.png`; each run with a fresh profile and bounded in time.
fn browse(bin: &str, url: &str, name: &str) -> String {
    let run = |extra: &[String]| {
        let profile = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(bin);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1100,800",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("chromium starts");
        let started = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("chromium did not finish {url} within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let png = shots().join(format!("{name}.png"));
    let _ = std::fs::remove_file(&png);
    run(&[format!("--screenshot={}", png.display())]);
    assert!(
        png.metadata().is_ok_and(|m| m.len() > 1000),
        "no screenshot of {url}"
    );
    let dom = run(&["--dump-dom".to_string()]);
    assert!(dom.contains("</html>"), "{url}: {dom}");
    dom
}

/// The `href`s of a DOM that contain `part` (`&amp;` read back as `&`).
fn links(dom: &str, part: &str) -> Vec<String> {
    dom.split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(|h| h.replace("&amp;", "&"))
        .filter(|h| h.contains(part))
        .collect()
}

fn store(dir: &Path) -> (Server, PathBuf) {
    let src = dir.join("src");
    write_files(
        &src,
        &[
            ("app/bin/tool", "#!/bin/sh\necho tool\n"),
            ("app/lib/a.txt", "alpha\n"),
            ("app/README", "the app\n"),
        ],
    );
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.join("app/lib/big.bin"), &big).unwrap();
    std::fs::write(src.join("app").join(SCRIPT_FILE), "x\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        src.join("app/bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let s = Server::start(dir.join("srv").to_str().unwrap(), &[], &[]);
    let c = Client::new(&s.ns("a"), &dir.join("cache"));
    c.ok(&[
        "run",
        "create",
        "--run",
        "r1",
        "--job",
        "build",
        "--job",
        "test:build",
    ]);
    c.persist("r1", "build", &src, "app");
    // The same files again: all logical, nothing new stored.
    c.ok(&["run", "create", "--run", "r2", "--job", "build"]);
    c.persist("r2", "build", &src, "app");
    c.ok(&[
        "cache",
        "save",
        "--key",
        "deps-<script>-1",
        "--root",
        src.to_str().unwrap(),
        "app/lib",
    ]);
    (s, src)
}

// Someone opens the page of a server holding a run, walks to a file and
// downloads it and a directory.
#[test]
fn a_browser_walks_namespaces_runs_layers_and_files() {
    let Some(bin) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (s, src) = store(dir.path());

    let home = browse(bin, &format!("{}/ui", s.url), "1-namespaces");
    assert!(home.contains(">a</a>"), "{home}");
    let ns = browse(bin, &format!("{}/ui/ns/a", s.url), "2-namespace");
    assert!(ns.contains(">r1</a>"), "{ns}");
    assert!(ns.contains("<svg"), "{ns}");
    // r1 stored its files' chunks; r2, holding the same ones, nothing.
    assert!(
        ns.contains("<td>r2</td><td class=\"n\">2.9 MiB</td><td class=\"n\">0 B</td>"),
        "{ns}"
    );
    assert!(
        !ns.contains("<td>r1</td><td class=\"n\">2.9 MiB</td><td class=\"n\">0 B</td>"),
        "{ns}"
    );
    // The cache key is text, not markup.
    assert!(ns.contains("deps-&lt;script&gt;-1"), "{ns}");
    let run = browse(bin, &format!("{}/ui/ns/a/run/r1", s.url), "3-run");
    assert!(run.contains(">build<") && run.contains(">test<"), "{run}");
    let layer = links(&run, "/layer/");
    assert_eq!(layer.len(), 1, "{run}");
    let root = browse(bin, &format!("{}{}", s.url, layer[0]), "4-layer");
    assert!(root.contains(">app/</a>"), "{root}");
    let app_url = &links(&root, "path=app")[0];
    let app = browse(bin, &format!("{}{app_url}", s.url), "5-directory");
    assert!(app.contains("README") && app.contains("755"), "{app}");
    // The path holding <script> is shown as text: no script element.
    assert!(app.contains("&lt;script&gt;alert(1)&lt;b&gt;.txt"), "{app}");
    assert!(!app.contains("<script"), "{app}");

    // A file, and the directory as a .tar.zst, byte for byte.
    let lib_url = &links(&app, "path=app%2Flib")[0];
    let lib = browse(bin, &format!("{}{lib_url}", s.url), "6-files");
    let big_url = &links(&lib, "big.bin")[0];
    let got = request(&s.url, "GET", big_url, &[], b"");
    assert_eq!(got.status, 200);
    assert!(got.body == std::fs::read(src.join("app/lib/big.bin")).unwrap());
    let tar_url = &links(&app, "/tar/")[0];
    let got = request(&s.url, "GET", tar_url, &[], b"");
    assert_eq!(got.status, 200);
    let tar = zstd::decode_all(&got.body[..]).unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let mut files = 0;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        let on_disk = src.join("app").join(&path);
        if entry.header().entry_type().is_file() {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            assert!(
                bytes == std::fs::read(&on_disk).unwrap(),
                "{}",
                path.display()
            );
            use std::os::unix::fs::PermissionsExt;
            let mode = on_disk.metadata().unwrap().permissions().mode() & 0o7777;
            assert_eq!(entry.header().mode().unwrap(), mode, "{}", path.display());
            files += 1;
        }
    }
    assert_eq!(files, 5);
    let zip_url = &links(&app, "/zip/")[0];
    let got = request(&s.url, "GET", zip_url, &[], b"");
    assert_eq!(got.status, 200);
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(got.body)).unwrap();
    let mut files = 0;
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        if f.is_file() {
            let name = f.name().unwrap().into_owned();
            let on_disk = src.join("app").join(&name);
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut bytes).unwrap();
            assert!(bytes == std::fs::read(&on_disk).unwrap(), "{name}");
            use std::os::unix::fs::PermissionsExt;
            let mode = on_disk.metadata().unwrap().permissions().mode() & 0o7777;
            assert_eq!(f.unix_mode().unwrap() & 0o7777, mode, "{name}");
            files += 1;
        }
    }
    assert_eq!(files, 5);
}

// Behind tokens: no token gets the form; a token of another namespace
// 403; the form's token becomes an HttpOnly, SameSite=Strict cookie that
// opens the pages.
#[test]
fn the_page_asks_for_a_token_and_keeps_it_in_a_strict_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("server.yaml");
    std::fs::write(
        &auth,
        format!(
            "tokens:\n\
             - {{name: r, token: {READ}, namespace: a, scope: read}}\n\
             - {{name: w, token: {WRITE}, namespace: a, scope: write}}\n\
             - {{name: o, token: {OTHER}, namespace: b, scope: read}}\n"
        ),
    )
    .unwrap();
    let s = Server::start(
        dir.path().join("srv").to_str().unwrap(),
        &["--config", auth.to_str().unwrap()],
        &[],
    );
    let c = Client::new(&s.ns("a"), &dir.path().join("cache")).with_token(WRITE);
    c.ok(&["run", "create", "--run", "r1", "--job", "build"]);

    let anon = request(&s.url, "GET", "/ui/ns/a", &[], b"");
    assert_eq!(anon.status, 401);
    assert!(anon.text().contains("<form"), "{}", anon.text());
    assert!(!anon.text().contains("r1"));
    let other = request(&s.url, "GET", "/ui/ns/a", &bearer(OTHER), b"");
    assert_eq!(other.status, 403);
    let wrong = request(
        &s.url,
        "POST",
        "/ui/login",
        &[],
        b"token=not-a-known-token-at-all",
    );
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    let login = request(
        &s.url,
        "POST",
        "/ui/login",
        &[],
        format!("token={READ}\r\n").as_bytes(),
    );
    assert_eq!(login.status, 303);
    let cookie = login.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let page = request(&s.url, "GET", "/ui/ns/a", &[format!("Cookie: {pair}")], b"");
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains(">r1</a>"));
}

// A form posted from another site cannot make the server set a cookie
// with attributes of the sender's choosing: a token with `;` (or any byte
// that is no cookie octet) is refused, on an open server too.
#[test]
fn the_login_form_refuses_a_token_that_would_add_cookie_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path().join("srv").to_str().unwrap(), &[], &[]);
    for body in [
        &b"token=x;Domain=example.com;Path=/;Max-Age=99999999"[..],
        b"token=x,y",
        b"token=a b",
    ] {
        let login = request(&s.url, "POST", "/ui/login", &[], body);
        assert_eq!(login.status, 401, "{}", String::from_utf8_lossy(body));
        assert!(
            login.header("set-cookie").is_none(),
            "{:?}",
            login.header("set-cookie")
        );
    }
    let login = request(&s.url, "POST", "/ui/login", &[], b"token=plain-token");
    assert_eq!(login.status, 303);
    assert_eq!(
        login.header("set-cookie").unwrap(),
        "strata_token=plain-token; Path=/ui; HttpOnly; SameSite=Strict"
    );
}
