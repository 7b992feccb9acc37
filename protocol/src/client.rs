//! A blocking client of the master's Unix socket, for services written in Rust.
//!
//! ```no_run
//! let mut master = allex_protocol::client::MasterClient::from_env()?;
//! master.ready()?;
//! let time: allex_protocol::InstanceName = "Time".parse()?;
//! let peer = master.lookup(&time)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::frame::{decode_bytes, encode, MAX_LOCAL_REPLY};
use crate::lan::ErrorCode;
use crate::local::{LocalReply, LocalRequest};
use crate::names::InstanceName;
use crate::spawn::ENV_MASTER_SOCKET;
use crate::types::{MasterStatus, ServiceLocation};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a call to the master failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `ALLEX_MASTER_SOCKET` is not set.
    #[error("ALLEX_MASTER_SOCKET is not set: this process was not started by allexmaster")]
    NoSocket,
    /// The socket could not be reached or failed.
    #[error("master socket {path}: {cause}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The fault.
        cause: std::io::Error,
    },
    /// The reply did not decode.
    #[error("bad reply from the master: {0}")]
    Decode(#[from] crate::error::DecodeError),
    /// The master refused the request.
    #[error("the master refused: {code}: {message}")]
    Refused {
        /// Cause.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// The master answered with a reply of another kind.
    #[error("unexpected reply from the master: {0}")]
    Unexpected(String),
}

/// A connection to the master's socket; requests are answered in order.
pub struct MasterClient {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl MasterClient {
    /// Connects to the socket named by `ALLEX_MASTER_SOCKET`.
    pub fn from_env() -> Result<Self, ClientError> {
        let path = std::env::var_os(ENV_MASTER_SOCKET).ok_or(ClientError::NoSocket)?;
        Self::connect(Path::new(&path))
    }

    /// Connects to a master socket at `path`.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let io = |cause| ClientError::Io {
            path: path.to_path_buf(),
            cause,
        };
        let stream = UnixStream::connect(path).map_err(io)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(MasterClient {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    fn call(&mut self, req: &LocalRequest) -> Result<LocalReply, ClientError> {
        let io = |path: &Path, cause| ClientError::Io {
            path: path.to_path_buf(),
            cause,
        };
        let mut line = encode(req);
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| io(&self.path, e))?;
        let mut buf = Vec::new();
        let limit = (MAX_LOCAL_REPLY + 1) as u64;
        (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut buf)
            .map_err(|e| io(&self.path, e))?;
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else {
            return Err(io(
                &self.path,
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no complete reply"),
            ));
        }
        match decode_bytes::<LocalReply>(&buf, MAX_LOCAL_REPLY)? {
            LocalReply::Error { code, message } => Err(ClientError::Refused { code, message }),
            reply => Ok(reply),
        }
    }

    /// Tells the master this process is ready to serve.
    pub fn ready(&mut self) -> Result<(), ClientError> {
        match self.call(&LocalRequest::Ready)? {
            LocalReply::Ack => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Asks where a running service is; `None` when it does not run.
    pub fn lookup(
        &mut self,
        instancename: &InstanceName,
    ) -> Result<Option<ServiceLocation>, ClientError> {
        match self.call(&LocalRequest::Lookup {
            instancename: instancename.clone(),
        })? {
            LocalReply::Location { location } => Ok(location),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Asks what the master holds.
    pub fn status(&mut self) -> Result<MasterStatus, ClientError> {
        match self.call(&LocalRequest::Status)? {
            LocalReply::Status { status } => Ok(status),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}
