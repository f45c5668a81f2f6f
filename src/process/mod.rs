//! The process: start, worker threads, stop signals.

pub mod server;
pub mod signals;
pub mod workers;
