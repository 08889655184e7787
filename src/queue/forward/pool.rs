//! Idle downstream connections kept for reuse, per destination setting,
//! bounded by its `pool=`, and the TLS client configuration of each
//! setting (built once). A connection is only reused while it is young
//! and has not served too many transactions; every reuse starts with RSET
//! (pipelined with the envelope when possible), so a connection the
//! downstream has closed is noticed and replaced.

use super::conn::Conn;
use crate::config::queue::{ForwardSetting, SYSTEM_CA_FILE};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Longest a connection waits idle in the pool.
const MAX_IDLE: Duration = Duration::from_secs(30);
/// Most transactions on one connection.
const MAX_USES: u32 = 100;

/// Per setting: idle connections, and the TLS client configuration.
#[derive(Default)]
struct Entry {
    idle: Vec<Conn>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// All pools of this process.
fn pools() -> &'static Mutex<HashMap<Arc<ForwardSetting>, Entry>> {
    static POOLS: OnceLock<Mutex<HashMap<Arc<ForwardSetting>, Entry>>> = OnceLock::new();
    POOLS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// An idle connection for `setting`, if one is fit for reuse.
pub fn checkout(setting: &Arc<ForwardSetting>) -> Option<Conn> {
    let mut pools = pools().lock().unwrap_or_else(|p| p.into_inner());
    let entry = pools.get_mut(setting)?;
    while let Some(conn) = entry.idle.pop() {
        if conn.idle_since.elapsed() < MAX_IDLE {
            return Some(conn);
        }
    }
    None
}

/// Drops the idle connections of `setting` (one was found dead: the
/// downstream probably restarted).
pub fn discard_idle(setting: &Arc<ForwardSetting>) {
    let mut pools = pools().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = pools.get_mut(setting) {
        e.idle.clear();
    }
}

/// Returns a connection after a completed or reset transaction; it is
/// closed instead when the pool is full or the connection is worn out.
pub fn checkin(setting: &Arc<ForwardSetting>, mut conn: Conn) {
    conn.uses += 1;
    if setting.pool == 0 || conn.uses >= MAX_USES {
        tokio::spawn(conn.quit());
        return;
    }
    conn.idle_since = tokio::time::Instant::now();
    let mut pools = pools().lock().unwrap_or_else(|p| p.into_inner());
    // Old connections of every setting go (also those of a setting a
    // reload replaced), so none lingers after its downstream closed it.
    for e in pools.values_mut() {
        e.idle.retain(|c| c.idle_since.elapsed() < MAX_IDLE);
    }
    pools.retain(|s, e| !e.idle.is_empty() || e.tls.is_some() || s == setting);
    let entry = pools.entry(setting.clone()).or_default();
    if entry.idle.len() < setting.pool {
        entry.idle.push(conn);
    } else {
        drop(pools);
        tokio::spawn(conn.quit());
    }
}

/// The TLS client configuration for `setting` (`None` without TLS).
pub fn tls_config(
    setting: &Arc<ForwardSetting>,
) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    if setting.tls == crate::config::queue::TlsMode::No {
        return Ok(None);
    }
    if let Some(c) = pools()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(setting)
        .and_then(|e| e.tls.clone())
    {
        return Ok(Some(c));
    }
    let ca = setting
        .ca_file
        .clone()
        .unwrap_or_else(|| SYSTEM_CA_FILE.into());
    let config = crate::tls::client_config(&ca, setting.verify)?;
    pools()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(setting.clone())
        .or_default()
        .tls = Some(config.clone());
    Ok(Some(config))
}

/// Says QUIT on every idle connection (at the end of a `stdio` session and
/// when the daemon stops), so downstreams see a clean end.
pub async fn close_idle() {
    let conns: Vec<Conn> = {
        let mut pools = pools().lock().unwrap_or_else(|p| p.into_inner());
        pools
            .values_mut()
            .flat_map(|e| std::mem::take(&mut e.idle))
            .collect()
    };
    let quits: Vec<_> = conns.into_iter().map(|c| tokio::spawn(c.quit())).collect();
    for q in quits {
        let _ = q.await;
    }
}
