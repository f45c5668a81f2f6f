//! The process: start, worker threads, shutdown.

pub mod server;
