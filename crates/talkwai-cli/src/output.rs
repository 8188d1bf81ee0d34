//! Writing to stdout without panicking when the reader goes away.

use std::io::Write as _;

use crate::error::CliError;

/// Writes one line to stdout and flushes it (so `--follow` output appears at once).
pub fn line(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{text}").and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(CliError::OutputClosed),
        Err(e) => Err(CliError::io("writing", "stdout", e)),
    }
}
