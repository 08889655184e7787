//! Transports: [`stdio`] (one session on stdin/stdout, under tcpserver or
//! inetd) and [`daemon`] (the `serve` listener), with what the daemon needs
//! around them: [`settings`], access [`rules`], the [`proxy`] protocol,
//! [`systemd`] activation, [`privileges`] dropping, [`io_limits`], and
//! [`localip`] for `[ip]` literals.

pub mod daemon;
pub mod dns;
pub mod io_limits;
pub mod localip;
pub mod privileges;
pub mod proxy;
pub mod rules;
pub mod settings;
pub mod stdio;
pub mod systemd;
