//! The real `hubvault` binary (`CARGO_BIN_EXE_hubvault`): run with a clean environment (only
//! `PATH` and `HOME` from outside), bounded in time, killed when its handle drops.

use std::future::Future;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a run may take unless the test says otherwise ([`Hubvault::within`]).
const LIMIT: Duration = Duration::from_secs(240);

/// One run of the binary: arguments and environment, then [`Hubvault::run`] or
/// [`Hubvault::spawn`].
pub struct Hubvault {
    cmd: tokio::process::Command,
    limit: Duration,
}

/// What a finished run left: its exit, stdout and stderr.
pub struct Out {
    pub status: ExitStatus,
    /// The exit code; -1 when a signal ended the process.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// stdout and stderr, for scans and failure messages.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// stdout as one JSON document; panics (showing both streams) when it is not one.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The run, once it is checked to have exited with `code` (the test names it; a failure
    /// shows both streams).
    pub fn expect_code(self, code: i32) -> Out {
        assert_eq!(self.code, code, "exit code\n{}", self.text());
        self
    }

    /// stdout as JSON, or `Null` when it is not.
    pub fn doc(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or(Value::Null)
    }
}

impl Hubvault {
    /// The binary in `dir` (working directory and `HOME`), with nothing else of the caller's
    /// environment but `PATH`.
    pub fn new(dir: &Path) -> Hubvault {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hubvault"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir)
            .current_dir(dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        Hubvault { cmd, limit: LIMIT }
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// The run fails the test when it takes longer than `limit`.
    pub fn within(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// Run to completion within the limit; panics (test failure) when it takes longer.
    pub async fn run(mut self) -> Out {
        let child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hubvault binary starts");
        let out = tokio::time::timeout(self.limit, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("hubvault did not finish within {:?}", self.limit))
            .unwrap();
        Out {
            status: out.status,
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// [`Hubvault::run`] for a test without a runtime.
    pub fn run_blocking(self) -> Out {
        blocking(self.run())
    }

    /// Start it and return at once; its output is collected as it comes.
    pub fn spawn(mut self) -> Spawned {
        let mut child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hubvault binary starts");
        let mut stdout = child.stdout.take().unwrap();
        let stdout = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf).await;
            buf
        });
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (tx, rx) = mpsc::unbounded_channel();
        let stderr = tokio::spawn(async move {
            let mut all = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
            all
        });
        Spawned {
            child,
            stdout,
            stderr,
            lines: rx,
            limit: self.limit,
        }
    }
}

/// A run in the background, for tests that interrupt it, kill it at a pause point
/// (`HUBVAULT_FAULT_PAUSE`) or run it beside another. Killed when dropped.
pub struct Spawned {
    child: tokio::process::Child,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<String>,
    lines: mpsc::UnboundedReceiver<String>,
    limit: Duration,
}

impl Spawned {
    /// Wait up to `within` for a stderr line containing `marker`; false if none came.
    pub async fn wait_for_stderr(&mut self, marker: &str, within: Duration) -> bool {
        let seen = async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(marker) {
                    return true;
                }
            }
            false
        };
        tokio::time::timeout(within, seen).await.unwrap_or(false)
    }

    /// Ctrl-C: SIGINT to the process.
    pub fn interrupt(&self) {
        self.signal("-INT");
    }

    /// SIGHUP (`systemctl reload`: re-read the configuration).
    pub fn hangup(&self) {
        self.signal("-HUP");
    }

    /// SIGTERM (a service manager or Kubernetes stopping it).
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    fn signal(&self, which: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let sent = std::process::Command::new("kill")
            .args([which, &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {which} {pid}");
    }

    /// SIGKILL, and wait for it to be gone.
    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// Wait for it to end within its limit and collect its output; `None` when it did not end
    /// (it is killed then).
    pub async fn finish(mut self) -> Option<Out> {
        let status = tokio::time::timeout(self.limit, self.child.wait())
            .await
            .ok()?
            .unwrap();
        let stdout = self.stdout.await.unwrap();
        Some(Out {
            status,
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: self.stderr.await.unwrap(),
        })
    }
}

/// Run `f` to completion on a runtime of its own (for tests without one).
pub fn blocking<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Fails naming the kind of secret (never the secret itself) if `text` contains one of
/// `secrets`, an unredacted `sig=` value, a connection-string key or an account key.
pub fn assert_no_secrets(text: &str, secrets: &[String], what: &str) {
    for (n, s) in secrets.iter().enumerate() {
        assert!(
            !text.contains(s.as_str()),
            "{what}: output contains secret #{n} of {}",
            secrets.len()
        );
    }
    for line in text.lines() {
        for (pos, _) in line.match_indices("sig=") {
            let value: String = line[pos + 4..]
                .chars()
                .take_while(|c| !"&\" ',;)".contains(*c))
                .collect();
            assert!(
                value.is_empty() || value.contains("redacted") || value == "…" || value == "***",
                "{what}: a sig= value is printed unredacted"
            );
        }
        assert!(
            !line.contains("SharedAccessKey=") || line.contains("SharedAccessKey=<redacted>"),
            "{what}: a connection-string key is printed"
        );
        assert!(
            !line.contains("AccountKey=") || line.contains("AccountKey=<redacted>"),
            "{what}: an account key is printed"
        );
    }
}
