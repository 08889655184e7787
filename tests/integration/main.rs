//! The integration suite: one test binary. `util` has the helpers; each
//! module covers one area, from the in-memory session driver to the real
//! binary under tcpserver with real clients.

mod util;

mod binary;
mod body_hook;
mod check;
mod chunking;
mod config_files;
mod content_filters;
mod daemon;
mod dns_checks;
mod downstream;
mod enhanced_status;
mod examples;
mod hostile_clients;
mod logs;
mod metrics;
mod mta_harness;
mod nothing_lost;
mod plugin_faults;
mod plugin_platform;
mod real_mta;
mod session_rules;
mod smtputf8;
mod startup_errors;
mod tls_auth;
mod tls_ports;
mod try_command;
mod validation;
