//! Browser tests: the dashboard in headless Chromium, driven over WebDriver
//! (fantoccini talking to a `chromedriver` this test spawns).
//!
//! Each test starts its own server and its own browser (fresh profile), runs
//! one scenario, saves PNG screenshots under
//! `$CARGO_TARGET_TMPDIR/screenshots/` and fails on any console error the
//! scenario did not expect. The tests take turns (one browser at a time).
//!
//! Needs Debian's `chromium` and `chromium-driver` (or `CHROMIUM=/path` and
//! `CHROMEDRIVER=/path`). Without them the tests print why and pass as
//! skipped — except under CI (`CI` set to anything but `0`/`false`), where a
//! missing browser is a failure.

mod common;

use common::{TestServer, module_file};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::{Value, json};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Long enough for a loaded 2-core machine; the waits end as soon as the
/// condition holds.
const WAIT: Duration = Duration::from_secs(60);

/// One browser at a time: Chromium is heavy and the machine is small.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------- finding Chromium

struct Chrome {
    browser: PathBuf,
    driver: PathBuf,
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn find_chrome() -> Result<Chrome, String> {
    let browser = match std::env::var_os("CHROMIUM") {
        Some(p) => Some(PathBuf::from(p)),
        None => ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .find_map(|n| which(n)),
    };
    let driver = match std::env::var_os("CHROMEDRIVER") {
        Some(p) => Some(PathBuf::from(p)),
        None => which("chromedriver"),
    };
    match (browser, driver) {
        (Some(browser), Some(driver)) if browser.is_file() && driver.is_file() => {
            Ok(Chrome { browser, driver })
        }
        (browser, driver) => {
            let describe = |p: Option<PathBuf>| match p {
                Some(p) if p.is_file() => format!("at {}", p.display()),
                Some(p) => format!("not found at {}", p.display()),
                None => "not found on PATH".to_string(),
            };
            Err(format!(
                "Chromium {} and chromedriver {} (install Debian's `chromium` and \
                 `chromium-driver`, or set CHROMIUM and CHROMEDRIVER)",
                describe(browser),
                describe(driver),
            ))
        }
    }
}

/// The browser, or None when the test should be skipped. Under CI a missing
/// browser fails the test instead (see [`common::skip::skip_or_fail`]).
fn chrome_or_skip(test: &str) -> Option<Chrome> {
    match find_chrome() {
        Ok(chrome) => Some(chrome),
        Err(why) => {
            common::skip::skip_or_fail(test, &why);
            None
        }
    }
}

/// What a browser test starts with: its turn (one browser at a time), a
/// fresh server and a browser on it. None when the test is skipped (see
/// [`chrome_or_skip`]).
async fn start(
    test: &str,
    scenario: &str,
    screen: Screen,
) -> Option<(tokio::sync::MutexGuard<'static, ()>, TestServer, Browser)> {
    let chrome = chrome_or_skip(test)?;
    let turn = TURN.lock().await;
    let server = TestServer::start().await;
    let browser = Browser::start(&chrome, &server, scenario, screen).await;
    Some((turn, server, browser))
}

fn screenshot_dir() -> PathBuf {
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    base.join("screenshots")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

// ---------------------------------------------------------------- the browser

/// How big the window is.
#[derive(Clone, Copy, PartialEq)]
enum Screen {
    Desktop,
    /// A phone (390×844 CSS pixels, touch, mobile viewport rules).
    Phone,
}

/// A console message Chromium logged (the WebDriver `browser` log).
#[derive(Debug, Clone)]
struct ConsoleEntry {
    level: String,
    source: String,
    message: String,
}

/// chromedriver in its own process group; dropping it kills the group
/// (chromedriver and the Chromium it started), also when a test panics.
struct DriverProcess {
    child: Child,
    stopped: bool,
}

impl DriverProcess {
    fn spawn(driver: &std::path::Path, port: u16) -> DriverProcess {
        let mut command = Command::new(driver);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().expect("spawn chromedriver");
        DriverProcess {
            child,
            stopped: false,
        }
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        // The group's id is chromedriver's pid (process_group(0)).
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Browser {
    client: Client,
    driver: DriverProcess,
    driver_url: String,
    session: String,
    http: reqwest::Client,
    base: String,
    token: String,
    scenario: String,
    shots: usize,
    console: Vec<ConsoleEntry>,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start(
        chrome: &Chrome,
        server: &TestServer,
        scenario: &str,
        screen: Screen,
    ) -> Browser {
        let port = free_port();
        let mut driver = DriverProcess::spawn(&chrome.driver, port);
        let driver_url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let ready = match http.get(format!("{driver_url}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .ok()
                    .map(|v| v["value"]["ready"] == true),
                Err(_) => None,
            };
            if ready == Some(true) {
                break;
            }
            assert!(!driver.exited(), "chromedriver exited (port {port} taken?)");
            assert!(
                started.elapsed() < WAIT,
                "chromedriver did not start on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let profile = tempfile::tempdir().expect("profile dir");
        // Without these, Chromium on a machine without network hangs on
        // outbound connections (updates, sync, QUIC probes).
        let mut args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-features=Translate,MediaRouter,OptimizationHints".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut options = json!({"binary": chrome.browser, "args": []});
        match screen {
            Screen::Desktop => args.push("--window-size=1280,900".into()),
            Screen::Phone => {
                options["mobileEmulation"] = json!({"deviceMetrics": {
                    "width": 390, "height": 844, "pixelRatio": 2.0, "touch": true, "mobile": true,
                }});
            }
        }
        options["args"] = json!(args);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), options);
        capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            WAIT,
            ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&driver_url),
        )
        .await
        .expect("Chromium did not start in time")
        .expect("a WebDriver session");
        let session = client
            .session_id()
            .await
            .expect("session id")
            .expect("a session id");

        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        // Old screenshots of this scenario would mislead.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{scenario}-"))
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }

        Browser {
            client,
            driver,
            driver_url,
            session,
            http,
            base: server.url.clone(),
            token: server.token.clone(),
            scenario: scenario.to_string(),
            shots: 0,
            console: Vec::new(),
            _profile: profile,
        }
    }

    /// POST a chromedriver-specific command of this session.
    async fn driver_post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}/{path}", self.driver_url, self.session);
        let response = self.http.post(url).json(&body).send().await;
        match response {
            Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null)["value"].take(),
            Err(e) => panic!("chromedriver {path}: {e}"),
        }
    }

    async fn goto(&self, path: &str) {
        let url = if path.starts_with("about:") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Poll `script` until it returns something truthy; returns that value.
    async fn wait_js(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
        args: Vec<Value>,
    ) -> Value {
        let started = Instant::now();
        loop {
            let value = self.js(script, args.clone()).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            if started.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what} (last value: {value}); page: {}",
                    self.page_summary().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A short view of where the page is, for failure messages.
    async fn page_summary(&self) -> String {
        self.client
            .execute(
                "return location.href + ' | ' + document.title + ' | ' + \
                 (document.querySelector('main') || document.body).innerText.slice(0, 600)",
                vec![],
            )
            .await
            .map(|v| v.as_str().unwrap_or_default().replace('\n', " / "))
            .unwrap_or_else(|e| format!("(page not readable: {e})"))
    }

    /// Wait until an element matching `css` is shown (rendered, not hidden).
    async fn wait_visible(&self, css: &str) {
        self.wait_js(
            &format!("`{css}` to be visible"),
            WAIT,
            "const e = document.querySelector(arguments[0]);
             return !!e && !e.closest('[hidden]') && e.getClientRects().length > 0;",
            vec![json!(css)],
        )
        .await;
    }

    /// The text of the first element matching `css`, or None.
    async fn text(&self, css: &str) -> Option<String> {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : null;",
            vec![json!(css)],
        )
        .await
        .as_str()
        .map(str::to_string)
    }

    /// Wait until the text of `css` satisfies `ok`; returns it.
    async fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        what: &str,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let started = Instant::now();
        loop {
            let text = self.text(css).await;
            if let Some(text) = &text
                && ok(text)
            {
                return text.clone();
            }
            if started.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for `{css}` to be {what} (last: {text:?}); page: {}",
                    self.page_summary().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
            vec![json!(css), json!(name)],
        )
        .await
        .as_str()
        .map(str::to_string)
    }

    async fn click(&self, css: &str) {
        self.wait_visible(css).await;
        let element = self.client.find(Locator::Css(css)).await.expect(css);
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Replace the contents of an input or textarea by typing.
    async fn type_into(&self, css: &str, text: &str) {
        self.wait_visible(css).await;
        let element = self.client.find(Locator::Css(css)).await.expect(css);
        element
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    async fn hash(&self) -> String {
        self.js("return location.hash", vec![])
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Sign in through the first-start link and wait until live updates flow.
    async fn sign_in(&self) {
        self.goto(&format!("/#token={}", self.token)).await;
        self.wait_visible("#tasks-heading").await;
        self.wait_live().await;
    }

    async fn wait_live(&self) {
        self.wait_js(
            "live updates (#live-status = live)",
            WAIT,
            "return document.getElementById('live-status').dataset.state === 'live';",
            vec![],
        )
        .await;
    }

    /// A full-page PNG under the screenshot directory.
    async fn shot(&mut self, label: &str) -> PathBuf {
        self.shots += 1;
        let path =
            screenshot_dir().join(format!("{}-{:02}-{label}.png", self.scenario, self.shots));
        // Let the last batched render (≤100 ms batches) reach the screen.
        tokio::time::sleep(Duration::from_millis(150)).await;
        // The whole page, at the window's width (without the clip Chromium
        // crops the layout by the scrollbar's width).
        // From the top, or the sticky header lands mid-page.
        let size = self
            .js(
                "const y = scrollY; scrollTo(0, 0);
                 return [innerWidth, document.documentElement.scrollHeight, y];",
                vec![],
            )
            .await;
        let full = self
            .driver_post(
                "goog/cdp/execute",
                json!({"cmd": "Page.captureScreenshot", "params": {
                    "format": "png", "captureBeyondViewport": true,
                    "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
                }}),
            )
            .await;
        let png = match full["data"].as_str() {
            Some(data) => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .expect("screenshot base64")
            }
            None => self.client.screenshot().await.expect("screenshot"),
        };
        self.js("scrollTo(0, arguments[0])", vec![size[2].clone()])
            .await;
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Move what Chromium logged so far into `self.console`.
    async fn drain_console(&mut self) {
        let entries = self.driver_post("se/log", json!({"type": "browser"})).await;
        for e in entries.as_array().into_iter().flatten() {
            self.console.push(ConsoleEntry {
                level: e["level"].as_str().unwrap_or_default().to_string(),
                source: e["source"].as_str().unwrap_or_default().to_string(),
                message: e["message"].as_str().unwrap_or_default().to_string(),
            });
        }
    }

    /// No console errors, except failed requests the scenario caused on
    /// purpose: `expected` lists (API path, HTTP status) pairs, e.g.
    /// `("/api/v1/tasks", 422)` for a form the server refuses.
    async fn assert_no_console_errors(&mut self, expected: &[(String, u16)]) {
        self.drain_console().await;
        for e in &self.console {
            if e.level != "SEVERE" {
                eprintln!(
                    "[{}] console {} {}: {}",
                    self.scenario, e.level, e.source, e.message
                );
            }
        }
        let base = self.base.clone();
        let allowed = |e: &ConsoleEntry| {
            e.source == "network"
                && expected.iter().any(|(path, status)| {
                    e.message.starts_with(&format!("{base}{path}"))
                        && e.message.contains(&format!("status of {status} "))
                })
        };
        let errors: Vec<&ConsoleEntry> = self
            .console
            .iter()
            .filter(|e| e.level == "SEVERE" && !allowed(e))
            .collect();
        assert!(
            errors.is_empty(),
            "[{}] console errors:\n{}",
            self.scenario,
            errors
                .iter()
                .map(|e| format!("  {} {}: {}", e.level, e.source, e.message))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    async fn close(mut self) {
        let client = self.client.clone();
        let _ = tokio::time::timeout(Duration::from_secs(20), client.close()).await;
        self.driver.stop();
    }
}

/// Run a scenario; on failure save a screenshot and the console first.
async fn run<F>(browser: &mut Browser, body: F)
where
    F: AsyncFnOnce(&mut Browser),
{
    let outcome = AssertUnwindSafe(body(browser)).catch_unwind().await;
    if let Err(panic) = outcome {
        let shot = AssertUnwindSafe(browser.shot("FAILED"))
            .catch_unwind()
            .await;
        let _ = AssertUnwindSafe(browser.drain_console())
            .catch_unwind()
            .await;
        eprintln!("[{}] failed; console:", browser.scenario);
        for e in &browser.console {
            eprintln!("  {} {}: {}", e.level, e.source, e.message);
        }
        if let Ok(path) = shot {
            eprintln!(
                "[{}] screenshot of the failure: {}",
                browser.scenario,
                path.display()
            );
        }
        std::panic::resume_unwind(panic);
    }
    eprintln!(
        "[{}] passed; {} screenshots in {}",
        browser.scenario,
        browser.shots,
        screenshot_dir().display()
    );
}

async fn create_task(server: &TestServer, body: Value) -> i64 {
    let (status, task) = server.post("/tasks", body).await;
    assert!(status.is_success(), "create: {status} {task}");
    task["id"].as_i64().expect("task id")
}

/// Routes being added meanwhile: while the server lacks them the stats page
/// shows a notice, and Chromium logs the 404s (which a page cannot silence).
async fn missing_routes(server: &TestServer, paths: &[&str]) -> Vec<(String, u16)> {
    let mut expected = Vec::new();
    for path in paths {
        let (status, _) = server.get(path).await;
        if status == reqwest::StatusCode::NOT_FOUND {
            eprintln!("note: the server has no {path} yet (404); the stats page must cope");
            expected.push((format!("/api/v1{path}"), 404));
        }
    }
    expected
}

/// Sign in and open the New task form with `demo/count` chosen for its step.
async fn open_new_task_form(b: &Browser) {
    b.sign_in().await;
    b.goto("/#/new?module=demo/count").await;
    b.wait_visible("#new-task-form").await;
    b.wait_js(
        "the module list",
        WAIT,
        "return document.getElementById('new-module').value === 'demo/count'
            && !!document.querySelector(\"#new-module option[value='demo/count']\");",
        vec![],
    )
    .await;
}

/// The stats page has answered (or given up) on all three of its requests.
async fn wait_stats_loaded(b: &Browser) {
    b.wait_js(
        "the stats page to load",
        WAIT,
        "const section = (id) => document.getElementById(id).closest('section');
         const failed = (id) => !!section(id).querySelector('.notice-error, .notice-unavailable');
         return !!document.querySelector('#stats-total')
           && (!!document.querySelector('#stats-runs') || failed('perf-heading'))
           && (!!document.querySelector('#alerts-none, #alerts li') || failed('alerts-heading'));",
        vec![],
    )
    .await;
}

// ---------------------------------------------------------------- scenarios

#[tokio::test]
async fn sign_in_with_the_first_start_link_and_with_the_form() {
    let Some((_turn, _server, mut b)) = start(
        "sign_in_with_the_first_start_link_and_with_the_form",
        "sign-in",
        Screen::Desktop,
    )
    .await
    else {
        return;
    };
    run(&mut b, async |b: &mut Browser| {
        // No token yet: the sign-in form.
        b.goto("/").await;
        b.wait_visible("#signin-form").await;
        assert_eq!(
            b.js("return document.title", vec![]).await,
            "Sign in · Stepwise"
        );
        b.shot("form").await;

        // A wrong token is refused with a message, and the form stays.
        b.type_into("#signin-token", "sw_not_a_real_token").await;
        b.click("#signin-submit").await;
        b.wait_visible("#signin-message").await;
        b.wait_text("#signin-message", WAIT, "the refusal", |t| {
            t.contains("not accepted")
        })
        .await;
        b.shot("wrong-token").await;

        // The right token signs in: the task list, live updates on.
        let token = b.token.clone();
        b.type_into("#signin-token", &token).await;
        b.click("#signin-submit").await;
        b.wait_visible("#tasks-heading").await;
        b.wait_live().await;
        let stored = b
            .js("return localStorage.getItem('stepwise.token')", vec![])
            .await;
        assert_eq!(stored, json!(token), "the token is kept in this browser");
        b.shot("signed-in").await;

        // Sign out: back to the form, token forgotten.
        b.click("#signout").await;
        b.wait_visible("#signin-form").await;
        let stored = b
            .js("return localStorage.getItem('stepwise.token')", vec![])
            .await;
        assert_eq!(stored, Value::Null, "sign-out forgets the token");
        b.wait_js(
            "the live connection to close",
            WAIT,
            "return document.getElementById('live-status').dataset.state === 'offline';",
            vec![],
        )
        .await;

        // The first-start link, in a fresh page load, signs in directly and
        // takes the token out of the address bar.
        b.goto("about:blank").await;
        b.sign_in().await;
        let href = b.js("return location.href", vec![]).await;
        assert!(
            !href.as_str().unwrap_or_default().contains("token"),
            "the token must leave the address bar: {href}"
        );
        let stored = b
            .js("return localStorage.getItem('stepwise.token')", vec![])
            .await;
        assert_eq!(stored, json!(token));
        assert!(
            b.text("#tasks-empty")
                .await
                .unwrap_or_default()
                .contains("No tasks yet")
        );
        b.shot("first-start-link").await;

        // A reload keeps the session.
        b.client.refresh().await.expect("reload");
        b.wait_visible("#tasks-heading").await;
        b.wait_live().await;

        let expected = vec![("/api/v1/stats".to_string(), 401)];
        b.assert_no_console_errors(&expected).await;
    })
    .await;
    b.close().await;
}

#[tokio::test]
async fn upload_a_module_on_the_modules_page() {
    let Some((_turn, _server, mut b)) = start(
        "upload_a_module_on_the_modules_page",
        "upload",
        Screen::Desktop,
    )
    .await
    else {
        return;
    };
    run(&mut b, async |b: &mut Browser| {
        b.sign_in().await;
        b.click("a[data-nav=modules]").await;
        b.wait_visible("#module-form").await;
        // The example modules are listed.
        b.wait_visible("#modules-table tr[data-module-path='demo/count']")
            .await;
        assert_eq!(b.hash().await, "#/modules");
        // With the language its component names.
        assert_eq!(
            b.text("#modules-table tr[data-module-path='demo/count'] .module-language")
                .await
                .as_deref(),
            Some("Rust")
        );
        b.shot("modules").await;

        // A component with a forbidden import is refused, naming the import.
        let foreign = module_file("fixture/foreign");
        let file_input = b
            .client
            .find(Locator::Css("#module-file"))
            .await
            .expect("#module-file");
        file_input
            .send_keys(foreign.to_str().expect("utf-8 path"))
            .await
            .expect("choose a file");
        b.wait_text("#module-file-name", WAIT, "the chosen file", |t| {
            t.contains("fixture__foreign.wasm")
        })
        .await;
        // The path is suggested from the file name; the user corrects it.
        assert_eq!(
            b.js(
                "return document.getElementById('module-path').value",
                vec![]
            )
            .await,
            "fixture__foreign"
        );
        b.type_into("#module-path", "fixture/foreign").await;
        b.click("#module-upload").await;
        let refusal = b
            .wait_text(".field-error[data-for=file]", WAIT, "the refusal", |t| {
                !t.is_empty()
            })
            .await;
        assert!(
            refusal.contains("acme:crm/contacts"),
            "the refusal names the import: {refusal}"
        );
        assert!(
            b.js(
                "return !document.querySelector(\"tr[data-module-path='fixture/foreign']\")",
                vec![]
            )
            .await
                == true
        );
        b.shot("refused").await;

        // Choose the file (the picker takes a path), name it, upload.
        let file = module_file("fixture/loop");
        let size = std::fs::metadata(&file).expect("fixture file").len();
        let file_input = b
            .client
            .find(Locator::Css("#module-file"))
            .await
            .expect("#module-file");
        file_input
            .send_keys(file.to_str().expect("utf-8 path"))
            .await
            .expect("choose a file");
        b.wait_text("#module-file-name", WAIT, "the chosen file", |t| {
            t.contains("fixture__loop.wasm")
        })
        .await;
        // The path typed before stays (the user chose it).
        b.type_into("#module-path", "fixture/loop").await;
        assert_eq!(
            b.js(
                "return document.querySelectorAll('.field-error').length",
                vec![]
            )
            .await,
            0,
            "choosing a new file clears the old errors"
        );
        b.click("#module-upload").await;
        let row = "#modules-table tr[data-module-path='fixture/loop']";
        b.wait_visible(row).await;
        b.wait_text("#module-message", WAIT, "the confirmation", |t| {
            t.contains("Registered fixture/loop")
        })
        .await;
        assert_eq!(
            b.text(&format!("{row} .module-active")).await.as_deref(),
            Some("active")
        );
        b.wait_text(
            &format!("{row} .module-usage"),
            WAIT,
            "the usage count",
            |t| t == "0 tasks",
        )
        .await;
        // The form is ready for the next upload.
        assert_eq!(
            b.text("#module-file-name").await.as_deref(),
            Some("No file chosen.")
        );
        b.shot("uploaded").await;

        // The server has it, byte for byte.
        let (status, module) = server_get(b, "/api/v1/modules/fixture/loop").await;
        assert_eq!(status, 200, "{module}");
        assert_eq!(module["size"].as_u64(), Some(size));

        // Its limits: none yet; set two at once, then lift the rate.
        assert_eq!(
            b.text(&format!("{row} .limits-text")).await.as_deref(),
            Some("None")
        );
        b.click(&format!("{row} .btn-limits-edit")).await;
        b.type_into(&format!("{row} .input-max-running"), "2").await;
        b.type_into(&format!("{row} .input-max-starts-per-minute"), "30")
            .await;
        b.click(&format!("{row} .btn-limits-save")).await;
        b.wait_text(&format!("{row} .limits-text"), WAIT, "the limits", |t| {
            t.starts_with("≤ 2 at once · ≤ 30/min")
        })
        .await;
        let (_, module) = server_get(b, "/api/v1/modules/fixture/loop").await;
        assert_eq!(
            module["limits"],
            json!({"max_running": 2, "max_starts_per_minute": 30})
        );
        b.click(&format!("{row} .btn-limits-edit")).await;
        b.type_into(&format!("{row} .input-max-starts-per-minute"), "")
            .await;
        b.click(&format!("{row} .btn-limits-save")).await;
        b.wait_text(&format!("{row} .limits-text"), WAIT, "the limits", |t| {
            t.starts_with("≤ 2 at once") && !t.contains("/min")
        })
        .await;
        b.shot("limits").await;

        let expected = vec![("/api/v1/modules/fixture/foreign".to_string(), 422)];
        b.assert_no_console_errors(&expected).await;
    })
    .await;
    b.close().await;
}

/// GET an API path with the browser's token (from the test, not the page).
async fn server_get(b: &Browser, path: &str) -> (u16, Value) {
    let response = b
        .http
        .get(format!("{}{path}", b.base))
        .bearer_auth(&b.token)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn create_a_task_and_watch_its_progress_bar_reach_100() {
    let Some((_turn, server, mut b)) = start(
        "create_a_task_and_watch_its_progress_bar_reach_100",
        "progress",
        Screen::Desktop,
    )
    .await
    else {
        return;
    };
    run(&mut b, async |b: &mut Browser| {
        b.sign_in().await;
        b.click("a[data-nav=new]").await;
        b.wait_visible("#new-task-form").await;
        b.wait_js(
            "the module list",
            WAIT,
            "return !!document.querySelector(\"#new-module option[value='demo/count']\");",
            vec![],
        )
        .await;
        b.type_into("#new-name", "Count to twenty thousand").await;
        let select = b.client.find(Locator::Css("#new-module")).await.expect("#new-module");
        select.select_by_value("demo/count").await.expect("choose demo/count");
        // About 20 progress reports, 150 ms apart: long enough to watch.
        b.type_into(
            "#new-settings",
            r#"{"to": 20000, "report_every": 1000, "sleep_ms_per_report": 150}"#,
        )
        .await;
        b.type_into("#new-step-time", "120").await;
        b.shot("form").await;
        b.click("#new-submit").await;

        // The form opens the new task's page.
        let hash = b
            .wait_js(
                "the task page",
                WAIT,
                "return /^#\\/tasks\\/\\d+$/.test(location.hash) && location.hash;",
                vec![],
            )
            .await;
        let id: i64 = hash.as_str().unwrap_or_default()["#/tasks/".len()..].parse().expect("task id");
        b.wait_visible("#task-progress [data-progress]").await;
        // Record every value the bar shows, and mark the page: a reload would lose the mark.
        b.js(
            "window.__noReload = true;
             const bar = document.querySelector('#task-progress [data-progress]');
             window.__seen = [Number(bar.dataset.progress)];
             new MutationObserver(() => window.__seen.push(Number(bar.dataset.progress)))
               .observe(bar, {attributes: true, attributeFilter: ['data-progress']});
             const header = document.getElementById('global-running');
             window.__running = [Number(header.dataset.count)];
             new MutationObserver(() => window.__running.push(Number(header.dataset.count)))
               .observe(header, {attributes: true, attributeFilter: ['data-count']});",
            vec![],
        )
        .await;

        // Watch it live: a screenshot on the way, then 100 % and completed.
        let started = Instant::now();
        let mut mid_shot = false;
        loop {
            let state = b
                .js(
                    "return [document.querySelector('#task-progress [data-progress]').dataset.progress,
                             document.getElementById('task-status').textContent];",
                    vec![],
                )
                .await;
            let progress: f64 = state[0].as_str().unwrap_or("0").parse().unwrap_or(0.0);
            let status = state[1].as_str().unwrap_or_default().to_string();
            if !mid_shot && progress > 0.0 && progress < 100.0 {
                mid_shot = true;
                b.shot("running").await;
            }
            if progress == 100.0 && status == "completed" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "task {id} did not reach 100 % and completed (at {progress}, {status}); page: {}",
                b.page_summary().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(b.text("#task-progress .pct").await.as_deref(), Some("100%"));
        assert_eq!(b.attr("#task-progress [data-progress]", "aria-valuenow").await.as_deref(), Some("100"));
        assert_eq!(b.js("return window.__noReload === true", vec![]).await, true, "the page must not reload");
        let seen: Vec<f64> = serde_json::from_value(b.js("return window.__seen", vec![]).await).expect("values");
        assert!(
            seen.iter().any(|p| *p > 0.0 && *p < 100.0),
            "the bar must move live through values between 0 and 100; saw {seen:?}"
        );
        assert!(
            seen.windows(2).all(|w| w[1] >= w[0]),
            "the bar must not go backwards: {seen:?}"
        );
        let running: Vec<f64> = serde_json::from_value(b.js("return window.__running", vec![]).await).expect("counts");
        assert!(running.contains(&1.0), "the header must show the running task: {running:?}");
        b.wait_js(
            "the header to show no running task",
            WAIT,
            "return document.getElementById('global-running').dataset.count === '0';",
            vec![],
        )
        .await;

        // The step: completed, with its result and what it used.
        let step = "#steps tr[data-step-id]";
        b.wait_text(&format!("{step} .step-status"), WAIT, "completed", |t| t == "completed").await;
        b.wait_text(&format!("{step} .step-result"), WAIT, "the result", |t| t.contains("\"counted\": 20000") || t.contains("\"counted\":20000")).await;
        b.wait_text(&format!("{step} .step-fuel"), WAIT, "the fuel used", |t| t != "—").await;
        b.wait_visible("#runs tr[data-run-id][data-status=completed]").await;
        b.shot("completed").await;

        // The API agrees.
        let (_, task) = server_get(b, &format!("/api/v1/tasks/{id}")).await;
        assert_eq!(task["status"], "completed", "{task}");
        assert_eq!(task["progress"].as_f64(), Some(100.0), "{task}");

        // The list shows it done, without a reload either.
        b.click(".crumbs a[href='#/tasks']").await;
        let row = format!("#tasks-table tr[data-task-id='{id}']");
        b.wait_visible(&row).await;
        assert_eq!(b.attr(&row, "data-status").await.as_deref(), Some("completed"));
        assert_eq!(b.attr(&format!("{row} [data-progress]"), "data-progress").await.as_deref(), Some("100"));
        assert_eq!(b.text(&format!("{row} .last-result")).await.as_deref(), Some("success"));
        assert_eq!(b.js("return window.__noReload === true", vec![]).await, true);
        b.shot("list").await;

        // The stats page counts it.
        b.click("a[data-nav=stats]").await;
        b.wait_text("#stats-total .stat-value", WAIT, "1", |t| t == "1").await;
        b.wait_text("#stats-counts [data-stat=completed] .stat-value", WAIT, "1", |t| t == "1").await;
        let expected = missing_routes(&server, &["/stats/performance", "/alerts"]).await;
        wait_stats_loaded(b).await;
        b.shot("stats").await;
        b.assert_no_console_errors(&expected).await;
    })
    .await;
    b.close().await;
}

#[tokio::test]
async fn a_failing_task_shows_its_failed_step_and_the_error() {
    let Some((_turn, server, mut b)) = start(
        "a_failing_task_shows_its_failed_step_and_the_error",
        "failing",
        Screen::Desktop,
    )
    .await
    else {
        return;
    };
    server.upload("fixture/loop").await;
    server.upload("fixture/fail").await;
    run(&mut b, async |b: &mut Browser| {
        b.sign_in().await;
        // Created while the list is open: the rows appear and fail live.
        let spin = create_task(
            &server,
            json!({"name": "Spin until the fuel runs out", "max_attempts": 1,
                   "steps": [{"controller": "fixture/loop", "max_execution_time": 1}]}),
        )
        .await;
        // Attempts left, but its error is permanent: it fails at once, unretried.
        let fail = create_task(
            &server,
            json!({"name": "Fail on purpose", "max_attempts": 3,
                   "steps": [{"controller": "fixture/fail", "settings": {"permanent": true}}]}),
        )
        .await;
        // Running out of fuel interrupts; an error from the module fails.
        for (id, result) in [(spin, "interrupted"), (fail, "failed")] {
            let row = format!("#tasks-table tr[data-task-id='{id}']");
            b.wait_js(
                &format!("task {id} to fail in the list"),
                Duration::from_secs(120),
                "const r = document.querySelector(arguments[0]); return !!r && r.dataset.status === 'failed';",
                vec![json!(row)],
            )
            .await;
            assert_eq!(b.text(&format!("{row} .last-result")).await.as_deref(), Some(result));
        }
        b.shot("list").await;

        // Open the task that ran out of time: its step says which limit stopped it.
        b.click(&format!("#tasks-table tr[data-task-id='{spin}'] a.task-name")).await;
        b.wait_text("#task-status", WAIT, "failed", |t| t == "failed").await;
        let step = "#steps tr[data-step-id]";
        let error = format!("{step} .step-error");
        b.wait_visible(&error).await;
        let status = b.text(&format!("{step} .step-status")).await.unwrap_or_default();
        assert!(["interrupted", "failed"].contains(&status.as_str()), "step status: {status}");
        let limit = b.attr(&error, "data-limit").await.unwrap_or_default();
        let text = b.text(&error).await.unwrap_or_default();
        match limit.as_str() {
            "out_of_fuel" => assert!(text.contains("fuel"), "the error names the fuel budget: {text}"),
            // Only if the wall-clock backstop fired first (a very loaded machine).
            "deadline" => assert!(text.contains("deadline"), "the error names the deadline: {text}"),
            other => panic!("the loop must be stopped by its time limit, not `{other}`: {text}"),
        }
        eprintln!("[failing] the loop's step error: [{limit}] {text}");
        assert!(text.contains("max_execution_time") || text.contains("deadline"), "{text}");
        // A limit interrupts the run (the task ends failed: no attempts left).
        b.wait_visible("#runs tr[data-run-id][data-status=interrupted]").await;
        assert!(b.js("return !document.getElementById('btn-retry').disabled", vec![]).await == true,
            "a failed task can be retried");
        b.shot("out-of-fuel").await;

        // The other one: the module's own error message.
        b.goto(&format!("/#/tasks/{fail}")).await;
        b.wait_text("#task-status", WAIT, "failed", |t| t == "failed").await;
        b.wait_visible(&error).await;
        assert_eq!(b.attr(&error, "data-limit").await.as_deref(), Some("returned_error"));
        let text = b.text(&error).await.unwrap_or_default();
        assert!(text.contains("failed on purpose"), "the module's error is shown: {text}");
        let headline = b.text(&format!("{step} .step-limit")).await.unwrap_or_default();
        assert!(headline.contains("permanent"), "the headline says it is not retried: {headline}");
        b.wait_visible("#runs tr[data-run-id][data-status=failed]").await;
        assert_eq!(b.text(&format!("{step} .step-status")).await.as_deref(), Some("failed"));
        b.shot("returned-error").await;

        b.assert_no_console_errors(&[]).await;
    })
    .await;
    b.close().await;
}

#[tokio::test]
async fn cancel_a_running_task() {
    let Some((_turn, server, mut b)) =
        start("cancel_a_running_task", "cancel", Screen::Desktop).await
    else {
        return;
    };
    run(&mut b, async |b: &mut Browser| {
        b.sign_in().await;
        let id = create_task(
            &server,
            json!({"name": "Count for ever", "max_attempts": 1,
                   "steps": [{"controller": "demo/count", "max_execution_time": 600,
                              "settings": {"to": 1_000_000_000u64, "report_every": 10_000, "sleep_ms_per_report": 100}}]}),
        )
        .await;
        // A deep link to the task page.
        b.goto(&format!("/#/tasks/{id}")).await;
        b.wait_text("#task-status", Duration::from_secs(120), "running", |t| t == "running").await;
        b.wait_js(
            "the bar to move",
            WAIT,
            "return Number(document.querySelector('#task-progress [data-progress]').dataset.progress) > 0;",
            vec![],
        )
        .await;
        b.wait_text("#steps tr[data-step-id] .step-status", WAIT, "running", |t| t == "running").await;
        assert!(b.js("return document.getElementById('btn-run').disabled", vec![]).await == true,
            "a running task cannot be started again");
        b.shot("running").await;

        b.click("#btn-cancel").await;
        b.wait_text("#task-status", Duration::from_secs(30), "cancelled", |t| t == "cancelled").await;
        // The step says it was cancelled (the run's record follows the live event).
        b.wait_visible("#steps tr[data-step-id] .step-error[data-limit=cancelled]").await;
        b.wait_text("#steps tr[data-step-id] .step-status", WAIT, "interrupted", |t| t == "interrupted").await;
        b.wait_text("#log li.log-line[data-level=error] .log-msg", WAIT, "the log line", |t| t.contains("cancelled")).await;
        b.wait_visible("#runs tr[data-run-id][data-status=cancelled]").await;
        b.wait_js(
            "the buttons to follow",
            WAIT,
            "return document.getElementById('btn-cancel').disabled && !document.getElementById('btn-retry').disabled;",
            vec![],
        )
        .await;
        b.shot("cancelled").await;

        let (_, task) = server_get(b, &format!("/api/v1/tasks/{id}")).await;
        assert_eq!(task["status"], "cancelled", "{task}");
        b.assert_no_console_errors(&[]).await;
    })
    .await;
    b.close().await;
}

#[tokio::test]
async fn create_a_cron_task_from_the_form_and_see_its_next_runs() {
    let Some((_turn, _server, mut b)) = start(
        "create_a_cron_task_from_the_form_and_see_its_next_runs",
        "cron",
        Screen::Desktop,
    )
    .await
    else {
        return;
    };
    run(&mut b, async |b: &mut Browser| {
        open_new_task_form(b).await;
        b.type_into("#new-name", "Nightly export").await;

        // A zone the server does not know: its error under the zone field.
        b.type_into("#new-cron", "0 3 * * *").await;
        b.type_into("#new-timezone", "Europe/Atlantis").await;
        b.click("#new-submit").await;
        let text = b
            .wait_text(".field-error[data-for='timezone']", WAIT, "the zone error", |t| {
                t.contains("IANA")
            })
            .await;
        assert!(text.contains("Europe/Atlantis"), "{text}");
        assert!(b.hash().await.starts_with("#/new"), "the form stays");

        b.type_into("#new-timezone", "Europe/Berlin").await;
        // Its own rate, and a completion hook on a host the server refuses.
        b.type_into("#new-max-starts", "5").await;
        b.click("details.advanced summary").await;
        b.type_into("#new-hook-url", "http://example.com/done").await;
        b.click("#new-submit").await;
        b.wait_text(".field-error[data-for='hook_url']", WAIT, "the hook error", |t| {
            t.contains("example.com")
        })
        .await;
        b.type_into("#new-hook-url", "http://127.0.0.1:9/done").await;
        b.shot("form").await;
        b.click("#new-submit").await;
        let hash = b
            .wait_js(
                "the task page",
                WAIT,
                "return /^#\\/tasks\\/\\d+$/.test(location.hash) && location.hash;",
                vec![],
            )
            .await;
        let id: i64 = hash.as_str().unwrap_or_default()["#/tasks/".len()..]
            .parse()
            .expect("task id");

        // The task page names the schedule and lists the next five runs,
        // as the API has them.
        b.wait_visible("#next-runs li").await;
        let schedule = b.text("#task-cron").await.unwrap_or_default();
        assert!(schedule.contains("0 3 * * *"), "{schedule}");
        assert!(schedule.contains("Europe/Berlin"), "{schedule}");
        let shown: Vec<String> = serde_json::from_value(
            b.js(
                "return [...document.querySelectorAll('#next-runs time')].map((t) => t.getAttribute('datetime'));",
                vec![],
            )
            .await,
        )
        .expect("times");
        let (status, task) = server_get(b, &format!("/api/v1/tasks/{id}")).await;
        assert_eq!(status, 200, "{task}");
        assert_eq!(task["cron"], "0 3 * * *");
        assert_eq!(task["timezone"], "Europe/Berlin");
        assert_eq!(task["max_starts_per_minute"], 5);
        assert_eq!(task["hook_url"], "http://127.0.0.1:9/done");
        let listed: Vec<String> = serde_json::from_value(task["next_runs"].clone()).expect("next_runs");
        assert_eq!(listed.len(), 5, "{task}");
        assert_eq!(shown, listed);
        b.shot("next-runs").await;
    })
    .await;
    b.close().await;
}

#[tokio::test]
async fn settings_errors_show_next_to_the_field() {
    let Some((_turn, server, mut b)) = start(
        "settings_errors_show_next_to_the_field",
        "field-errors",
        Screen::Desktop,
    )
    .await
    else {
        return;
    };
    run(&mut b, async |b: &mut Browser| {
        open_new_task_form(b).await;
        b.type_into("#new-name", "Bad settings").await;
        let settings_error = ".field-error[data-for='steps.0.settings']";

        // Not JSON: caught before anything is sent.
        b.type_into("#new-settings", r#"{"to": 10,"#).await;
        b.click("#new-submit").await;
        let text = b
            .wait_text(settings_error, WAIT, "a JSON error", |t| !t.is_empty())
            .await;
        assert!(text.starts_with("Not valid JSON"), "{text}");
        assert_eq!(
            b.attr("#new-settings", "aria-invalid").await.as_deref(),
            Some("true")
        );
        assert_eq!(b.hash().await, "#/new?module=demo/count", "the form stays");
        b.shot("not-json").await;

        // Valid JSON the server refuses (settings over 1 MiB): the API's own
        // message for `steps[0].settings`, under the settings field.
        b.js(
            "const t = document.getElementById('new-settings');
             t.value = JSON.stringify({pad: 'x'.repeat(1100000)});
             t.dispatchEvent(new Event('input', {bubbles: true}));",
            vec![],
        )
        .await;
        b.click("#new-submit").await;
        let text = b
            .wait_text(settings_error, WAIT, "the API's error", |t| {
                t.contains("bytes of JSON")
            })
            .await;
        // The check run while typing (debounced 400 ms) must not clear it.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            b.text(settings_error).await.as_deref(),
            Some(text.as_str()),
            "the server's error stays until the text changes"
        );
        let (status, api_error) = server
            .post(
                "/tasks",
                json!({"name": "x", "steps": [{"controller": "demo/count",
                "settings": {"pad": "x".repeat(1_100_000)}}]}),
            )
            .await;
        assert_eq!(status.as_u16(), 422, "{api_error}");
        assert_eq!(
            api_error["error"]["field"], "steps[0].settings",
            "{api_error}"
        );
        assert_eq!(
            text,
            api_error["error"]["message"].as_str().unwrap_or_default(),
            "the form shows the API's message"
        );
        assert_eq!(
            b.js(
                "return document.querySelectorAll('.field-error').length",
                vec![]
            )
            .await,
            1
        );
        assert_eq!(
            b.js("return document.activeElement.id", vec![]).await,
            "new-settings",
            "focus goes to the field"
        );
        b.shot("api-error").await;

        // Fixing it clears the error and creates the task.
        b.type_into("#new-settings", r#"{"to": 10}"#).await;
        b.click("#new-submit").await;
        b.wait_js(
            "the task page",
            WAIT,
            "return /^#\\/tasks\\/\\d+$/.test(location.hash);",
            vec![],
        )
        .await;
        b.wait_text("#task-status", Duration::from_secs(120), "completed", |t| {
            t == "completed"
        })
        .await;
        let (_, tasks) = server_get(b, "/api/v1/tasks").await;
        assert_eq!(
            tasks["tasks"].as_array().map(Vec::len),
            Some(1),
            "only the fixed form made a task: {tasks}"
        );

        b.assert_no_console_errors(&[("/api/v1/tasks".into(), 422)])
            .await;
    })
    .await;
    b.close().await;
}

#[tokio::test]
async fn a_modules_settings_schema_becomes_the_settings_form() {
    let Some((_turn, _server, mut b)) = start(
        "a_modules_settings_schema_becomes_the_settings_form",
        "schema-form",
        Screen::Desktop,
    )
    .await
    else {
        return;
    };
    run(&mut b, async |b: &mut Browser| {
        b.sign_in().await;
        b.goto("/#/new?module=tool/backup/dumptables").await;
        b.wait_visible("#new-settings-dialect").await;
        // The schema's fields instead of the JSON box: required marked,
        // defaults filled in, the module's title shown.
        assert_eq!(
            b.js(
                "return document.getElementById('new-settings').closest('[hidden]') !== null",
                vec![]
            )
            .await,
            true,
            "the raw JSON box is folded away"
        );
        let required = b
            .text("label[for='new-settings-tables']")
            .await
            .unwrap_or_default();
        assert!(required.ends_with('*'), "{required}");
        let file_label = b
            .text("label[for='new-settings-file']")
            .await
            .unwrap_or_default();
        assert!(!file_label.contains('*'), "{file_label}");
        assert_eq!(
            b.js(
                "return [document.getElementById('new-settings-file').value,
                         document.getElementById('new-settings-rows_per_insert').value,
                         document.getElementById('new-settings-dialect').value]",
                vec![]
            )
            .await,
            json!(["backup.sql", "100", "\"mysql\""])
        );
        let about = b.text(".step-module-about").await.unwrap_or_default();
        assert!(about.starts_with("Dump tables"), "{about}");
        // In the order the module's schema gives them, not by name.
        assert_eq!(
            b.js(
                "return [...document.querySelectorAll('[id^=\"new-settings-\"]')]
                    .map((e) => e.id.slice('new-settings-'.length))
                    .filter((id) => ['tables', 'file', 'dialect', 'rows_per_insert'].includes(id))",
                vec![]
            )
            .await,
            json!(["tables", "file", "dialect", "rows_per_insert"])
        );

        b.type_into("#new-name", "Nightly dump").await;
        b.type_into(
            "#new-settings-tables",
            r#"[{"name": "customers", "columns": ["id", "email"], "rows": [[1, "ann@example.com"]]}]"#,
        )
        .await;
        b.js(
            "const d = document.getElementById('new-settings-dialect');
             d.value = JSON.stringify('standard');
             d.dispatchEvent(new Event('change', {bubbles: true}));",
            vec![],
        )
        .await;
        b.type_into("#new-settings-rows_per_insert", "50").await;
        // The form cannot check the schema's pattern: the server does, and
        // its error shows beside the field it names.
        b.type_into("#new-settings-file", "no good!").await;
        b.shot("form").await;
        b.click("#new-submit").await;
        let file_error = ".field-error[data-for='steps.0.settings.file']";
        let text = b
            .wait_text(file_error, WAIT, "the server's field error", |t| !t.is_empty())
            .await;
        assert!(text.contains("no good!"), "{text}");
        assert_eq!(
            b.attr("#new-settings-file", "aria-invalid").await.as_deref(),
            Some("true")
        );
        assert_eq!(
            b.js("return document.activeElement.id", vec![]).await,
            "new-settings-file",
            "focus goes to the field"
        );
        b.shot("field-error").await;

        // "Edit as JSON" shows what the form holds, and back.
        b.click(".step-raw-toggle").await;
        let raw = b
            .js("return document.getElementById('new-settings').value", vec![])
            .await;
        let raw: Value = serde_json::from_str(raw.as_str().unwrap_or_default()).expect("JSON");
        assert_eq!(raw["dialect"], "standard", "{raw}");
        assert_eq!(raw["rows_per_insert"], 50, "{raw}");
        b.click(".step-raw-toggle").await;
        b.wait_visible("#new-settings-file").await;

        b.type_into("#new-settings-file", "dump.sql").await;
        b.click("#new-submit").await;
        b.wait_js(
            "the task page",
            WAIT,
            "return /^#\\/tasks\\/\\d+$/.test(location.hash);",
            vec![],
        )
        .await;
        b.wait_text("#task-status", Duration::from_secs(120), "completed", |t| {
            t == "completed"
        })
        .await;
        let (_, tasks) = server_get(b, "/api/v1/tasks").await;
        let task = &tasks["tasks"][0];
        let (_, task) = server_get(b, &format!("/api/v1/tasks/{}", task["id"])).await;
        assert_eq!(
            task["steps"][0]["settings"],
            json!({
                "tables": [{"name": "customers", "columns": ["id", "email"], "rows": [[1, "ann@example.com"]]}],
                "file": "dump.sql",
                "dialect": "standard",
                "rows_per_insert": 50
            }),
            "{task}"
        );

        // The Modules view shows the title and the run.
        b.goto("/#/modules").await;
        let row = "#modules-table tr[data-module-path='tool/backup/dumptables']";
        let title = b
            .wait_text(&format!("{row} .module-title"), WAIT, "the title", |t| !t.is_empty())
            .await;
        assert!(title.starts_with("Dump tables"), "{title}");
        let stats = b
            .wait_text(&format!("{row} .module-stats"), WAIT, "the stats", |t| !t.is_empty())
            .await;
        assert!(stats.starts_with("1 run · 100% ok"), "{stats}");
        b.shot("modules").await;

        b.assert_no_console_errors(&[("/api/v1/tasks".into(), 422)])
            .await;
    })
    .await;
    b.close().await;
}

#[tokio::test]
async fn every_page_fits_a_phone() {
    let Some((_turn, server, mut b)) =
        start("every_page_fits_a_phone", "phone", Screen::Phone).await
    else {
        return;
    };
    server.upload("fixture/fail").await;
    // A list with a bit of everything, and names that do not break easily.
    let (status, done) = server
        .post(
            "/tasks?wait=60s",
            json!({"name": "Export the whole product catalogue to the warehouse",
            "code": "catalog-export-nightly-for-the-warehouse-and-the-shop",
            "steps": [{"controller": "demo/count", "settings": {"to": 5000}}]}),
        )
        .await;
    assert_eq!(status.as_u16(), 200, "{done}");
    let failed = create_task(
        &server,
        json!({"name": "Send_the_newsletter_to_every_customer_in_the_shop_database", "max_attempts": 1,
               "steps": [{"controller": "fixture/fail", "settings": {}}]}),
    )
    .await;
    create_task(
        &server,
        json!({"name": "Nightly backup", "run_interval": 86400, "start_at": "2999-01-01T02:00:00Z", "priority": "high",
               "steps": [{"controller": "demo/count"}]}),
    )
    .await;
    create_task(
        &server,
        json!({"name": "Paused import", "disabled": true, "steps": [{"controller": "demo/count"}]}),
    )
    .await;
    let running = create_task(
        &server,
        json!({"name": "Long count", "steps": [{"controller": "demo/count", "max_execution_time": 600,
               "settings": {"to": 1_000_000_000u64, "report_every": 10_000, "sleep_ms_per_report": 100}}]}),
    )
    .await;
    server
        .wait_for(failed, &["failed"], Duration::from_secs(120))
        .await;
    server
        .wait_for(running, &["running"], Duration::from_secs(120))
        .await;

    run(&mut b, async |b: &mut Browser| {
        b.sign_in().await;
        let width = b.js("return innerWidth", vec![]).await;
        assert_eq!(width, 390, "a phone-sized viewport");
        let fits = async |b: &mut Browser, page: &str| {
            let sizes = b
                .js(
                    "return [document.documentElement.scrollWidth, document.body.scrollWidth, innerWidth];",
                    vec![],
                )
                .await;
            let (doc, body, inner) = (sizes[0].as_u64(), sizes[1].as_u64(), sizes[2].as_u64());
            b.shot(page).await;
            assert!(
                doc <= inner && body <= inner,
                "{page}: the page is wider than the phone (document {doc:?}, body {body:?}, window {inner:?})"
            );
        };

        // The task list.
        b.wait_js(
            "all five rows",
            WAIT,
            "return document.querySelectorAll('#tasks-table tr[data-task-id]').length === 5;",
            vec![],
        )
        .await;
        b.wait_js(
            "the running row's bar",
            WAIT,
            "const r = document.querySelector(arguments[0]);
             return !!r && Number(r.querySelector('[data-progress]').dataset.progress) > 0;",
            vec![json!(format!("#tasks-table tr[data-task-id='{running}']"))],
        )
        .await;
        fits(b, "tasks").await;

        // The nav works with a thumb: every link is on screen.
        let offscreen = b
            .js(
                "return [...document.querySelectorAll('#nav a')].filter((a) => {
                   const r = a.getBoundingClientRect();
                   return r.width === 0 || r.left < 0 || r.right > innerWidth;
                 }).map((a) => a.textContent);",
                vec![],
            )
            .await;
        assert_eq!(offscreen, json!([]), "nav links off screen");

        // A running task, a failed task.
        b.goto(&format!("/#/tasks/{running}")).await;
        b.wait_text("#task-status", WAIT, "running", |t| t == "running").await;
        b.wait_visible("#steps tr[data-step-id]").await;
        fits(b, "task-running").await;
        b.goto(&format!("/#/tasks/{failed}")).await;
        b.wait_text("#task-status", WAIT, "failed", |t| t == "failed").await;
        b.wait_visible("#steps tr[data-step-id] .step-error").await;
        fits(b, "task-failed").await;

        // The forms and the other pages.
        b.click("a[data-nav=new]").await;
        b.wait_js(
            "the module list",
            WAIT,
            "return !!document.querySelector(\"#new-module option[value='demo/count']\");",
            vec![],
        )
        .await;
        fits(b, "new").await;
        b.click("#new-submit").await;
        b.wait_visible(".field-error").await;
        fits(b, "new-errors").await;
        b.click("a[data-nav=modules]").await;
        b.wait_visible("#modules-table tr[data-module-path='fixture/fail']").await;
        fits(b, "modules").await;
        b.click("a[data-nav=stats]").await;
        wait_stats_loaded(b).await;
        fits(b, "stats").await;
        // The nodes view lists this server, alive and running.
        b.click("a[data-nav=nodes]").await;
        b.wait_visible("#nodes-table tr[data-node-id][data-alive='true'][data-state='running']")
            .await;
        fits(b, "nodes").await;
        // The logs view: the failed task's error line, among every task's lines.
        b.click("a[data-nav=logs]").await;
        b.wait_visible(&format!("#logs-list li.log-line[data-task-id='{failed}']"))
            .await;
        fits(b, "logs").await;

        let expected = missing_routes(&server, &["/stats/performance", "/alerts"]).await;
        b.assert_no_console_errors(&expected).await;
    })
    .await;
    b.close().await;
    server.post_empty(&format!("/tasks/{running}/cancel")).await;
}

#[tokio::test]
async fn the_logs_page_lists_every_tasks_lines_filters_and_follows() {
    let Some((_turn, server, mut b)) = start(
        "the_logs_page_lists_every_tasks_lines_filters_and_follows",
        "logs",
        Screen::Desktop,
    )
    .await
    else {
        return;
    };
    server.upload("fixture/echosecret").await;
    server.upload("fixture/fail").await;
    // One task that says info and warn lines, then one that ends with an error line.
    let chatty = create_task(
        &server,
        json!({"name": "Chatty", "secrets": {"api_key": "s3cret-value"},
               "steps": [{"controller": "fixture/echosecret", "settings": {"secret": "api_key"}}]}),
    )
    .await;
    server.wait_for(chatty, &["completed"], WAIT).await;
    let failing = create_task(
        &server,
        json!({"name": "Failing", "steps": [{"controller": "fixture/fail", "settings": {"permanent": true}}]}),
    )
    .await;
    server.wait_for(failing, &["failed"], WAIT).await;
    let line = |task: i64| format!("#logs-list li.log-line[data-task-id='{task}']");

    run(&mut b, async |b: &mut Browser| {
        b.sign_in().await;
        b.click("a[data-nav=logs]").await;
        b.wait_visible(&line(chatty)).await;
        b.wait_visible(&line(failing)).await;
        // Newest first: the failing task ran last.
        assert_eq!(
            b.attr("#logs-list li.log-line", "data-task-id").await,
            Some(failing.to_string())
        );
        let chatty_text = b.text(&format!("{} .log-msg", line(chatty))).await.unwrap_or_default();
        assert!(chatty_text.contains("***"), "a masked line of the chatty task: {chatty_text}");
        b.shot("all").await;

        // Errors only: the failing task's line, none of the chatty one's.
        b.js(
            "const s = document.getElementById('logs-level'); s.value = 'error';
             s.dispatchEvent(new Event('change'));",
            vec![],
        )
        .await;
        b.wait_js(
            "only error lines",
            WAIT,
            "const lines = [...document.querySelectorAll('#logs-list li.log-line')];
             return lines.length > 0 && lines.every((l) => l.dataset.level === 'error');",
            vec![],
        )
        .await;
        assert!(b.text(&line(chatty)).await.is_none());
        assert_eq!(b.text(&format!("{} .log-task", line(failing))).await, Some(format!("#{failing}")));

        // One task's lines, every level.
        b.js(
            "const s = document.getElementById('logs-level'); s.value = '';
             s.dispatchEvent(new Event('change'));",
            vec![],
        )
        .await;
        b.type_into("#logs-task", &chatty.to_string()).await;
        b.js(
            "document.getElementById('logs-task').dispatchEvent(new Event('change'));",
            vec![],
        )
        .await;
        b.wait_js(
            "only the chatty task's lines, warn ones among them",
            WAIT,
            "const lines = [...document.querySelectorAll('#logs-list li.log-line')];
             return lines.length > 1 && lines.every((l) => l.dataset.taskId === arguments[0])
               && lines.some((l) => l.dataset.level === 'warn');",
            vec![json!(chatty.to_string())],
        )
        .await;
        b.shot("one-task").await;

        // Live: a new task's line shows up on top without a reload.
        b.type_into("#logs-task", " ").await;
        b.js(
            "const t = document.getElementById('logs-task'); t.value = '';
             t.dispatchEvent(new Event('change'));",
            vec![],
        )
        .await;
        b.wait_visible(&line(failing)).await;
        let again = create_task(
            &server,
            json!({"name": "Failing again", "steps": [{"controller": "fixture/fail", "settings": {"permanent": true}}]}),
        )
        .await;
        b.wait_js(
            "the new task's line on top",
            WAIT,
            "const first = document.querySelector('#logs-list li.log-line');
             return !!first && first.dataset.taskId === arguments[0];",
            vec![json!(again.to_string())],
        )
        .await;
        b.shot("live").await;
        b.assert_no_console_errors(&[]).await;
    })
    .await;
    b.close().await;
}

#[tokio::test]
async fn the_focus_page_follows_a_task_and_redirects_when_its_run_ends() {
    let Some((_turn, server, mut b)) = start(
        "the_focus_page_follows_a_task_and_redirects_when_its_run_ends",
        "focus",
        Screen::Desktop,
    )
    .await
    else {
        return;
    };
    run(&mut b, async |b: &mut Browser| {
        // A host application holds a viewer token; the page is not signed in to the dashboard.
        let (status, viewer) = server
            .post("/tokens", json!({"name": "shop-focus", "role": "viewer"}))
            .await;
        assert!(status.is_success(), "{viewer}");
        let token = viewer["token"].as_str().unwrap().to_string();
        let id = create_task(
            &server,
            json!({"name": "Import the catalogue", "max_attempts": 1,
                   "steps": [{"controller": "demo/count", "max_execution_time": 600,
                              "settings": {"to": 1_000_000_000u64, "report_every": 10_000, "sleep_ms_per_report": 100}}]}),
        )
        .await;

        b.goto(&format!("/focus/{id}?redirect=%2Fhealthz%3Ffrom%3Dfocus#token={token}")).await;
        b.wait_text("#focus-status", Duration::from_secs(120), "running", |t| t == "running").await;
        b.wait_text("#focus-name", WAIT, "the task's name", |t| t == "Import the catalogue").await;
        b.wait_js(
            "the bar to move",
            WAIT,
            "return Number(document.querySelector('#focus-progress [data-progress]').dataset.progress) > 0;",
            vec![],
        )
        .await;
        b.wait_text("#focus-message", WAIT, "the step's message", |t| t.starts_with("counted")).await;
        b.wait_text("#focus-step", WAIT, "the current step", |t| t == "demo/count").await;
        assert_eq!(
            b.js("return location.hash", vec![]).await,
            json!(""),
            "the token leaves the address bar"
        );
        b.shot("running").await;

        // The run ends (here by a cancel): the page sends the browser on.
        let (status, _) = server.post_empty(&format!("/tasks/{id}/cancel")).await;
        assert!(status.is_success());
        b.wait_js(
            "the redirect",
            WAIT,
            "return location.pathname === '/healthz' && location.search === '?from=focus';",
            vec![],
        )
        .await;
        // On /healthz, a JSON document, the browser asks for /favicon.ico itself.
        b.assert_no_console_errors(&[("/favicon.ico".into(), 404)]).await;
    })
    .await;
    b.close().await;
}

#[tokio::test]
async fn the_stats_page_shows_and_clears_the_compiled_code_cache() {
    let Some((_turn, server, mut b)) = start(
        "the_stats_page_shows_and_clears_the_compiled_code_cache",
        "cache",
        Screen::Desktop,
    )
    .await
    else {
        return;
    };
    run(&mut b, async |b: &mut Browser| {
        let (status, stats) = server.get("/cache").await;
        assert!(status.is_success(), "{stats}");
        let entries = stats["entries"].as_u64().unwrap();
        assert!(entries >= 1, "the example modules are compiled: {stats}");
        b.sign_in().await;
        b.click("a[data-nav=stats]").await;
        wait_stats_loaded(b).await;
        b.wait_text(
            "#cache-entries .stat-value",
            WAIT,
            "the compiled modules",
            |t| t == entries.to_string(),
        )
        .await;
        b.shot("cache").await;

        b.click("#cache-clear").await;
        b.wait_text("#cache-entries .stat-value", WAIT, "an empty cache", |t| {
            t == "0"
        })
        .await;
        b.wait_text("#toasts .toast", WAIT, "the toast", |t| {
            t.starts_with("Cache cleared")
        })
        .await;
        let (_, stats) = server.get("/cache").await;
        assert_eq!(stats["entries"], 0, "{stats}");
        b.assert_no_console_errors(&[]).await;
    })
    .await;
    b.close().await;
}
