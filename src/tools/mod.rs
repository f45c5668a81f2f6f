//! The tools: the command line, `demo`, the stand-in Amity API, and the kit `demo` and the
//! integration tests share.

pub mod cli;
pub mod demo;
pub mod kit;
pub mod mock;
