//! A page of a list: rows read one past the limit, serialized until the
//! limit or [`MAX_PAGE_BYTES`], and the cursor of the next page. Lists page
//! by a key the store reads as an index range, never by offset.

use serde_json::Value;

use crate::error::ApiError;

pub const DEFAULT_PAGE: u32 = 100;

/// The most a page's rows take, serialized: a page stops early (with
/// `next` set) before its body passes 8 MiB, so no answer holds more,
/// whatever the inputs and outputs in it (DESIGN, "HTTP API").
pub const MAX_PAGE_BYTES: usize = 8 << 20;

/// How many bytes `v` takes as JSON, counted without keeping them.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// The rows to read for a page of `limit`: one more, which tells whether
/// another page follows (and is not shown).
pub(crate) fn one_more(limit: u32) -> u32 {
    limit + 1
}

/// Rows of a page as JSON, until `limit` of them or [`MAX_PAGE_BYTES`]:
/// the rows kept and the cursor of the next page (`cursor` of the last row
/// kept), `None` when this is the last. `rows` were read with one more
/// than `limit` (see [`one_more`]), so a full last page says so.
pub(crate) fn page<T: serde::Serialize, C>(
    mut rows: Vec<T>,
    limit: u32,
    project: impl Fn(Value) -> Value,
    cursor: impl Fn(&T) -> C,
) -> Result<(Vec<Value>, Option<C>), ApiError> {
    let full = rows.len() as u32 > limit;
    rows.truncate(limit as usize);
    let mut out = Vec::with_capacity(rows.len());
    let mut bytes = 0;
    let mut last = None;
    for row in rows {
        let v = project(serde_json::to_value(&row).map_err(|e| {
            tracing::error!(error = %e, "a row did not serialize");
            ApiError::Internal
        })?);
        let size = json_len(&v) + 1;
        // Always one row, so that a page makes progress.
        if !out.is_empty() && bytes + size > MAX_PAGE_BYTES {
            return Ok((out, last));
        }
        bytes += size;
        last = Some(cursor(&row));
        out.push(v);
    }
    Ok((out, if full { last } else { None }))
}
pub const MAX_PAGE: u32 = 1000;
