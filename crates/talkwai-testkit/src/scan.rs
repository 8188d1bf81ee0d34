//! Scans of what a server left on disk or in a dump: the erasure proofs search nats-server's
//! store directories, `pg_dump` output and exports for marker strings or key bytes.

use std::path::{Path, PathBuf};

/// Every file under `dir` (recursively) holding one of `needles` as raw bytes, with the
/// needle found, as `"<needle> in <path>"`. A file or directory that vanishes while a server
/// runs (a compacted block, a temp file) is skipped.
pub fn files_holding(dir: &Path, needles: &[&[u8]]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            for needle in needles {
                if !needle.is_empty() && bytes.windows(needle.len()).any(|w| w == *needle) {
                    hits.push(format!(
                        "{} in {}",
                        String::from_utf8_lossy(needle),
                        path.display()
                    ));
                }
            }
        }
    }
    hits
}

/// The `needles` that occur in `text`, in order.
pub fn found_in<'a>(text: &str, needles: &[&'a str]) -> Vec<&'a str> {
    needles
        .iter()
        .copied()
        .filter(|n| text.contains(n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_needles_in_nested_files_and_text() {
        let dir = tempfile::tempdir().expect("temp dir");
        let nested = dir.path().join("a/b");
        std::fs::create_dir_all(&nested).expect("mkdir");
        std::fs::write(nested.join("blk"), b"xx marker-one yy").expect("write");
        std::fs::write(dir.path().join("top"), b"nothing here").expect("write");
        let hits = files_holding(dir.path(), &[b"marker-one", b"marker-two"]);
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert!(hits[0].starts_with("marker-one in "), "{hits:?}");
        assert!(files_holding(dir.path(), &[b"absent"]).is_empty());
        assert_eq!(found_in("a b c", &["b", "d", "a"]), ["b", "a"]);
    }
}
