//! The command line: `kubectl deployer <command> …` (clap), and its duration arguments.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: an error (e.g. no such Deployer), or the rollout failed (`status`, `get -w
/// --until-done`): Aborted, `InvalidSpec` or `NameConflict`.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: `status --timeout` ran out before the rollout finished.
pub const EXIT_TIMEOUT: u8 = 2;
/// Exit status: the command line is invalid (sysexits' EX_USAGE, so that it differs from the
/// timeout).
pub const EXIT_USAGE: u8 = 64;

const AFTER_HELP: &str = "\
Exit status: 0 success (status: the rollout is Done and Ready); 1 error, or the rollout failed \
(status, get -w --until-done: Aborted, InvalidSpec, NameConflict); 2 status --timeout ran out; \
64 invalid command line.

Controls are annotations on the Deployer; the operator carries each new value out once \
(precedence: abort > retry > promote-full > promote). See docs/kubectl.md.";

/// Watch and steer the canary rollouts of Deployers (deploy.example.com/v1alpha1).
#[derive(Debug, Parser)]
#[command(name = "kubectl-deployer", bin_name = "kubectl deployer", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Where to connect, as kubectl takes it.
#[derive(Debug, Args)]
pub struct Global {
    /// Namespace of the Deployer (default: the kubeconfig context's namespace, else "default").
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Path of the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a rollout: phase, step and progress, versions with their replicas, time left,
    /// conditions and the last Events; -w redraws it live.
    Get {
        /// The Deployer.
        name: String,
        /// Redraw live until Ctrl-C (on a terminal every second and on each change; piped, a new
        /// frame each time the content changes).
        #[arg(short = 'w', long)]
        watch: bool,
        /// With -w: stop when the rollout is Done and Ready (exit 0) or failed (exit 1).
        #[arg(long, requires = "watch")]
        until_done: bool,
        /// Print the Deployer object instead of the view.
        #[arg(short = 'o', long, value_enum, conflicts_with = "watch")]
        output: Option<Output>,
    },
    /// One line per Deployer: name, phase, step, weight, stable, canary, age.
    #[command(visible_alias = "ls")]
    List {
        /// List the Deployers of every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Print the Deployer objects (a v1 List) instead of the table.
        #[arg(short = 'o', long, value_enum)]
        output: Option<Output>,
    },
    /// End the current wait or pause and go to the next step (--full: to 100% now).
    Promote {
        /// The Deployer.
        name: String,
        /// Go to 100% at once (the new version is scaled up before the old one down).
        #[arg(long)]
        full: bool,
    },
    /// Roll back to the stable version (the canary is removed once the stable is back).
    Abort {
        /// The Deployer.
        name: String,
    },
    /// Restart an aborted rollout from step 1.
    Retry {
        /// The Deployer.
        name: String,
    },
    /// Hold the rollout at its current step (a running wait keeps the time it had left).
    Pause {
        /// The Deployer.
        name: String,
    },
    /// Let a paused rollout go on.
    Resume {
        /// The Deployer.
        name: String,
    },
    /// Change the spec.
    Set {
        #[command(subcommand)]
        what: Set,
    },
    /// Wait for the rollout to finish, printing progress: exit 0 when Done and Ready, 1 when it
    /// failed, 2 when --timeout runs out.
    Status {
        /// The Deployer.
        name: String,
        /// Give up after this long (e.g. 30s, 5m, 1h30m); default: wait forever.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
}

/// What `set` changes.
#[derive(Debug, Subcommand)]
pub enum Set {
    /// Set spec.deployment.version: a new version starts a rollout, the stable one rolls back.
    Version {
        /// The Deployer.
        name: String,
        /// The version (the image tag).
        version: String,
    },
}

/// Machine-readable output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// JSON, as `kubectl get -o json`.
    Json,
    /// YAML, as `kubectl get -o yaml`.
    Yaml,
}

/// A duration as kubectl takes one: a sequence of number-unit pairs (`ms`, `s`, `m`, `h`), e.g.
/// `30s`, `5m`, `1h30m`, `1.5s`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?}: use e.g. 30s, 5m, 1h30m");
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid());
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| invalid());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(invalid)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let seconds = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(invalid()),
        };
        total += Duration::try_from_secs_f64(seconds).map_err(|_| invalid())?;
        rest = tail;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn durations_parse_like_kubectl() {
        let d = |s| parse_duration(s);
        assert_eq!(d("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(d("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(d("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(d("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("90"), Ok(Duration::from_secs(90)));
        for bad in ["", "s", "5x", "m5", "-5s", "1h-2m", "5 m"] {
            assert!(d(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_go_anywhere_like_kubectl() {
        let cli =
            Cli::try_parse_from(["kubectl-deployer", "get", "app", "-n", "demo", "-w", "--context", "c"])
                .expect("parses");
        assert_eq!(cli.global.namespace.as_deref(), Some("demo"));
        assert_eq!(cli.global.context.as_deref(), Some("c"));
        assert!(matches!(cli.command, Command::Get { watch: true, until_done: false, output: None, .. }));
        let cli = Cli::try_parse_from(["kubectl-deployer", "-n", "x", "status", "app", "--timeout", "5m"])
            .expect("parses");
        assert!(
            matches!(cli.command, Command::Status { timeout: Some(t), .. } if t == Duration::from_secs(300))
        );
        assert!(Cli::try_parse_from(["kubectl-deployer", "get", "app", "-w", "-o", "json"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-deployer", "set", "version", "app"]).is_err());
    }
}
