//! Typed errors for decoding messages and reading the files users write.

use std::path::PathBuf;
use thiserror::Error;

/// Why a frame could not be decoded into a message; never a panic.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The frame is larger than the link allows; it was not parsed.
    #[error("frame of {size} bytes is over the limit of {max} bytes")]
    FrameTooLarge {
        /// Bytes received (or read so far, when the frame was cut off).
        size: usize,
        /// The link's limit.
        max: usize,
    },
    /// The frame is not valid JSON (or not UTF-8).
    #[error("malformed JSON at line {line} column {column}: {message}")]
    Malformed {
        /// 1-based line of the fault.
        line: usize,
        /// 1-based column of the fault.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// The frame's `type` names no message of this link.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A field the message needs is absent (`type` included).
    #[error("missing field {0:?}")]
    MissingField(String),
    /// The JSON is well formed but a field has the wrong type or value.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// A binary frame arrived on a link that only carries text frames.
    #[error("binary frames are not accepted on this link")]
    Binary,
}

impl DecodeError {
    /// Classifies a serde_json error into the matching typed error.
    pub fn from_json(err: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        match err.classify() {
            Category::Syntax | Category::Eof | Category::Io => DecodeError::Malformed {
                line: err.line(),
                column: err.column(),
                message: err.to_string(),
            },
            Category::Data => {
                let text = err.to_string();
                if let Some(name) = backticked_after(&text, "unknown variant `") {
                    DecodeError::UnknownType(name)
                } else if let Some(name) = backticked_after(&text, "missing field `") {
                    DecodeError::MissingField(name)
                } else {
                    DecodeError::Invalid(text)
                }
            }
        }
    }

    /// The wire error code a peer is told for this fault.
    pub fn code(&self) -> crate::lan::ErrorCode {
        use crate::lan::ErrorCode;
        match self {
            DecodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::Malformed { .. } => ErrorCode::Malformed,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::MissingField(_) => ErrorCode::MissingField,
            DecodeError::Invalid(_) => ErrorCode::Invalid,
            DecodeError::Binary => ErrorCode::BinaryFrame,
        }
    }
}

fn backticked_after(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)? + prefix.len();
    let len = text[start..].find('`')?;
    Some(text[start..start + len].to_string())
}

/// An error in a file a user wrote, located by file, line and column.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct FileError {
    /// The file that holds the fault.
    pub path: PathBuf,
    /// 1-based line of the fault (0 when the file could not be read at all).
    pub line: usize,
    /// 1-based column of the fault.
    pub column: usize,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl FileError {
    /// An error that has no position (the file could not be read).
    pub fn unlocated(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        FileError {
            path: path.into(),
            line: 0,
            column: 0,
            message: message.into(),
        }
    }
}
