//! An optional record of a session's plugin runs, for `spp-smtpd try`:
//! which plugin ran at which hook, the environment it got, what it
//! printed, how it ended and how long it took. A session without a sink
//! (every session of `stdio` and `serve`) keeps one empty pointer and
//! does nothing more.

use super::env::SessionEnv;
use crate::config::plugins::{Hook, Plugin};
use crate::plugin::runner::RunOutcome;
use std::sync::Arc;
use std::time::Duration;

/// One plugin run or persistent request, as the session saw it.
#[derive(Debug, Clone)]
pub struct PluginRun {
    /// The hook it ran at.
    pub hook: Hook,
    /// The plugin line and its `#spp:` options.
    pub plugin: Arc<Plugin>,
    /// The session environment it ran with (a classic run's environment;
    /// a persistent plugin gets the same variables in its request).
    pub env: SessionEnv,
    /// What it printed, whether it failed, and how its process ended.
    pub outcome: RunOutcome,
    /// From the start of the run (or request) to its end.
    pub elapsed: Duration,
}

/// Where a traced session sends its plugin runs, in the order they ran.
pub type TraceSender = tokio::sync::mpsc::UnboundedSender<PluginRun>;

#[cfg(test)]
mod tests {
    #[test]
    fn an_untraced_session_keeps_one_empty_pointer() {
        assert_eq!(
            std::mem::size_of::<Option<super::TraceSender>>(),
            std::mem::size_of::<usize>()
        );
    }
}
