//! Blocking file work (Maildir writes, the spool) off the async threads.
//!
//! In the daemon it goes to tokio's blocking pool, so one session's fsync
//! never stalls the others. A `stdio` process serves one session on a
//! current-thread runtime: there the work runs in place, since there is
//! nothing else to stall, and a blocking pool would start a thread per
//! process (a measurable part of a short session).

/// Runs `f` and returns its result, as described above.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> std::io::Result<T> {
    let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
    if matches!(
        flavor,
        Ok(tokio::runtime::RuntimeFlavor::CurrentThread) | Err(_)
    ) {
        return Ok(f());
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)
}
