//! This host's IPv4 addresses (plus 0.0.0.0), used to recognise `[ip]`
//! domain literals that mean "this host". They are enumerated the first
//! time an address literal needs them ([`LazyLocalIps`]), not at start:
//! most sessions never see one, and `getifaddrs` is a large part of a
//! short session's start-up.

use std::collections::HashSet;
use std::io;
use std::net::Ipv4Addr;
use std::sync::OnceLock;

/// This host's addresses, enumerated at first use and kept (per process,
/// as qmail-smtpd does: per session under tcpserver, once for `serve`).
#[derive(Debug, Default)]
pub struct LazyLocalIps(OnceLock<Result<LocalIps, String>>);

impl LazyLocalIps {
    /// The addresses, or why they could not be enumerated.
    pub fn get(&self) -> Result<&LocalIps, &str> {
        self.0
            .get_or_init(|| LocalIps::enumerate().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(String::as_str)
    }
}

/// The set of local IPv4 addresses.
#[derive(Debug, Clone, Default)]
pub struct LocalIps(HashSet<Ipv4Addr>);

impl LocalIps {
    /// Enumerates interface addresses with `getifaddrs`.
    pub fn enumerate() -> io::Result<LocalIps> {
        let mut set = HashSet::from([Ipv4Addr::UNSPECIFIED]);
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: getifaddrs fills `head` with a list we free below.
        if unsafe { libc::getifaddrs(&mut head) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cur = head;
        while !cur.is_null() {
            // SAFETY: `cur` is a node of the list returned by getifaddrs.
            let ifa = unsafe { &*cur };
            if !ifa.ifa_addr.is_null() {
                // SAFETY: ifa_addr points to a sockaddr whose family we check.
                let family = unsafe { (*ifa.ifa_addr).sa_family };
                if i32::from(family) == libc::AF_INET {
                    // SAFETY: AF_INET addresses are sockaddr_in.
                    let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                    set.insert(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                }
            }
            cur = ifa.ifa_next;
        }
        // SAFETY: `head` came from getifaddrs and is freed once.
        unsafe { libc::freeifaddrs(head) };
        Ok(LocalIps(set))
    }

    /// Whether `ip` is one of ours.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.contains(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_unspecified_are_local() {
        let ips = LocalIps::enumerate().unwrap();
        assert!(ips.contains(Ipv4Addr::LOCALHOST));
        assert!(ips.contains(Ipv4Addr::UNSPECIFIED));
        assert!(!ips.contains(Ipv4Addr::new(192, 0, 2, 77)));
    }
}
