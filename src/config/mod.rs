//! Configuration: qmail control files and `smtpplugins`, read into an
//! immutable [`Config`] snapshot that sessions share. Loading is in two
//! stages (raw file → validated values), and every problem names its file
//! and line.

pub mod cdb;
pub mod check;
pub mod checks;
pub mod control;
pub mod file;
pub mod plugins;
pub mod queue;
pub mod table_cache;

use crate::net::localip::LazyLocalIps;
use control::Control;
use plugins::PluginTable;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use table_cache::TableCache;

/// A configuration problem, with the file (and line, when known) at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file at fault.
    pub file: PathBuf,
    /// 1-based line, when the problem is on one line.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A problem at `file`:`line`.
    pub fn at(file: &Path, line: Option<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line,
            message: message.into(),
        }
    }

    /// An I/O error reading `file` (a file that is not a regular file is
    /// said to be one, without "cannot read").
    pub fn io(file: &Path, e: &std::io::Error) -> ConfigError {
        match file::NotRegular::within(e) {
            Some(n) => ConfigError::at(file, None, n.to_string()),
            None => ConfigError::at(file, None, format!("cannot read: {e}")),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file.display(), l, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why a configuration snapshot could not be made.
#[derive(Debug)]
pub enum LoadError {
    /// A control file is unreadable or the greeting is missing.
    Controls(ConfigError),
}

impl LoadError {
    /// The problem with its file and line.
    pub fn into_config_error(self) -> ConfigError {
        match self {
            LoadError::Controls(e) => e,
        }
    }

    /// The reply a session gets before closing (qmail's wording).
    pub fn reply(&self) -> &'static str {
        match self {
            LoadError::Controls(_) => crate::protocol::reply::text::UNREADABLE_CONTROLS,
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Controls(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LoadError {}

impl From<ConfigError> for LoadError {
    fn from(e: ConfigError) -> Self {
        LoadError::Controls(e)
    }
}

/// Everything a session needs that comes from files, read once.
#[derive(Debug)]
pub struct Config {
    /// The home directory (absolute): cwd of children, root of relative paths.
    pub home: PathBuf,
    /// Values of `control/*`.
    pub control: Control,
    /// `control/smtpplugins`, or why it could not be read (only fatal for
    /// sessions that do not set `NOSPP` or `SPPCONFFILE`).
    pub default_plugins: Result<Arc<PluginTable>, ConfigError>,
    /// This host's addresses, for `[ip]` literals (enumerated at first use).
    pub local_ips: LazyLocalIps,
    /// TLS configuration, when certificates are configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Tables of the files named by `SPPCONFFILE`, parsed once per version
    /// of the file, so their persistent plugins serve many sessions.
    pub sppconf_tables: TableCache,
}

impl Config {
    /// Reads the control files and the default plugin table under `home`.
    pub fn load(home: &Path) -> Result<Config, LoadError> {
        Config::load_with(home, &crate::tls::CertSource::default())
    }

    /// As [`Config::load`], with certificates from `certs`.
    pub fn load_with(home: &Path, certs: &crate::tls::CertSource) -> Result<Config, LoadError> {
        let home = std::path::absolute(home).map_err(|e| ConfigError::io(home, &e))?;
        let control = Control::load(&home)?;
        let default_plugins =
            load_plugin_table(&home, &home.join("control/smtpplugins")).map(Arc::new);
        let local_ips = LazyLocalIps::default();
        let tls = crate::tls::load(&home, certs)?;
        Ok(Config {
            home,
            control,
            default_plugins,
            local_ips,
            tls,
            sppconf_tables: TableCache::default(),
        })
    }

    /// Whether [`Config::plugins_for`] reads a file with these variables
    /// (a non-empty `SPPCONFFILE` without `NOSPP`), and so belongs off the
    /// async threads.
    pub fn plugins_read_file(nospp: bool, sppconffile: Option<&[u8]>) -> bool {
        !nospp && sppconffile.is_some_and(|f| !f.is_empty())
    }

    /// The plugin table for a session: `None` when `NOSPP` is set, the file
    /// named by a non-empty `SPPCONFFILE` (parsed again only when it
    /// changed), else `control/smtpplugins`.
    pub fn plugins_for(
        &self,
        nospp: bool,
        sppconffile: Option<&[u8]>,
    ) -> Result<Option<Arc<PluginTable>>, ConfigError> {
        if nospp {
            return Ok(None);
        }
        match sppconffile {
            Some(f) if !f.is_empty() => {
                let p = self.home.join(std::ffi::OsStr::from_bytes(f));
                self.sppconf_tables.get(&self.home, &p).map(Some)
            }
            _ => self.default_plugins.clone().map(Some),
        }
    }
}

/// Reads and parses one smtpplugins file; it must exist.
pub fn load_plugin_table(home: &Path, path: &Path) -> Result<PluginTable, ConfigError> {
    let content = file::read(path).map_err(|e| ConfigError::io(path, &e))?;
    let (table, lints) = PluginTable::parse(&content, home, path.to_path_buf());
    match lints.into_iter().find(|l| l.is_fatal()) {
        Some(l) => Err(ConfigError::at(path, Some(l.lineno), l.message)),
        None => Ok(table),
    }
}
