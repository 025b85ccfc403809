//! A throwaway single-member etcd on free loopback ports in a temporary directory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{PATIENCE, eventually, free_port};

/// A running etcd, killed (and its directory removed) on drop.
pub struct Etcd {
    child: Child,
    dir: PathBuf,
    /// Its client URL, `http://127.0.0.1:<port>`.
    pub endpoint: String,
    client_port: u16,
}

static ETCD_SEQ: AtomicUsize = AtomicUsize::new(0);
static ETCD_LOGGED: AtomicBool = AtomicBool::new(false);

impl Etcd {
    /// Starts etcd (`$FERRY_ETCD`, else `etcd` on `PATH`) and waits until it reports itself
    /// healthy. Fails the test clearly if etcd is missing or does not come up.
    pub async fn start() -> Etcd {
        let binary = std::env::var("FERRY_ETCD").unwrap_or_else(|_| "etcd".to_owned());
        let dir = std::env::temp_dir().join(format!(
            "ferry-etcd-{}-{}",
            std::process::id(),
            ETCD_SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create etcd temp dir");
        let (client_port, peer_port) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.join("etcd.log")).expect("create etcd log");
        let child = Command::new(&binary)
            .arg("--name=ferry-test")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=ferry-test={peer_url}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{binary}` ({e}): these tests need etcd 3.4+ on PATH \
                     (Debian: apt-get install etcd-server, or run scripts/install-test-deps), \
                     or FERRY_ETCD=/path/to/etcd"
                )
            });
        let mut etcd = Etcd {
            child,
            dir,
            endpoint,
            client_port,
        };
        if !eventually(PATIENCE, async || etcd.healthy().await).await {
            let log = std::fs::read_to_string(etcd.dir.join("etcd.log")).unwrap_or_default();
            let _ = etcd.child.kill();
            panic!("etcd did not come up within {PATIENCE:?}; its log:\n{log}");
        }
        if !ETCD_LOGGED.swap(true, Ordering::SeqCst) {
            eprintln!("etcd running at {}", etcd.endpoint);
        }
        etcd
    }

    /// Whether etcd answers `GET /health` with `"health":"true"` (it has a leader and serves).
    async fn healthy(&self) -> bool {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.client_port)).await
        else {
            return false;
        };
        let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if stream.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut reply = Vec::new();
        let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut reply)).await;
        matches!(read, Ok(Ok(_))) && String::from_utf8_lossy(&reply).contains(r#""health":"true""#)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
