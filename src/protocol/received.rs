//! The `Received:` line written at the top of every accepted message.

use std::time::{SystemTime, UNIX_EPOCH};

/// What the Received: line says about the session.
#[derive(Debug, Clone)]
pub struct ReceivedInfo<'a> {
    /// `TCPREMOTEHOST`, or `unknown`.
    pub remote_host: &'a [u8],
    /// The accepted HELO name, shown only if it differs from `remote_host`.
    pub helo: &'a [u8],
    /// `TCPREMOTEINFO`, if set.
    pub remote_info: Option<&'a [u8]>,
    /// `TCPREMOTEIP`, or `unknown`.
    pub remote_ip: &'a [u8],
    /// `TCPLOCALHOST`, else `TCPLOCALIP`, else `unknown`.
    pub local: &'a [u8],
    /// The protocol word (`SMTP`, later `ESMTPS`, `ESMTPA`, ...).
    pub protocol: &'a str,
}

/// Builds the two-line Received: header (LF line ends) for time `now`.
pub fn received_line(info: &ReceivedInfo<'_>, now: SystemTime) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"Received: from ");
    push_safe(&mut out, info.remote_host);
    if !info.helo.eq_ignore_ascii_case(info.remote_host) {
        out.extend_from_slice(b" (HELO ");
        push_safe(&mut out, info.helo);
        out.push(b')');
    }
    out.extend_from_slice(b" (");
    if let Some(ri) = info.remote_info {
        push_safe(&mut out, ri);
        out.push(b'@');
    }
    push_safe(&mut out, info.remote_ip);
    out.extend_from_slice(b")\n  by ");
    push_safe(&mut out, info.local);
    out.extend_from_slice(b" with ");
    out.extend_from_slice(info.protocol.as_bytes());
    out.extend_from_slice(b"; ");
    out.extend_from_slice(rfc822_date_utc(now).as_bytes());
    out.push(b'\n');
    out
}

/// Copies `v`, replacing every byte that is not a letter, digit or one of
/// `. @ % + / = : -` by `?`.
fn push_safe(out: &mut Vec<u8>, v: &[u8]) {
    out.extend(v.iter().map(|&b| {
        if b.is_ascii_alphanumeric() || b".@%+/=:-".contains(&b) {
            b
        } else {
            b'?'
        }
    }));
}

/// `22 Nov 2026 03:07:14 -0000` for the given instant.
pub fn rfc822_date_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{d} {} {y} {:02}:{:02}:{:02} -0000",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `2026-11-22T03:07:14.250Z` (RFC 3339, UTC, milliseconds) for the given
/// instant: the time stamp of log lines.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Converts days since 1970-01-01 to (year, month 1-12, day 1-31) in the
/// proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn rfc3339_stamps() {
        assert_eq!(rfc3339_utc(at(0)), "1970-01-01T00:00:00.000Z");
        let t = at(1_795_835_234) + Duration::from_millis(250);
        assert_eq!(rfc3339_utc(t), "2026-11-28T03:07:14.250Z");
    }

    #[test]
    fn dates() {
        assert_eq!(rfc822_date_utc(at(0)), "1 Jan 1970 00:00:00 -0000");
        assert_eq!(
            rfc822_date_utc(at(1_795_316_834)),
            "22 Nov 2026 03:07:14 -0000"
        );
        assert_eq!(
            rfc822_date_utc(at(951_782_400)),
            "29 Feb 2000 00:00:00 -0000"
        );
    }

    #[test]
    fn received_with_and_without_helo() {
        let info = ReceivedInfo {
            remote_host: b"unknown",
            helo: b"client.test",
            remote_info: None,
            remote_ip: b"127.0.0.1",
            local: b"mx.ref.test",
            protocol: "SMTP",
        };
        assert_eq!(
            String::from_utf8(received_line(&info, at(1_795_316_834))).unwrap(),
            "Received: from unknown (HELO client.test) (127.0.0.1)\n  by mx.ref.test with SMTP; 22 Nov 2026 03:07:14 -0000\n"
        );
        let info = ReceivedInfo {
            helo: b"UNKNOWN",
            remote_info: Some(b"u s"),
            ..info
        };
        assert_eq!(
            String::from_utf8(received_line(&info, at(0))).unwrap(),
            "Received: from unknown (u?s@127.0.0.1)\n  by mx.ref.test with SMTP; 1 Jan 1970 00:00:00 -0000\n"
        );
    }

    #[test]
    fn unsafe_bytes_become_question_marks() {
        let mut v = Vec::new();
        push_safe(&mut v, b"a b\r\n<x>");
        assert_eq!(v, b"a?b???x?");
    }
}
