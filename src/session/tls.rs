//! STARTTLS (RFC 3207) and implicit TLS: the handshake replaces the
//! session's stream in place; input pipelined after STARTTLS is discarded
//! and the session state is reset.

use super::{Flow, Session};
use crate::protocol::reply::text;
use tokio_rustls::TlsAcceptor;

impl Session {
    /// STARTTLS
    pub(crate) async fn starttls(&mut self) -> Flow {
        let Some(config) = self.cfg.tls.clone() else {
            return self.simple(text::UNIMPLEMENTED);
        };
        if self.tls.is_some() {
            return self.simple("503 TLS already active (#5.5.1)");
        }
        if self.authenticated.is_some() {
            // RFC 3207 would have us forget the authentication; refusing
            // keeps the relay grant from crossing the upgrade at all.
            return self.simple("503 STARTTLS is not allowed after AUTH (#5.5.1)");
        }
        self.io.reply("220 ready to start TLS");
        if self.io.flush().await.is_err() {
            return Flow::Close(1);
        }
        // Commands pipelined after STARTTLS came in the clear: never run them.
        let dropped = self.io.discard_input();
        if dropped > 0 {
            tracing::warn!(session = %self.id, bytes = dropped, "input after STARTTLS discarded");
        }
        if !self.handshake(config).await {
            return Flow::Close(1);
        }
        // RFC 3207: forget everything learnt before TLS, including what
        // plugins set from commands sent in the clear.
        let ssl: Vec<(&str, Option<Vec<u8>>)> = ["SSL_PROTOCOL", "SSL_CIPHER"]
            .iter()
            .map(|k| (*k, self.env.get(k).map(<[u8]>::to_vec)))
            .collect();
        self.env = self.initial_env.clone();
        for (k, v) in ssl {
            if let Some(v) = v {
                self.env.set(k, v);
            }
        }
        self.spp.off = self.spp.plugins.is_none();
        self.helo = self.client.remote_host.clone();
        self.tx = None;
        self.end_transaction();
        self.bad_sender = false;
        self.spp.clear_transaction();
        self.verdicts.clear();
        Flow::Continue
    }

    /// Runs the TLS handshake on the current stream; on success the
    /// session continues over TLS and plugins see `SSL_PROTOCOL` and
    /// `SSL_CIPHER`. False if it failed or timed out.
    pub(crate) async fn handshake(&mut self, config: std::sync::Arc<rustls::ServerConfig>) -> bool {
        let stream = self.io.take_stream();
        let accept = tokio::time::timeout(
            self.cfg.control.timeout,
            TlsAcceptor::from(config).accept(stream),
        );
        // A shutdown or the lifetime cap also ends a handshake in progress.
        let stopped = super::io::wait_stop(&mut self.io.stop, false);
        let result = tokio::select! {
            r = accept => r,
            _ = stopped => {
                tracing::info!(session = %self.id, "TLS handshake abandoned: shutting down");
                return false;
            }
        };
        match result {
            Ok(Ok(tls)) => {
                let info = crate::tls::info(tls.get_ref().1);
                self.env.set("SSL_PROTOCOL", &info.protocol);
                self.env.set("SSL_CIPHER", &info.cipher);
                tracing::debug!(session = %self.id, protocol = %info.protocol, cipher = %info.cipher, "TLS established");
                self.tls = Some(info);
                self.io.set_stream(Box::new(tls));
                crate::metrics::tls_handshake(true);
                true
            }
            Ok(Err(e)) => {
                tracing::info!(session = %self.id, error = %e, "TLS handshake failed");
                crate::metrics::tls_handshake(false);
                false
            }
            Err(_) => {
                tracing::info!(session = %self.id, "TLS handshake timed out");
                crate::metrics::tls_handshake(false);
                false
            }
        }
    }

    /// The protocol word of the Received: line (RFC 3848; in an SMTPUTF8
    /// transaction RFC 6531 §3.7.3).
    pub(crate) fn received_protocol(&self) -> &'static str {
        match (
            self.smtputf8,
            self.tls.is_some(),
            self.authenticated.is_some(),
        ) {
            (false, false, false) => "SMTP",
            (false, true, false) => "ESMTPS",
            (false, false, true) => "ESMTPA",
            (false, true, true) => "ESMTPSA",
            (true, false, false) => "UTF8SMTP",
            (true, true, false) => "UTF8SMTPS",
            (true, false, true) => "UTF8SMTPA",
            (true, true, true) => "UTF8SMTPSA",
        }
    }
}
