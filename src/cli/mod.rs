//! Placeholder replaced by the CLI work.
use std::process::ExitCode;
pub fn main() -> ExitCode {
    match crate::serve::serve(None) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
