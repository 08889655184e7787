//! Reverse DNS for `TCPREMOTEHOST` (`serve --reverse-dns`): a PTR lookup,
//! then forward confirmation (the name must resolve back to the client's
//! address), within a short timeout. Without an answer the variable stays
//! unset, as with `tcpserver -H`.

use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How long one client's whole lookup (PTR plus confirmation) may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A resolver for client host names.
pub struct ReverseDns {
    resolver: TokioResolver,
    timeout: Duration,
}

impl ReverseDns {
    /// Asks the process's one resolver ([`crate::checks::resolver`]):
    /// `server` (ADDR:PORT, UDP then TCP), or the system's configuration
    /// when `None`. Must be called inside the runtime.
    pub fn new(server: Option<SocketAddr>, timeout: Duration) -> Result<ReverseDns, String> {
        let dns = crate::checks::resolver::shared(server, timeout)?;
        Ok(ReverseDns {
            resolver: dns.resolver.clone(),
            timeout,
        })
    }

    /// The verified host name of `ip` (lower case, no trailing dot), if any.
    pub async fn lookup(&self, ip: IpAddr) -> Option<String> {
        let ip = ip.to_canonical();
        let work = async {
            let ptr = self.resolver.reverse_lookup(ip).await.ok()?;
            let names: Vec<String> = ptr
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::PTR(p) => Some(p.0.to_ascii()),
                    _ => None,
                })
                .collect();
            for name in names {
                let fqdn = if name.ends_with('.') {
                    name.clone()
                } else {
                    format!("{name}.")
                };
                let Ok(forward) = self.resolver.lookup_ip(fqdn.as_str()).await else {
                    continue;
                };
                if forward.iter().any(|a| a.to_canonical() == ip) {
                    return Some(fqdn.trim_end_matches('.').to_ascii_lowercase());
                }
            }
            None
        };
        tokio::time::timeout(self.timeout * 2, work)
            .await
            .ok()
            .flatten()
    }
}
