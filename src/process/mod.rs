//! The process: start, worker threads, stop signals, the descriptors connections may take, sockets handed over by systemd.

pub mod descriptors;
pub mod error;
pub mod inherited;
pub mod server;
pub mod signals;
pub mod workers;
