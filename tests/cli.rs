//! The `keygate` binary as a client of a real admin server (SPEC §4).
//!
//! Each test starts its own server in-process (`common::cli::TestServer`) and runs the real binary
//! against it, checking stdout, stderr and the exit code as a script or an operator would see
//! them. The tests are grouped by subject in `tests/cli/`; tests named `config_check_*` validate
//! files with the real config module.

mod common;

// `#[path]` keeps the groups out of `tests/` itself, where Cargo would build each file as a
// test binary of its own.
#[path = "cli/admin.rs"]
mod admin;
#[path = "cli/config_check.rs"]
mod config_check;
#[path = "cli/contract.rs"]
mod contract;
#[path = "cli/keys.rs"]
mod keys;
#[path = "cli/socket.rs"]
mod socket;

use common::cli::TestServer;
use serde_json::Value;

/// Creates a key with `--json` and returns (id, secret).
fn create_key(server: &TestServer, name: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["keys", "create", "--name", name, "--json"];
    args.extend_from_slice(extra);
    let out = server.cli(&args).ok().json();
    (
        out["id"].as_str().expect("id").to_owned(),
        out["key"].as_str().expect("key").to_owned(),
    )
}

/// The key object, as `keys show --json` prints it.
fn show(server: &TestServer, id: &str) -> Value {
    server.cli(&["keys", "show", id, "--json"]).ok().json()
}

/// This process's uid: the peer the server records for every admin change the tests make.
fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// A secret as SPEC §1 shapes it: the prefix, then base62.
fn looks_like_a_secret(text: &str) -> bool {
    text.strip_prefix("sk-kg-")
        .is_some_and(|rest| rest.len() >= 22 + 6 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}
