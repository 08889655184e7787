//! Plugin tables named by `SPPCONFFILE`, parsed once per version of their
//! file and kept in the configuration snapshot. Sessions that name the same
//! file share one table, and so its persistent-plugin pools; a session
//! after the file changed gets a freshly parsed table.

use super::plugins::PluginTable;
use super::{load_plugin_table, ConfigError};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Most files whose tables are kept; tables of further files are parsed
/// for each session (the files come from the operator's rules, so this is
/// a safety net, not a working limit).
const MAX_FILES: usize = 64;

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            device: meta.dev(),
            inode: meta.ino(),
            len: meta.size(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Parsed tables by path, each with the stamp of the file it came from.
#[derive(Debug, Default)]
pub struct TableCache {
    tables: Mutex<HashMap<PathBuf, (Stamp, Arc<PluginTable>)>>,
}

impl TableCache {
    /// The table of the smtpplugins-format file `path`: the kept one while
    /// the file is unchanged, else read and parsed anew. Reads the file
    /// system: call it off the async threads.
    pub fn get(&self, home: &Path, path: &Path) -> Result<Arc<PluginTable>, ConfigError> {
        let meta = std::fs::metadata(path).map_err(|e| ConfigError::io(path, &e))?;
        // Taken before reading: a change made while the file is read is
        // seen by the next session.
        let stamp = Stamp::of(&meta);
        if let Some((kept, table)) = self.lock().get(path) {
            if *kept == stamp {
                return Ok(table.clone());
            }
        }
        let table = Arc::new(load_plugin_table(home, path)?);
        let mut tables = self.lock();
        if tables.len() < MAX_FILES || tables.contains_key(path) {
            tables.insert(path.to_path_buf(), (stamp, table.clone()));
        }
        Ok(table)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, (Stamp, Arc<PluginTable>)>> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_kept_until_its_file_changes() {
        let dir = std::env::temp_dir().join(format!("spp-tables-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plugins");
        std::fs::write(&path, "[rcpt]\n:echo N\n").unwrap();
        let cache = TableCache::default();
        let first = cache.get(&dir, &path).unwrap();
        assert!(Arc::ptr_eq(&first, &cache.get(&dir, &path).unwrap()));
        std::fs::write(&path, "[rcpt]\n:echo N\n:echo A\n").unwrap();
        let second = cache.get(&dir, &path).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(Arc::ptr_eq(&second, &cache.get(&dir, &path).unwrap()));
        std::fs::remove_file(&path).unwrap();
        assert!(
            cache.get(&dir, &path).is_err(),
            "a missing file is an error"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
