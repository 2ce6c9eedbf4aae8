//! A real MongoDB-wire server for tests: FerretDB v1.24.2 on SQLite, built (once, cached) by
//! `scripts/ferretdb.sh`, started on a free loopback port with a data folder of its own.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The FerretDB binary; built by the script if it is not cached yet (so these tests never skip).
pub fn binary() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ferretdb.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/ferretdb.sh");
    assert!(
        out.status.success(),
        "scripts/ferretdb.sh failed: FerretDB is needed by the result-store tests"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A running FerretDB.
pub struct Ferret {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its SQLite files.
    pub data: PathBuf,
    /// Everything it logged.
    pub output: Arc<Mutex<String>>,
}

impl Ferret {
    /// Starts on a free port with its files in `data`.
    pub fn start(data: &Path) -> Self {
        Self::start_on(data, 0)
    }

    /// Starts on `port` (0: a free one) with its files in `data`.
    pub fn start_on(data: &Path, port: u16) -> Self {
        std::fs::create_dir_all(data).unwrap();
        let mut child = Command::new(binary())
            .args([
                "--handler=sqlite".to_string(),
                format!("--sqlite-url=file:{}/", data.display()),
                format!("--listen-addr=127.0.0.1:{port}"),
                "--state-dir=-".into(),
                "--debug-addr=-".into(),
                "--telemetry=disable".into(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferretdb");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (tx, output) = (tx.clone(), output.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(pos) = line.find("Listening on TCP 127.0.0.1:") {
                        let rest = &line[pos + "Listening on TCP 127.0.0.1:".len()..];
                        let digits: String =
                            rest.chars().take_while(char::is_ascii_digit).collect();
                        if let Ok(p) = digits.parse::<u16>() {
                            let _ = tx.send(p);
                        }
                    }
                    let mut o = output.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        let port = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                panic!("FerretDB did not start:\n{}", output.lock().unwrap());
            }
        };
        Self {
            child,
            port,
            data: data.to_path_buf(),
            output,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A client of its `db` database's `results` collection.
    pub async fn results(&self, db: &str) -> mongodb::Collection<mongodb::bson::Document> {
        let client = mongodb::Client::with_uri_str(format!("mongodb://{}/", self.address()))
            .await
            .unwrap();
        client.database(db).collection("results")
    }
}

impl Drop for Ferret {
    fn drop(&mut self) {
        self.kill();
    }
}
