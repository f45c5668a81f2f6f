//! Command-line entry point: parse, then hand over to the library.
#![forbid(unsafe_code)]

use clap::Parser;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    amity_mtls_proxy::tools::cli::main(amity_mtls_proxy::tools::cli::Cli::parse())
}
