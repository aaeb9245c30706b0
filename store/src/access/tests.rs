//! The table of docs/deploy.md, "Who may do what", checked cell by cell
//! against the rules: every row, every kind of grant, every object kind.

use super::*;
use crate::format::keys::ObjectKind;
use crate::id::{IndexId, JobName, ManifestId, PackId, RunName};

const TABLE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/deploy.md"));

/// Every object kind; the match makes a new kind a compile error here
/// until it is placed in the table.
fn all_kinds() -> Vec<ObjectKind> {
    let run = RunName::new("r").unwrap();
    let job = JobName::new("j").unwrap();
    let kinds = vec![
        ObjectKind::Config,
        ObjectKind::Pack(PackId::of(b"p")),
        ObjectKind::Index(IndexId::of(b"i")),
        ObjectKind::Snapshot(IndexId::of(b"s")),
        ObjectKind::Manifest(ManifestId::of(b"m")),
        ObjectKind::Run(run.clone()),
        ObjectKind::Layer(run.clone(), job.clone()),
        ObjectKind::Result(run.clone(), job),
        ObjectKind::Used(run.clone()),
        ObjectKind::Rerun(run.clone()),
        ObjectKind::Expired(run),
        ObjectKind::Cache,
        ObjectKind::CacheUsed,
        ObjectKind::Condemned,
        ObjectKind::Deleted,
        ObjectKind::Lease,
    ];
    for k in &kinds {
        match k {
            ObjectKind::Config
            | ObjectKind::Pack(_)
            | ObjectKind::Index(_)
            | ObjectKind::Snapshot(_)
            | ObjectKind::Manifest(_)
            | ObjectKind::Run(_)
            | ObjectKind::Layer(..)
            | ObjectKind::Result(..)
            | ObjectKind::Used(_)
            | ObjectKind::Rerun(_)
            | ObjectKind::Expired(_)
            | ObjectKind::Cache
            | ObjectKind::CacheUsed
            | ObjectKind::Condemned
            | ObjectKind::Deleted
            | ObjectKind::Lease => {}
        }
    }
    kinds
}

/// The object kinds a `PUT` or `DELETE` row of the table names.
fn kinds_of(row: &str) -> Vec<ObjectKind> {
    let all = all_kinds();
    let pick = |f: &dyn Fn(&ObjectKind) -> bool| all.iter().filter(|k| f(k)).cloned().collect();
    match row {
        "`PUT runs/R/used/…`, `PUT cache-used/…` (uses)" => {
            pick(&|k| matches!(k, ObjectKind::Used(_) | ObjectKind::CacheUsed))
        }
        "`PUT packs/…`" => pick(&|k| matches!(k, ObjectKind::Pack(_))),
        "`PUT index/…`" => pick(&|k| matches!(k, ObjectKind::Index(_))),
        "`PUT manifests/…`" => pick(&|k| matches!(k, ObjectKind::Manifest(_))),
        "`PUT runs/R/run`" => pick(&|k| matches!(k, ObjectKind::Run(_))),
        "`PUT runs/R/layers/…`" => pick(&|k| matches!(k, ObjectKind::Layer(..))),
        "`PUT runs/R/results/…`" => pick(&|k| matches!(k, ObjectKind::Result(..))),
        "`PUT runs/R/rerun`" => pick(&|k| matches!(k, ObjectKind::Rerun(_))),
        "`PUT caches/…`" => pick(&|k| matches!(k, ObjectKind::Cache)),
        "`PUT config`, `runs/R/expired`, `snapshots/…`, `gc/…`" => pick(&|k| {
            matches!(
                k,
                ObjectKind::Config
                    | ObjectKind::Expired(_)
                    | ObjectKind::Snapshot(_)
                    | ObjectKind::Condemned
                    | ObjectKind::Deleted
                    | ObjectKind::Lease
            )
        }),
        "`DELETE runs/…`, `DELETE caches/…`, `DELETE cache-used/…`" => pick(&|k| {
            matches!(
                k,
                ObjectKind::Run(_)
                    | ObjectKind::Layer(..)
                    | ObjectKind::Result(..)
                    | ObjectKind::Used(_)
                    | ObjectKind::Rerun(_)
                    | ObjectKind::Expired(_)
                    | ObjectKind::Cache
                    | ObjectKind::CacheUsed
            )
        }),
        "`DELETE` anything else" => pick(&|k| {
            matches!(
                k,
                ObjectKind::Config
                    | ObjectKind::Pack(_)
                    | ObjectKind::Index(_)
                    | ObjectKind::Snapshot(_)
                    | ObjectKind::Manifest(_)
                    | ObjectKind::Condemned
                    | ObjectKind::Deleted
                    | ObjectKind::Lease
            )
        }),
        other => panic!("the table has a row this test does not know: {other}"),
    }
}

const MAIN: &str = "ref:refs/heads/main:";
const PR: &str = "ref:refs/pull/7/merge:";

/// The grant of each column but "none".
fn grant(column: &str) -> Grant {
    let limit = Some(vec!["ref:refs/pull/".to_string()]);
    if column == "CI identity (OIDC)" {
        // What `crate::oidc` grants a pull request's job of run "r",
        // step "j".
        let bound = |n: &str, from: &str| {
            Some(Bound {
                names: vec![n.to_string()],
                from: from.to_string(),
            })
        };
        return Grant {
            name: "oidc".into(),
            namespace: "ns".into(),
            role: Role::Write,
            runs: Some(vec![PR.to_string()]),
            cache_keys: Some(vec![PR.to_string()]),
            run_names: bound("r", "run_id r"),
            jobs: bound("j", "step_key j"),
        };
    }
    let (role, runs, cache_keys) = match column {
        "read" => (Role::Read, None, None),
        "write" => (Role::Write, None, None),
        "write, `runs:`" => (Role::Write, limit, None),
        "write, `cache_keys:`" => (Role::Write, None, limit),
        "admin" => (Role::Admin, None, None),
        "metrics" => (Role::Metrics, None, None),
        other => panic!("the table has a column this test does not know: {other}"),
    };
    Grant {
        name: column.into(),
        namespace: "ns".into(),
        role,
        runs,
        cache_keys,
        run_names: None,
        jobs: None,
    }
}

/// Whether `grant` (None: no token) may make the request of `row` when the
/// run it writes records `git_ref` and a cache key starts with it.
fn decide(grant: Option<&Grant>, row: &str, git_ref: &str) -> Vec<bool> {
    let one = |req: Request| -> bool {
        let Some(g) = grant else {
            return allow_anonymous(&req).is_ok();
        };
        let body = match req {
            Request::Put(ObjectKind::Run(_)) | Request::Put(ObjectKind::Rerun(_)) => {
                allow_run(g, "r", Some(git_ref))
            }
            Request::Put(ObjectKind::Layer(..)) | Request::Put(ObjectKind::Result(..)) => {
                allow_run(g, "r", Some(git_ref)).and_then(|_| allow_job(g, "r", "j"))
            }
            Request::Put(ObjectKind::Cache) => allow_cache_key(g, &format!("{git_ref}deps")),
            _ => Ok(()),
        };
        allow(g, "ns", &req).is_ok() && body.is_ok()
    };
    match row {
        "`GET /v1`" => vec![one(Request::ServerHello)],
        "`GET /v1/ns/N/`" => vec![one(Request::Hello)],
        "`GET /metrics`" => vec![one(Request::Metrics)],
        "`GET o/KEY`, `HEAD o/KEY` (any object)"
        | "`POST ranges`, `GET list`, `POST chunks/missing`, `POST chunks/locate`, `POST layers` (layer refs and their manifests), `GET stats`"
        | "`GET /ui/N/…` (the web page of namespace N, its downloads)" => {
            vec![one(Request::Read)]
        }
        "`GET footprints`" => vec![one(Request::Read)],
        "`POST gc?dry_run=true`" => vec![one(Request::Gc { dry_run: true })],
        "`POST remove?run=R`, `POST remove?cache_key=K`" => vec![one(Request::Remove)],
        "`POST gc`" => vec![one(Request::Gc { dry_run: false }) && gc_grace(None, 3600).is_ok()],
        "`POST gc?grace_secs=N`, N below the store's grace" => {
            vec![one(Request::Gc { dry_run: false }) && gc_grace(Some(0), 3600).is_ok()]
        }
        "`POST urls`: a `GET` URL of `packs/…`" => kinds_of("`PUT packs/…`")
            .iter()
            .map(|k| {
                one(Request::Url {
                    write: false,
                    kind: k,
                })
            })
            .collect(),
        "`POST urls`: a `GET` URL of any other object" => all_kinds()
            .iter()
            .filter(|k| !matches!(k, ObjectKind::Pack(_)))
            .map(|k| {
                one(Request::Url {
                    write: false,
                    kind: k,
                })
            })
            .collect(),
        "`POST urls`: a URL to write (`PUT`, any other method)" => all_kinds()
            .iter()
            .map(|k| {
                one(Request::Url {
                    write: true,
                    kind: k,
                })
            })
            .collect(),
        _ if row.starts_with("`PUT") => {
            kinds_of(row).iter().map(|k| one(Request::Put(k))).collect()
        }
        _ => kinds_of(row)
            .iter()
            .map(|k| one(Request::Delete(k)))
            .collect(),
    }
}

#[test]
fn the_documented_table_is_the_rule() {
    let section = TABLE
        .split("### Who may do what")
        .nth(1)
        .expect("deploy.md has the section");
    let rows: Vec<Vec<String>> = section
        .lines()
        .skip_while(|l| !l.starts_with("| request |"))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    let columns = rows[0].clone();
    assert_eq!(columns[1], "none");
    let mut checked = 0;
    let (mut puts, mut deletes) = (Vec::new(), Vec::new());
    for row in &rows[2..] {
        let name = &row[0];
        if name.starts_with("`PUT") {
            puts.extend(kinds_of(name));
        } else if name.starts_with("`DELETE") {
            deletes.extend(kinds_of(name));
        }
        for (column, cell) in columns.iter().zip(row).skip(1) {
            let g = (column != "none").then(|| grant(column));
            let (main, pr) = (decide(g.as_ref(), name, MAIN), decide(g.as_ref(), name, PR));
            let expected = match cell.as_str() {
                "yes" => (true, true),
                "no" => (false, false),
                "own ref" | "own key" | "own run" | "own run and job" | "own scope" => {
                    (false, true)
                }
                other => panic!("cell {other:?} of row {name}"),
            };
            for (i, (&m, &p)) in main.iter().zip(&pr).enumerate() {
                assert_eq!(
                    (m, p),
                    expected,
                    "row {name}, column {column}, kind #{i}: (main ref, pull request ref)"
                );
                checked += 1;
            }
        }
    }
    // Every object kind has a PUT row and a DELETE row.
    assert_eq!(puts.len(), all_kinds().len(), "{puts:?}");
    assert_eq!(deletes.len(), all_kinds().len(), "{deletes:?}");
    assert!(checked > 150, "{checked}");
}

#[test]
fn a_grant_is_for_its_namespace_only() {
    let g = grant("admin");
    assert!(allow(&g, "other", &Request::Read).is_err());
    let pack = ObjectKind::Pack(PackId::of(b"p"));
    let url = Request::Url {
        write: false,
        kind: &pack,
    };
    assert!(allow(&g, "ns", &url).is_ok());
    assert!(allow(&g, "other", &url).is_err());
    let e = allow(&grant("read"), "ns", &Request::Put(&ObjectKind::Cache)).unwrap_err();
    assert!(e.to_string().contains("token read may not write"), "{e}");
}

#[test]
fn a_limited_grant_names_the_ref_it_refused() {
    let e = allow_run(&grant("write, `runs:`"), "gh-1.1", Some(MAIN)).unwrap_err();
    assert!(
        e.to_string().contains("run gh-1.1 is ref:refs/heads/main:"),
        "{e}"
    );
    let e = allow_run(&grant("write, `runs:`"), "manual", None).unwrap_err();
    assert!(e.to_string().contains("records no ref"), "{e}");
}

// A CI identity writes only the run and job its claims name, whatever
// the ref; the refusal names the claims and the run's ref.
#[test]
fn a_bound_grant_names_the_claims_it_refused() {
    let g = grant("CI identity (OIDC)");
    assert!(allow_run(&g, "r", Some(PR)).is_ok());
    let e = allow_run(&g, "gh-123.1", Some(MAIN)).unwrap_err();
    assert!(
        e.to_string()
            .contains("may not write run gh-123.1 of refs/heads/main: its claims (run_id r)"),
        "{e}"
    );
    assert!(allow_run(&g, "gh-123.1", Some(PR)).is_err());
    assert!(allow_job(&g, "r", "j").is_ok());
    let e = allow_job(&g, "r", "deploy").unwrap_err();
    assert!(
        e.to_string().contains("(step_key j) name only job j"),
        "{e}"
    );
    let none = Grant {
        cache_keys: Some(vec![]),
        jobs: Some(Bound {
            names: vec![],
            from: "step_key null".into(),
        }),
        ..g
    };
    assert!(allow_cache_key(&none, PR).is_err());
    assert!(allow_job(&none, "r", "j")
        .unwrap_err()
        .to_string()
        .contains("key:"));
}

// A namespace's admin may not scrape the server's metrics (they count
// every namespace), nor may a metrics token read a namespace.
#[test]
fn metrics_are_a_grant_of_their_own() {
    let e = allow(&grant("admin"), "ns", &Request::Metrics).unwrap_err();
    assert!(e.to_string().contains("scope metrics"), "{e}");
    let m = grant("metrics");
    assert!(allow(&m, "", &Request::Metrics).is_ok());
    assert!(allow(&m, "ns", &Request::Read).is_err());
    assert!(allow_anonymous(&Request::Metrics).is_err());
}

#[test]
fn no_grace_below_the_stores() {
    assert_eq!(gc_grace(None, 3600).unwrap(), 3600);
    assert_eq!(gc_grace(Some(u64::MAX), 3600).unwrap(), u64::MAX);
    assert!(gc_grace(Some(3599), 3600).is_err());
}
