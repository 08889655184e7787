//! Transports: [`stdio`] (one session on stdin/stdout, under tcpserver or
//! inetd) and [`daemon`] (the `serve` listener), with what the daemon needs
//! around them: [`settings`], the validated configuration [`snapshot`], access [`rules`], the [`proxy`] protocol,
//! [`systemd`] activation, [`privileges`] dropping, [`io_limits`],
//! [`localip`] for `[ip]` literals, and the [`metrics_http`] endpoint.

pub mod daemon;
pub mod dns;
pub mod io_limits;
pub mod localip;
pub mod metrics_http;
pub mod privileges;
pub mod proxy;
pub mod rules;
pub mod settings;
pub mod snapshot;
pub mod stdio;
pub mod systemd;
