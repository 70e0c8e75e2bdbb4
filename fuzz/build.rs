//! src/cli.rs reads MAILKEEP_COMMIT at compile time (the main crate's build.rs sets it).
fn main() {
    println!("cargo:rustc-env=MAILKEEP_COMMIT=fuzz");
}
