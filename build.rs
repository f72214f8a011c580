//! Compiles src/cpu_check.c, the CPU check that runs first in _PG_init, for
//! baseline x86_64 whatever the Rust code is compiled for (see that file),
//! against the server headers of the PostgreSQL version being built for.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/cpu_check.c");
    println!("cargo:rerun-if-env-changed=PGRX_PG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PG_MAJOR");
    let major = target_major();
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("x86_64") {
        return;
    }
    // The target features rustc compiles this crate with, as cargo reports
    // them (e.g. "aes,avx,avx2,…,sse2").
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    println!("cargo:rustc-env=PAZPAZ_BUILD_FEATURES={features}");

    let pg_config = pg_config(major);
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

/// The versions this extension is built and tested for (Cargo features
/// `pg15` … `pg18`; README, "Supported versions").
const SUPPORTED: [u32; 4] = [15, 16, 17, 18];

/// The PostgreSQL major version of this build: its one `pgN` feature (which
/// `cargo pgrx` chooses from the `--pg-config` it is given; the default is
/// `pg15`, Debian 12's). A PG_MAJOR in the environment must agree with it.
fn target_major() -> u32 {
    let enabled: Vec<u32> =
        SUPPORTED.into_iter().filter(|v| env::var_os(format!("CARGO_FEATURE_PG{v}")).is_some()).collect();
    let major = match enabled[..] {
        [major] => major,
        [] => fail("no PostgreSQL version selected: build with one of the features pg15, pg16, pg17 or pg18".into()),
        _ => fail(format!(
            "several PostgreSQL versions selected ({}): build with exactly one of the features pg15 … pg18 \
             (with --no-default-features for any but pg15)",
            enabled.iter().map(|v| format!("pg{v}")).collect::<Vec<_>>().join(", ")
        )),
    };
    if let Ok(wanted) = env::var("PG_MAJOR") {
        if wanted.trim() != major.to_string() {
            fail(format!(
                "PG_MAJOR={wanted} but this build is for PostgreSQL {major} (feature pg{major}): \
                 build with `cargo pgrx … --pg-config <PostgreSQL {wanted}'s pg_config>` or \
                 `--no-default-features --features pg{wanted}`"
            ));
        }
    }
    major
}

/// The pg_config of PostgreSQL `major`: PGRX_PG_CONFIG_PATH, else the one
/// `cargo pgrx init` registered for that version ($PGRX_HOME/config.toml,
/// where pgrx-pg-sys takes the headers of its bindings from), else Debian's
/// for that version, else `pg_config` on PATH. It must be that version's.
fn pg_config(major: u32) -> PathBuf {
    if let Ok(toml) = pgrx_pg_config::Pgrx::config_toml() {
        println!("cargo:rerun-if-changed={}", toml.display());
    }
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/pg_config"));
    let path = env::var_os("PGRX_PG_CONFIG_PATH")
        .map(PathBuf::from)
        .or_else(|| {
            let pgrx = pgrx_pg_config::Pgrx::from_config().ok()?;
            pgrx.get(&format!("pg{major}")).ok()?.path()
        })
        .or_else(|| debian.exists().then_some(debian))
        .unwrap_or_else(|| PathBuf::from("pg_config"));
    let out = Command::new(&path).arg("--version").output().unwrap_or_else(|e| {
        fail(format!(
            "cannot run {} ({e}): install PostgreSQL {major} with its server headers and register \
             its pg_config with `cargo pgrx init --pg{major} <path>`",
            path.display()
        ))
    });
    // "PostgreSQL 16.2", "PostgreSQL 15.10 (Debian 15.10-0+deb12u1)", "PostgreSQL 18beta1"
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let digits: String = version.trim_start_matches("PostgreSQL ").chars().take_while(char::is_ascii_digit).collect();
    if !out.status.success() || digits.parse() != Ok(major) {
        fail(format!(
            "{} is not PostgreSQL {major}'s pg_config (it says {version:?}): set PGRX_PG_CONFIG_PATH \
             or run `cargo pgrx init --pg{major} <PostgreSQL {major}'s pg_config>`",
            path.display()
        ));
    }
    path
}

fn fail(message: String) -> ! {
    panic!("{message}")
}
