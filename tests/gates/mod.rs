//! Real counterparts for the step gates: a Prometheus server (the pinned build of
//! tests/cluster/build.sh, started on loopback), an exporter whose request counters the test
//! drives, and an HTTP receiver that records webhook calls and notifications and answers as the
//! test says.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    routing::get,
};
use serde_json::Value;

use crate::support;

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serving") });
    addr
}

/// One counter series: `http_requests_total{version, code}`, growing at `rate` per second.
struct Series {
    rate: f64,
    total: f64,
    since: Instant,
}

/// The exporter's series by (version, code).
type Table = Arc<Mutex<BTreeMap<(String, String), Series>>>;

/// An exporter of `http_requests_total{version="…",code="…"}` counters that grow at rates the
/// test sets: the traffic of each version, as an application's metrics would show it.
#[derive(Clone)]
pub struct Exporter {
    pub addr: SocketAddr,
    series: Table,
}

impl Exporter {
    pub async fn start() -> Exporter {
        let series = Arc::new(Mutex::new(BTreeMap::new()));
        let router = Router::new().route("/metrics", get(Exporter::metrics)).with_state(series.clone());
        Exporter { addr: serve(router).await, series }
    }

    /// `version` answers `code` at `rate` requests per second from now on.
    pub fn set_rate(&self, version: &str, code: &str, rate: f64) {
        let mut series = self.series.lock().expect("lock");
        let now = Instant::now();
        let s = series.entry((version.to_string(), code.to_string())).or_insert(Series {
            rate: 0.0,
            total: 0.0,
            since: now,
        });
        s.total += s.rate * now.duration_since(s.since).as_secs_f64();
        s.rate = rate;
        s.since = now;
    }

    async fn metrics(State(series): State<Table>) -> String {
        let series = series.lock().expect("lock");
        let mut text = String::from("# TYPE http_requests_total counter\n");
        for ((version, code), s) in series.iter() {
            let total = s.total + s.rate * s.since.elapsed().as_secs_f64();
            text += &format!("http_requests_total{{version=\"{version}\",code=\"{code}\"}} {total}\n");
        }
        text
    }
}

/// A Prometheus server on a free loopback port, scraping `targets` every second; stopped on drop.
pub struct Prometheus {
    pub address: String,
    child: Child,
    dir: PathBuf,
}

impl Prometheus {
    pub async fn start(name: &str, targets: &[SocketAddr]) -> Prometheus {
        // The pinned build (tests/cluster/build.sh prometheus; `make test` builds it first).
        let binary = support::tool("prometheus");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("prometheus").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("prometheus config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("prometheus log");
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): the step-gate tests need a real Prometheus \
                     (`make tools` builds it)",
                    binary.display()
                )
            });
        let prometheus = Prometheus { address: format!("http://127.0.0.1:{port}"), child, dir };
        let http = reqwest::Client::new();
        let address = prometheus.address.clone();
        support::wait_until("Prometheus to scrape its first target", Duration::from_secs(60), || {
            let (http, address) = (http.clone(), address.clone());
            async move {
                let up =
                    http.get(format!("{address}/api/v1/query")).query(&[("query", "sum(up)")]).send().await;
                match up {
                    Ok(r) => r.json::<Value>().await.ok().is_some_and(|v| {
                        v["data"]["result"][0]["value"][1].as_str().is_some_and(|n| n != "0")
                    }),
                    Err(_) => false,
                }
            }
        })
        .await;
        prometheus
    }

    /// An instant query's first value.
    pub async fn value(&self, query: &str) -> Option<f64> {
        let v: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.address))
            .query(&[("query", query)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
    pub at: Instant,
}

/// How the receiver answers a path: an HTTP status after a delay.
#[derive(Clone, Copy, Debug)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
}

#[derive(Default)]
struct Inbox {
    received: Vec<Received>,
    replies: BTreeMap<String, Reply>,
}

/// An HTTP receiver for webhooks and notifications: records every POST, answers 200 unless told
/// otherwise for a path.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inbox: Arc<Mutex<Inbox>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let router = Router::new().fallback(Receiver::receive).with_state(inbox.clone());
        Receiver { addr: serve(router).await, inbox }
    }

    /// `http://127.0.0.1:port<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answer `path` with `status` after `delay`.
    pub fn reply(&self, path: &str, status: u16, delay: Duration) {
        self.inbox.lock().expect("lock").replies.insert(path.to_string(), Reply { status, delay });
    }

    /// What was posted to `path`, in order.
    pub fn at(&self, path: &str) -> Vec<Received> {
        self.inbox.lock().expect("lock").received.iter().filter(|r| r.path == path).cloned().collect()
    }

    async fn receive(
        State(inbox): State<Arc<Mutex<Inbox>>>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let path = uri.path().to_string();
        let reply = {
            let mut inbox = inbox.lock().expect("lock");
            inbox.received.push(Received {
                path: path.clone(),
                authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                at: Instant::now(),
            });
            inbox.replies.get(&path).copied().unwrap_or(Reply { status: 200, delay: Duration::ZERO })
        };
        tokio::time::sleep(reply.delay).await;
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// The worked example of docs/checks.md: the share of the canary's requests that did not fail
/// with a 5xx, over the last 5 seconds.
pub const SUCCESS_RATE: &str = "sum(rate(http_requests_total{version=\"{{canary}}\",code!~\"5..\"}[5s])) / sum(rate(http_requests_total{version=\"{{canary}}\"}[5s]))";
