//! Byte offsets to line and column, and JSON parsing that keeps positions, so
//! that errors found after parsing (duplicates, bad ranges) still point at the
//! place in the file an operator has to fix.

use crate::error::FileError;
use serde::de::DeserializeOwned;
use std::path::Path;

/// 1-based (line, column) of a byte offset in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map(|p| p + 1)
        .unwrap_or(0);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

/// A `FileError` at a byte offset of `text`.
pub(crate) fn error_at(path: &Path, text: &str, offset: usize, message: String) -> FileError {
    let (line, column) = line_col(text, offset);
    FileError {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// A serde_json error, which is relative to `text[base..]`, as a `FileError`.
pub(crate) fn json_error(
    path: &Path,
    text: &str,
    base: usize,
    err: &serde_json::Error,
) -> FileError {
    let (base_line, base_col) = line_col(text, base);
    let (line, column) = if err.line() <= 1 {
        (base_line, base_col + err.column().saturating_sub(1))
    } else {
        (base_line + err.line() - 1, err.column())
    };
    FileError {
        path: path.to_path_buf(),
        line,
        column,
        message: strip_position(&err.to_string()),
    }
}

/// serde_json appends " at line L column C"; the FileError says it already.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Offset of the first `"key"` at or after `from`, for pointing at a field.
pub(crate) fn find_key(text: &str, from: usize, key: &str) -> usize {
    let needle = format!("\"{key}\"");
    text.get(from..)
        .and_then(|rest| rest.find(&needle))
        .map(|i| from + i)
        .unwrap_or(from)
}

fn skip_ws(text: &str, mut pos: usize) -> usize {
    let bytes = text.as_bytes();
    while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
        pos += 1;
    }
    pos
}

/// Parses a top-level JSON array element by element, keeping each element's
/// starting offset, so that later checks can name the element's position.
pub(crate) fn parse_array<T: DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<Vec<(usize, T)>, FileError> {
    let mut pos = skip_ws(text, 0);
    if text.as_bytes().get(pos) != Some(&b'[') {
        return Err(error_at(
            path,
            text,
            pos,
            "expected a JSON array `[ ... ]` of needs".into(),
        ));
    }
    pos = skip_ws(text, pos + 1);
    let mut out = Vec::new();
    if text.as_bytes().get(pos) == Some(&b']') {
        return finish(path, text, pos + 1, out);
    }
    loop {
        let mut stream = serde_json::Deserializer::from_str(&text[pos..]).into_iter::<T>();
        match stream.next() {
            Some(Ok(value)) => {
                let end = pos + stream.byte_offset();
                out.push((pos, value));
                pos = skip_ws(text, end);
            }
            // A bad instance name fails while the value decodes, where
            // serde points past the value: point at its key instead, as
            // the checks after decoding do.
            Some(Err(err))
                if err.classify() == serde_json::error::Category::Data
                    && err
                        .to_string()
                        .strip_prefix(crate::names::INSTANCE)
                        .is_some_and(|rest| rest.starts_with(' ')) =>
            {
                let at = find_key(text, pos, crate::names::INSTANCE);
                return Err(error_at(path, text, at, strip_position(&err.to_string())));
            }
            Some(Err(err)) => return Err(json_error(path, text, pos, &err)),
            None => {
                return Err(error_at(
                    path,
                    text,
                    pos,
                    "unexpected end of file inside the array".into(),
                ))
            }
        }
        match text.as_bytes().get(pos) {
            Some(b',') => pos = skip_ws(text, pos + 1),
            Some(b']') => return finish(path, text, pos + 1, out),
            _ => {
                return Err(error_at(
                    path,
                    text,
                    pos,
                    "expected ',' or ']' after an array element".into(),
                ))
            }
        }
    }
}

fn finish<T>(
    path: &Path,
    text: &str,
    pos: usize,
    out: Vec<(usize, T)>,
) -> Result<Vec<(usize, T)>, FileError> {
    let pos = skip_ws(text, pos);
    if pos < text.len() {
        return Err(error_at(
            path,
            text,
            pos,
            "trailing characters after the array".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let t = "ab\ncd";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 4), (2, 2));
    }

    #[test]
    fn array_elements_keep_offsets() {
        let t = "[ 1,\n 2 ]";
        let v: Vec<(usize, u32)> = parse_array(Path::new("f"), t).unwrap();
        assert_eq!(v, vec![(2, 1), (6, 2)]);
        let e = parse_array::<u32>(Path::new("f"), "[1,\n \"x\"]").unwrap_err();
        assert_eq!((e.line, e.column), (2, 4));
    }
}
