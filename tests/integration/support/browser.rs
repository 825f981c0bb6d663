//! A real headless Chromium driven through ChromeDriver's W3C WebDriver API (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/setup.sh). Just the commands the console test needs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use http::Method;
use serde_json::{json, Value};

use super::proc::{printed_after, tool, Proc};
use super::wait::wait_for;

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a new session (Chromium's start) may take, and any other WebDriver command.
const SESSION_WITHIN: Duration = Duration::from_secs(60);
const COMMAND_WITHIN: Duration = Duration::from_secs(30);
/// How long an element or a text may take to appear.
const ELEMENT_WITHIN: Duration = Duration::from_secs(10);

/// A ChromeDriver process (killed on drop) and one headless Chromium session.
pub struct Browser {
    base: String,
    session: String,
    driver: Proc,
    profile_dir: PathBuf,
}

impl Browser {
    /// Starts ChromeDriver on port 0 (it prints the port it got) and opens a headless Chromium
    /// session. Files (ChromeDriver's output, Chromium's profile) go under `dir`.
    pub async fn start(dir: &Path) -> Browser {
        let driver_bin = tool("chromedriver");
        let chromium = tool("chromium");
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = dir.join(format!("chromedriver-{n}.log"));
        let log = std::fs::File::create(&out).unwrap();
        let mut driver = Proc::spawn(
            "chromedriver",
            std::process::Command::new(driver_bin)
                .arg("--port=0")
                .arg("--allowed-ips=127.0.0.1")
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        // "ChromeDriver was started successfully on port 37485."
        let said = printed_after(
            &mut driver,
            &out,
            "started successfully on port ",
            Duration::from_secs(20),
        )
        .await;
        let port: u16 = said
            .trim()
            .trim_end_matches('.')
            .parse()
            .unwrap_or_else(|e| panic!("chromedriver's port in {said:?}: {e}"));
        let base = format!("http://127.0.0.1:{port}");
        let profile_dir = dir.join(format!("chromium-profile-{n}"));
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
            .unwrap_or_else(|| panic!("WebDriver POST /session: no session id in {v}"))
            .to_string();
        b
    }

    /// One WebDriver command; returns its `value`, panicking on a WebDriver error.
    async fn call(&self, method: Method, path: &str, body: Value) -> Value {
        let shown = format!("{method} {path}");
        let v = self.try_call(method, path, body).await;
        if let Some(e) = v.get("error") {
            panic!("WebDriver {shown}: {e}: {}", v["message"]);
        }
        v
    }

    /// One WebDriver command's `value` (a WebDriver error is a value with `error`); panics naming
    /// the command when ChromeDriver does not answer in time or answers something else than JSON.
    async fn try_call(&self, method: Method, path: &str, body: Value) -> Value {
        let within = if path == "/session" {
            SESSION_WITHIN
        } else {
            COMMAND_WITHIN
        };
        let shown = format!("{method} {path}");
        let body = if method == Method::GET {
            bytes::Bytes::new()
        } else {
            bytes::Bytes::from(body.to_string())
        };
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(body))
            .unwrap();
        let resp = match tokio::time::timeout(within, super::client().request(req)).await {
            Err(_) => panic!("WebDriver {shown}: no answer from chromedriver within {within:?}"),
            Ok(Err(e)) => panic!("WebDriver {shown}: chromedriver unreachable: {e:?}"),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let bytes =
            match tokio::time::timeout(within, http_body_util::BodyExt::collect(resp.into_body()))
                .await
            {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(e)) => panic!("WebDriver {shown}: reading the answer: {e}"),
                Err(_) => panic!("WebDriver {shown}: the answer did not end within {within:?}"),
            };
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "WebDriver {shown}: {status} and not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
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
        wait_for(
            &format!("an element matching {css} on the page"),
            ELEMENT_WITHIN,
            || async {
                let v = self
                    .try_call(
                        Method::POST,
                        &self.s("/element"),
                        json!({"using": "css selector", "value": css}),
                    )
                    .await;
                match v.get(ELEMENT).and_then(Value::as_str) {
                    Some(id) => Ok(id.to_string()),
                    None => Err(v.to_string()),
                }
            },
        )
        .await
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

    /// Runs `steps` (`(method, path after /element/{id}, body)`) on the element matching `css`;
    /// returns the last step's value. The console re-renders its tables (a row found a moment
    /// ago can be replaced before the command reaches it): a "stale element reference" finds the
    /// element again, for up to 10 s. Any other WebDriver error fails the test.
    async fn on_element(&self, css: &str, steps: &[(Method, &str, Value)]) -> Value {
        wait_for(
            &format!(
                "{css} to hold still for {:?}",
                steps.iter().map(|s| s.1).collect::<Vec<_>>()
            ),
            ELEMENT_WITHIN,
            || async {
                let id = self.find(css).await;
                let mut last = Value::Null;
                for (method, rest, body) in steps {
                    let path = self.s(&format!("/element/{id}{rest}"));
                    let v = self.try_call(method.clone(), &path, body.clone()).await;
                    match v.get("error").and_then(Value::as_str) {
                        None => last = v,
                        Some("stale element reference") => {
                            return Err(format!("{css} was re-rendered during {method} {rest}"))
                        }
                        Some(e) => {
                            panic!("WebDriver {method} {path} ({css}): {e}: {}", v["message"])
                        }
                    }
                }
                Ok(last)
            },
        )
        .await
    }

    pub async fn click(&self, css: &str) {
        self.on_element(css, &[(Method::POST, "/click", json!({}))])
            .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        self.on_element(
            css,
            &[
                (Method::POST, "/clear", json!({})),
                (Method::POST, "/value", json!({ "text": text })),
            ],
        )
        .await;
    }

    /// The rendered text of the element (empty when it is hidden).
    pub async fn text(&self, css: &str) -> String {
        self.on_element(css, &[(Method::GET, "/text", json!({}))])
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn displayed(&self, css: &str) -> bool {
        self.on_element(css, &[(Method::GET, "/displayed", json!({}))])
            .await
            .as_bool()
            .unwrap_or(false)
    }

    /// Waits up to 10 s for the element's text to contain `want`; returns the text.
    pub async fn wait_text(&self, css: &str, want: &str) -> String {
        wait_for(
            &format!("{css} to show {want:?}"),
            ELEMENT_WITHIN,
            || async {
                let t = self.text(css).await;
                if t.contains(want) {
                    Ok(t)
                } else {
                    Err(format!("it shows {t:?}"))
                }
            },
        )
        .await
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

    /// The handles of the session's windows (tabs), in the order they were opened.
    pub async fn windows(&self) -> Vec<String> {
        self.call(Method::GET, &self.s("/window/handles"), json!({}))
            .await
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The handle of the window commands go to now.
    pub async fn window(&self) -> String {
        self.call(Method::GET, &self.s("/window"), json!({}))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Sends the next commands to the window `handle`.
    pub async fn switch_to(&self, handle: &str) {
        self.call(
            Method::POST,
            &self.s("/window"),
            json!({ "handle": handle }),
        )
        .await;
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
        self.driver.kill();
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
        if self.driver.running() {
            self.stop();
        }
    }
}
