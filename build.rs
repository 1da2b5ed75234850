//! Release builds on x86_64 Linux link the binary so that a running sidecar maps less of it.
//!
//! A daemon's RSS counts every page of its binary that is mapped, and the kernel maps a binary
//! in 64 KiB windows around each page it faults in (fault-around). Two things are done:
//!
//! - **Function order.** The ~1,900 functions that start-up, sampling and scraping run lie
//!   scattered over 12 MB of text, so almost every window is hit and most of the text ends up
//!   resident. `link/symbol-order.txt` lists them (written by `benches/symbol_order.sh` from a
//!   callgrind run of the release binary); the linker places them first, in that order, so they
//!   share under 3 MB of pages. Functions the list does not name — new code, or a renamed symbol
//!   after a toolchain or dependency upgrade — keep their usual place: a stale list costs memory,
//!   never correctness.
//! - **Packed relative relocations** (`-z pack-relative-relocs`, DT_RELR). A position-independent
//!   binary carries ~22,000 relative relocations, 24 bytes each, which the loader reads at start
//!   and never again: 0.5 MiB of resident pages. Packed, they take a few KiB. The loader must know
//!   the format (glibc 2.36 and later; older ones refuse to start the binary, naming
//!   `GLIBC_ABI_DT_RELR`), so this is done only when the glibc the build runs on has it.
//!
//! See BENCHMARKS.md, "Footprint". Only `x86_64-unknown-linux-gnu` links with lld by default;
//! other targets link with the system's `cc`, whose GNU ld has no ordering file, and build as
//! before.

use std::process::Command;

fn main() {
    let order = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("link/symbol-order.txt");
    println!("cargo::rerun-if-changed={}", order.display());
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let target = var("TARGET");
    if var("PROFILE") != "release" || target != "x86_64-unknown-linux-gnu" {
        return;
    }
    if order.exists() {
        println!(
            "cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    if var("HOST") == target && host_glibc().is_some_and(|v| v >= (2, 36)) {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// The running glibc's version, from `getconf GNU_LIBC_VERSION` ("glibc 2.36").
fn host_glibc() -> Option<(u32, u32)> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let (major, minor) = text.trim().strip_prefix("glibc ")?.split_once('.')?;
    let minor = minor.split('.').next()?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}
