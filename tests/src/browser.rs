//! Headless Chromium (Debian's chromium), driven over WebDriver by
//! chromedriver on a loopback port: what the web UI's tests look through.

use anyhow::Context;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    /// A new headless browser with an empty profile and a window of
    /// `width`×`height`.
    pub async fn start(width: u32, height: u32) -> anyhow::Result<Browser> {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            anyhow::ensure!(
                Path::new(binary).exists(),
                "{binary} is missing: hack/setup.sh installs chromium and chromium-driver"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let profile =
            std::env::temp_dir().join(format!("apiwitness-chromium-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&profile)?;
        // Without the background-networking flags, Chromium keeps trying
        // hosts that a closed test network refuses.
        let mut capabilities = Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut last_error = None;
        // chromedriver takes a moment to listen.
        for _ in 0..50 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Ok(Browser {
                        client,
                        driver,
                        profile,
                    });
                }
                Err(e) => last_error = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut browser_driver = driver;
        let _ = browser_driver.kill();
        let _ = browser_driver.wait();
        Err(anyhow::anyhow!(
            "no WebDriver session from chromedriver: {:?}",
            last_error
        ))
    }

    /// Waits until `css` matches an element, for at most `timeout`.
    pub async fn wait_for(
        &self,
        css: &str,
        timeout: Duration,
    ) -> anyhow::Result<fantoccini::elements::Element> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                return Ok(element);
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "nothing matched {css} within {timeout:?}; the page shows: {}",
                    self.text_of("main").await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Loads `url` as a fresh page, even when it differs from the current
    /// one only in its hash (which a navigation alone would not reload).
    pub async fn open(&self, url: &str) -> anyhow::Result<()> {
        self.client.goto(url).await?;
        self.client.refresh().await?;
        Ok(())
    }

    /// Clicks the element `css` matches, once there is one.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.wait_for(css, Duration::from_secs(30))
            .await?
            .click()
            .await?;
        Ok(())
    }

    /// Types `text` into the element `css` matches, once there is one.
    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        self.wait_for(css, Duration::from_secs(30))
            .await?
            .send_keys(text)
            .await?;
        Ok(())
    }

    /// Waits until the script returns true, for at most `timeout`.
    pub async fn wait_until(
        &self,
        what: &str,
        script: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.client.execute(script, vec![]).await?.as_bool() == Some(true) {
                return Ok(());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{what}: not within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The visible text of the first element `css` matches ("" if none).
    pub async fn text_of(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// A PNG of the window, written to `path`.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let png = self.client.screenshot().await?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    /// A test that panics never closes its session: chromedriver is killed,
    /// and the browser it started is found by its profile, which no other
    /// browser has, so it does not outlive the test.
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(format!("user-data-dir={}", self.profile.display()))
            .status();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
