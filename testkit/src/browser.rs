//! A real headless Chromium, driven over WebDriver (chromedriver), for the
//! dashboard's browser test: load a page, read what it shows, screenshot it.

use crate::error::HarnessError;
use crate::http::HttpClient;
use crate::process::{Proc, Stderr};
use crate::wait::{wait_until, SOON};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// Where Debian's packages put the browser and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One browser session; the browser and its driver end when it is dropped.
pub struct Browser {
    http: HttpClient,
    session: String,
    // Declared last: the session is deleted before the driver dies.
    _driver: Proc,
}

fn webdriver(what: &str, detail: impl std::fmt::Display) -> HarnessError {
    HarnessError::Expectation(format!("webdriver {what}: {detail}"))
}

impl Browser {
    /// Why no browser can run here, if none can (the packages are missing).
    pub fn unavailable() -> Option<String> {
        [CHROMIUM, CHROMEDRIVER]
            .iter()
            .find(|p| !Path::new(p).exists())
            .map(|p| format!("{p} is missing (apt-get install chromium chromium-driver)"))
    }

    /// Starts chromedriver and a headless Chromium session `width` x `height`.
    pub fn start(width: u32, height: u32) -> Result<Browser, HarnessError> {
        let port = crate::ports::free_port().map_err(|source| HarnessError::Io {
            what: "choosing a port for chromedriver".into(),
            source,
        })?;
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"));
        let driver = Proc::spawn("chromedriver", cmd, Stderr::Null)?;
        let http = HttpClient::new(std::net::SocketAddr::from(([127, 0, 0, 1], port)), None);
        wait_until("chromedriver to answer", SOON, || {
            match http.get("/status").map(|a| a.json::<Value>()) {
                Ok(Ok(v)) if v["value"]["ready"] == true => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })?;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                // Root in CI has no sandbox; no GPU in a container.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", format!("--window-size={width},{height}")]
            }
        }}});
        let a = http.post("/session", &caps.to_string())?;
        let v: Value = a.json()?;
        let session = v["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| webdriver("new session", &a.body))?
            .to_string();
        Ok(Browser {
            http,
            session,
            _driver: driver,
        })
    }

    fn command(&self, path: &str, body: Value) -> Result<Value, HarnessError> {
        let url = format!("/session/{}{path}", self.session);
        let a = self.http.post(&url, &body.to_string())?;
        let v: Value = a.json()?;
        if a.status != 200 {
            return Err(webdriver(path, &a.body));
        }
        Ok(v["value"].clone())
    }

    /// Opens `url` and waits for the page to load.
    pub fn goto(&self, url: &str) -> Result<(), HarnessError> {
        self.command("/url", json!({ "url": url })).map(drop)
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn eval(&self, script: &str) -> Result<Value, HarnessError> {
        self.command("/execute/sync", json!({ "script": script, "args": [] }))
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<(), HarnessError> {
        let url = format!("/session/{}/screenshot", self.session);
        let v: Value = self.http.get(&url)?.json()?;
        let b64 = v["value"]
            .as_str()
            .ok_or_else(|| webdriver("screenshot", &v))?;
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| webdriver("screenshot", e))?;
        std::fs::write(path, png).map_err(|source| HarnessError::Io {
            what: format!("writing {}", path.display()),
            source,
        })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(&format!("/session/{}", self.session));
    }
}
