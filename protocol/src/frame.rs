//! Framing of both links.
//!
//! WebSocket link: one JSON message per text frame; [`decode_text`] checks the
//! size before parsing. Unix-socket link: newline-delimited JSON with
//! [`MAX_LOCAL_FRAME`]; [`read_line_frame`] never buffers more than the limit,
//! so a peer that sends an endless line costs bounded memory.

use crate::error::DecodeError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame a master or admin CLI may send to the lan manager.
pub const MAX_TO_LAN_FRAME: usize = 1 << 20;
/// Largest frame the lan manager sends (a snapshot of many needs).
pub const MAX_FROM_LAN_FRAME: usize = 64 << 20;
/// The WebSocket read buffer of every link. tungstenite zeroes the free part
/// of its buffer before each read, so its 128 KiB default cost a 128 KiB
/// memset per frame received: the largest part of an idle wake (a
/// heartbeat). Large frames take more reads of this size instead.
pub const WS_READ_BUFFER: usize = 16 << 10;
/// Largest frame on the master's Unix socket, either way.
pub const MAX_LOCAL_FRAME: usize = 64 << 10;

/// Largest reply a client reads from the master: a status of thousands of
/// children is far over [`MAX_LOCAL_FRAME`], and the master is trusted.
pub const MAX_LOCAL_REPLY: usize = 16 << 20;

/// Serializes a message for a text frame (or a line, without its newline).
pub fn encode<T: Serialize>(msg: &T) -> String {
    // Our message types hold only strings, integers, maps with string keys and
    // vectors, which serde_json always serializes.
    serde_json::to_string(msg).unwrap_or_else(|e| {
        format!("{{\"type\":\"error\",\"code\":\"invalid\",\"message\":\"encode: {e}\"}}")
    })
}

/// Decodes one text frame, refusing frames over `max` bytes before parsing.
pub fn decode_text<T: DeserializeOwned>(text: &str, max: usize) -> Result<T, DecodeError> {
    if text.len() > max {
        return Err(DecodeError::FrameTooLarge {
            size: text.len(),
            max,
        });
    }
    serde_json::from_str(text).map_err(|e| DecodeError::from_json(&e))
}

/// Decodes raw bytes (a Unix-socket line), refusing more than `max` bytes.
pub fn decode_bytes<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::FrameTooLarge {
            size: bytes.len(),
            max,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| DecodeError::from_json(&e))
}

/// Why a line frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The frame arrived but does not decode; the stream is still in sync.
    #[error(transparent)]
    Decode(DecodeError),
    /// The line is over the limit; the rest of the stream cannot be trusted.
    #[error("frame over {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The peer closed the stream in the middle of a frame.
    #[error("peer closed the stream mid-frame after {0} bytes")]
    Truncated(usize),
}

/// Reads one newline-terminated frame, holding at most `max` bytes.
///
/// `Ok(None)` is a clean end of stream between frames.
pub async fn read_line_frame<R, T>(reader: &mut R, max: usize) -> Result<Option<T>, FrameError>
where
    R: AsyncBufRead + Unpin,
    T: DeserializeOwned,
{
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(FrameError::Truncated(line.len()))
            };
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if line.len() + chunk.len() > max {
            return Err(FrameError::TooLarge { max });
        }
        line.extend_from_slice(chunk);
        let used = done.unwrap_or(chunk.len());
        reader.consume(used);
        if done.is_some() {
            return decode_bytes(&line, max)
                .map(Some)
                .map_err(FrameError::Decode);
        }
    }
}

/// Writes one message as a newline-terminated frame and flushes it.
pub async fn write_line_frame<W, T>(writer: &mut W, msg: &T) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let mut line = encode(msg);
    line.push('\n');
    writer.write_all(line.as_bytes()).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalRequest;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn lines_decode_in_order_and_end_cleanly() {
        let data = b"{\"type\":\"ready\"}\n{\"type\":\"status\"}\n".to_vec();
        let mut r = BufReader::new(&data[..]);
        let a: Option<LocalRequest> = read_line_frame(&mut r, 100).await.unwrap();
        let b: Option<LocalRequest> = read_line_frame(&mut r, 100).await.unwrap();
        let c: Option<LocalRequest> = read_line_frame(&mut r, 100).await.unwrap();
        assert_eq!(a, Some(LocalRequest::Ready));
        assert_eq!(b, Some(LocalRequest::Status));
        assert_eq!(c, None);
    }

    #[tokio::test]
    async fn endless_line_is_cut_at_the_limit() {
        let data = vec![b'x'; 10_000];
        let mut r = BufReader::with_capacity(64, &data[..]);
        let e = read_line_frame::<_, LocalRequest>(&mut r, 100)
            .await
            .unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { max: 100 }), "{e}");
    }

    #[tokio::test]
    async fn mid_frame_close_is_truncated() {
        let data = b"{\"type\":".to_vec();
        let mut r = BufReader::new(&data[..]);
        let e = read_line_frame::<_, LocalRequest>(&mut r, 100)
            .await
            .unwrap_err();
        assert!(matches!(e, FrameError::Truncated(8)), "{e}");
    }

    #[tokio::test]
    async fn garbage_line_keeps_stream_in_sync() {
        let data = b"garbage\n{\"type\":\"ready\"}\n".to_vec();
        let mut r = BufReader::new(&data[..]);
        let e = read_line_frame::<_, LocalRequest>(&mut r, 100)
            .await
            .unwrap_err();
        assert!(
            matches!(e, FrameError::Decode(DecodeError::Malformed { .. })),
            "{e}"
        );
        let a: Option<LocalRequest> = read_line_frame(&mut r, 100).await.unwrap();
        assert_eq!(a, Some(LocalRequest::Ready));
    }
}
