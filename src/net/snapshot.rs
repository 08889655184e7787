//! The daemon's configuration snapshot and the one validator that decides
//! whether a configuration may be used. `check` prints its findings,
//! `serve` refuses to start on an error, and SIGHUP keeps the running
//! snapshot on an error: all three ask [`validate`]. It covers the control
//! files and `smtpplugins` (`config::check`), the access rules, the
//! certificates, and what the daemon's settings need of them.

use super::rules::Rules;
use super::settings::{DaemonSettings, ServeArgs};
use crate::config::check::{Finding, Report, Severity};
use crate::config::{Config, ConfigError};
use std::path::Path;
use std::sync::Arc;

/// Everything sessions read from files, replaced as a whole on SIGHUP.
#[derive(Debug)]
pub struct Snapshot {
    /// Control files and plugins.
    pub config: Arc<Config>,
    /// Access rules (empty: every client allowed, no variables).
    pub rules: Arc<Rules>,
}

impl Snapshot {
    /// Validates the configuration under `home` and loads it. On success,
    /// the snapshot and the warnings; otherwise every error, sorted by
    /// file and line.
    pub fn load(
        home: &Path,
        settings: &DaemonSettings,
    ) -> Result<(Snapshot, Vec<Finding>), Vec<Finding>> {
        let report = validate(home, settings, None);
        if report.has_errors() {
            return Err(report.only(Severity::Error));
        }
        // The files may change between validating and loading: whatever
        // loading finds is refused too.
        let mut late = Report::default();
        let config = Config::load_with(home, &settings.tls_auth.certs)
            .map_err(|e| late.error(e.into_config_error()))
            .ok();
        if let Some(Err(e)) = config.as_ref().map(|c| &c.default_plugins) {
            late.error(e.clone());
        }
        let rules = settings
            .load_rules()
            .map_err(|errs| late.errors_from(errs))
            .ok();
        match (config, rules) {
            (Some(config), Some(rules)) if !late.has_errors() => Ok((
                Snapshot {
                    config: Arc::new(config),
                    rules: Arc::new(rules),
                },
                report.only(Severity::Warning),
            )),
            _ => Err(late.only(Severity::Error)),
        }
    }
}

/// Every problem of the configuration `serve` would run with under
/// `home`: control files, the plugin file (`plugins`, relative to the
/// home; `None`: `control/smtpplugins`), rules, certificates, and the
/// settings' needs (a certificate for implicit TLS, an AUTH backend where
/// AUTH is required).
pub fn validate(home: &Path, settings: &DaemonSettings, plugins: Option<&Path>) -> Report {
    let mut report = Report::default();
    crate::config::check::control_files(home, plugins, &mut report);
    if let Err(errors) = settings.load_rules() {
        report.errors_from(errors);
    }
    let have_certificate = match crate::tls::load(home, &settings.tls_auth.certs) {
        Ok(tls) => tls.is_some(),
        Err(e) => {
            report.error(e);
            // Configured but broken: that error is the one to fix.
            true
        }
    };
    let here = Path::new("settings");
    for (what, wanted) in [
        ("listen-tls", !settings.listen_tls.is_empty()),
        ("listen-tls-mx", !settings.listen_tls_mx.is_empty()),
        ("require-tls", settings.tls_auth.require_tls),
    ] {
        if wanted && !have_certificate {
            report.error(ConfigError::at(
                here,
                None,
                format!("{what} needs a certificate (control/servercert.pem or tls-cert)"),
            ));
        }
    }
    match &settings.tls_auth.auth {
        None => {
            if !settings.listen_submission.is_empty() {
                report.error(ConfigError::at(
                    here,
                    None,
                    "listen-submission needs an AUTH backend (checkpassword or dovecot-auth)",
                ));
            }
            if !settings.listen_tls.is_empty() {
                report.error(ConfigError::at(
                    here,
                    None,
                    "listen-tls requires AUTH (implicit TLS is for submission, RFC 8314) and so \
                     needs an AUTH backend (checkpassword or dovecot-auth); for mail exchange \
                     over implicit TLS without AUTH use listen-tls-mx",
                ));
            }
        }
        Some(crate::auth::AuthConfig {
            backend: crate::auth::Backend::Checkpassword(argv),
            ..
        }) => {
            let program = home.join(&argv[0]);
            if let Some(why) = crate::config::check::not_executable("checkpassword", &program) {
                report.error(ConfigError::at(here, None, why));
            }
        }
        Some(_) => {}
    }
    report
}

/// `spp-smtpd check`: the settings `serve` would resolve from `args` and
/// the INI file, then [`validate`]. Settings that cannot be resolved are
/// reported, and the control files are still checked.
pub fn check(home: &Path, args: &ServeArgs, plugins: Option<&Path>) -> Report {
    if let Some(e) = crate::config::control::home_problem(home) {
        let mut report = Report::default();
        report.error(e);
        return report;
    }
    match DaemonSettings::resolve(home, args) {
        Ok(settings) => validate(home, &settings, plugins),
        Err(errors) => {
            let mut report = Report::default();
            report.errors_from(errors);
            crate::config::check::control_files(home, plugins, &mut report);
            report
        }
    }
}
