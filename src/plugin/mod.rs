//! Plugins: running one program ([`runner`]) and understanding what it
//! prints ([`directive`]). Applying directives to a session is the
//! session's job (`session::hooks`).

pub mod directive;
pub mod runner;
