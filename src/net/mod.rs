//! Transports: [`stdio`] (one session on stdin/stdout, under tcpserver or
//! inetd) and [`daemon`] (the `serve` listener), plus [`localip`].

pub mod daemon;
pub mod io_limits;
pub mod localip;
pub mod rules;
pub mod settings;
pub mod stdio;
