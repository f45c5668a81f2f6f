//! The tools: the command line, `demo`, and the stand-in Amity API.

pub mod cli;
pub mod demo;
pub mod mock;
