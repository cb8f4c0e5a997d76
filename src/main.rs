//! The `deployer-operator` binary: runs the controller, or prints the CRD.

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use clap::{CommandFactory, Parser, Subcommand, builder::BoolishValueParser, error::ErrorKind};
use deployer_operator::{
    api::Deployer,
    controller, http,
    leader::{self, LeaseConfig},
    metrics::Metrics,
    rollout::Settings,
    shutdown,
    telemetry::{self, DEFAULT_LOG_LEVEL, LogFormat},
};
use kube::{Client, CustomResourceExt, client::ClientBuilder};

/// Restart-safe canary rollouts for Kubernetes through a `Deployer` custom resource.
///
/// Every flag can also be set by the environment variable shown with it; a flag given on the
/// command line wins.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller against the cluster of KUBECONFIG (or the in-cluster config); the default.
    Run,
    /// Print the Deployer CustomResourceDefinition as YAML.
    Crd,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Watch only these namespaces: repeat the flag or separate them with commas (default, or
    /// empty: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE", value_delimiter = ',', value_parser = watch_namespace, global = true)]
    namespace: Vec<String>,
    /// Deployers reconciled at once (per watched namespace).
    #[arg(long, env = "DEPLOYER_CONCURRENCY", default_value_t = 16, global = true)]
    concurrency: u16,
    /// Seconds between refreshes of the remaining-time text of a running wait (0, the default:
    /// written once when the wait starts, as the seed did; each refresh is a status write).
    #[arg(long, env = "DEPLOYER_WAIT_REFRESH_SECONDS", default_value_t = 0, global = true)]
    wait_refresh_seconds: u64,
    /// Prometheus for the metric checks of Deployers that name none in
    /// spec.analysis.prometheus.address (e.g. http://prometheus.monitoring:9090).
    #[arg(long, env = "DEPLOYER_PROMETHEUS_ADDRESS", global = true)]
    prometheus_address: Option<String>,
    /// Log format.
    #[arg(long, env = "DEPLOYER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log filter in RUST_LOG syntax, e.g. `debug` or `info,deployer_operator=debug,kube=warn`.
    #[arg(long, env = "RUST_LOG", default_value = DEFAULT_LOG_LEVEL, value_parser = telemetry::parse_filter, global = true)]
    log_level: String,
    /// Address of the HTTP server for /metrics, /healthz and /readyz. Port 0 picks a free port;
    /// the address bound is logged as `listening on <addr>`.
    #[arg(long, env = "DEPLOYER_LISTEN", default_value = "0.0.0.0:8080", value_name = "ADDR", global = true)]
    listen: SocketAddr,
    /// Also report each Deployer's phase and canary weight as series of their own (labels
    /// `namespace` and `name`: one series per Deployer).
    #[arg(long, env = "DEPLOYER_PER_OBJECT_METRICS", value_parser = BoolishValueParser::new(), global = true)]
    per_object_metrics: bool,
    /// Reconcile only while holding a coordination.k8s.io Lease, so that several replicas can
    /// run: one reconciles, the others stand by to take over.
    #[arg(long, env = "DEPLOYER_LEADER_ELECT", value_parser = BoolishValueParser::new(), global = true)]
    leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "DEPLOYER_LEASE_NAME", default_value = "deployer-operator", value_parser = dns_subdomain, global = true)]
    lease_name: String,
    /// Namespace of the leader-election Lease (in a Pod: its own namespace, from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default", value_parser = dns_label, global = true)]
    lease_namespace: String,
    /// This replica's name in the Lease (in a Pod: its name, from the downward API; default: the
    /// hostname). A random suffix makes each process a new holder: a restarted process waits
    /// like any standby rather than resume a lease it cannot know it still holds.
    #[arg(long, env = "POD_NAME", global = true)]
    lease_identity: Option<String>,
    /// Seconds a Lease stays valid after its holder last renewed it: how long a standby waits
    /// before taking over from a leader that died without releasing it.
    #[arg(long, env = "DEPLOYER_LEASE_DURATION_SECONDS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(2..=3600), global = true)]
    lease_duration_seconds: u64,
    /// Seconds before expiry the leader renews the Lease; also the clock skew tolerated between
    /// replicas. Must be shorter than the lease duration.
    #[arg(long, env = "DEPLOYER_LEASE_GRACE_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    lease_grace_seconds: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Crd => match serde_yaml::to_string(&Deployer::crd()) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => fail(format!("cannot render the CRD: {err}")),
        },
        Command::Run => run(cli.run).await,
    }
}

async fn run(args: RunArgs) -> ExitCode {
    let lease = LeaseConfig {
        name: args.lease_name.clone(),
        namespace: args.lease_namespace.clone(),
        identity: identity(args.lease_identity.clone()),
        duration_seconds: args.lease_duration_seconds,
        grace_seconds: args.lease_grace_seconds,
    };
    if lease.grace_seconds >= lease.duration_seconds {
        let message = format!(
            "--lease-grace-seconds ({}) must be less than --lease-duration-seconds ({})",
            lease.grace_seconds, lease.duration_seconds
        );
        Cli::command().error(ErrorKind::ArgumentConflict, message).exit();
    }
    telemetry::init(args.log_format, &args.log_level);
    let shutdown = match shutdown::on_signal() {
        Ok(shutdown) => shutdown,
        Err(err) => return fail(format!("cannot handle SIGTERM/SIGINT: {err}")),
    };
    let metrics = Arc::new(Metrics::new(args.per_object_metrics));
    let health = Arc::new(http::Health::default());
    // The endpoints come first, so that a probe can tell a slow start from a dead process.
    let listener = match http::bind(args.listen).await {
        Ok(listener) => listener,
        Err(err) => return fail(err.to_string()),
    };
    tokio::spawn(http::serve(listener, metrics.clone(), health.clone()));
    let client = match connect(&metrics).await {
        Ok(client) => client,
        Err(message) => return fail(message),
    };
    let config = controller::Config {
        namespaces: args.namespace.into_iter().filter(|ns| !ns.is_empty()).collect(),
        concurrency: args.concurrency,
        settings: Settings {
            wait_refresh: (args.wait_refresh_seconds > 0)
                .then(|| Duration::from_secs(args.wait_refresh_seconds)),
            prometheus: args.prometheus_address.clone(),
        },
    };
    let work = |stop| controller::run(client.clone(), config, metrics.clone(), health.clone(), stop);
    let result = if args.leader_elect {
        match leader::Elector::new(client.clone(), lease).await {
            Ok(elector) => leader::run(elector, &health, shutdown, work).await,
            Err(err) => Err(err),
        }
    } else {
        work(shutdown).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(err.to_string()),
    }
}

/// Connects to the cluster and checks that it answers, so that a wrong or missing KUBECONFIG
/// gives one clear line instead of a stream of retries. The client counts its requests in
/// `metrics`.
async fn connect(metrics: &Metrics) -> Result<Client, String> {
    let config = kube::Config::infer().await.map_err(|e| {
        format!("no Kubernetes configuration found (set KUBECONFIG or run in a cluster): {e}")
    })?;
    let mut config = config;
    // A user agent of our own makes the operator's calls countable in the API server's audit log.
    config.headers.push((
        ::http::header::USER_AGENT,
        ::http::HeaderValue::from_static(concat!("deployer-operator/", env!("CARGO_PKG_VERSION"))),
    ));
    let url = config.cluster_url.clone();
    let client = ClientBuilder::try_from(config)
        .map_err(|e| format!("cannot build a client for {url}: {e}"))?
        .with_layer(&metrics.kube_api_layer())
        .build();
    let version = tokio::time::timeout(Duration::from_secs(10), client.apiserver_version())
        .await
        .map_err(|_| format!("the Kubernetes API at {url} did not answer within 10s"))?
        .map_err(|e| format!("cannot reach the Kubernetes API at {url}: {e}"))?;
    tracing::info!(%url, version = %version.git_version, "connected");
    Ok(client)
}

/// `<name>_<8 random hex digits>`: unique to this process, `name` defaulting (also when empty)
/// to the hostname.
fn identity(name: Option<String>) -> String {
    use std::hash::{BuildHasher, Hasher};

    let name = name
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "deployer-operator".into());
    // std's hasher keys are random per process: no dependency needed for 32 random bits.
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish() as u32;
    format!("{name}_{random:08x}")
}

/// A namespace to watch; empty means all (as `WATCH_NAMESPACE=""` does for most operators).
fn watch_namespace(value: &str) -> Result<String, String> {
    if value.is_empty() { Ok(String::new()) } else { dns_label(value) }
}

/// A DNS-1123 label, as namespace names are.
fn dns_label(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    ok.then(|| value.to_string()).ok_or_else(|| {
        "not a valid namespace name (lowercase letters, digits and '-', at most 63 characters)".into()
    })
}

/// A DNS-1123 subdomain, as most object names are.
fn dns_subdomain(value: &str) -> Result<String, String> {
    let ok = value.len() <= 253 && value.split('.').all(|label| dns_label(label).is_ok());
    ok.then(|| value.to_string()).ok_or_else(|| {
        "not a valid object name (lowercase letters, digits, '-' and '.', at most 253 characters)".into()
    })
}

fn fail(message: String) -> ExitCode {
    eprintln!("deployer-operator: error: {message}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("deployer-operator").chain(args.iter().copied()))
    }

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn namespaces_can_be_repeated_or_comma_separated() {
        let cli = parse(&["run", "--namespace", "a,b", "--namespace", "c"]).expect("parses");
        assert_eq!(cli.run.namespace, ["a", "b", "c"]);
        assert!(parse(&["run"]).expect("parses").run.namespace.is_empty(), "default: all");
        assert_eq!(parse(&["run", "--namespace", ""]).expect("parses").run.namespace, [""], "empty: all");
        let err = parse(&["run", "--namespace", "Not_A_Namespace"]).expect_err("rejected");
        assert!(err.to_string().contains("--namespace"), "{err}");
    }

    #[test]
    fn defaults_keep_leader_election_off_and_listen_on_8080() {
        let cli = parse(&[]).expect("parses");
        assert!(!cli.run.leader_elect);
        assert_eq!(cli.run.listen, "0.0.0.0:8080".parse().expect("an address"));
        assert_eq!(cli.run.lease_name, "deployer-operator");
        assert_eq!((cli.run.lease_duration_seconds, cli.run.lease_grace_seconds), (15, 5));
    }

    #[test]
    fn each_process_gets_an_identity_of_its_own() {
        let (a, b) = (identity(Some("pod-a".into())), identity(Some("pod-a".into())));
        assert!(a.starts_with("pod-a_") && b.starts_with("pod-a_"), "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(a.len(), "pod-a_".len() + 8);
        assert!(!identity(None).starts_with('_'));
        assert!(!identity(Some(" ".into())).starts_with('_'), "empty: the hostname");
    }

    #[test]
    fn invalid_values_are_refused_with_the_flag_named() {
        for (args, flag) in [
            (&["--listen", "localhost"][..], "--listen"),
            (&["--log-format", "xml"][..], "--log-format"),
            (&["--log-level", "info,kube=loud"][..], "--log-level"),
            (&["--lease-duration-seconds", "0"][..], "--lease-duration-seconds"),
            (&["--lease-grace-seconds", "0"][..], "--lease-grace-seconds"),
            (&["--lease-name", "Bad Name"][..], "--lease-name"),
            (&["--concurrency", "lots"][..], "--concurrency"),
        ] {
            let err = parse(args).expect_err("rejected");
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }
}
