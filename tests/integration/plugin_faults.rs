//! Misbehaving plugins: each gets the specified reply, the session goes on,
//! and no process is left behind.
