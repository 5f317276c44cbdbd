//! A small W3C WebDriver client for browser tests: it starts Debian's
//! `chromedriver`, which drives headless Chromium, and speaks the
//! protocol's JSON over the same HTTP/1.1 client the other tests use.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::http::{try_request_within, unused_port, Response, JSON};
use super::wait::{deadline, wait_until};

/// How the protocol names an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Starting Chromium on a busy two-core machine can take many seconds.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a test waits for the page to show what it expects.
pub const PAGE_WAIT: Duration = Duration::from_secs(20);

fn program(env: &str, default: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| default.to_owned())
}

/// One headless Chromium window, closed with its driver when dropped.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A fresh browser with an empty profile and a `width`×`height` window.
    pub fn start(width: u32, height: u32) -> Browser {
        let chromium = program("HERALD_TEST_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = program("HERALD_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = unused_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {chromedriver} (the test command installs chromium-driver): {e}")
            });
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let ready = wait_until(deadline(COMMAND_TIMEOUT), || {
            browser
                .call_raw("GET", "/status", None)
                .is_some_and(|v| v["value"]["ready"] == true)
        });
        assert!(ready, "chromedriver did not become ready on {addr}");
        // Without the background-networking flags Chromium keeps dialling
        // Google's hosts, which a closed network refuses.
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let created = browser.call(
            "POST",
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": chromium, "args": args},
            }}})),
        );
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_owned();
        browser
    }

    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<Response> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let headers: &[(&str, &str)] = if method == "POST" { &[JSON] } else { &[] };
        try_request_within(
            self.addr,
            method,
            path,
            headers,
            body.as_bytes(),
            COMMAND_TIMEOUT,
        )
    }

    /// A command whose failure is not the test's: `None` unless it worked.
    fn call_raw(&self, method: &str, path: &str, body: Option<Value>) -> Option<Value> {
        let resp = self.send(method, path, body.as_ref()).ok()?;
        (resp.status == 200).then(|| resp.json())
    }

    /// A protocol command; the answer's `value`, or a panic naming the error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body.clone())
            .unwrap_or_else(|value| {
                let body_text = body.map(|b| b.to_string()).unwrap_or_default();
                panic!("WebDriver {method} {path} {body_text}: {value}")
            })
    }

    /// A protocol command: the answer's `value`, or the error's.
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let resp = self
            .send(method, path, body.as_ref())
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let value = resp.json()["value"].clone();
        if resp.status == 200 {
            Ok(value)
        } else {
            Err(value)
        }
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
    }

    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn current_url(&self) -> String {
        self.session_call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn set_window_size(&self, width: u32, height: u32) {
        self.session_call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn script(&self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Elements matching `css` now, without waiting.
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let found = self.session_call(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT_KEY].as_str())
            .enumerate()
            .map(|(position, id)| Element {
                browser: self,
                id: std::cell::RefCell::new(id.to_owned()),
                css: css.to_owned(),
                position,
            })
            .collect()
    }

    /// The first element matching `css`, waiting for it to appear.
    pub fn find(&self, css: &str) -> Element<'_> {
        let mut first = None;
        wait_until(deadline(PAGE_WAIT), || {
            first = self.find_all(css).into_iter().next();
            first.is_some()
        });
        first.unwrap_or_else(|| {
            panic!(
                "no element matches {css:?} on {} within {PAGE_WAIT:?}; the page says: {}",
                self.current_url(),
                self.page_text()
            )
        })
    }

    /// Waits until the page's visible text contains `needle`.
    pub fn wait_for_text(&self, needle: &str) {
        let shown = wait_until(deadline(PAGE_WAIT), || self.page_text().contains(needle));
        assert!(
            shown,
            "{needle:?} never appeared on {}; the page says: {}",
            self.current_url(),
            self.page_text()
        );
    }

    /// Waits until `css` matches at least `count` elements.
    pub fn wait_for_count(&self, css: &str, count: usize) -> Vec<Element<'_>> {
        let mut found = Vec::new();
        wait_until(deadline(PAGE_WAIT), || {
            found = self.find_all(css);
            found.len() >= count
        });
        assert!(
            found.len() >= count,
            "{css:?} matched {} elements, not {count}, on {}",
            found.len(),
            self.current_url()
        );
        found
    }

    pub fn page_text(&self) -> String {
        self.script(
            "return document.body ? document.body.innerText : '';",
            json!([]),
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Saves a PNG of the window as `target/artifacts/<name>.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let encoded = self.session_call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).expect("creating the artifacts directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("writing a screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self.call_raw("DELETE", &path, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `target/artifacts`: kept after the run for people to look at.
pub fn artifacts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("artifacts")
}

/// An element, with the selector that found it: a page that redraws
/// replaces its elements, and the same selector finds the new one.
pub struct Element<'b> {
    browser: &'b Browser,
    id: std::cell::RefCell<String>,
    css: String,
    /// Its place among the selector's matches.
    position: usize,
}

/// Errors that a redraw or a transition in progress causes; the same
/// command on the element the selector finds next succeeds.
const PASSING_ERRORS: [&str; 3] = [
    "stale element reference",
    "element click intercepted",
    "element not interactable",
];

impl Element<'_> {
    fn call(&self, method: &str, action: &str, body: Option<Value>) -> Value {
        let (mut answer, mut last) = (None, Value::Null);
        wait_until(deadline(PAGE_WAIT), || {
            let path = format!(
                "/session/{}/element/{}{action}",
                self.browser.session,
                self.id.borrow()
            );
            match self.browser.try_call(method, &path, body.clone()) {
                Ok(value) => {
                    answer = Some(value);
                    true
                }
                Err(error) => {
                    let passing = error["error"]
                        .as_str()
                        .is_some_and(|e| PASSING_ERRORS.contains(&e));
                    assert!(
                        passing,
                        "WebDriver {method} {action} on {:?}: {error}",
                        self.css
                    );
                    if let Some(found) = self.browser.find_all(&self.css).get(self.position) {
                        let fresh = found.id.borrow().clone();
                        *self.id.borrow_mut() = fresh;
                    }
                    last = error;
                    false
                }
            }
        });
        answer.unwrap_or_else(|| {
            panic!(
                "WebDriver {method} {action} on {:?} within {PAGE_WAIT:?}: {last}",
                self.css
            )
        })
    }

    pub fn click(&self) {
        self.call("POST", "/click", Some(json!({})));
    }

    /// Types `text` after what the field holds.
    pub fn send_keys(&self, text: &str) {
        self.call("POST", "/value", Some(json!({ "text": text })));
    }

    pub fn clear(&self) {
        self.call("POST", "/clear", Some(json!({})));
    }

    pub fn text(&self) -> String {
        self.call("GET", "/text", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn attribute(&self, name: &str) -> Option<String> {
        self.call("GET", &format!("/attribute/{name}"), None)
            .as_str()
            .map(str::to_owned)
    }
}
