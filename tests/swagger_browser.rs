//! Swagger UI in a real browser: headless Chromium opens `/swagger` on the real binary, the page
//! renders the live document with a task's operation, and a screenshot is taken.
//!
//! Needs Debian's `chromium` (or the browser named by `CHROMIUM`). Without it the test is skipped
//! with a loud message on a developer's machine, and fails in CI (`CI` set).
//! `SWAGGER_SCREENSHOT=<file>` also copies the screenshot there (that is how docs/swagger.png is
//! made).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;

/// The browser, or `None` when it is missing and the test may be skipped.
fn chromium() -> Option<PathBuf> {
    let name = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_string());
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(&name))
            .find(|p| p.is_file())
    });
    let found = found.or_else(|| Path::new(&name).is_file().then(|| PathBuf::from(&name)));
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "`{name}` is not installed, and CI must run the browser test: apt-get install chromium"
        );
        eprintln!("\n!!! SKIPPED swagger_browser: `{name}` is not installed (apt-get install chromium) !!!\n");
    }
    found
}

/// Runs headless Chromium on `url` with `args`, in a fresh profile; its stdout.
fn run_chromium(browser: &Path, profile: &Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            // Virtual time does not advance while requests are pending, so the budget is spent
            // after Swagger UI has fetched and rendered /openapi.json.
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).map(|_| s)
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "chromium failed: {status}");
    reader.join().unwrap().unwrap_or_default()
}

#[test]
fn swagger_ui_renders_every_task_in_chromium() {
    let Some(browser) = chromium() else { return };
    // The bundled config, as deployed (and as the screenshot in docs/api.md shows it).
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let yaml = std::fs::read_to_string(repo.join("external-tasks.yaml")).unwrap();
    let collect = repo.join("collect");
    let server = Server::start(&yaml, &["--collect-dir", collect.to_str().unwrap()]);
    let url = format!("{}/swagger", server.base);

    let dom = run_chromium(&browser, &server.path("profile-dom"), &["--dump-dom"], &url);
    assert!(
        !dom.contains("Failed to load API definition"),
        "Swagger UI could not load the document:\n{dom}"
    );
    for needle in [
        "opblock",
        "/sync/tendb-cluster/demo1",
        "/async/tendb-cluster/demo1",
        "/sync/tendb-cluster/demo2",
        "/sync/sqlsvr/demopython",
        "/sync/redis/demoperl",
        "/sync/tendb-ha/counter",
        "The seed's example",
        "TendbCluster",
        "/async/query",
    ] {
        assert!(
            dom.contains(needle),
            "the rendered page lacks `{needle}`:\n{dom}"
        );
    }

    let shot = server.path("swagger.png");
    run_chromium(
        &browser,
        &server.path("profile-shot"),
        &[
            "--window-size=1280,1800",
            &format!("--screenshot={}", shot.display()),
        ],
        &url,
    );
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is not a PNG"
    );
    assert!(
        png.len() > 20_000,
        "the screenshot is suspiciously small ({} bytes)",
        png.len()
    );
    if let Some(copy) = std::env::var_os("SWAGGER_SCREENSHOT") {
        std::fs::copy(&shot, &copy).expect("copy the screenshot to SWAGGER_SCREENSHOT");
    }
}
