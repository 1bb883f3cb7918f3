//! A real browser for the console tests: Debian's chromium, headless, driven over WebDriver by
//! fantoccini through chromedriver (started here on a free port). Nothing is downloaded: when
//! chromedriver is missing the test fails and says how to get it (`.ci/test` installs it).

use fantoccini::{Client, ClientBuilder, Locator};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver process; dropped, it is killed.
pub struct Driver {
    _child: tokio::process::Child,
    url: String,
}

impl Driver {
    pub async fn start() -> Driver {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "the console's browser tests need Debian's chromium and chromedriver \
             ({CHROMIUM}, {CHROMEDRIVER}); run the tests with `.ci/test`, which installs the \
             `chromium` and `chromium-driver` packages"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Driver { _child: child, url }
    }

    /// A new headless browser window with its own profile (cookies not shared).
    pub async fn browser(&self) -> Browser {
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                ],
            },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut last = None;
        // chromedriver may still be warming up.
        for _ in 0..20 {
            match ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&self.url)
                .await
            {
                Ok(c) => return Browser { c },
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("could not start a browser session: {last:?}");
    }
}

pub struct Browser {
    pub c: Client,
}

impl Browser {
    pub async fn goto(&self, url: &str) {
        self.c
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    pub async fn exists(&self, css: &str) -> bool {
        !self.c.find_all(Locator::Css(css)).await.unwrap().is_empty()
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Clicks something that loads a new page (a submit button, a link) and waits until the new
    /// page has loaded, so what follows never reads the old one.
    pub async fn submit(&self, css: &str) {
        let el = self.find(css).await;
        self.submit_el(el).await;
    }

    pub async fn submit_el(&self, el: fantoccini::elements::Element) {
        self.js("window.__leaving = true; return null;").await;
        el.click().await.unwrap_or_else(|e| panic!("click: {e}"));
        let start = Instant::now();
        loop {
            let loaded = self
                .c
                .execute(
                    "return window.__leaving === undefined && document.readyState === 'complete';",
                    vec![],
                )
                .await;
            if matches!(loaded, Ok(serde_json::Value::Bool(true))) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the page did not change after the click"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    pub async fn source(&self) -> String {
        self.c.source().await.unwrap()
    }

    pub async fn path(&self) -> String {
        self.c.current_url().await.unwrap().path().to_owned()
    }

    /// Waits until `check` holds on the page source, or panics with `what`.
    pub async fn wait_source(&self, what: &str, check: impl Fn(&str) -> bool) {
        let start = Instant::now();
        loop {
            if check(&self.source().await) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `script` in the page and returns its value.
    pub async fn js(&self, script: &str) -> serde_json::Value {
        self.c.execute(script, vec![]).await.unwrap()
    }

    /// Saves a screenshot and the page HTML under `target/console-failures/NAME.*`.
    pub async fn save_failure(&self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-failures");
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(png) = self.c.screenshot().await {
            let _ = std::fs::write(dir.join(format!("{name}.png")), png);
        }
        if let Ok(html) = self.c.source().await {
            let _ = std::fs::write(dir.join(format!("{name}.html")), html);
        }
        eprintln!(
            "console test failed: see {}/{name}.png and .html",
            dir.display()
        );
    }

    pub async fn screenshot_to(&self, path: &std::path::Path) {
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(path, png).unwrap();
    }

    pub async fn close(self) {
        let _ = self.c.close().await;
    }
}

/// Runs a test's steps; when they panic, every browser's screen and HTML is saved first.
pub async fn with_failure_capture<F>(name: &str, browsers: &[&Browser], steps: F)
where
    F: std::future::Future<Output = ()>,
{
    use futures_util::FutureExt;
    let outcome = std::panic::AssertUnwindSafe(steps).catch_unwind().await;
    if let Err(panic) = outcome {
        for (i, b) in browsers.iter().enumerate() {
            b.save_failure(&format!("{name}-{i}")).await;
        }
        std::panic::resume_unwind(panic);
    }
}
