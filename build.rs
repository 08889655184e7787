//! Links the unwinder statically instead of loading `libgcc_s.so.1`.
//!
//! `spp-smtpd stdio` is started once per connection, so process start-up
//! is part of every session's cost. Loading `libgcc_s.so.1` runs its CPU
//! detection constructor, whose `cpuid` instructions are slow under
//! virtualisation (a third of a short session's user CPU on the machines
//! measured). Rust's standard library asks the linker for `-lgcc_s` on
//! glibc targets; this script puts a `libgcc_s.so` linker script first in
//! the search path that names GCC's static `libgcc_eh.a` and `libgcc.a`
//! instead (what `gcc -static-libgcc` does for C programs). Unwinding,
//! panics and backtraces work as before. When the compiler or those
//! archives cannot be found, nothing changes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.ends_with("-linux-gnu") {
        return;
    }
    let (Some(eh), Some(gcc)) = (gcc_file("libgcc_eh.a"), gcc_file("libgcc.a")) else {
        println!("cargo:warning=static libgcc not found; libgcc_s.so.1 stays a dependency");
        return;
    };
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let dir = out.join("static-libgcc");
    let script = format!("INPUT ( {} {} )\n", eh.display(), gcc.display());
    if std::fs::create_dir_all(&dir).is_err()
        || std::fs::write(dir.join("libgcc_s.so"), script).is_err()
    {
        return;
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
}

/// The full path of one of the C compiler's support files, if it has it.
fn gcc_file(name: &str) -> Option<PathBuf> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(cc)
        .arg(format!("-print-file-name={name}"))
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (path.is_absolute() && Path::new(&path).is_file()).then_some(path)
}
