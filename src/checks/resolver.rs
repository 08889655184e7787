//! The one DNS resolver of the process: reverse DNS, DNS lists, the
//! resolvable-sender check and SPF all ask it, and share its cache (TTLs
//! honoured, at most [`CACHE_ENTRIES`] answers). It is the system's
//! (`/etc/resolv.conf`) unless a server is named (`serve --dns-server`, or
//! `control/dnsserver`). Built on first use, so a session without checks
//! never reads the system configuration.

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most answers kept in the cache.
pub const CACHE_ENTRIES: u64 = 8192;
/// Longest a negative answer is kept: a list entry added after a miss is
/// seen within this time.
pub const NEGATIVE_MAX_TTL: Duration = Duration::from_secs(300);

/// A resolver and its cache, shared by every session that names the same
/// server.
pub struct Dns {
    /// The resolver (cheap to clone: clones share the cache).
    pub resolver: TokioResolver,
    /// The server asked, `None` for the system's configuration.
    pub server: Option<SocketAddr>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").field("server", &self.server).finish()
    }
}

/// The resolver in use, by server (a reload that names another server
/// gets a new one; sessions keep the one they started with).
static SHARED: Mutex<Option<Arc<Dns>>> = Mutex::new(None);

/// The process's resolver for `server` (`None`: the system's), made on
/// first use. `query_timeout` bounds one query's attempt. Must be called
/// inside the runtime.
pub fn shared(server: Option<SocketAddr>, query_timeout: Duration) -> Result<Arc<Dns>, String> {
    let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dns) = slot.as_ref().filter(|d| d.server == server) {
        return Ok(dns.clone());
    }
    let dns = Arc::new(build(server, query_timeout)?);
    *slot = Some(dns.clone());
    Ok(dns)
}

/// A new resolver for `server`, or for the system's configuration.
fn build(server: Option<SocketAddr>, query_timeout: Duration) -> Result<Dns, String> {
    let mut builder = match server {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio()
            .map_err(|e| format!("system resolver configuration: {e}"))?,
    };
    let opts = builder.options_mut();
    opts.timeout = query_timeout;
    opts.attempts = 1;
    opts.cache_size = CACHE_ENTRIES;
    opts.negative_max_ttl = Some(NEGATIVE_MAX_TTL);
    let resolver = builder.build().map_err(|e| format!("resolver: {e}"))?;
    Ok(Dns { resolver, server })
}
