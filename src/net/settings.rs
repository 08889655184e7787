//! The daemon's own settings: command-line flags, and the same keys in an
//! optional INI file (`--config`, default `control/spp-smtpd.ini` if it
//! exists). A flag given on the command line wins over the file.

use super::proxy::Network;
use crate::config::control::MAX_TIMEOUT_SECS;
use crate::config::ConfigError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default listening address of `serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2525";

/// TLS and AUTH flags shared by `stdio` and `serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsAuthArgs {
    /// Certificate chain (PEM) instead of control/servercert.pem.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Refuse MAIL until the client has used STARTTLS.
    #[arg(long)]
    pub require_tls: bool,
    /// checkpassword program (and arguments, shell-style) that checks AUTH
    /// credentials.
    #[arg(long)]
    pub checkpassword: Option<String>,
    /// Dovecot auth socket that checks AUTH credentials.
    #[arg(long)]
    pub dovecot_auth: Option<PathBuf>,
    /// Offer AUTH on connections without TLS too.
    #[arg(long)]
    pub allow_auth_without_tls: bool,
    /// Seconds before answering a failed AUTH (default 5).
    #[arg(long)]
    pub auth_failure_delay: Option<u64>,
    /// Failed AUTH attempts before the connection is closed (default 3).
    #[arg(long)]
    pub auth_max_failures: Option<u32>,
}

/// Validated TLS and AUTH settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsAuthSettings {
    /// Where the certificates are.
    pub certs: crate::tls::CertSource,
    /// Refuse MAIL before STARTTLS.
    pub require_tls: bool,
    /// AUTH, if a backend is configured.
    pub auth: Option<crate::auth::AuthConfig>,
}

impl TlsAuthSettings {
    /// From flags, with INI values (`serve`) filling in what is missing.
    /// `default_on`: offer AUTH when `SMTPAUTH` is unset.
    fn resolve(
        args: &TlsAuthArgs,
        ini: &IniValues,
        default_on: bool,
        errors: &mut Vec<ConfigError>,
    ) -> TlsAuthSettings {
        let text = |flag: &Option<String>, key: &str| {
            flag.clone()
                .or_else(|| ini.get(key).map(|(_, v)| v.to_string()))
        };
        let yes = |flag: bool, key: &str, errors: &mut Vec<ConfigError>| {
            flag || ini
                .get(key)
                .is_some_and(|(line, v)| match v.to_ascii_lowercase().as_str() {
                    "yes" | "true" | "on" | "1" => true,
                    "no" | "false" | "off" | "0" => false,
                    _ => {
                        errors.push(ini.error(line, format!("{key}: {v:?} is not yes or no")));
                        false
                    }
                })
        };
        let num = |flag: Option<u64>, key: &str, default: u64, errors: &mut Vec<ConfigError>| {
            flag.or_else(|| {
                let (line, v) = ini.get(key)?;
                v.parse()
                    .map_err(|_| {
                        errors.push(ini.error(line, format!("{key}: {v:?} is not a number")))
                    })
                    .ok()
            })
            .unwrap_or(default)
        };
        let cert = args
            .tls_cert
            .clone()
            .or_else(|| ini.get("tls-cert").map(|(_, v)| PathBuf::from(v)));
        let key = args
            .tls_key
            .clone()
            .or_else(|| ini.get("tls-key").map(|(_, v)| PathBuf::from(v)));
        let cert_and_key = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (Some(c), None) => Some((c.clone(), c)),
            (None, Some(_)) => {
                errors.push(ConfigError::at(
                    Path::new("settings"),
                    None,
                    "tls-key needs tls-cert",
                ));
                None
            }
            (None, None) => None,
        };
        let require_tls = yes(args.require_tls, "require-tls", errors);
        let allow_without_tls = yes(
            args.allow_auth_without_tls,
            "allow-auth-without-tls",
            errors,
        );
        let failure_delay = Duration::from_secs(num(
            args.auth_failure_delay,
            "auth-failure-delay",
            5,
            errors,
        ));
        errors.extend(ini.out_of_range(
            "auth-failure-delay",
            args.auth_failure_delay.is_some(),
            failure_delay.as_secs(),
            0,
            MAX_TIMEOUT_SECS,
        ));
        let max_failures = num(
            args.auth_max_failures.map(u64::from),
            "auth-max-failures",
            3,
            errors,
        )
        .clamp(1, 1000) as u32;
        let backend = match (
            text(&args.checkpassword, "checkpassword"),
            args.dovecot_auth
                .clone()
                .or_else(|| ini.get("dovecot-auth").map(|(_, v)| PathBuf::from(v))),
        ) {
            (Some(_), Some(_)) => {
                errors.push(ConfigError::at(
                    Path::new("settings"),
                    None,
                    "choose checkpassword or dovecot-auth, not both",
                ));
                None
            }
            (Some(cp), None) => match shell_words::split(&cp) {
                Ok(words) if !words.is_empty() => Some(crate::auth::Backend::Checkpassword(words)),
                _ => {
                    errors.push(ConfigError::at(
                        Path::new("settings"),
                        None,
                        format!("checkpassword: cannot split {cp:?}"),
                    ));
                    None
                }
            },
            (None, Some(socket)) => Some(crate::auth::Backend::Dovecot(socket)),
            (None, None) => None,
        };
        TlsAuthSettings {
            certs: crate::tls::CertSource { cert_and_key },
            require_tls,
            auth: backend.map(|backend| crate::auth::AuthConfig {
                backend,
                allow_without_tls,
                failure_delay,
                max_failures,
                default_on,
            }),
        }
    }

    /// For `stdio`: flags only; AUTH follows `SMTPAUTH` (unset: off).
    pub fn for_stdio(args: &TlsAuthArgs) -> Result<TlsAuthSettings, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let s = TlsAuthSettings::resolve(args, &IniValues::default(), false, &mut errors);
        if errors.is_empty() {
            Ok(s)
        } else {
            Err(errors)
        }
    }
}

/// Reads an `ADDR:PORT` flag value (clap names the flag in its message).
pub fn parse_socket_addr(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| addr_problem(value))
}

/// Why `value` is not `ADDR:PORT`, with an example to copy; an address
/// without its port, the usual slip, is told so.
pub fn addr_problem(value: &str) -> String {
    match value.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            format!("needs ADDR:PORT, e.g. {ip}:25 ({value:?} has no port)")
        }
        Ok(std::net::IpAddr::V6(ip)) => {
            format!("needs ADDR:PORT, e.g. [{ip}]:25 ({value:?} has no port)")
        }
        Err(_) => format!(
            "needs ADDR:PORT with a numeric address, e.g. 127.0.0.1:25 or [::1]:25 (not {value:?})"
        ),
    }
}

/// Settings of `serve` as given on the command line (all optional, so the
/// INI file can fill in what is missing).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// INI file with the same keys as these flags (default:
    /// control/spp-smtpd.ini under the home, if it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (repeatable; default 127.0.0.1:2525).
    #[arg(long = "listen", value_parser = parse_socket_addr)]
    pub listen: Vec<SocketAddr>,
    /// Serve OpenMetrics text at http://ADDR/metrics.
    #[arg(long, value_parser = parse_socket_addr)]
    pub metrics: Option<SocketAddr>,
    /// TCPLOCALHOST for every session (default: control/me).
    #[arg(long)]
    pub local_name: Option<String>,
    /// Look up TCPREMOTEHOST by reverse DNS (forward-confirmed).
    #[arg(long)]
    pub reverse_dns: bool,
    /// DNS server for reverse lookups (ADDR:PORT; default: the system's).
    #[arg(long, value_parser = parse_socket_addr)]
    pub dns_server: Option<SocketAddr>,
    /// Seconds a reverse lookup may take (each query; default 5).
    #[arg(long)]
    pub dns_timeout: Option<u64>,
    /// Access rules in tcprules source format (default control/tcp.smtp if it exists).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Most connections at once; more get 421 and are closed.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Most connections at once from one client address.
    #[arg(long)]
    pub max_per_ip: Option<usize>,
    /// Longest a session may last, in seconds; then 421.
    #[arg(long)]
    pub session_lifetime: Option<u64>,
    /// Most plugin processes running at once across all sessions (others wait).
    #[arg(long)]
    pub max_plugins: Option<usize>,
    /// Seconds sessions in a transaction get to finish after SIGTERM.
    #[arg(long)]
    pub shutdown_deadline: Option<u64>,
    /// Address to listen on for connections that start with a PROXY
    /// protocol header (v1 or v2) from a trusted proxy (repeatable).
    #[arg(long = "listen-proxy", value_parser = parse_socket_addr)]
    pub listen_proxy: Vec<SocketAddr>,
    /// Network allowed to send PROXY headers (CIDR, repeatable).
    #[arg(long = "proxy-from")]
    pub proxy_from: Vec<Network>,
    /// Seconds to wait before the greeting; a client that talks first gets
    /// 554 and is closed (0: off).
    #[arg(long)]
    pub greeting_delay: Option<u64>,
    /// After binding the listeners, switch to this user (name or uid).
    #[arg(long)]
    pub user: Option<String>,
    /// With --user: this group instead of the user's primary group.
    #[arg(long)]
    pub group: Option<String>,
    /// Address for implicit TLS (port 465, RFC 8314 submission): AUTH
    /// required before MAIL (repeatable).
    #[arg(long = "listen-tls", value_parser = parse_socket_addr)]
    pub listen_tls: Vec<SocketAddr>,
    /// Address for implicit TLS without the AUTH requirement: mail
    /// exchange over TLS from the first byte (repeatable).
    #[arg(long = "listen-tls-mx", value_parser = parse_socket_addr)]
    pub listen_tls_mx: Vec<SocketAddr>,
    /// Address for submission: AUTH required before MAIL (repeatable).
    #[arg(long = "listen-submission", value_parser = parse_socket_addr)]
    pub listen_submission: Vec<SocketAddr>,
    /// TLS and AUTH.
    #[command(flatten)]
    pub tls_auth: TlsAuthArgs,
}

/// Validated settings of `serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    /// Plain SMTP listeners.
    pub listen: Vec<SocketAddr>,
    /// Where `/metrics` is served over HTTP, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// TCPLOCALHOST given to sessions, if set (else `control/me`).
    pub local_name: Option<String>,
    /// Reverse DNS for TCPREMOTEHOST.
    pub reverse_dns: bool,
    /// The DNS server for reverse lookups.
    pub dns_server: Option<SocketAddr>,
    /// Timeout of each reverse-DNS query.
    pub dns_timeout: Duration,
    /// The rules file: given explicitly (must exist), or the default
    /// `control/tcp.smtp` (used when it exists, looked for at every load).
    pub rules: PathBuf,
    /// The rules file was named explicitly.
    pub rules_required: bool,
    /// Global connection limit.
    pub max_connections: usize,
    /// Per-client-address connection limit.
    pub max_per_ip: usize,
    /// Session lifetime cap.
    pub session_lifetime: Duration,
    /// Concurrent plugin processes across all sessions.
    pub max_plugins: usize,
    /// Time sessions get to finish after SIGTERM.
    pub shutdown_deadline: Duration,
    /// Listeners that expect a PROXY header.
    pub listen_proxy: Vec<SocketAddr>,
    /// Who may send PROXY headers.
    pub proxy_from: Vec<Network>,
    /// Delay before the greeting (early-talker check); zero: off.
    pub greeting_delay: Duration,
    /// `listen` was not given: the default address is used unless systemd
    /// passes listening sockets.
    pub listen_is_default: bool,
    /// User to switch to after binding.
    pub user: Option<String>,
    /// Group to switch to after binding.
    pub group: Option<String>,
    /// Implicit-TLS submission listeners (AUTH required).
    pub listen_tls: Vec<SocketAddr>,
    /// Implicit-TLS listeners where AUTH is not required (MX over TLS).
    pub listen_tls_mx: Vec<SocketAddr>,
    /// Submission listeners (AUTH required).
    pub listen_submission: Vec<SocketAddr>,
    /// TLS and AUTH.
    pub tls_auth: TlsAuthSettings,
}

/// Defaults, safe on a small machine.
pub mod defaults {
    /// Connections at once.
    pub const MAX_CONNECTIONS: usize = 1000;
    /// Connections from one address at once.
    pub const MAX_PER_IP: usize = 20;
    /// Session lifetime, seconds.
    pub const SESSION_LIFETIME: u64 = 3600;
    /// Plugin processes at once.
    pub const MAX_PLUGINS: usize = 64;
    /// Shutdown deadline, seconds.
    pub const SHUTDOWN_DEADLINE: u64 = 30;
}

/// The keys an INI file may contain (the flag names without `--`).
const KEYS: &[&str] = &[
    "listen",
    "metrics",
    "local-name",
    "reverse-dns",
    "dns-server",
    "dns-timeout",
    "rules",
    "max-connections",
    "max-per-ip",
    "session-lifetime",
    "max-plugins",
    "shutdown-deadline",
    "listen-proxy",
    "proxy-from",
    "greeting-delay",
    "user",
    "group",
    "listen-tls",
    "listen-tls-mx",
    "listen-submission",
    "tls-cert",
    "tls-key",
    "require-tls",
    "checkpassword",
    "dovecot-auth",
    "allow-auth-without-tls",
    "auth-failure-delay",
    "auth-max-failures",
];

impl DaemonSettings {
    /// Merges the command line with the INI file (if any) under `home`.
    /// Every problem in the file is reported with file:line.
    pub fn resolve(home: &Path, args: &ServeArgs) -> Result<DaemonSettings, Vec<ConfigError>> {
        if let Some(e) = crate::config::control::home_problem(home) {
            return Err(vec![e]);
        }
        let file = match &args.config {
            Some(p) => Some(home.join(p)),
            None => Some(home.join("control/spp-smtpd.ini")).filter(|p| p.exists()),
        };
        let ini = match &file {
            Some(path) => IniValues::load(path)?,
            None => IniValues::default(),
        };
        DaemonSettings::resolve_with(home, args, file, ini)
    }

    /// The settings of an INI text alone (named `spp-smtpd.ini` in
    /// messages), with no flags: what the file's parser and checks make of
    /// any text (the fuzz target `settings_file` uses it).
    pub fn from_ini_text(home: &Path, text: &[u8]) -> Result<DaemonSettings, Vec<ConfigError>> {
        let path = PathBuf::from("spp-smtpd.ini");
        let ini = IniValues::parse(&path, text)?;
        DaemonSettings::resolve_with(home, &ServeArgs::default(), Some(path), ini)
    }

    /// [`DaemonSettings::resolve`] once the INI file (if any) is read.
    fn resolve_with(
        home: &Path,
        args: &ServeArgs,
        file: Option<PathBuf>,
        ini: IniValues,
    ) -> Result<DaemonSettings, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let listen_is_default = args.listen.is_empty() && ini.get("listen").is_none();
        let listen = if !args.listen.is_empty() {
            args.listen.clone()
        } else {
            match ini.get("listen") {
                Some((line, v)) => v
                    .split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .filter_map(|a| match a.parse() {
                        Ok(addr) => Some(addr),
                        Err(_) => {
                            errors.push(ini.error(line, format!("listen: {}", addr_problem(a))));
                            None
                        }
                    })
                    .collect(),
                None => vec![DEFAULT_LISTEN.parse().expect("default address parses")],
            }
        };
        let list = |key: &str| -> Vec<String> {
            ini.get(key)
                .map(|(_, v)| {
                    v.split([',', ' '])
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let addr_list =
            |flag: &[SocketAddr], key: &str, errors: &mut Vec<ConfigError>| -> Vec<SocketAddr> {
                if !flag.is_empty() {
                    return flag.to_vec();
                }
                let line = ini.get(key).map(|(l, _)| l).unwrap_or(0);
                list(key)
                    .iter()
                    .filter_map(|a| {
                        a.parse()
                            .map_err(|_| {
                                errors.push(ini.error(line, format!("{key}: {}", addr_problem(a))))
                            })
                            .ok()
                    })
                    .collect()
            };
        let listen_proxy = addr_list(&args.listen_proxy, "listen-proxy", &mut errors);
        let proxy_from: Vec<Network> = if !args.proxy_from.is_empty() {
            args.proxy_from.clone()
        } else {
            let line = ini.get("proxy-from").map(|(l, _)| l).unwrap_or(0);
            list("proxy-from")
                .iter()
                .filter_map(|n| {
                    n.parse()
                        .map_err(|e| errors.push(ini.error(line, format!("proxy-from: {e}"))))
                        .ok()
                })
                .collect()
        };
        let listen_tls = addr_list(&args.listen_tls, "listen-tls", &mut errors);
        let listen_tls_mx = addr_list(&args.listen_tls_mx, "listen-tls-mx", &mut errors);
        let listen_submission =
            addr_list(&args.listen_submission, "listen-submission", &mut errors);
        let tls_auth = TlsAuthSettings::resolve(&args.tls_auth, &ini, true, &mut errors);
        if !listen_proxy.is_empty() && proxy_from.is_empty() {
            errors.push(ConfigError::at(
                file.as_deref().unwrap_or(Path::new("command line")),
                None,
                "listen-proxy needs proxy-from: the networks allowed to send PROXY headers",
            ));
        }
        let mut number = |key: &str, flag: Option<u64>, default: u64| -> u64 {
            if let Some(v) = flag {
                return v;
            }
            match ini.get(key) {
                None => default,
                Some((line, v)) => v.parse().unwrap_or_else(|_| {
                    errors.push(ini.error(line, format!("{key}: {v:?} is not a number")));
                    default
                }),
            }
        };
        let max_connections = number(
            "max-connections",
            args.max_connections.map(|v| v as u64),
            defaults::MAX_CONNECTIONS as u64,
        ) as usize;
        let max_per_ip = number(
            "max-per-ip",
            args.max_per_ip.map(|v| v as u64),
            defaults::MAX_PER_IP as u64,
        ) as usize;
        let session_lifetime = Duration::from_secs(number(
            "session-lifetime",
            args.session_lifetime,
            defaults::SESSION_LIFETIME,
        ));
        let max_plugins = number(
            "max-plugins",
            args.max_plugins.map(|v| v as u64),
            defaults::MAX_PLUGINS as u64,
        ) as usize;
        let shutdown_deadline = Duration::from_secs(number(
            "shutdown-deadline",
            args.shutdown_deadline,
            defaults::SHUTDOWN_DEADLINE,
        ));
        let greeting_delay = Duration::from_secs(number("greeting-delay", args.greeting_delay, 0));
        let dns_timeout = Duration::from_secs(number("dns-timeout", args.dns_timeout, 5).max(1));
        let reverse_dns = args.reverse_dns
            || match ini.get("reverse-dns") {
                None => false,
                Some((line, v)) => match v.to_ascii_lowercase().as_str() {
                    "yes" | "true" | "on" | "1" => true,
                    "no" | "false" | "off" | "0" => false,
                    _ => {
                        errors
                            .push(ini.error(line, format!("reverse-dns: {v:?} is not yes or no")));
                        false
                    }
                },
            };
        let metrics = args.metrics.or_else(|| {
            let (line, v) = ini.get("metrics")?;
            v.parse()
                .map_err(|_| errors.push(ini.error(line, format!("metrics: {}", addr_problem(v)))))
                .ok()
        });
        let dns_server = args.dns_server.or_else(|| {
            let (line, v) = ini.get("dns-server")?;
            v.parse()
                .map_err(|_| {
                    errors.push(ini.error(line, format!("dns-server: {}", addr_problem(v))))
                })
                .ok()
        });
        let local_name = args
            .local_name
            .clone()
            .or_else(|| ini.get("local-name").map(|(_, v)| v.to_string()));
        let user = args
            .user
            .clone()
            .or_else(|| ini.get("user").map(|(_, v)| v.to_string()));
        let group = args
            .group
            .clone()
            .or_else(|| ini.get("group").map(|(_, v)| v.to_string()));
        if let Some(u) = &user {
            if let Err(e) = super::privileges::lookup_user(u) {
                errors.push(ini.named_error("user", args.user.is_some(), format!(": {e}")));
            }
        }
        if let Some(g) = &group {
            if let Err(e) = super::privileges::lookup_group(g) {
                errors.push(ini.named_error("group", args.group.is_some(), format!(": {e}")));
            }
        }
        let explicit_rules = args
            .rules
            .clone()
            .or_else(|| ini.get("rules").map(|(_, v)| PathBuf::from(v)));
        let rules_required = explicit_rules.is_some();
        let rules = home.join(explicit_rules.unwrap_or_else(|| PathBuf::from("control/tcp.smtp")));
        let permits = tokio::sync::Semaphore::MAX_PERMITS as u64;
        let year = MAX_TIMEOUT_SECS;
        for (key, flag_given, value, least, most) in [
            (
                "max-connections",
                args.max_connections.is_some(),
                max_connections as u64,
                1,
                permits,
            ),
            (
                "max-per-ip",
                args.max_per_ip.is_some(),
                max_per_ip as u64,
                1,
                u64::MAX,
            ),
            (
                "max-plugins",
                args.max_plugins.is_some(),
                max_plugins as u64,
                1,
                permits,
            ),
            (
                "session-lifetime",
                args.session_lifetime.is_some(),
                session_lifetime.as_secs(),
                1,
                year,
            ),
            (
                "shutdown-deadline",
                args.shutdown_deadline.is_some(),
                shutdown_deadline.as_secs(),
                0,
                year,
            ),
            (
                "greeting-delay",
                args.greeting_delay.is_some(),
                greeting_delay.as_secs(),
                0,
                year,
            ),
            (
                "dns-timeout",
                args.dns_timeout.is_some(),
                dns_timeout.as_secs(),
                0,
                year,
            ),
        ] {
            errors.extend(ini.out_of_range(key, flag_given, value, least, most));
        }
        errors.extend(ini.unknown_keys());
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(DaemonSettings {
            listen,
            metrics,
            local_name,
            reverse_dns,
            dns_server,
            dns_timeout,
            rules,
            rules_required,
            max_connections,
            max_per_ip,
            session_lifetime,
            max_plugins,
            shutdown_deadline,
            listen_proxy,
            proxy_from,
            greeting_delay,
            listen_is_default,
            user,
            group,
            listen_tls,
            listen_tls_mx,
            listen_submission,
            tls_auth,
        })
    }
}

impl DaemonSettings {
    /// Reads the rules file: an explicitly named one must exist; the
    /// default one is optional (no file: every client allowed).
    pub fn load_rules(&self) -> Result<super::rules::Rules, Vec<ConfigError>> {
        if !self.rules_required && !self.rules.exists() {
            return Ok(super::rules::Rules::default());
        }
        super::rules::Rules::load(&self.rules)
    }
}

/// Key/value pairs of the INI file with their line numbers.
#[derive(Debug, Default)]
struct IniValues {
    path: PathBuf,
    values: Vec<(String, String, usize)>,
}

impl IniValues {
    /// Reads the file with rust-ini (keys outside any section, or in a
    /// `[serve]` section) and finds each key's line for messages.
    fn load(path: &Path) -> Result<IniValues, Vec<ConfigError>> {
        let bytes = crate::config::file::read(path).map_err(|e| vec![ConfigError::io(path, &e)])?;
        IniValues::parse(path, &bytes)
    }

    /// Parses the text of the file `path`.
    fn parse(path: &Path, bytes: &[u8]) -> Result<IniValues, Vec<ConfigError>> {
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| vec![ConfigError::at(path, None, "not UTF-8")])?;
        let ini = ini::Ini::load_from_str(&text)
            .map_err(|e| vec![ConfigError::at(path, Some(e.line), e.msg.to_string())])?;
        let mut values = Vec::new();
        let mut errors = Vec::new();
        for (section, props) in ini.iter() {
            if let Some(name) = section.filter(|s| *s != "serve") {
                let line = line_of(&text, &format!("[{name}]"));
                errors.push(ConfigError::at(
                    path,
                    line,
                    format!("unknown section [{name}] (use [serve] or none)"),
                ));
                continue;
            }
            for (k, v) in props.iter() {
                let line = line_of(&text, k).unwrap_or(0);
                values.push((k.to_string(), v.trim().to_string(), line));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(IniValues {
            path: path.to_path_buf(),
            values,
        })
    }

    /// The last value of `key`, with its line.
    fn get(&self, key: &str) -> Option<(usize, &str)> {
        self.values
            .iter()
            .rev()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, l)| (*l, v.as_str()))
    }

    /// A problem at `line` of the file (without a file: on the command line).
    fn error(&self, line: usize, msg: String) -> ConfigError {
        match self.path.as_os_str().is_empty() {
            true => ConfigError::at(Path::new("command line"), None, msg),
            false => ConfigError::at(&self.path, (line > 0).then_some(line), msg),
        }
    }

    /// The problem with a number setting outside `least..=most`, if it
    /// is: blamed on the flag when `flag_given`, else on the file's line.
    /// The largest values are those the daemon can use: a semaphore's
    /// permits, a timer's range (a year of seconds).
    fn out_of_range(
        &self,
        key: &str,
        flag_given: bool,
        value: u64,
        least: u64,
        most: u64,
    ) -> Option<ConfigError> {
        let bound = match (value < least, value > most) {
            (true, _) => format!("at least {least}"),
            (_, true) if most == MAX_TIMEOUT_SECS => format!("at most {most} seconds (a year)"),
            (_, true) => format!("at most {most}"),
            _ => return None,
        };
        Some(self.named_error(key, flag_given, format!(" must be {bound}")))
    }

    /// A problem with the setting `key`: `--key` and `msg` on the command
    /// line when `flag_given`, else `key` and `msg` at the file's line
    /// (`msg` starts with its separator: `": ..."` or `" must ..."`).
    fn named_error(&self, key: &str, flag_given: bool, msg: String) -> ConfigError {
        match (flag_given, self.get(key)) {
            (false, Some((line, _))) => self.error(line, format!("{key}{msg}")),
            _ => ConfigError::at(Path::new("command line"), None, format!("--{key}{msg}")),
        }
    }

    /// Keys that are not settings.
    fn unknown_keys(&self) -> Vec<ConfigError> {
        self.values
            .iter()
            .filter(|(k, _, _)| !KEYS.contains(&k.as_str()))
            .map(|(k, _, l)| {
                self.error(
                    *l,
                    format!("unknown key {k:?} (known: {})", KEYS.join(", ")),
                )
            })
            .collect()
    }
}

/// The 1-based line where `needle` starts a line (after blanks), if any.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with(needle)
                && l[needle.len()..]
                    .trim_start()
                    .chars()
                    .next()
                    .is_none_or(|c| c == '=' || c == ']' || needle.ends_with(']'))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home_with_ini(text: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "spp-settings-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("control")).unwrap();
        std::fs::write(dir.join("control/spp-smtpd.ini"), text).unwrap();
        dir
    }

    #[test]
    fn defaults_without_file() {
        let dir = home_with_ini("");
        std::fs::remove_file(dir.join("control/spp-smtpd.ini")).unwrap();
        let s = DaemonSettings::resolve(&dir, &ServeArgs::default()).unwrap();
        assert_eq!(s.listen, vec![DEFAULT_LISTEN.parse().unwrap()]);
        assert_eq!(s.max_connections, defaults::MAX_CONNECTIONS);
        assert!(!s.reverse_dns);
        assert!(!s.rules_required);
        assert_eq!(s.load_rules().unwrap().0.len(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn file_values_and_flags_win() {
        let dir = home_with_ini(
            "# settings\nlisten = 127.0.0.1:2600, 127.0.0.2:2601\nmax-connections = 7\n[serve]\nreverse-dns = yes\nlocal-name = mx.test\n",
        );
        let s = DaemonSettings::resolve(&dir, &ServeArgs::default()).unwrap();
        assert_eq!(s.listen.len(), 2);
        assert_eq!(s.max_connections, 7);
        assert!(s.reverse_dns);
        assert_eq!(s.local_name.as_deref(), Some("mx.test"));
        let args = ServeArgs {
            max_connections: Some(9),
            listen: vec!["127.0.0.1:1".parse().unwrap()],
            ..Default::default()
        };
        let s = DaemonSettings::resolve(&dir, &args).unwrap();
        assert_eq!((s.max_connections, s.listen.len()), (9, 1));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_bad_line_is_reported() {
        let dir = home_with_ini("listen = nowhere\nmax-per-ip = many\nreverse-dns = perhaps\ncolour = blue\nmax-plugins = 0\n");
        let errs = DaemonSettings::resolve(&dir, &ServeArgs::default()).unwrap_err();
        let lines: Vec<Option<usize>> = errs.iter().map(|e| e.line).collect();
        assert_eq!(
            lines,
            vec![Some(1), Some(2), Some(3), Some(5), Some(4)],
            "{errs:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
