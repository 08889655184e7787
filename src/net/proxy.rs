//! The receive side of the HAProxy PROXY protocol, versions 1 (text) and 2
//! (binary): [`read_header`] takes exactly one header off the front of a
//! connection accepted from a load balancer and says which client it
//! relays; [`Network`] is one entry of the list of proxies trusted to send
//! such headers.
//!
//! The protocol is HAProxy's `doc/proxy-protocol.txt`. This module never
//! guesses whether a header is present (a listener either requires one or
//! does not, as the specification demands), and it reads no byte past the
//! header, so the SMTP session starts on the same stream right after it.
//! The version is told from the first byte: `P` for v1, CR for v2.
//!
//! Choices where the specification leaves room:
//! - v1: the line must match exactly: `PROXY`, one space, `TCP4` or `TCP6`,
//!   then source address, destination address, source port and destination
//!   port, each after exactly one space; addresses in the announced family
//!   (IPv4 without leading zeros); ports decimal 0–65535 without sign or
//!   leading zero; CRLF; at most 107 bytes in all. A lone CR or LF is
//!   refused. `PROXY UNKNOWN`, alone or followed by a space and anything,
//!   gives [`ProxiedAddrs::Local`].
//! - v2: version 2 only; commands LOCAL and PROXY only; unassigned family
//!   or transport values are refused whatever the command. LOCAL gives
//!   [`ProxiedAddrs::Local`] and its address block is read and ignored. PROXY
//!   with `AF_UNSPEC` gives `Local` too (the counterpart of v1 `UNKNOWN`);
//!   PROXY with TCP over IPv4 or IPv6 gives [`ProxiedAddrs::Tcp`], and
//!   whatever follows the addresses in the block (TLVs) is read and ignored.
//!   Every other PROXY combination (UDP, UNIX sockets, an IP family with an
//!   unspecified transport) is refused as [`ProxyError::Unsupported`] rather
//!   than mapped to `Local`, so that a relayed client is never taken for the
//!   proxy itself. A v2 header is at most 4096 bytes (16 + its length
//!   field), checked before the address block is read.
//! - Addresses are returned as sent: IPv4-mapped IPv6 addresses are left as
//!   they are (the caller canonicalizes).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// What every v1 header starts with.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Longest v1 header, CRLF included.
const V1_MAX_TOTAL: usize = 107;
/// Longest v1 line, CRLF excluded.
const V1_MAX_LINE: usize = V1_MAX_TOTAL - 2;
/// What every v2 header starts with.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/transport and length.
const V2_FIXED_LEN: usize = 16;
/// Longest v2 header accepted, fixed part included.
const V2_MAX_TOTAL: usize = 4096;

/// Addresses carried by a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxiedAddrs {
    /// TCP over IPv4/IPv6: the original client (source) and the address it
    /// connected to (destination).
    Tcp {
        /// The original client.
        source: SocketAddr,
        /// The address the client connected to (on the proxy).
        destination: SocketAddr,
    },
    /// `PROXY UNKNOWN` (v1), or the LOCAL command or the `AF_UNSPEC` family
    /// (v2): use the real connection's addresses, those of the proxy.
    Local,
}

/// Why a header was refused.
#[derive(Debug)]
pub enum ProxyError {
    /// Reading from the connection failed.
    Io(std::io::Error),
    /// The connection was closed before the end of the header.
    Eof,
    /// No complete header arrived in the time allowed.
    Timeout,
    /// The first bytes are neither `PROXY ` (v1) nor the v2 signature: the
    /// peer does not speak the PROXY protocol.
    NotProxy,
    /// The header breaks the protocol; the text says how.
    Malformed(&'static str),
    /// A well-formed v2 header relaying a kind of connection this server
    /// refuses (UDP, UNIX sockets, unspecified transport); the text says
    /// which.
    Unsupported(&'static str),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Io(e) => write!(f, "error reading the PROXY header: {e}"),
            ProxyError::Eof => f.write_str("connection closed before the end of the PROXY header"),
            ProxyError::Timeout => f.write_str("no complete PROXY header in the time allowed"),
            ProxyError::NotProxy => {
                f.write_str("connection does not start with a PROXY protocol header")
            }
            ProxyError::Malformed(what) => write!(f, "malformed PROXY header: {what}"),
            ProxyError::Unsupported(what) => write!(f, "unsupported PROXY header: {what}"),
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProxyError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Reads exactly one PROXY header (v1 or v2, told apart by the first byte)
/// from `stream` and returns the addresses it carries. No byte beyond the
/// header is consumed: v1 is read one byte at a time up to its CRLF (at
/// most 107 bytes), v2 as its 16-byte fixed part then exactly the length it
/// announces. The whole header must arrive within `timeout`, or
/// [`ProxyError::Timeout`]; on any error the connection should be dropped.
///
/// Must run inside a Tokio runtime with the time driver enabled.
pub async fn read_header<R: AsyncRead + Unpin>(
    stream: &mut R,
    timeout: Duration,
) -> Result<ProxiedAddrs, ProxyError> {
    match tokio::time::timeout(timeout, read_any(stream)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(ProxyError::Timeout),
    }
}

/// [`read_header`] without the time limit.
async fn read_any<R: AsyncRead + Unpin>(stream: &mut R) -> Result<ProxiedAddrs, ProxyError> {
    match read_byte(stream).await? {
        b'P' => read_v1(stream).await,
        b'\r' => read_v2(stream).await,
        _ => Err(ProxyError::NotProxy),
    }
}

/// Reads one byte; the end of the stream is [`ProxyError::Eof`].
async fn read_byte<R: AsyncRead + Unpin>(stream: &mut R) -> Result<u8, ProxyError> {
    stream.read_u8().await.map_err(io_error)
}

/// Fills `buf`; the end of the stream is [`ProxyError::Eof`].
async fn read_exact<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut [u8],
) -> Result<(), ProxyError> {
    stream.read_exact(buf).await.map(|_| ()).map_err(io_error)
}

/// An I/O error as a [`ProxyError`], the end of the stream as `Eof`.
fn io_error(e: std::io::Error) -> ProxyError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ProxyError::Eof
    } else {
        ProxyError::Io(e)
    }
}

/// The rest of a v1 header, whose `P` has been read.
async fn read_v1<R: AsyncRead + Unpin>(stream: &mut R) -> Result<ProxiedAddrs, ProxyError> {
    let mut line = Vec::with_capacity(V1_MAX_TOTAL);
    line.push(b'P');
    loop {
        let byte = read_byte(stream).await?;
        // Give up early on something that is not a PROXY header at all.
        if let Some(&expected) = V1_PREFIX.get(line.len()) {
            if byte != expected {
                return Err(ProxyError::NotProxy);
            }
        }
        match byte {
            b'\r' => {
                if read_byte(stream).await? != b'\n' {
                    return Err(ProxyError::Malformed(
                        "CR not followed by LF in the v1 line",
                    ));
                }
                return parse_v1(&line);
            }
            b'\n' => return Err(ProxyError::Malformed("v1 line ends in LF without CR")),
            _ if line.len() >= V1_MAX_LINE => {
                return Err(ProxyError::Malformed(
                    "no CRLF in the first 107 bytes of the v1 line",
                ))
            }
            _ => line.push(byte),
        }
    }
}

/// The rest of a v2 header, whose first byte (CR) has been read.
async fn read_v2<R: AsyncRead + Unpin>(stream: &mut R) -> Result<ProxiedAddrs, ProxyError> {
    let mut fixed = [0u8; V2_FIXED_LEN];
    fixed[0] = b'\r';
    read_exact(stream, &mut fixed[1..]).await?;
    let (command, family, len) = check_v2_fixed(&fixed)?;
    let mut block = vec![0u8; len];
    read_exact(stream, &mut block).await?;
    decode_v2(command, family, &block)
}

/// Parses a v1 header line, given without its CRLF, e.g.
/// `b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25"`.
pub fn parse_v1(line: &[u8]) -> Result<ProxiedAddrs, ProxyError> {
    let rest = line.strip_prefix(V1_PREFIX).ok_or(ProxyError::NotProxy)?;
    if line.len() > V1_MAX_LINE {
        return Err(ProxyError::Malformed(
            "v1 line longer than 107 bytes with its CRLF",
        ));
    }
    if line.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(ProxyError::Malformed("CR or LF inside the v1 line"));
    }
    // The receiver must ignore whatever follows UNKNOWN.
    if let Some(after) = rest.strip_prefix(b"UNKNOWN") {
        if after.is_empty() || after[0] == b' ' {
            return Ok(ProxiedAddrs::Local);
        }
    }
    let fields: Vec<&[u8]> = rest.split(|&b| b == b' ').collect();
    if fields.iter().any(|f| f.is_empty()) {
        return Err(ProxyError::Malformed(
            "v1 fields not separated by single spaces",
        ));
    }
    let ipv6 = match fields[0] {
        b"TCP4" => false,
        b"TCP6" => true,
        _ => {
            return Err(ProxyError::Malformed(
                "v1 protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let &[_, source, destination, source_port, destination_port] = fields.as_slice() else {
        return Err(ProxyError::Malformed(
            "v1 line does not have exactly 4 fields after the protocol",
        ));
    };
    let source = parse_v1_addr(source, ipv6)
        .ok_or(ProxyError::Malformed("bad source address in the v1 line"))?;
    let destination = parse_v1_addr(destination, ipv6).ok_or(ProxyError::Malformed(
        "bad destination address in the v1 line",
    ))?;
    let source_port = parse_v1_port(source_port)
        .ok_or(ProxyError::Malformed("bad source port in the v1 line"))?;
    let destination_port = parse_v1_port(destination_port)
        .ok_or(ProxyError::Malformed("bad destination port in the v1 line"))?;
    Ok(ProxiedAddrs::Tcp {
        source: SocketAddr::new(source, source_port),
        destination: SocketAddr::new(destination, destination_port),
    })
}

/// An address of the announced family in its textual form (std's parsers
/// refuse leading zeros in IPv4, brackets, zones and prefixes).
fn parse_v1_addr(field: &[u8], ipv6: bool) -> Option<IpAddr> {
    let text = std::str::from_utf8(field).ok()?;
    if ipv6 {
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        text.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    }
}

/// A port: 1 to 5 ASCII digits, no leading zero, at most 65535.
fn parse_v1_port(field: &[u8]) -> Option<u16> {
    if field.is_empty()
        || field.len() > 5
        || !field.iter().all(u8::is_ascii_digit)
        || (field.len() > 1 && field[0] == b'0')
    {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// Parses a whole v2 header: the 12-byte signature, version/command,
/// family/transport, the 2-byte length, then exactly that many bytes (the
/// address block, whose trailing TLVs are ignored).
pub fn parse_v2(header: &[u8]) -> Result<ProxiedAddrs, ProxyError> {
    let Some((fixed, block)) = header.split_first_chunk::<V2_FIXED_LEN>() else {
        let n = header.len().min(V2_SIGNATURE.len());
        return Err(if header[..n] == V2_SIGNATURE[..n] {
            ProxyError::Malformed("v2 header shorter than 16 bytes")
        } else {
            ProxyError::NotProxy
        });
    };
    let (command, family, len) = check_v2_fixed(fixed)?;
    if block.len() < len {
        return Err(ProxyError::Malformed(
            "v2 header shorter than its length field says",
        ));
    }
    if block.len() > len {
        return Err(ProxyError::Malformed(
            "bytes after the end of the v2 header",
        ));
    }
    decode_v2(command, family, block)
}

/// v2 LOCAL command.
const V2_LOCAL: u8 = 0;
/// v2 families (high nibble) and transports (low nibble) accepted for PROXY.
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;

/// Checks the fixed part of a v2 header; returns the command, the
/// family/transport byte and the length of the address block.
fn check_v2_fixed(fixed: &[u8; V2_FIXED_LEN]) -> Result<(u8, u8, usize), ProxyError> {
    if fixed[..12] != V2_SIGNATURE {
        return Err(ProxyError::NotProxy);
    }
    if fixed[12] >> 4 != 2 {
        return Err(ProxyError::Malformed(
            "v2 signature with a version other than 2",
        ));
    }
    let command = fixed[12] & 0x0f;
    if command > 1 {
        return Err(ProxyError::Malformed("v2 command neither LOCAL nor PROXY"));
    }
    let family = fixed[13];
    if family >> 4 > 3 {
        return Err(ProxyError::Malformed("unassigned v2 address family"));
    }
    if family & 0x0f > 2 {
        return Err(ProxyError::Malformed("unassigned v2 transport protocol"));
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if V2_FIXED_LEN + len > V2_MAX_TOTAL {
        return Err(ProxyError::Malformed("v2 header longer than 4096 bytes"));
    }
    Ok((command, family, len))
}

/// The addresses of a checked v2 header, from its address block.
fn decode_v2(command: u8, family: u8, block: &[u8]) -> Result<ProxiedAddrs, ProxyError> {
    if command == V2_LOCAL || family >> 4 == 0 {
        return Ok(ProxiedAddrs::Local);
    }
    match family {
        V2_TCP4 => {
            let Some((addrs, _tlvs)) = block.split_first_chunk::<12>() else {
                return Err(ProxyError::Malformed(
                    "v2 IPv4 address block shorter than 12 bytes",
                ));
            };
            let ip =
                |at: usize| Ipv4Addr::new(addrs[at], addrs[at + 1], addrs[at + 2], addrs[at + 3]);
            let port = |at: usize| u16::from_be_bytes([addrs[at], addrs[at + 1]]);
            Ok(ProxiedAddrs::Tcp {
                source: SocketAddr::new(IpAddr::V4(ip(0)), port(8)),
                destination: SocketAddr::new(IpAddr::V4(ip(4)), port(10)),
            })
        }
        V2_TCP6 => {
            let Some((addrs, _tlvs)) = block.split_first_chunk::<36>() else {
                return Err(ProxyError::Malformed(
                    "v2 IPv6 address block shorter than 36 bytes",
                ));
            };
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&addrs[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([addrs[at], addrs[at + 1]]);
            Ok(ProxiedAddrs::Tcp {
                source: SocketAddr::new(IpAddr::V6(ip(0)), port(32)),
                destination: SocketAddr::new(IpAddr::V6(ip(16)), port(34)),
            })
        }
        0x12 | 0x22 => Err(ProxyError::Unsupported("v2 header relays a UDP connection")),
        0x30..=0x32 => Err(ProxyError::Unsupported(
            "v2 header relays a UNIX-socket connection",
        )),
        _ => Err(ProxyError::Unsupported(
            "v2 header relays an IP connection with an unspecified transport",
        )),
    }
}

/// A network in CIDR form, one entry of the trusted-proxy list:
/// `127.0.0.0/8`, `::1/128`, or a bare address (`10.1.2.3` is `/32`, `::1`
/// is `/128`).
///
/// Bits set after the prefix (`10.1.2.3/8`) are refused rather than masked,
/// since they are usually a typo. A network written in IPv4-mapped IPv6 form
/// with a prefix of at least 96 (`::ffff:10.0.0.0/104`) is stored as the
/// IPv4 network it denotes (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// The first address, with every bit after the prefix zero.
    addr: IpAddr,
    /// The prefix length: at most 32 for IPv4, 128 for IPv6.
    prefix: u8,
}

impl Network {
    /// The network's first address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the network. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`, as a dual-stack socket shows IPv4 peers) are
    /// treated as the IPv4 address they carry: `127.0.0.0/8` contains
    /// `::ffff:127.0.0.1`, and `::/0` does not.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = v4_mask(self.prefix);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = v6_mask(self.prefix);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

/// The netmask of an IPv4 prefix length (at most 32).
fn v4_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// The netmask of an IPv6 prefix length (at most 128).
fn v6_mask(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Network {
    type Err = String;

    /// Parses `ADDRESS` or `ADDRESS/PREFIX`; the error says what is wrong.
    fn from_str(s: &str) -> Result<Network, String> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        if addr_text.is_empty() {
            return Err(format!("{s:?}: missing address before the prefix length"));
        }
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("{s:?}: {addr_text:?} is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                let number =
                    if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) {
                        p.parse::<u8>().ok()
                    } else {
                        None
                    };
                match number {
                    Some(n) if n <= max => n,
                    Some(_) | None => {
                        let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
                        return Err(format!(
                            "{s:?}: prefix length {p:?} is not a number from 0 to {max} (the {family} maximum)"
                        ));
                    }
                }
            }
        };
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        let masked = match addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & v4_mask(prefix))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & v6_mask(prefix))),
        };
        if masked != addr {
            return Err(format!(
                "{s:?}: bits set after the /{prefix} prefix (did you mean {masked}/{prefix}?)"
            ));
        }
        Ok(Network { addr, prefix })
    }
}

impl fmt::Display for Network {
    /// `ADDRESS/PREFIX`, which [`FromStr`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncWriteExt, ReadBuf};

    const SECOND: Duration = Duration::from_secs(1);

    fn tcp(source: &str, destination: &str) -> ProxiedAddrs {
        ProxiedAddrs::Tcp {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    /// A v2 header from its variable parts.
    fn v2(ver_cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(ver_cmd);
        h.push(family);
        h.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    /// The address block of TCP over IPv4 192.0.2.1:56324 → 198.51.100.2:25.
    fn block4() -> Vec<u8> {
        let mut b = vec![192, 0, 2, 1, 198, 51, 100, 2];
        b.extend_from_slice(&56324u16.to_be_bytes());
        b.extend_from_slice(&25u16.to_be_bytes());
        b
    }

    /// The address block of TCP over IPv6 [2001:db8::1]:56324 → [2001:db8::2]:25.
    fn block6() -> Vec<u8> {
        let mut b = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        b.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&56324u16.to_be_bytes());
        b.extend_from_slice(&25u16.to_be_bytes());
        b
    }

    #[test]
    fn v1_valid() {
        let max_unknown = format!("PROXY UNKNOWN {0} {0} 65535 65535", ["ffff"; 8].join(":"));
        assert_eq!(max_unknown.len(), V1_MAX_LINE);
        let max_tcp6 = format!("PROXY TCP6 {0} {0} 65535 65535", ["ffff"; 8].join(":"));
        let full = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]";
        let cases: Vec<(&str, ProxiedAddrs)> = vec![
            (
                "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25",
                tcp("192.0.2.1:56324", "198.51.100.2:25"),
            ),
            (
                "PROXY TCP6 2001:db8::1 2001:db8::2 56324 25",
                tcp("[2001:db8::1]:56324", "[2001:db8::2]:25"),
            ),
            (
                "PROXY TCP6 ::ffff:192.0.2.1 ::1 0 65535",
                tcp("[::ffff:192.0.2.1]:0", "[::1]:65535"),
            ),
            (
                "PROXY TCP6 2001:DB8::A 2001:db8:0:0:0:0:0:b 1 2",
                tcp("[2001:db8::a]:1", "[2001:db8::b]:2"),
            ),
            (
                "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535",
                tcp("255.255.255.255:65535", "255.255.255.255:65535"),
            ),
            (
                "PROXY TCP4 0.0.0.0 0.0.0.0 0 0",
                tcp("0.0.0.0:0", "0.0.0.0:0"),
            ),
            (
                &max_tcp6,
                tcp(&format!("{full}:65535"), &format!("{full}:65535")),
            ),
            ("PROXY UNKNOWN", ProxiedAddrs::Local),
            ("PROXY UNKNOWN ", ProxiedAddrs::Local),
            (
                "PROXY UNKNOWN 192.0.2.1 198.51.100.2 56324 25",
                ProxiedAddrs::Local,
            ),
            ("PROXY UNKNOWN whatever  \t\0 \u{7f}", ProxiedAddrs::Local),
            (&max_unknown, ProxiedAddrs::Local),
        ];
        for (line, want) in cases {
            match parse_v1(line.as_bytes()) {
                Ok(got) => assert_eq!(got, want, "{line:?}"),
                Err(e) => panic!("{line:?}: {e}"),
            }
        }
    }

    #[test]
    fn v1_malformed() {
        let ok = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25";
        assert!(parse_v1(ok.as_bytes()).is_ok());
        let too_long = format!("PROXY UNKNOWN {0} {0} 65535 655350", ["ffff"; 8].join(":"));
        let cases: Vec<&str> = vec![
            "",
            "P",
            "PROXY",
            "PROXY ",
            "PROXY TCP4",
            "PROXY TCP4 ",
            "proxy TCP4 192.0.2.1 198.51.100.2 56324 25",
            " PROXY TCP4 192.0.2.1 198.51.100.2 56324 25",
            "PROXY tcp4 192.0.2.1 198.51.100.2 56324 25",
            "PROXY TCP5 192.0.2.1 198.51.100.2 56324 25",
            "PROXY UDP4 192.0.2.1 198.51.100.2 56324 25",
            "PROXY  TCP4 192.0.2.1 198.51.100.2 56324 25",
            "PROXY TCP4  192.0.2.1 198.51.100.2 56324 25",
            "PROXY TCP4 192.0.2.1 198.51.100.2  56324 25",
            "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25 ",
            "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25 26",
            "PROXY TCP4 192.0.2.1 198.51.100.2 56324",
            "PROXY TCP4 192.0.2.1 198.51.100.2",
            "PROXY TCP4\t192.0.2.1 198.51.100.2 56324 25",
            "PROXY TCP4 192.0.2.1\t198.51.100.2 56324 25",
            "PROXY TCP4 ::1 ::2 56324 25",
            "PROXY TCP6 192.0.2.1 198.51.100.2 56324 25",
            "PROXY TCP6 2001:db8::1 198.51.100.2 56324 25",
            "PROXY TCP4 192.0.2.01 198.51.100.2 56324 25",
            "PROXY TCP4 192.0.2 198.51.100.2 56324 25",
            "PROXY TCP4 192.0.2.1.5 198.51.100.2 56324 25",
            "PROXY TCP4 192.0.2.256 198.51.100.2 56324 25",
            "PROXY TCP4 192.0.2.1 198.51.100.-2 56324 25",
            "PROXY TCP4 0x7f.0.0.1 198.51.100.2 56324 25",
            "PROXY TCP4 localhost 198.51.100.2 56324 25",
            "PROXY TCP6 [2001:db8::1] 2001:db8::2 56324 25",
            "PROXY TCP6 fe80::1%eth0 2001:db8::2 56324 25",
            "PROXY TCP6 2001:db8::1/64 2001:db8::2 56324 25",
            "PROXY TCP6 2001:db8:::1 2001:db8::2 56324 25",
            "PROXY TCP6 1:2:3:4:5:6:7:8:9 2001:db8::2 56324 25",
            "PROXY TCP6 00001:: 2001:db8::2 56324 25",
            "PROXY TCP4 192.0.2.1 198.51.100.2 65536 25",
            "PROXY TCP4 192.0.2.1 198.51.100.2 56324 99999",
            "PROXY TCP4 192.0.2.1 198.51.100.2 123456 25",
            "PROXY TCP4 192.0.2.1 198.51.100.2 -1 25",
            "PROXY TCP4 192.0.2.1 198.51.100.2 +1 25",
            "PROXY TCP4 192.0.2.1 198.51.100.2 01 25",
            "PROXY TCP4 192.0.2.1 198.51.100.2 00 25",
            "PROXY TCP4 192.0.2.1 198.51.100.2 0x19 25",
            "PROXY TCP4 192.0.2.1 198.51.100.2 1e3 25",
            "PROXY TCP4 192.0.2.1 198.51.100.2 56324 ٢٥",
            "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r",
            "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\n",
            "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n",
            "PROXY TCP4 192.0.2.1 198.51.100.2 56324\r25",
            "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\0",
            "PROXY UNKNOWN\r",
            "PROXY UNKNOWN \n",
            "PROXY UNKNOWNX",
            "PROXY UNKNOWN4 192.0.2.1 198.51.100.2 56324 25",
            "PROXY unknown",
            "PROXY  UNKNOWN",
            "PROXY",
            &too_long,
            "GET / HTTP/1.0",
            "EHLO x",
        ];
        for line in cases {
            let got = parse_v1(line.as_bytes());
            assert!(got.is_err(), "{line:?} gave {got:?}");
        }
        assert!(parse_v1(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 \xff").is_err());
        assert!(matches!(parse_v1(b"EHLO x"), Err(ProxyError::NotProxy)));
        assert!(matches!(
            parse_v1(b"PROXY TCP5"),
            Err(ProxyError::Malformed(_))
        ));
    }

    #[test]
    fn v2_valid() {
        let mut with_tlvs = block4();
        with_tlvs.extend_from_slice(&[0x04, 0x00, 0x02, 0xaa, 0xbb, 0x05, 0x00]);
        let cases: Vec<(Vec<u8>, ProxiedAddrs)> = vec![
            (
                v2(0x21, 0x11, &block4()),
                tcp("192.0.2.1:56324", "198.51.100.2:25"),
            ),
            (
                v2(0x21, 0x21, &block6()),
                tcp("[2001:db8::1]:56324", "[2001:db8::2]:25"),
            ),
            // TLVs (here not even well-formed) are skipped.
            (
                v2(0x21, 0x11, &with_tlvs),
                tcp("192.0.2.1:56324", "198.51.100.2:25"),
            ),
            (
                v2(0x21, 0x21, &[block6(), vec![0; 100]].concat()),
                tcp("[2001:db8::1]:56324", "[2001:db8::2]:25"),
            ),
            // LOCAL: the block is ignored, whatever the family.
            (v2(0x20, 0x00, &[]), ProxiedAddrs::Local),
            (v2(0x20, 0x00, &[1, 2, 3]), ProxiedAddrs::Local),
            (v2(0x20, 0x11, &block4()), ProxiedAddrs::Local),
            (v2(0x20, 0x11, &[]), ProxiedAddrs::Local),
            (v2(0x20, 0x21, &[0; 5]), ProxiedAddrs::Local),
            (v2(0x20, 0x12, &[]), ProxiedAddrs::Local),
            (v2(0x20, 0x31, &[0; 216]), ProxiedAddrs::Local),
            (v2(0x20, 0x32, &[]), ProxiedAddrs::Local),
            // PROXY with AF_UNSPEC: like v1 UNKNOWN.
            (v2(0x21, 0x00, &[]), ProxiedAddrs::Local),
            (v2(0x21, 0x01, &block4()), ProxiedAddrs::Local),
            (v2(0x21, 0x02, &[]), ProxiedAddrs::Local),
            // The largest header accepted.
            (
                v2(
                    0x21,
                    0x11,
                    &[block4(), vec![0; V2_MAX_TOTAL - 16 - 12]].concat(),
                ),
                tcp("192.0.2.1:56324", "198.51.100.2:25"),
            ),
        ];
        for (i, (header, want)) in cases.into_iter().enumerate() {
            match parse_v2(&header) {
                Ok(got) => assert_eq!(got, want, "case {i}"),
                Err(e) => panic!("case {i}: {e}"),
            }
        }
    }

    #[test]
    fn v2_refused() {
        let good = v2(0x21, 0x11, &block4());
        assert!(parse_v2(&good).is_ok());
        let mut cases: Vec<(String, Vec<u8>)> = vec![
            ("empty".into(), vec![]),
            ("signature only".into(), V2_SIGNATURE.to_vec()),
            ("15 bytes".into(), good[..15].to_vec()),
            ("fixed part only".into(), good[..16].to_vec()),
            ("one byte short".into(), good[..good.len() - 1].to_vec()),
            ("one byte extra".into(), [good.clone(), vec![0]].concat()),
            ("v1 text".into(), b"PROXY UNKNOWN".to_vec()),
            ("version 1".into(), v2(0x11, 0x11, &block4())),
            ("version 0".into(), v2(0x01, 0x11, &block4())),
            ("version 3".into(), v2(0x31, 0x11, &block4())),
            ("version 15".into(), v2(0xf1, 0x11, &block4())),
            ("command 2".into(), v2(0x22, 0x11, &block4())),
            ("command 15".into(), v2(0x2f, 0x11, &block4())),
            ("family 4".into(), v2(0x21, 0x41, &block4())),
            ("family 15".into(), v2(0x21, 0xf1, &block4())),
            ("transport 3".into(), v2(0x21, 0x13, &block4())),
            ("transport 15".into(), v2(0x21, 0x1f, &block4())),
            ("LOCAL, family 4".into(), v2(0x20, 0x40, &[])),
            ("LOCAL, transport 3".into(), v2(0x20, 0x03, &[])),
            ("IPv4 block of 11".into(), v2(0x21, 0x11, &block4()[..11])),
            ("IPv4 block of 0".into(), v2(0x21, 0x11, &[])),
            ("IPv6 block of 35".into(), v2(0x21, 0x21, &block6()[..35])),
            ("IPv6 with IPv4 block".into(), v2(0x21, 0x21, &block4())),
            ("UDP4".into(), v2(0x21, 0x12, &block4())),
            ("UDP6".into(), v2(0x21, 0x22, &block6())),
            ("UNIX stream".into(), v2(0x21, 0x31, &[0; 216])),
            ("UNIX dgram".into(), v2(0x21, 0x32, &[0; 216])),
            ("UNIX unspec".into(), v2(0x21, 0x30, &[0; 216])),
            ("INET unspec".into(), v2(0x21, 0x10, &block4())),
            ("INET6 unspec".into(), v2(0x21, 0x20, &block6())),
            (
                "over 4096 bytes".into(),
                v2(
                    0x21,
                    0x11,
                    &[block4(), vec![0; V2_MAX_TOTAL - 16 - 11]].concat(),
                ),
            ),
            ("LOCAL over 4096 bytes".into(), v2(0x20, 0x00, &[0; 65535])),
        ];
        for i in 0..12 {
            let mut h = good.clone();
            h[i] ^= 0x01;
            cases.push((format!("signature byte {i} changed"), h));
        }
        for (name, header) in cases {
            let got = parse_v2(&header);
            assert!(got.is_err(), "{name} gave {got:?}");
        }
        assert!(matches!(parse_v2(b"EHLO x\r\n"), Err(ProxyError::NotProxy)));
        assert!(matches!(
            parse_v2(&good[..15]),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse_v2(&v2(0x21, 0x12, &block4())),
            Err(ProxyError::Unsupported(_))
        ));
        assert!(matches!(
            parse_v2(&v2(0x21, 0x31, &[0; 216])),
            Err(ProxyError::Unsupported(_))
        ));
    }

    /// Hands out one byte per read, with a `Pending` before each.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        ready: bool,
    }

    impl Trickle {
        fn new(data: &[u8]) -> Trickle {
            Trickle {
                data: data.to_vec(),
                pos: 0,
                ready: false,
            }
        }
        fn rest(&self) -> &[u8] {
            &self.data[self.pos..]
        }
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let this = self.get_mut();
            if !this.ready {
                this.ready = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.ready = false;
            if this.pos < this.data.len() && buf.remaining() > 0 {
                buf.put_slice(&this.data[this.pos..this.pos + 1]);
                this.pos += 1;
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Never has anything to read.
    struct Silent;

    impl AsyncRead for Silent {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Pending
        }
    }

    fn headers_and_results() -> Vec<(Vec<u8>, ProxiedAddrs)> {
        let mut with_tlvs = block6();
        with_tlvs.extend_from_slice(&[0x05, 0x00, 0x03, b'a', b'b', b'c']);
        vec![
            (
                b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n".to_vec(),
                tcp("192.0.2.1:56324", "198.51.100.2:25"),
            ),
            (
                b"PROXY TCP6 2001:db8::1 2001:db8::2 56324 25\r\n".to_vec(),
                tcp("[2001:db8::1]:56324", "[2001:db8::2]:25"),
            ),
            (b"PROXY UNKNOWN\r\n".to_vec(), ProxiedAddrs::Local),
            (
                b"PROXY UNKNOWN ::1 ::2 1 2\r\n".to_vec(),
                ProxiedAddrs::Local,
            ),
            (
                v2(0x21, 0x11, &block4()),
                tcp("192.0.2.1:56324", "198.51.100.2:25"),
            ),
            (
                v2(0x21, 0x21, &with_tlvs),
                tcp("[2001:db8::1]:56324", "[2001:db8::2]:25"),
            ),
            (v2(0x20, 0x00, &[]), ProxiedAddrs::Local),
            (v2(0x20, 0x11, &block4()), ProxiedAddrs::Local),
        ]
    }

    #[tokio::test]
    async fn read_header_leaves_the_session_unread() {
        let after = b"EHLO x\r\n";
        for (header, want) in headers_and_results() {
            let input = [header.as_slice(), after].concat();
            // A reader that fills as much of the buffer as it is given.
            let mut greedy: &[u8] = &input;
            assert_eq!(read_header(&mut greedy, SECOND).await.unwrap(), want);
            assert_eq!(greedy, after);
            // A reader that gives one byte at a time.
            let mut trickle = Trickle::new(&input);
            assert_eq!(read_header(&mut trickle, SECOND).await.unwrap(), want);
            assert_eq!(trickle.rest(), after);
        }
    }

    #[tokio::test]
    async fn read_header_over_a_duplex_written_bytewise() {
        for (header, want) in headers_and_results() {
            let (mut client, mut server) = tokio::io::duplex(64);
            let writer = tokio::spawn(async move {
                for byte in header.iter().chain(b"EHLO x\r\n") {
                    client.write_all(&[*byte]).await.unwrap();
                    tokio::task::yield_now().await;
                }
            });
            assert_eq!(read_header(&mut server, SECOND).await.unwrap(), want);
            writer.await.unwrap();
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"EHLO x\r\n");
        }
    }

    #[tokio::test]
    async fn read_header_refusals() {
        let long_v1 = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200], b"\r\n"].concat();
        let cases: Vec<(Vec<u8>, &str, usize)> = vec![
            // (input, expected error kind, most bytes the reader may take)
            (b"EHLO x\r\n".to_vec(), "NotProxy", 1),
            (b"POST / HTTP/1.0\r\n".to_vec(), "NotProxy", 2),
            (b"PROXY\r\n".to_vec(), "NotProxy", 6),
            (b"\r\nEHLO x\r\n\r\n\r\n\r\n".to_vec(), "NotProxy", 16),
            (b"".to_vec(), "Eof", 0),
            (b"PROXY TCP4 192.0.2.1".to_vec(), "Eof", 20),
            (b"PROXY UNKNOWN\r".to_vec(), "Eof", 14),
            (v2(0x21, 0x11, &block4())[..20].to_vec(), "Eof", 20),
            (V2_SIGNATURE[..5].to_vec(), "Eof", 5),
            (b"PROXY UNKNOWN\n".to_vec(), "Malformed", 14),
            (b"PROXY UNKNOWN\rX\r\n".to_vec(), "Malformed", 15),
            (
                b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\n\r\n".to_vec(),
                "Malformed",
                43,
            ),
            (
                b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 025\r\n".to_vec(),
                "Malformed",
                46,
            ),
            (long_v1, "Malformed", V1_MAX_TOTAL),
            (v2(0x11, 0x11, &block4()), "Malformed", 16),
            (v2(0x21, 0x11, &[0; 5000]), "Malformed", 16),
            (v2(0x21, 0x11, &[0; 3]), "Malformed", 19),
            (v2(0x21, 0x12, &block4()), "Unsupported", 28),
        ];
        for (input, want, most) in cases {
            let mut reader: &[u8] = &input;
            let got = read_header(&mut reader, SECOND).await;
            let kind = match &got {
                Err(ProxyError::NotProxy) => "NotProxy",
                Err(ProxyError::Eof) => "Eof",
                Err(ProxyError::Malformed(_)) => "Malformed",
                Err(ProxyError::Unsupported(_)) => "Unsupported",
                _ => "other",
            };
            assert_eq!(
                kind,
                want,
                "{:?} gave {got:?}",
                String::from_utf8_lossy(&input)
            );
            let taken = input.len() - reader.len();
            assert!(
                taken <= most,
                "{:?}: took {taken} bytes",
                String::from_utf8_lossy(&input)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn read_header_times_out() {
        let got = read_header(&mut Silent, Duration::from_secs(5)).await;
        assert!(matches!(got, Err(ProxyError::Timeout)), "{got:?}");

        // A peer that sends part of a header then nothing, keeping the connection open.
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"PROXY TCP4 192.0.2.1 ").await.unwrap();
        let started = tokio::time::Instant::now();
        let got = read_header(&mut server, Duration::from_secs(5)).await;
        assert!(matches!(got, Err(ProxyError::Timeout)), "{got:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        drop(client);

        let (mut client, mut server) = tokio::io::duplex(64);
        client
            .write_all(&v2(0x21, 0x11, &block4())[..16])
            .await
            .unwrap();
        let got = read_header(&mut server, Duration::from_secs(5)).await;
        assert!(matches!(got, Err(ProxyError::Timeout)), "{got:?}");
    }

    #[test]
    fn error_messages() {
        let cases = [
            (
                ProxyError::Timeout,
                "no complete PROXY header in the time allowed",
            ),
            (
                ProxyError::Eof,
                "connection closed before the end of the PROXY header",
            ),
            (
                ProxyError::NotProxy,
                "connection does not start with a PROXY protocol header",
            ),
            (
                ProxyError::Malformed("bad source port in the v1 line"),
                "malformed PROXY header: bad source port in the v1 line",
            ),
            (
                ProxyError::Unsupported("v2 header relays a UDP connection"),
                "unsupported PROXY header: v2 header relays a UDP connection",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
        let io = ProxyError::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert_eq!(io.to_string(), "error reading the PROXY header: reset");
        assert!(std::error::Error::source(&io).is_some());
    }

    #[test]
    fn network_parse() {
        let cases: &[(&str, &str, u8)] = &[
            ("127.0.0.0/8", "127.0.0.0", 8),
            ("::1/128", "::1", 128),
            ("10.1.2.3", "10.1.2.3", 32),
            ("10.1.2.3/32", "10.1.2.3", 32),
            ("::1", "::1", 128),
            ("0.0.0.0/0", "0.0.0.0", 0),
            ("::/0", "::", 0),
            ("2001:db8::/32", "2001:db8::", 32),
            ("192.168.0.0/16", "192.168.0.0", 16),
            ("10.0.0.0/08", "10.0.0.0", 8),
            ("::ffff:10.0.0.0/104", "10.0.0.0", 8),
            ("::ffff:1.2.3.4", "1.2.3.4", 32),
            ("::ffff:0.0.0.0/96", "0.0.0.0", 0),
        ];
        for &(text, addr, prefix) in cases {
            let net: Network = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(net.addr(), addr.parse::<IpAddr>().unwrap(), "{text}");
            assert_eq!(net.prefix_len(), prefix, "{text}");
            assert_eq!(net.to_string().parse::<Network>().unwrap(), net, "{text}");
        }
        assert_eq!(
            "127.0.0.0/8".parse::<Network>().unwrap().to_string(),
            "127.0.0.0/8"
        );
    }

    #[test]
    fn network_refused() {
        let cases: &[(&str, &str)] = &[
            ("", "missing address"),
            ("/8", "missing address"),
            ("10.0.0.0/", "is not a number from 0 to 32"),
            ("10.0.0.0/33", "is not a number from 0 to 32"),
            ("::/129", "is not a number from 0 to 128"),
            ("10.0.0.0/+8", "is not a number"),
            ("10.0.0.0/-1", "is not a number"),
            ("10.0.0.0/ 8", "is not a number"),
            ("10.0.0.0/8 ", "is not a number"),
            ("10.0.0.0/0008", "is not a number"),
            ("10.0.0.0/256", "is not a number"),
            ("10.0.0.0/8/8", "is not a number"),
            (" 10.0.0.0/8", "is not an IPv4 or IPv6 address"),
            ("10.0.0/8", "is not an IPv4 or IPv6 address"),
            ("010.0.0.0/8", "is not an IPv4 or IPv6 address"),
            ("example.com", "is not an IPv4 or IPv6 address"),
            ("[::1]/128", "is not an IPv4 or IPv6 address"),
            ("10.0.0.1/8", "did you mean 10.0.0.0/8?"),
            ("192.168.1.10/24", "did you mean 192.168.1.0/24?"),
            ("2001:db8::1/32", "did you mean 2001:db8::/32?"),
            ("::ffff:10.0.0.1/104", "did you mean 10.0.0.0/8?"),
        ];
        for &(text, want) in cases {
            match text.parse::<Network>() {
                Ok(net) => panic!("{text:?} gave {net:?}"),
                Err(e) => assert!(e.contains(want), "{text:?}: {e}"),
            }
        }
    }

    #[test]
    fn network_contains() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let net = |s: &str| s.parse::<Network>().unwrap();
        let cases: &[(&str, &str, bool)] = &[
            ("127.0.0.0/8", "127.0.0.1", true),
            ("127.0.0.0/8", "127.255.255.255", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("127.0.0.0/8", "126.255.255.255", false),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("127.0.0.0/8", "::ffff:128.0.0.1", false),
            ("127.0.0.0/8", "::127.0.0.1", false),
            ("127.0.0.0/8", "::1", false),
            ("10.1.2.3", "10.1.2.3", true),
            ("10.1.2.3", "10.1.2.4", false),
            ("10.1.2.3", "::ffff:10.1.2.3", true),
            ("0.0.0.0/0", "1.2.3.4", true),
            ("0.0.0.0/0", "255.255.255.255", true),
            ("0.0.0.0/0", "::ffff:1.2.3.4", true),
            ("0.0.0.0/0", "::1", false),
            ("::/0", "::1", true),
            ("::/0", "2001:db8::1", true),
            ("::/0", "1.2.3.4", false),
            ("::/0", "::ffff:1.2.3.4", false),
            ("::1/128", "::1", true),
            ("::1/128", "::2", false),
            ("::1/128", "127.0.0.1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::", false),
            ("::ffff:10.0.0.0/104", "10.9.8.7", true),
            ("::ffff:10.0.0.0/104", "::ffff:10.9.8.7", true),
            ("192.168.1.128/25", "192.168.1.200", true),
            ("192.168.1.128/25", "192.168.1.127", false),
        ];
        for &(network, addr, want) in cases {
            assert_eq!(
                net(network).contains(ip(addr)),
                want,
                "{network} contains {addr}"
            );
        }
    }

    /// xorshift64*: deterministic pseudo-random numbers.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// How many bytes a successful read_header must have taken from `input`.
    fn header_len(input: &[u8]) -> usize {
        if input.first() == Some(&b'P') {
            input.windows(2).position(|w| w == b"\r\n").unwrap() + 2
        } else {
            16 + usize::from(u16::from_be_bytes([input[14], input[15]]))
        }
    }

    #[tokio::test]
    async fn arbitrary_input_never_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seeds: Vec<Vec<u8>> = headers_and_results().into_iter().map(|(h, _)| h).collect();
        let tokens: &[&[u8]] = &[
            b"PROXY",
            b" ",
            b" ",
            b"TCP4",
            b"TCP6",
            b"UNKNOWN",
            b"192.0.2.1",
            b"::1",
            b"2001:db8::2",
            b"0",
            b"25",
            b"65535",
            b"65536",
            b"01",
            b"-",
            b"\r",
            b"\n",
            b"\r\n",
            b".",
            b":",
            b"\0",
        ];
        let (mut ok, mut err) = (0, 0);
        for round in 0..6000 {
            let mut input: Vec<u8> = match round % 3 {
                // Random bytes, sometimes behind a valid start.
                0 => {
                    let mut v: Vec<u8> = match rng.below(3) {
                        0 => b"PROXY ".to_vec(),
                        1 => V2_SIGNATURE.to_vec(),
                        _ => Vec::new(),
                    };
                    let n = rng.below(300);
                    v.extend((0..n).map(|_| rng.next() as u8));
                    v
                }
                // A valid header with a few bytes changed, some cut off.
                1 => {
                    let mut v = seeds[rng.below(seeds.len())].clone();
                    for _ in 0..=rng.below(3) {
                        let at = rng.below(v.len());
                        v[at] = rng.next() as u8;
                    }
                    let keep = v.len() - rng.below(4).min(v.len());
                    v.truncate(keep);
                    v
                }
                // v1-looking lines from tokens.
                _ => {
                    let mut v = Vec::new();
                    for _ in 0..rng.below(14) {
                        v.extend_from_slice(tokens[rng.below(tokens.len())]);
                    }
                    v
                }
            };
            let _ = parse_v1(&input);
            let _ = parse_v2(&input);
            let _ = String::from_utf8_lossy(&input).parse::<Network>();
            input.extend_from_slice(b"EHLO x\r\n");
            let mut reader: &[u8] = &input;
            match read_header(&mut reader, SECOND).await {
                Ok(_) => {
                    ok += 1;
                    let taken = input.len() - reader.len();
                    assert_eq!(taken, header_len(&input), "{input:?}");
                }
                Err(ProxyError::Timeout) => panic!("a slice reader cannot time out"),
                Err(_) => err += 1,
            }
            assert!(input.len() - reader.len() <= V2_MAX_TOTAL);
        }
        // The generator reaches both outcomes.
        assert!(ok > 100 && err > 100, "ok {ok}, err {err}");
    }
}
