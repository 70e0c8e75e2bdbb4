//! Records the git commit mailkeep is built from, for `mailkeep --version`.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("MAILKEEP_COMMIT").ok())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MAILKEEP_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=MAILKEEP_COMMIT");
    // packaging/cargo-static.sh links with this file; a new list must relink the binary.
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs", "packaging/symbol-order.txt"] {
        println!("cargo:rerun-if-changed={path}");
    }
}
