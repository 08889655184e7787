//! The real binary: `stdio` on pipes, `stdio` under tcpserver with smtplib
//! and swaks, and `serve` with smtplib.
