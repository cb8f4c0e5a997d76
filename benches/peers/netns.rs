//! A controller process in a network namespace of its own, with nothing in it but a loopback
//! interface, and the apiserver spliced in.
//!
//! Why: Argo Rollouts binds its metrics (:8090) and healthz (:8080) listeners on 0.0.0.0 — the
//! address is a constant in its controller package, no flag changes it — and this machine has
//! another interface besides `lo`. In its own namespace those listeners exist on that namespace's
//! loopback only, and the process cannot reach any address at all (no route, no interface) except
//! `127.0.0.1:<apiserver port>` inside the namespace, where this benchmark listens and copies the
//! bytes (TLS, end to end) to and from the real apiserver at the same address outside. So every
//! byte it sends goes to the loopback apiserver, and nothing but the namespace's own loopback can
//! connect to it. The splice costs one extra loopback hop per connection (client-go keeps one or
//! two long-lived HTTP/2 connections); its CPU is the benchmark's, not charged to the controller.
//!
//! Needs `unshare` (util-linux) and `ip` (iproute2) and the right to create a network namespace
//! (root, as on the project's machines).

use std::{
    fs::File,
    io::Write,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
};

const CLONE_NEWNET: i32 = 0x4000_0000;

unsafe extern "C" {
    /// setns(2), from the C library std already links.
    fn setns(fd: i32, nstype: i32) -> i32;
}

/// The controller's process and the splice serving it.
pub struct Isolated {
    child: Child,
    splice: JoinHandle<()>,
}

impl Isolated {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9 the process and stop the splice.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.splice.abort();
    }
}

/// Binds 127.0.0.1:`port` inside the network namespace of process `pid`: a short-lived thread
/// enters the namespace, binds, and ends; the socket stays in that namespace.
fn bind_in(pid: u32, port: u16) -> std::io::Result<std::net::TcpListener> {
    let own = std::fs::metadata("/proc/self/ns/net")?.ino();
    let ns = File::open(format!("/proc/{pid}/ns/net"))?;
    if ns.metadata()?.ino() == own {
        return Err(std::io::Error::new(std::io::ErrorKind::WouldBlock, "not in its own namespace yet"));
    }
    std::thread::spawn(move || {
        // SAFETY: setns only changes this thread's network namespace; the fd is open.
        if unsafe { setns(ns.as_raw_fd(), CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
    .join()
    .map_err(|_| std::io::Error::other("bind thread panicked"))?
}

/// Starts `program args` in a new network namespace (only `lo`, brought up), splices
/// 127.0.0.1:`api_port` inside it to 127.0.0.1:`api_port` outside, then lets the program run.
/// `env` is its whole environment (plus PATH).
pub async fn spawn(
    program: &Path,
    args: &[String],
    env: &[(&str, String)],
    log: File,
    api_port: u16,
) -> Isolated {
    // The shell waits for a line on stdin (sent once the splice listens), then execs the program:
    // the pid stays the same from unshare to the controller.
    let mut child = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up || exit 97; read -r _ || exit 98; exec \"$0\" \"$@\"",
        ])
        .arg(program)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("unshare starts (util-linux)");
    let start = Instant::now();
    let listener = loop {
        match bind_in(child.id(), api_port) {
            Ok(l) => break l,
            Err(e) => {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("the isolated controller exited before it started: {status} (see its log)");
                }
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    panic!(
                        "could not listen on 127.0.0.1:{api_port} in the controller's network namespace: {e}"
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    let splice = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        while let Ok((mut inside, _)) = listener.accept().await {
            conns.spawn(async move {
                let Ok(mut outside) = TcpStream::connect(("127.0.0.1", api_port)).await else { return };
                let _ = inside.set_nodelay(true);
                let _ = outside.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
            });
            // Reap finished connections.
            while conns.try_join_next().is_some() {}
        }
    });
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("start the controller");
    drop(stdin);
    Isolated { child, splice }
}
