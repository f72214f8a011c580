//! Compiles src/cpu_check.c, the CPU check that runs first in _PG_init, for
//! baseline x86_64 whatever the Rust code is compiled for (see that file).

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/cpu_check.c");
    println!("cargo:rerun-if-env-changed=PGRX_PG_CONFIG_PATH");
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("x86_64") {
        return;
    }
    // The target features rustc compiles this crate with, as cargo reports
    // them (e.g. "aes,avx,avx2,…,sse2").
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    println!("cargo:rustc-env=PAZPAZ_BUILD_FEATURES={features}");

    let pg_config = env::var("PGRX_PG_CONFIG_PATH").ok().map(PathBuf::from).unwrap_or_else(|| {
        let debian = PathBuf::from("/usr/lib/postgresql/15/bin/pg_config");
        if debian.exists() {
            debian
        } else {
            PathBuf::from("pg_config")
        }
    });
    let out = Command::new(&pg_config).arg("--includedir-server").output().expect("pg_config runs");
    assert!(out.status.success(), "{} --includedir-server failed", pg_config.display());
    let include = String::from_utf8(out.stdout).expect("UTF-8 path").trim().to_string();

    cc::Build::new()
        .file("src/cpu_check.c")
        .include(include)
        .define("PAZPAZ_BUILD_FEATURES", Some(format!("\"{features}\"").as_str()))
        // cc would otherwise turn RUSTFLAGS' -C target-feature=+aes,… into
        // -maes …: this code must run on any x86_64. (CFLAGS from the
        // environment still come last; cpu_check.c refuses to compile if they
        // enable anything beyond the baseline.)
        .inherit_rustflags(false)
        .flag("-march=x86-64")
        .flag("-mtune=generic")
        .compile("pazpaz_cpu_check");
}
