//! The `keygate` binary: parses the command line and hands over to the library.
//! `keygate serve` runs the gateway; every other command is a client of the admin socket.

use std::process::ExitCode;

fn main() -> ExitCode {
    keygate::cli::main()
}
