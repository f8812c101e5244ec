//! Headless Chromium, driven over the DevTools protocol: open a page, run script in it (to
//! read what it shows and to click), and take a screenshot. Debian's `chromium` package
//! (scripts/test.sh installs it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The Chromium binary on this machine.
pub fn binary() -> &'static str {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok()
        })
        .expect("Chromium is needed for the dashboard tests: scripts/test.sh installs Debian's chromium")
}

/// The flags of every headless run: no network of its own, no first-run work.
pub const FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--hide-scrollbars",
];

/// A Chromium with one page open; the process ends when this is dropped.
pub struct Browser {
    child: tokio::process::Child,
    socket: Socket,
    next_id: u64,
    profile: PathBuf,
}

impl Browser {
    /// Starts Chromium on `url` with a window of 1400×900.
    pub async fn open(url: &str) -> Self {
        let profile =
            std::env::temp_dir().join(format!("jm-chromium-{}", uuid::Uuid::new_v4().simple()));
        let mut child = tokio::process::Command::new(binary())
            .args(FLAGS)
            .arg("--remote-debugging-port=0")
            .arg("--window-size=1400,900")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                    return rest.split('/').next().map(str::to_owned);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("chromium printed its DevTools address");
        // Keep reading, so a chatty Chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let targets: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .expect("DevTools answers")
            .json()
            .await
            .expect("a target list");
        let page = targets
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let (socket, _) = tokio_tungstenite::connect_async(page.as_str())
            .await
            .expect("DevTools socket");
        let mut browser = Self {
            child,
            socket,
            next_id: 0,
            profile,
        };
        // No dialog may block the page: confirm() answers yes.
        browser.eval("window.confirm = () => true; true").await;
        browser
    }

    /// Calls a DevTools method and returns its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket
            .send(Message::text(request))
            .await
            .expect("send to DevTools");
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .expect("DevTools answered in time")
                .expect("the socket is open")
                .expect("a message");
            let Message::Text(text) = message else {
                continue;
            };
            let reply: Value = serde_json::from_str(text.as_str()).expect("JSON from DevTools");
            if reply["id"] == id {
                assert!(reply["error"].is_null(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// The value of `expression` evaluated in the page (a promise is awaited).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let result = self.call("Runtime.evaluate", params).await;
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Waits (at most 15 s) until `expression` is truthy in the page; returns its value.
    pub async fn wait_for(&mut self, expression: &str) -> Value {
        let started = Instant::now();
        loop {
            let value = self.eval(expression).await;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy {
                return value;
            }
            if started.elapsed() > Duration::from_secs(15) {
                let page = self.eval("document.body.innerText").await;
                panic!("never true in the page: {expression}\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `selector` (which must be there).
    pub async fn click(&mut self, selector: &str) {
        let selector = serde_json::to_string(selector).expect("a string");
        let script = format!(
            "(() => {{ const e = document.querySelector({selector}); if (!e) return false; e.click(); return true; }})()"
        );
        assert_eq!(self.eval(&script).await, json!(true), "{selector} to click");
    }

    /// Saves a PNG of the page to `path` and returns its size in bytes.
    pub async fn screenshot(&mut self, path: &Path) -> usize {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, &png).expect("write the screenshot");
        png.len()
    }

    pub async fn close(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
