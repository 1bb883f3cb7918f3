//! Links the release binary with the code it runs first laid out first, and strips it.
//!
//! An idle server's memory is mostly its own code, mapped 64 kB around each page it runs: with
//! the code start-up runs spread over the whole text, a server that has only started holds most
//! of its binary. `src/link.order` lists the functions `parallax-mcp` runs as it starts and as it
//! answers (written by `cargo run --release -p parallax-bench -- --link-order`), and the linker
//! puts them first. A name the file lists that a build no longer has is skipped: a stale file
//! costs memory, never correctness.
//!
//! The symbols are stripped here, by the linker, rather than by the profile's `strip`: a profile
//! setting would change every crate's symbol names, and the order is written from a build that
//! keeps them (`PARALLAX_LINK_SYMBOLS=1`), whose names must be the release binary's.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=src/link.order");
    println!("cargo:rerun-if-env-changed=PARALLAX_LINK_SYMBOLS");
    let var = |name: &str| env::var(name).unwrap_or_default();
    // Profiles with debug info (dev, the tests, `profiling`) keep their symbols and layout.
    if var("PROFILE") != "release" || var("DEBUG") != "false" {
        return;
    }
    if var("CARGO_CFG_TARGET_OS") == "linux" && env::var_os("PARALLAX_LINK_SYMBOLS").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,--strip-all");
    }
    // The order file is an lld option, and lld is rustc's own linker on this target; a linker
    // configured in its place may not be lld.
    let configured =
        env::var_os("RUSTC_LINKER").is_some() || var("CARGO_ENCODED_RUSTFLAGS").contains("link");
    if var("TARGET") == "x86_64-unknown-linux-gnu" && !configured {
        let order = Path::new(&var("CARGO_MANIFEST_DIR")).join("src/link.order");
        println!(
            "cargo:rustc-link-arg-bin=parallax-mcp=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=parallax-mcp=-Wl,--no-warn-symbol-ordering");
    }
}
