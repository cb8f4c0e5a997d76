//! The `deployer-operator` binary: runs the controller, or prints the CRD.

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use deployer_operator::{api::Deployer, controller, rollout::Settings};
use kube::{Client, CustomResourceExt};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Restart-safe canary rollouts for Kubernetes through a `Deployer` custom resource.
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
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE", global = true)]
    namespace: Option<String>,
    /// Deployers reconciled at once.
    #[arg(long, env = "DEPLOYER_CONCURRENCY", default_value_t = 16, global = true)]
    concurrency: u16,
    /// Seconds between refreshes of the remaining-time text of a running wait (0: never).
    #[arg(long, env = "DEPLOYER_WAIT_REFRESH_SECONDS", default_value_t = 10, global = true)]
    wait_refresh_seconds: u64,
    /// Log format.
    #[arg(long, env = "DEPLOYER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    match args.log_format {
        LogFormat::Text => registry.with(fmt::layer()).init(),
        LogFormat::Json => registry.with(fmt::layer().json()).init(),
    }
    let client = match connect().await {
        Ok(client) => client,
        Err(message) => return fail(message),
    };
    let config = controller::Config {
        namespace: args.namespace,
        concurrency: args.concurrency,
        settings: Settings {
            wait_refresh: (args.wait_refresh_seconds > 0)
                .then(|| Duration::from_secs(args.wait_refresh_seconds)),
        },
    };
    match controller::run(client, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(err.to_string()),
    }
}

/// Connects to the cluster and checks that it answers, so that a wrong or missing KUBECONFIG
/// gives one clear line instead of a stream of retries.
async fn connect() -> Result<Client, String> {
    let config = kube::Config::infer().await.map_err(|e| {
        format!("no Kubernetes configuration found (set KUBECONFIG or run in a cluster): {e}")
    })?;
    let mut config = config;
    // A user agent of our own makes the operator's calls countable in the API server's audit log.
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("deployer-operator/", env!("CARGO_PKG_VERSION"))),
    ));
    let url = config.cluster_url.clone();
    let client = Client::try_from(config).map_err(|e| format!("cannot build a client for {url}: {e}"))?;
    let version = tokio::time::timeout(Duration::from_secs(10), client.apiserver_version())
        .await
        .map_err(|_| format!("the Kubernetes API at {url} did not answer within 10s"))?
        .map_err(|e| format!("cannot reach the Kubernetes API at {url}: {e}"))?;
    tracing::info!(%url, version = %version.git_version, "connected");
    Ok(client)
}

fn fail(message: String) -> ExitCode {
    eprintln!("deployer-operator: error: {message}");
    ExitCode::FAILURE
}
