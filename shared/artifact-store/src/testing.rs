//! Test support (feature `testing`): an in-memory Azurite for one test.
//!
//! ```no_run
//! # async fn t() {
//! let azurite = artifact_store::testing::Azurite::start();
//! let store = azurite.store("logs").await;
//! # }
//! ```

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{BlobAuth, BlobStore, DEVSTORE_ACCOUNT, DEVSTORE_KEY};

/// A running `azurite-blob` (in-memory, loopback only), killed when dropped.
#[derive(Debug)]
pub struct Azurite {
    child: Child,
    port: u16,
    /// Serving https (OAuth mode).
    https: bool,
}

/// Where the Azurite binary is: `BATCH_TRIAGE_AZURITE`, else the copy
/// `scripts/setup-test-deps` installs under `tests/node`.
pub fn azurite_binary() -> PathBuf {
    match std::env::var_os("BATCH_TRIAGE_AZURITE") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/node/node_modules/.bin/azurite-blob"),
    }
}

/// A free loopback port not handed out before in this process. Tests run in parallel threads, and
/// a port is free again as soon as its probe listener closes: without the registry two Azurites
/// starting together could be given one port, and two tests would share (and kill) one Azurite.
fn unclaimed_port() -> u16 {
    static CLAIMED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let mut claimed = CLAIMED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !claimed.contains(&port) {
            claimed.push(port);
            return port;
        }
    }
}

impl Azurite {
    /// Starts Azurite on a free port and waits until it accepts connections.
    ///
    /// # Panics
    /// When Azurite is not installed or does not come up: a missing dependency is a test
    /// failure, never a silent skip.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts Azurite over https with OAuth (`--oauth basic`): it accepts bearer tokens, which
    /// the token-credential path of [`BlobStore`] needs. `cert` and `key` are PEM files of a
    /// certificate for `127.0.0.1`.
    pub fn start_oauth(cert: &std::path::Path, key: &std::path::Path) -> Self {
        let mut azurite = Self::start_with(&[
            "--oauth".as_ref(),
            "basic".as_ref(),
            "--cert".as_ref(),
            cert.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
        ]);
        azurite.https = true;
        azurite
    }

    fn start_with(extra: &[&std::ffi::OsStr]) -> Self {
        let binary = azurite_binary();
        assert!(
            binary.exists(),
            "Azurite not found at {}: run scripts/setup-test-deps (or set BATCH_TRIAGE_AZURITE)",
            binary.display()
        );
        // An Azurite that finds its port taken exits; the port then answers for someone else.
        for _ in 0..5 {
            if let Some(azurite) = Self::try_start(&binary, unclaimed_port(), extra) {
                return azurite;
            }
        }
        panic!(
            "Azurite lost its port to another process five times; is the machine short of ports?"
        );
    }

    /// Starts Azurite on `port`; `None` when the port turned out to be taken.
    fn try_start(binary: &std::path::Path, port: u16, extra: &[&std::ffi::OsStr]) -> Option<Self> {
        let child = Command::new(binary)
            .args([
                "--skipApiVersionCheck",
                "--loose",
                "--inMemoryPersistence",
                "--disableTelemetry",
            ])
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args(extra)
            // Its debug log and nothing else would land in the current directory.
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not start Azurite ({}): {e}; run scripts/setup-test-deps",
                    binary.display()
                )
            });
        let mut azurite = Azurite {
            child,
            port,
            https: false,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                // Something answers; it is ours only if our Azurite is still running a moment
                // later (one that could not bind exits at once).
                std::thread::sleep(Duration::from_millis(100));
                return match azurite.child.try_wait() {
                    Ok(None) => Some(azurite),
                    _ => None,
                };
            }
            if let Ok(Some(status)) = azurite.child.try_wait() {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return None;
                }
                panic!("Azurite exited at start ({status}); run scripts/setup-test-deps");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "Azurite did not start listening on {addr} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its process id, for benchmarks that read its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1` (https when started with OAuth).
    pub fn blob_endpoint(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{DEVSTORE_ACCOUNT}", self.port)
    }

    /// A connection string for the well-known account and `container`.
    pub fn connection_string(&self, container: &str) -> String {
        format!(
            "UseDevelopmentStorage=true;BlobEndpoint={};Container={container}",
            self.blob_endpoint()
        )
    }

    /// A store on `container` (created), authenticated with the well-known account key.
    pub async fn store(&self, container: &str) -> BlobStore {
        let store = BlobStore::new(
            &format!("{}/{container}", self.blob_endpoint()),
            BlobAuth::AccountKey {
                account: DEVSTORE_ACCOUNT.into(),
                key: DEVSTORE_KEY.into(),
            },
        )
        .expect("the Azurite store");
        store
            .create_container_if_missing()
            .await
            .expect("create the Azurite container");
        store
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway certificate authority and a server certificate signed by it, made with `openssl`
/// in a temporary directory, for tests of TLS endpoints (Azurite over https, an SMTP server).
/// rustls refuses a self-signed CA used as the server certificate, hence the two levels.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Makes `ca.pem` and `server.pem`/`server.key` for the `subject_alt_names` (OpenSSL form,
    /// e.g. `DNS:localhost,IP:127.0.0.1`).
    ///
    /// # Panics
    /// When `openssl` is missing or fails: `scripts/setup-test-deps` installs it.
    pub fn new(subject_alt_names: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl runs (scripts/setup-test-deps installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            dir.path().join("server.ext"),
            format!(
                "subjectAltName={subject_alt_names}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .expect("write the extensions file");
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=batch-triage test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=batch-triage test server",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Self { dir }
    }

    /// A file of the PKI: `ca.pem`, `server.pem` or `server.key`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
