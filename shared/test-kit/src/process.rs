//! Child processes for the tests that drive a binary: killed when dropped (a failed assertion
//! leaves no server behind), and the address a server prints on its first line.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

/// A child process killed and reaped when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Spawns a server with its stdout piped and reads its first line, which names the loopback URL
/// it listens on (`batch-triage emulator`, `batch-triage serve`). Returns the process, the URL
/// (`http://127.0.0.1:PORT`) and the rest of its stdout.
pub fn spawn_announced(command: &mut Command) -> (KillOnDrop, String, BufReader<ChildStdout>) {
    let mut child = KillOnDrop(
        command
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the server"),
    );
    let mut stdout = BufReader::new(child.0.stdout.take().expect("its stdout"));
    let mut first_line = String::new();
    stdout
        .read_line(&mut first_line)
        .expect("the server's first line");
    let url = first_line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no loopback address in {first_line:?}"))
        .to_owned();
    (child, url, stdout)
}

/// `cli emulator --port 0 [--scenario FILE]`, `cli` being the `batch-triage` binary under test
/// (`env!("CARGO_BIN_EXE_batch-triage")`): the process and its base URL. Its stdout is closed
/// after the first line; the emulator keeps serving.
pub fn start_emulator(cli: impl AsRef<OsStr>, scenario: Option<&Path>) -> (KillOnDrop, String) {
    let mut command = Command::new(cli);
    command.args(["emulator", "--port", "0"]);
    if let Some(scenario) = scenario {
        command.arg("--scenario").arg(scenario);
    }
    let (child, url, _) = spawn_announced(&mut command);
    (child, url)
}
