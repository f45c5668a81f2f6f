//! The process: start, worker threads, stop signals, the descriptors connections may take.

pub mod descriptors;
pub mod server;
pub mod signals;
pub mod workers;
