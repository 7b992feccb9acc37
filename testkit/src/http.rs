//! A blocking HTTP client of the lan manager's HTTP server, for tests of
//! its endpoints (status codes and bodies as they are, errors included).

use crate::error::HarnessError;
use std::net::SocketAddr;
use std::time::Duration;

/// An HTTP answer: its status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

impl HttpAnswer {
    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HarnessError> {
        serde_json::from_str(&self.body).map_err(|source| HarnessError::Parse {
            command: format!("HTTP answer {}", self.status),
            source,
            stdout: self.body.clone(),
        })
    }
}

/// A client of one HTTP server, sending `Authorization: Bearer TOKEN` when
/// it has a token.
#[derive(Clone)]
pub struct HttpClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl HttpClient {
    /// A client of the server at `addr`.
    pub fn new(addr: SocketAddr, token: Option<String>) -> HttpClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        HttpClient {
            base: format!("http://{addr}"),
            token,
            agent,
        }
    }

    /// The same client with another token (or none), for refusals.
    pub fn with_token(&self, token: Option<&str>) -> HttpClient {
        HttpClient {
            token: token.map(str::to_string),
            ..self.clone()
        }
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn answer(
        &self,
        what: String,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<HttpAnswer, HarnessError> {
        let io = |e: ureq::Error| HarnessError::Io {
            what: what.clone(),
            source: std::io::Error::other(e.to_string()),
        };
        let mut response = sent.map_err(io)?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().map_err(io)?;
        Ok(HttpAnswer { status, body })
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<HttpAnswer, HarnessError> {
        let sent = self.auth(self.agent.get(self.url(path))).call();
        self.answer(format!("GET {path}"), sent)
    }

    /// `POST path` with a JSON body (empty when `body` is empty).
    pub fn post(&self, path: &str, body: &str) -> Result<HttpAnswer, HarnessError> {
        let req = self
            .auth(self.agent.post(self.url(path)))
            .header("Content-Type", "application/json");
        self.answer(format!("POST {path}"), req.send(body))
    }

    /// Reads the first `n` server-sent events of `GET path` (each `data:`
    /// line's JSON), then drops the stream.
    pub fn sse(&self, path: &str, n: usize) -> Result<Vec<serde_json::Value>, HarnessError> {
        use std::io::BufRead;
        let what = format!("GET {path} (event stream)");
        let io = |e: String| HarnessError::Io {
            what: what.clone(),
            source: std::io::Error::other(e),
        };
        let mut response = self
            .auth(self.agent.get(self.url(path)))
            .call()
            .map_err(|e| io(e.to_string()))?;
        if response.status() != 200 {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            return Err(io(format!("status {}: {body}", response.status())));
        }
        let reader = std::io::BufReader::new(response.body_mut().as_reader());
        let mut events = Vec::with_capacity(n);
        for line in reader.lines() {
            if events.len() == n {
                break;
            }
            let line = line.map_err(|e| io(e.to_string()))?;
            if let Some(data) = line.strip_prefix("data:") {
                let v = serde_json::from_str(data.trim()).map_err(|e| io(e.to_string()))?;
                events.push(v);
            }
        }
        if events.len() < n {
            return Err(io(format!(
                "the stream ended after {} of {n} events",
                events.len()
            )));
        }
        Ok(events)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<HttpAnswer, HarnessError> {
        let sent = self.auth(self.agent.delete(self.url(path))).call();
        self.answer(format!("DELETE {path}"), sent)
    }
}
