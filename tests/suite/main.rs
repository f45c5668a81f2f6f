//! The integration tests, one binary: the test kit once, the tree linked once. Tests that read
//! the whole process (CPU time, descriptors: `idle.rs`; 10,000 connections: `abuse.rs`) and the
//! soak have binaries of their own.

#[path = "../common/mod.rs"]
mod common;

mod admin_guard;
mod apps;
mod audit;
mod bounded;
mod callers;
mod cert_apps;
mod check;
mod check_live;
mod cli;
mod config;
mod deploy;
mod exactly_once;
mod grants;
mod inbound;
mod nginx;
mod process;
mod proxy;
mod recycle;
mod rotation;
mod secrets;
mod status_page;
mod upstream;
mod upstream_framing;
