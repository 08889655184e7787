//! What the daemon counts for `serve --metrics`: connections, replies,
//! plugin runs, persistent pools, queue hand-offs, TLS and AUTH, kept in
//! one registry and written as OpenMetrics text.
//!
//! Counting is off until [`install`] is called (only `serve --metrics`
//! does): every recording site asks [`get`] first, one atomic load, so a
//! `stdio` session pays nothing and allocates nothing.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The metrics, when counting is on.
pub fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

/// Turns counting on (idempotent); returns the metrics.
pub fn install() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

/// A label set with one `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// Why (a fixed word).
    pub reason: &'static str,
}

/// A reply: the command it answered and its class (`2xx`, `4xx`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplyLabels {
    /// `MAIL`, `RCPT`, ... (`CONNECT` before the greeting).
    pub command: &'static str,
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    pub class: &'static str,
}

/// One plugin line.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    /// The plugin's configuration line.
    pub plugin: String,
}

/// A plugin run's verdict.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// The plugin's configuration line.
    pub plugin: String,
    /// The hook it ran at.
    pub hook: &'static str,
    /// `accept`, `refuse`, `fail`, `observed`, `none`, ...
    pub verdict: &'static str,
}

/// A plugin failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The plugin's configuration line.
    pub plugin: String,
    /// `timeout`, `child crashed`, `busy`, ...
    pub kind: &'static str,
}

/// A queue hand-off.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandoffLabels {
    /// `maildir`, `qmail-queue`, `sendmail`, `smtp`, `lmtp`.
    pub backend: &'static str,
    /// `queued`, `tempfail`, `permfail`.
    pub result: &'static str,
}

/// The result of a TLS handshake or an AUTH.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// Every metric of the daemon.
pub struct Metrics {
    registry: Registry,
    /// Connections open now.
    pub connections_open: Gauge,
    /// Connections accepted since start.
    pub connections: Counter,
    /// Connections refused, by reason (`limit`, `per-address`, `rule`).
    pub connections_refused: Family<Reason, Counter>,
    /// Replies, by command and class.
    pub replies: Family<ReplyLabels, Counter>,
    /// Plugin runs, by plugin, hook and verdict.
    pub plugin_runs: Family<VerdictLabels, Counter>,
    /// Plugin failures, by plugin and kind.
    pub plugin_failures: Family<FailureLabels, Counter>,
    /// Plugin run time, seconds, by plugin.
    pub plugin_seconds: Family<PluginLabels, Histogram>,
    /// Processes of a persistent plugin running now.
    pub pool_workers: Family<PluginLabels, Gauge>,
    /// Processes of a persistent plugin started after a failure.
    pub pool_restarts: Family<PluginLabels, Counter>,
    /// Requests waiting for a process of a persistent plugin now.
    pub pool_queue: Family<PluginLabels, Gauge>,
    /// Messages handed to the queue, by backend and result.
    pub handoffs: Family<HandoffLabels, Counter>,
    /// TLS handshakes, by result.
    pub tls_handshakes: Family<ResultLabels, Counter>,
    /// AUTH attempts, by result.
    pub auth: Family<ResultLabels, Counter>,
}

/// Bucket bounds of the plugin latency histogram, seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("spp_smtpd");
        let m = Metrics {
            connections_open: Gauge::default(),
            connections: Counter::default(),
            connections_refused: Family::default(),
            replies: Family::default(),
            plugin_runs: Family::default(),
            plugin_failures: Family::default(),
            plugin_seconds: Family::new_with_constructor(|| {
                Histogram::new(LATENCY_BUCKETS.iter().copied())
            }),
            pool_workers: Family::default(),
            pool_restarts: Family::default(),
            pool_queue: Family::default(),
            handoffs: Family::default(),
            tls_handshakes: Family::default(),
            auth: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections_open",
            "Connections open now",
            m.connections_open.clone(),
        );
        registry.register("connections", "Connections accepted", m.connections.clone());
        registry.register(
            "connections_refused",
            "Connections refused by a limit or a rule",
            m.connections_refused.clone(),
        );
        registry.register(
            "replies",
            "Replies by command and code class",
            m.replies.clone(),
        );
        registry.register(
            "plugin_runs",
            "Plugin runs by plugin, hook and verdict",
            m.plugin_runs.clone(),
        );
        registry.register(
            "plugin_failures",
            "Plugin failures by plugin and kind",
            m.plugin_failures.clone(),
        );
        registry.register(
            "plugin_run_seconds",
            "Time of one plugin run or request",
            m.plugin_seconds.clone(),
        );
        registry.register(
            "persistent_workers",
            "Processes of a persistent plugin running",
            m.pool_workers.clone(),
        );
        registry.register(
            "persistent_restarts",
            "Processes of a persistent plugin started after a failure",
            m.pool_restarts.clone(),
        );
        registry.register(
            "persistent_queue",
            "Requests waiting for a persistent plugin's process",
            m.pool_queue.clone(),
        );
        registry.register(
            "queue_handoffs",
            "Messages handed to the queue by backend and result",
            m.handoffs.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes by result",
            m.tls_handshakes.clone(),
        );
        registry.register("auth", "AUTH attempts by result", m.auth.clone());
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The same in the older Prometheus text format (0.0.4), for clients
    /// that do not ask for OpenMetrics: no `# EOF`, and a counter's HELP
    /// and TYPE name its `_total` samples.
    pub fn encode_prometheus(&self) -> String {
        to_prometheus_text(&self.encode())
    }
}

/// Counts a reply to `command` with `code`.
pub fn reply(command: &'static str, code: u16) {
    if let Some(m) = get() {
        m.replies
            .get_or_create(&ReplyLabels {
                command,
                class: class_of(code),
            })
            .inc();
    }
}

/// Counts one plugin run: its verdict, its failure if any, its time.
pub fn plugin_run(
    plugin: &[u8],
    hook: &'static str,
    verdict: &'static str,
    failure: Option<&'static str>,
    seconds: f64,
) {
    let Some(m) = get() else {
        return;
    };
    let plugin = label(plugin);
    if let Some(kind) = failure {
        m.plugin_failures
            .get_or_create(&FailureLabels {
                plugin: plugin.clone(),
                kind,
            })
            .inc();
    }
    m.plugin_seconds
        .get_or_create(&PluginLabels {
            plugin: plugin.clone(),
        })
        .observe(seconds);
    m.plugin_runs
        .get_or_create(&VerdictLabels {
            plugin,
            hook,
            verdict,
        })
        .inc();
}

/// Counts a hand-off to `backend` that got the reply `code`.
pub fn handoff(backend: &'static str, code: u16) {
    if let Some(m) = get() {
        let result = match code / 100 {
            2 => "queued",
            4 => "tempfail",
            _ => "permfail",
        };
        m.handoffs
            .get_or_create(&HandoffLabels { backend, result })
            .inc();
    }
}

/// Counts a TLS handshake.
pub fn tls_handshake(ok: bool) {
    if let Some(m) = get() {
        m.tls_handshakes.get_or_create(&result(ok)).inc();
    }
}

/// Counts an AUTH attempt.
pub fn auth(ok: bool) {
    if let Some(m) = get() {
        m.auth.get_or_create(&result(ok)).inc();
    }
}

/// Counts a connection refused for `reason`.
pub fn connection_refused(reason: &'static str) {
    if let Some(m) = get() {
        m.connections_refused
            .get_or_create(&Reason { reason })
            .inc();
    }
}

fn result(ok: bool) -> ResultLabels {
    ResultLabels {
        result: if ok { "ok" } else { "failed" },
    }
}

/// A label value from configuration bytes (a plugin line), escaped for the
/// OpenMetrics text (the encoder writes values as they are): backslash,
/// double quote and LF escaped, other control bytes and invalid UTF-8
/// shown as `?`.
pub fn label(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\u{fffd}' => out.push('?'),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// Converts OpenMetrics text (as this registry writes it: HELP, TYPE, then
/// samples, per family) to the Prometheus text format.
fn to_prometheus_text(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len());
    let mut help: Option<&str> = None;
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, ""));
            let suffix = if kind == "counter" { "_total" } else { "" };
            if let Some(h) = help.take() {
                let text = h.strip_prefix(name).unwrap_or(h);
                out.push_str(&format!("# HELP {name}{suffix}{text}\n"));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The class label of a reply code.
pub fn class_of(code: u16) -> &'static str {
    match code / 100 {
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_every_metric() {
        let m = Metrics::new();
        m.replies
            .get_or_create(&ReplyLabels {
                command: "RCPT",
                class: class_of(550),
            })
            .inc();
        m.plugin_seconds
            .get_or_create(&PluginLabels {
                plugin: label(b"a \"b\"\\\n\xff"),
            })
            .observe(0.002);
        let text = m.encode();
        assert!(
            text.contains("spp_smtpd_replies_total{command=\"RCPT\",class=\"5xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("spp_smtpd_plugin_run_seconds_bucket{le=\"0.0025\",plugin=\"a \\\"b\\\"\\\\\\n?\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        let old = m.encode_prometheus();
        assert!(old.contains("# HELP spp_smtpd_replies_total Replies by command and code class.\n# TYPE spp_smtpd_replies_total counter\nspp_smtpd_replies_total{"), "{old}");
        assert!(
            old.contains("# TYPE spp_smtpd_connections_open gauge\n"),
            "{old}"
        );
        assert!(!old.contains("# EOF"), "{old}");
    }
}
