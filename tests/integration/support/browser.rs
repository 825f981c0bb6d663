//! A real headless Chromium driven through ChromeDriver's W3C WebDriver API (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/setup.sh). Just the commands the console test needs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use http::Method;
use serde_json::{json, Value};

use super::{free_port, send};

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    base: String,
    session: String,
    driver: std::process::Child,
    profile_dir: PathBuf,
}

fn find_bin(names: &[&str]) -> Option<PathBuf> {
    names.iter().map(PathBuf::from).find(|p| p.exists())
}

impl Browser {
    /// Starts ChromeDriver on a free port and opens a headless Chromium session.
    pub async fn start(dir: &Path) -> Browser {
        let driver_bin = find_bin(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
            .expect("chromedriver is not installed: run scripts/setup.sh");
        let chromium = find_bin(&["/usr/bin/chromium", "/usr/lib/chromium/chromium"])
            .expect("chromium is not installed: run scripts/setup.sh");
        let port = free_port();
        let log = std::fs::File::create(dir.join(format!("chromedriver-{port}.log"))).unwrap();
        let driver = std::process::Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("chromedriver did not start");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(("127.0.0.1", port)),
            )
            .await;
            if matches!(up, Ok(Ok(_))) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not open {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile_dir = dir.join(format!("chromium-profile-{port}"));
        std::fs::create_dir_all(&profile_dir).unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-extensions",
                    "--window-size=1360,1000",
                    format!("--user-data-dir={}", profile_dir.display()),
                ],
            },
        }}});
        let mut b = Browser {
            base,
            session: String::new(),
            driver,
            profile_dir,
        };
        let v = b.call(Method::POST, "/session", caps).await;
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        b
    }

    /// One WebDriver command; returns its `value`, panicking on a WebDriver error.
    async fn call(&self, method: Method, path: &str, body: Value) -> Value {
        let v = self.try_call(method, path, body).await;
        if let Some(e) = v.get("error") {
            panic!("WebDriver {path}: {e}: {}", v["message"]);
        }
        v
    }

    async fn try_call(&self, method: Method, path: &str, body: Value) -> Value {
        let body = if method == Method::GET {
            bytes::Bytes::new()
        } else {
            bytes::Bytes::from(body.to_string())
        };
        let r = send(
            method,
            &format!("{}{path}", self.base),
            &[("content-type", "application/json")],
            body,
        )
        .await;
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        v.get("value").cloned().unwrap_or(Value::Null)
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.call(Method::POST, &self.s("/url"), json!({ "url": url }))
            .await;
    }

    /// The element matching `css`, waiting up to 10 s for it to appear.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self
                .try_call(
                    Method::POST,
                    &self.s("/element"),
                    json!({"using": "css selector", "value": css}),
                )
                .await;
            if let Some(id) = v.get(ELEMENT).and_then(Value::as_str) {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element {css}: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn exists(&self, css: &str) -> bool {
        let v = self
            .try_call(
                Method::POST,
                &self.s("/element"),
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v.get(ELEMENT).is_some()
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(
            Method::POST,
            &self.s(&format!("/element/{id}/click")),
            json!({}),
        )
        .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            Method::POST,
            &self.s(&format!("/element/{id}/clear")),
            json!({}),
        )
        .await;
        self.call(
            Method::POST,
            &self.s(&format!("/element/{id}/value")),
            json!({ "text": text }),
        )
        .await;
    }

    /// The rendered text of the element (empty when it is hidden).
    pub async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.call(
            Method::GET,
            &self.s(&format!("/element/{id}/text")),
            json!({}),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    pub async fn displayed(&self, css: &str) -> bool {
        let id = self.find(css).await;
        self.call(
            Method::GET,
            &self.s(&format!("/element/{id}/displayed")),
            json!({}),
        )
        .await
        .as_bool()
        .unwrap_or(false)
    }

    /// Waits up to 10 s for the element's text to contain `want`; returns the text.
    pub async fn wait_text(&self, css: &str, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let t = self.text(css).await;
            if t.contains(want) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {want:?}; it shows {t:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page's HTML as the browser has it now (after scripts ran).
    pub async fn source(&self) -> String {
        self.call(Method::GET, &self.s("/source"), json!({}))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn url(&self) -> String {
        self.call(Method::GET, &self.s("/url"), json!({}))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn cookies(&self) -> Vec<Value> {
        self.call(Method::GET, &self.s("/cookie"), json!({}))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Runs `script` in the page (as a function body) and returns what it returns.
    pub async fn script(&self, script: &str) -> Value {
        self.call(
            Method::POST,
            &self.s("/execute/async"),
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// A PNG of the window, written to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let v = self
            .call(Method::GET, &self.s("/screenshot"), json!({}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Ends the session (closes Chromium) and stops ChromeDriver.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            self.try_call(Method::DELETE, &self.s(""), json!({})),
        )
        .await;
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Any browser process ChromeDriver left: they are the only ones with this profile folder.
        let _ = std::process::Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg("--")
            .arg(self.profile_dir.display().to_string())
            .status();
        let _ = std::fs::remove_dir_all(&self.profile_dir);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.driver.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}
