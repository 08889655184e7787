//! Plugins: running one program ([`runner`]), asking a plugin that is kept
//! running ([`persistent`]), and understanding what they print
//! ([`directive`]). Applying directives to a session is the
//! session's job (`session::hooks`).

pub mod directive;
pub mod persistent;
pub mod runner;
