//! TLS for STARTTLS and implicit TLS: rustls with the ring provider, TLS
//! 1.2 and 1.3 only. Certificates come from `control/servercert.pem`
//! (chain and key in one PEM file, the qmail TLS convention) or from
//! separate certificate and key files given in the settings; more
//! certificates, chosen by SNI, from `control/servercerts/NAME.pem` (the
//! file name is the host name it serves).

use crate::config::ConfigError;
use rustls::crypto::ring;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the certificates are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertSource {
    /// A certificate chain file and its key file, instead of
    /// `control/servercert.pem`.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
}

/// What a session shows plugins about its TLS connection (the variable
/// names of ucspi-ssl's sslserver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `SSL_PROTOCOL`, e.g. `TLSv1.3`.
    pub protocol: String,
    /// `SSL_CIPHER`, the cipher suite's name.
    pub cipher: String,
}

/// The certificate for a handshake: by SNI name, else the default.
#[derive(Debug)]
struct SniResolver {
    default: Option<Arc<CertifiedKey>>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|n| self.by_name.get(&n.to_ascii_lowercase()))
            .or(self.default.as_ref())
            .cloned()
    }
}

/// Loads the certificates under `home` (or those of `source`). `Ok(None)`
/// when none are configured: STARTTLS is then not offered.
pub fn load(home: &Path, source: &CertSource) -> Result<Option<Arc<ServerConfig>>, ConfigError> {
    let combined = home.join("control/servercert.pem");
    let dir = home.join("control/servercerts");
    // Without any certificate nothing is set up (no crypto provider): most
    // `stdio` sessions under tcpserver have none.
    if source.cert_and_key.is_none() && !combined.exists() && !dir.exists() {
        return Ok(None);
    }
    let provider = Arc::new(ring::default_provider());
    let default = match &source.cert_and_key {
        Some((cert, key)) => Some(certified_key(&home.join(cert), &home.join(key), &provider)?),
        None => combined
            .exists()
            .then(|| certified_key(&combined, &combined, &provider))
            .transpose()?,
    };
    let mut by_name = HashMap::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pem"))
            else {
                continue;
            };
            by_name.insert(
                name.to_ascii_lowercase(),
                certified_key(&path, &path, &provider)?,
            );
        }
    }
    if default.is_none() && by_name.is_empty() {
        return Ok(None);
    }
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError::at(&dir, None, format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { default, by_name }));
    Ok(Some(Arc::new(config)))
}

/// Reads a certificate chain and a private key (possibly the same file)
/// and checks that they belong together.
fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<CertifiedKey>, ConfigError> {
    let cert_pem = crate::config::file::read(cert).map_err(|e| ConfigError::io(cert, &e))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError::at(cert, None, format!("bad certificate: {e}")))?;
    if chain.is_empty() {
        return Err(ConfigError::at(cert, None, "no certificate in the file"));
    }
    let key_pem = match key == cert {
        true => cert_pem,
        false => crate::config::file::read(key).map_err(|e| ConfigError::io(key, &e))?,
    };
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| ConfigError::at(key, None, key_problem(key == cert, &e)))?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| ConfigError::at(key, None, format!("unsupported private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        ConfigError::at(
            key,
            None,
            format!("key does not match the certificate: {e}"),
        )
    })?;
    Ok(Arc::new(certified))
}

/// What is wrong with a key file, and where the key could be instead.
/// `with_cert`: the key was looked for in the certificate's own file.
fn key_problem(with_cert: bool, e: &rustls_pki_types::pem::Error) -> String {
    match (e, with_cert) {
        (rustls_pki_types::pem::Error::NoItemsFound, true) => "has no private key: put the key \
             in this PEM file too, or name a key file with --tls-key (tls-key in the \
             settings file)"
            .into(),
        (rustls_pki_types::pem::Error::NoItemsFound, false) => {
            "has no private key (no PRIVATE KEY block in it)".into()
        }
        _ => format!("no usable private key: {e}"),
    }
}

/// The protocol and cipher of an established connection.
pub fn info(conn: &rustls::ServerConnection) -> TlsInfo {
    let protocol = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "unknown".to_string(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    TlsInfo { protocol, cipher }
}

/// The client configuration for STARTTLS towards a downstream MTA: the
/// certificate is verified against the CA certificates in `ca_file`
/// (PEM), unless `verify` is false (then any certificate is taken: the
/// connection is encrypted but not authenticated).
pub fn client_config(ca_file: &Path, verify: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let config = if verify {
        let mut roots = rustls::RootCertStore::empty();
        let pem = crate::config::file::read(ca_file)
            .map_err(|e| format!("{}: cannot read CA certificates: {e}", ca_file.display()))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("{}: bad certificate: {e}", ca_file.display()))?;
            // Bundles hold certificates rustls cannot use; skip those.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(format!("{}: no usable CA certificate", ca_file.display()));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Accepts any server certificate (`verify=no`); signatures are still
/// checked so the handshake itself is sound.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
