//! The workspace's own binaries (the services, `talkwai`) for tests that run them as
//! processes from another package, where cargo's `CARGO_BIN_EXE_*` does not reach.
//!
//! They are looked up in the profile directory of the running test (`target/<profile>/`,
//! the parent of `deps/`). The first call in a process runs `cargo build --bin …` for all of
//! them there, so they are never older than the sources (a no-op after `cargo nextest run
//! --workspace`, which builds every binary first).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Result, TestkitError};

/// The binaries [`binary`] builds and finds.
pub const BINARIES: [&str; 4] = [
    "talkwai-command-service",
    "talkwai-projector",
    "talkwai-notifier",
    "talkwai",
];

static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();

fn build() -> std::result::Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating the test binary: {e}"))?;
    // target/<profile>/deps/<test> → target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} has no profile directory", exe.display()))?;
    cargo_build(&dir, &BINARIES)?;
    Ok(dir)
}

/// Runs `cargo build --bin …` for `binaries` into the profile directory `dir`
/// (`target/<profile>`: the profile is its name) of this workspace.
///
/// # Errors
/// When cargo cannot run or the build fails.
pub fn cargo_build(dir: &Path, binaries: &[&str]) -> std::result::Result<(), String> {
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut command = std::process::Command::new(cargo);
    command.current_dir(&root).args(["build", "--quiet"]);
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    if let Some(target) = dir.parent() {
        command.env("CARGO_TARGET_DIR", target);
    }
    for bin in binaries {
        command.args(["--bin", bin]);
    }
    let status = command
        .status()
        .map_err(|e| format!("running cargo to build {binaries:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo build of {binaries:?} failed: {status}"))
    }
}

/// The path of workspace binary `name` (one of [`BINARIES`]), built if needed.
///
/// # Errors
/// When cargo fails or the binary is not where it was built.
pub fn binary(name: &str) -> Result<PathBuf> {
    let dir = BUILT
        .get_or_init(build)
        .as_ref()
        .map_err(|e| TestkitError::Binary(e.clone()))?;
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(TestkitError::Binary(format!(
            "{} is missing after the build",
            path.display()
        )))
    }
}
