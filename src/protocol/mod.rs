//! Pure, synchronous SMTP protocol pieces: command lines, replies, envelope
//! addresses, the DATA decoder and the Received: line. Nothing here does I/O,
//! so everything is table-tested and fuzzable.

pub mod address;
pub mod command;
pub mod data;
pub mod received;
pub mod reply;
