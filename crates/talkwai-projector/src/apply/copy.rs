//! The `COPY … FROM STDIN` encoder of the bulk fold (text format).

use serde_json::Value;
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::fold::{WorkingSet, drop_erased};
use crate::error::ProjectorError;
use crate::rows::Row;
use crate::schema::COLUMNS;

/// Bytes per `COPY` data message.
const COPY_CHUNK: usize = 1 << 20;

/// A bulk flush: deletes the rows that were read from the table and changed or deleted since,
/// every row of the working set with `COPY … FROM STDIN` (text format), then every row of the
/// tenants the window erased.
pub(super) async fn copy(
    tx: &Transaction<'_>,
    schema: &str,
    work: &WorkingSet,
) -> Result<(), ProjectorError> {
    use futures::SinkExt;
    for (table, columns) in COLUMNS {
        let mut replaced: Vec<Uuid> = Vec::new();
        let mut rows: Vec<&Row> = Vec::new();
        for key in &work.order {
            if key.0 != table {
                continue;
            }
            if work.existed.contains(key) {
                replaced.push(key.1);
            }
            if let Some(Some(row)) = work.rows.get(key) {
                rows.push(row);
            }
        }
        if !replaced.is_empty() {
            tx.execute(
                &format!("DELETE FROM {schema}.{table} WHERE id = ANY($1)"),
                &[&replaced],
            )
            .await?;
        }
        if rows.is_empty() {
            continue;
        }
        // Encoded up front: nothing borrowed from the working set is held across the sends.
        let mut chunks = Vec::new();
        let mut buffer = bytes::BytesMut::with_capacity(COPY_CHUNK + 4096);
        for row in rows {
            copy_row(&mut buffer, row, columns);
            if buffer.len() >= COPY_CHUNK {
                chunks.push(buffer.split().freeze());
            }
        }
        if !buffer.is_empty() {
            chunks.push(buffer.freeze());
        }
        let sink = tx
            .copy_in(&format!(
                "COPY {schema}.{table} ({}) FROM STDIN",
                columns.join(", ")
            ))
            .await?;
        futures::pin_mut!(sink);
        for chunk in chunks {
            sink.send(chunk).await?;
        }
        sink.finish().await?;
    }
    drop_erased(tx, schema, &work.erased).await
}

/// Appends one row in `COPY`'s text format: tab-separated, `\N` for NULL, backslash escapes.
fn copy_row(buffer: &mut bytes::BytesMut, row: &Row, columns: &[&str]) {
    use std::fmt::Write as _;
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            buffer.extend_from_slice(b"\t");
        }
        match row.get(*column) {
            None | Some(Value::Null) => buffer.extend_from_slice(b"\\N"),
            Some(Value::String(text)) => copy_text(buffer, text),
            Some(Value::Number(number)) => {
                let _ = write!(buffer, "{number}");
            }
            Some(Value::Bool(flag)) => buffer.extend_from_slice(if *flag { b"t" } else { b"f" }),
            // No column holds structured JSON (objects travel as validated JSON text); written
            // as JSON text should one ever appear.
            Some(other) => copy_text(buffer, &other.to_string()),
        }
    }
    buffer.extend_from_slice(b"\n");
}

/// Appends `text` escaped for `COPY`'s text format (runs without special bytes are copied whole).
fn copy_text(buffer: &mut bytes::BytesMut, text: &str) {
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        buffer.extend_from_slice(&bytes[start..i]);
        buffer.extend_from_slice(escaped);
        start = i + 1;
    }
    buffer.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copied(row: &Row, columns: &[&str]) -> String {
        let mut buffer = bytes::BytesMut::new();
        copy_row(&mut buffer, row, columns);
        String::from_utf8(buffer.to_vec()).expect("UTF-8")
    }

    #[test]
    fn copy_rows_are_tab_separated_with_null_markers_and_a_newline() {
        let mut row = Row::new();
        row.insert("id".into(), Value::String("7d1b…".into()));
        row.insert("n".into(), serde_json::json!(-42));
        row.insert("big".into(), serde_json::json!(u64::MAX));
        row.insert("gone".into(), Value::Null);
        assert_eq!(
            copied(&row, &["id", "n", "big", "gone", "missing"]),
            "7d1b…\t-42\t18446744073709551615\t\\N\t\\N\n"
        );
    }

    #[test]
    fn copy_text_escapes_exactly_the_bytes_copy_reads_specially() {
        let mut row = Row::new();
        let nasty = "a\\b\tc\nd\re \\N {\"json\": [1, \"x\"]} ünïcödé";
        row.insert("t".into(), Value::String(nasty.into()));
        row.insert("u".into(), Value::String("\\N".into()));
        assert_eq!(
            copied(&row, &["t", "u"]),
            "a\\\\b\\tc\\nd\\re \\\\N {\"json\": [1, \"x\"]} ünïcödé\t\\\\N\n"
        );
    }

    #[test]
    fn every_table_writes_every_column_it_declares() {
        // A row holding a value for each column copies to exactly that many fields.
        for (_, columns) in COLUMNS {
            let row: Row = columns
                .iter()
                .map(|c| ((*c).to_owned(), Value::String(format!("v-{c}"))))
                .collect();
            let line = copied(&row, columns);
            assert_eq!(
                line.trim_end_matches('\n').split('\t').count(),
                columns.len()
            );
            assert!(!line.contains("\\N"));
        }
    }
}
