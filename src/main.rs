//! The `keygate` binary: parses the command line and hands over to the library.
//! `keygate serve` runs the gateway; every other command is a client of the admin socket.

use std::process::ExitCode;

/// mimalloc: thread-local free lists suit a proxy that allocates and frees small buffers on
/// every request, on whichever worker thread runs it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    keygate::cli::main()
}
