//! Finding the server binaries.
//!
//! `nats-server`: `$TALKWAI_NATS_SERVER`, then `.tools/bin/nats-server` in the workspace (found
//! by walking up from the current directory, then from this crate's source directory), then
//! `PATH`.
//!
//! PostgreSQL (`initdb`, `postgres`, `pg_ctl` from one directory): `$TALKWAI_PG_BIN`, then the
//! directory of an `initdb` on `PATH` (symlinks resolved), then the newest
//! `/usr/lib/postgresql/<version>/bin`.

use std::path::{Path, PathBuf};

use crate::error::{Result, TestkitError};

/// Environment variable naming the `nats-server` binary to use.
pub const NATS_SERVER_ENV: &str = "TALKWAI_NATS_SERVER";

/// Environment variable naming the directory holding `initdb`, `postgres` and `pg_ctl`.
pub const PG_BIN_ENV: &str = "TALKWAI_PG_BIN";

const NATS_HINT: &str = "run `scripts/dev.sh setup` (installs the pinned nats-server into \
                         .tools/bin) or set TALKWAI_NATS_SERVER";
const PG_HINT: &str = "run `apt-get install -y postgresql` (or `scripts/dev.sh setup`) or set \
                       TALKWAI_PG_BIN to the directory holding initdb, postgres and pg_ctl";

/// Locates the `nats-server` binary, see the module docs for the search order.
pub fn nats_server_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(NATS_SERVER_ENV) {
        let path = PathBuf::from(path);
        if is_executable(&path) {
            return Ok(path);
        }
        return Err(TestkitError::BinaryNotFound {
            program: "nats-server",
            hint: "TALKWAI_NATS_SERVER does not name an executable file",
        });
    }
    for root in workspace_roots() {
        let candidate = root.join(".tools").join("bin").join("nats-server");
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    find_on_path("nats-server").ok_or(TestkitError::BinaryNotFound {
        program: "nats-server",
        hint: NATS_HINT,
    })
}

/// The directory holding PostgreSQL's `initdb`, `postgres` and `pg_ctl`.
pub fn postgres_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV) {
        let dir = PathBuf::from(dir);
        if has_pg_binaries(&dir) {
            return Ok(dir);
        }
        return Err(TestkitError::BinaryNotFound {
            program: "initdb",
            hint: "TALKWAI_PG_BIN does not name a directory with initdb, postgres and pg_ctl",
        });
    }
    if let Some(initdb) = find_on_path("initdb") {
        // Debian links the binaries into PATH; the real directory has all three.
        let resolved = std::fs::canonicalize(&initdb).unwrap_or_else(|_| initdb.clone());
        for dir in [resolved.parent(), initdb.parent()].into_iter().flatten() {
            if has_pg_binaries(dir) {
                return Ok(dir.to_path_buf());
            }
        }
    }
    newest_debian_pg_bin().ok_or(TestkitError::BinaryNotFound {
        program: "initdb",
        hint: PG_HINT,
    })
}

/// Candidate workspace roots: ancestors of the current directory holding `Cargo.lock` or
/// `.tools`, then the workspace this crate was compiled in.
fn workspace_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            if dir.join(".tools").is_dir() || dir.join("Cargo.lock").is_file() {
                roots.push(dir.to_path_buf());
            }
        }
    }
    // crates/talkwai-testkit -> workspace root
    if let Some(root) = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2) {
        roots.push(root.to_path_buf());
    }
    roots
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn has_pg_binaries(dir: &Path) -> bool {
    ["initdb", "postgres", "pg_ctl"]
        .iter()
        .all(|program| is_executable(&dir.join(program)))
}

fn newest_debian_pg_bin() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_pg_binaries(&bin).then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
