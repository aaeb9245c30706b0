//! `strata serve`'s options, and how each flag falls back to the server's
//! config file and then to its default. What the server does with them is
//! in `commands/serve.rs` and the server crate.

use std::path::PathBuf;

use clap::Args;

use super::{deprecated, values};

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// The address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8427")]
    pub(crate) listen: std::net::SocketAddr,
    /// The server's config file: its tokens, namespaces and scopes, and
    /// its limits (YAML; docs/deploy.md); `--auth` is its older name.
    /// Without tokens the server serves anyone, and so listens on loopback
    /// only. A limit given as a flag wins over the file.
    #[arg(long = "config", visible_alias = "auth", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// CI identities: the trusted OIDC issuers (GitHub Actions, GitLab,
    /// CircleCI, Buildkite) and the rules that turn a job's verified claims
    /// into grants bound to its own run and cache scope (YAML;
    /// docs/deploy.md, "CI identities"). Static tokens keep working beside.
    #[arg(long, value_name = "FILE")]
    pub(crate) oidc: Option<PathBuf>,
    /// Serve without --auth on a non-loopback address.
    #[arg(long)]
    pub(crate) insecure: bool,
    /// PEM certificate chain for HTTPS (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// The largest request body accepted (64MiB, 1GiB) [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = values::size)]
    pub(crate) max_body: Option<u64>,
    /// The old spelling of --max-body, in MiB (a warning says so).
    #[arg(long, value_name = "MIB", hide = true)]
    pub(crate) max_body_mib: Option<u64>,
    /// Close a connection that has not sent a whole request head this long
    /// after it opened or after its previous answer (idle ones too)
    /// [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = values::duration)]
    pub(crate) header_timeout: Option<std::time::Duration>,
    /// Cut off a request body that sends nothing this long (no limit on a
    /// whole request, so a large pack on a slow link is never cut)
    /// [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = values::duration)]
    pub(crate) body_idle_timeout: Option<std::time::Duration>,
    /// Connections served at once (64 runners with 16 requests each in
    /// flight); more wait to be accepted [default: 1024].
    #[arg(long)]
    pub(crate) max_connections: Option<usize>,
    /// Requests per second per token (per address without tokens); 0: no
    /// limit [default: 0].
    #[arg(long)]
    pub(crate) rate_limit: Option<f64>,
    /// Don't log requests to stderr.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Run gc on every namespace this often: a number with s, m, h or d
    /// (30m, 6h, 1d).
    #[arg(long, value_name = "DURATION", value_parser = values::duration)]
    pub(crate) gc_every: Option<std::time::Duration>,
    /// A storage budget for every namespace (50GiB; the config file's
    /// `budgets:` sets one per namespace): gc evicts least recently used
    /// runs and caches, never one used within the grace period, to keep it.
    #[arg(long, value_name = "SIZE", value_parser = values::size)]
    pub(crate) max_size: Option<u64>,
    /// With an s3:// store: sync a namespace's chunk index from the bucket
    /// when it is older than this (another replica's writes are reused
    /// within it; a chunk not found syncs at once). Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = values::duration)]
    pub(crate) resync_every: Option<std::time::Duration>,
    /// With an s3:// store: hand runners presigned URLs, valid this long,
    /// to read packs straight from the bucket (1s to 7d; docs/deploy.md,
    /// "Reads straight from the bucket"). Runners must reach the bucket's
    /// endpoint. Uploads still go through the server.
    #[arg(long, value_name = "DURATION", value_parser = values::duration)]
    pub(crate) presign_ttl: Option<std::time::Duration>,
    /// Threads for the network, and as many for store work, which they
    /// run in turn per client so no runner starves (docs/deploy.md, "Many
    /// runners") [default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) workers: Option<u16>,
}
impl ServeArgs {
    /// The largest request body, in bytes, under its new spelling or its
    /// old, else the config file's, else 64 MiB.
    pub(crate) fn max_body(&self, file: &strata_server::config::LimitsSpec) -> u64 {
        if let Some(mib) = self.max_body_mib {
            deprecated("--max-body-mib N", "--max-body SIZE (64MiB)");
            return mib << 20;
        }
        self.max_body
            .or(file.max_body_mib.map(|m| (m as u64) << 20))
            .unwrap_or(64 << 20)
    }

    /// The timeouts and connection cap: each flag, else the config file's,
    /// else the default.
    pub(crate) fn limits(&self, file: &strata_server::config::LimitsSpec) -> strata_server::Limits {
        let default = strata_server::Limits::default();
        let secs = |s: Option<u64>| s.map(std::time::Duration::from_secs);
        strata_server::Limits {
            header_timeout: self
                .header_timeout
                .or(secs(file.header_timeout_secs))
                .unwrap_or(default.header_timeout),
            body_idle_timeout: self
                .body_idle_timeout
                .or(secs(file.body_idle_timeout_secs))
                .unwrap_or(default.body_idle_timeout),
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(default.max_connections),
        }
    }
}
