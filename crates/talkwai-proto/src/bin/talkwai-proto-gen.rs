//! Regenerates `proto/` from the Rust types: `proto/schemas/**` and `proto/asyncapi.yaml` are
//! rewritten, missing fixtures are created, existing fixtures are never touched.
//!
//! Usage: `talkwai-proto-gen [--check] [PROTO_DIR]`. `--check` writes nothing and exits 1 when
//! `proto/` is out of date.

use std::path::PathBuf;
use std::process::ExitCode;

use talkwai_proto::generate;

fn main() -> ExitCode {
    let mut check = false;
    let mut root = generate::proto_dir();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: talkwai-proto-gen [--check] [PROTO_DIR]");
                return ExitCode::SUCCESS;
            }
            path => root = PathBuf::from(path),
        }
    }
    if check {
        return match generate::check(&root) {
            Ok(drift) if drift.is_empty() => {
                println!("proto is up to date: {}", root.display());
                ExitCode::SUCCESS
            }
            Ok(drift) => {
                for d in &drift {
                    eprintln!("{d}");
                }
                eprintln!("run `{}`", generate::REGENERATE);
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("cannot read {}: {e}", root.display());
                ExitCode::FAILURE
            }
        };
    }
    match generate::write(&root) {
        Ok(written) => {
            for path in &written.updated {
                println!("wrote proto/{path}");
            }
            for path in &written.removed {
                println!("removed proto/{path}");
            }
            for path in &written.fixtures_created {
                println!("created fixture proto/{path}");
            }
            if written.updated.is_empty()
                && written.removed.is_empty()
                && written.fixtures_created.is_empty()
            {
                println!("proto is up to date: {}", root.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write {}: {e}", root.display());
            ExitCode::FAILURE
        }
    }
}
