//! `kubectl-deployer`: the kubectl plugin for Deployer rollouts. On PATH, `kubectl deployer …`
//! runs it. See docs/kubectl.md.
//!
//! - [`cli`]: the command line;
//! - [`cluster`]: the client, reads and patches;
//! - [`snapshot`], [`frame`], [`list`], [`verdict`], [`controls`]: pure views and decisions,
//!   unit-tested;
//! - [`live`]: `get -w`, the live screen;
//! - [`style`]: colours, bars, durations, tables.

mod cli;
mod cluster;
mod controls;
mod frame;
mod list;
mod live;
mod snapshot;
mod style;
mod verdict;

use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
    time::{Duration, Instant},
};

use chrono::{Local, Utc};
use clap::Parser;
use serde::Serialize;
use serde_json::json;

use crate::{
    cli::{Cli, Command, EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE, Output, Set},
    cluster::{Error, Result, Target, printable},
    controls::Control,
    style::{Style, Tone},
    verdict::{Verdict, progress_line, verdict},
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// The style of standard output.
fn stdout_style() -> Style {
    Style::detect(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("TERM").as_deref(),
    )
}

async fn run(cli: Cli) -> Result<u8> {
    let target = Target::connect(&cli.global).await?;
    match cli.command {
        Command::Get { name, watch: true, until_done, .. } => live::watch(&target, &name, until_done).await,
        Command::Get { name, output: Some(output), .. } => {
            print_object(&printable(target.deployer(&name).await?), output)?;
            Ok(EXIT_OK)
        }
        Command::Get { name, .. } => {
            let snap = target.snapshot(&name, true).await?;
            if snap.deployer.is_none() {
                return Err(target.not_found(&name));
            }
            println!("{}", frame::frame(&snap, Utc::now(), stdout_style()));
            Ok(EXIT_OK)
        }
        Command::List { all_namespaces, output } => list(&target, all_namespaces, output).await,
        Command::Promote { name, full } => {
            control(&target, &name, if full { Control::PromoteFull } else { Control::Promote }).await
        }
        Command::Abort { name } => control(&target, &name, Control::Abort).await,
        Command::Retry { name } => control(&target, &name, Control::Retry).await,
        Command::Pause { name } => control(&target, &name, Control::Pause).await,
        Command::Resume { name } => control(&target, &name, Control::Resume).await,
        Command::Set { what: Set::Version { name, version } } => set_version(&target, &name, &version).await,
        Command::Status { name, timeout } => status(&target, &name, timeout).await,
    }
}

/// Prints `value` as JSON or YAML.
fn print_object<T: Serialize>(value: &T, output: Output) -> Result<()> {
    let text = match output {
        Output::Json => serde_json::to_string_pretty(value).map_err(|e| Error(e.to_string()))? + "\n",
        Output::Yaml => serde_yaml::to_string(value).map_err(|e| Error(e.to_string()))?,
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| Error(format!("writing: {e}")))
}

async fn list(target: &Target, all_namespaces: bool, output: Option<Output>) -> Result<u8> {
    let api = if all_namespaces { kube::Api::all(target.client.clone()) } else { target.deployers() };
    let mut items = api.list(&kube::api::ListParams::default()).await?.items;
    items.sort_by_key(|d| (d.metadata.namespace.clone(), d.metadata.name.clone()));
    if let Some(output) = output {
        let items: Vec<_> = items.into_iter().map(printable).collect();
        print_object(
            &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}),
            output,
        )?;
        return Ok(EXIT_OK);
    }
    if items.is_empty() {
        if all_namespaces {
            eprintln!("No deployers found.");
        } else {
            eprintln!("No deployers found in namespace {}.", target.namespace);
        }
        return Ok(EXIT_OK);
    }
    println!("{}", list::list(&items, all_namespaces, Utc::now(), stdout_style()));
    Ok(EXIT_OK)
}

/// Sets a control annotation and says what was asked.
async fn control(target: &Target, name: &str, control: Control) -> Result<u8> {
    let before = target.deployer(name).await?;
    let current = before.metadata.annotations.as_ref().and_then(|a| a.get(control.annotation()));
    let token = controls::token(Utc::now(), current.map(String::as_str));
    target.patch(name, &control.patch(&token)).await?;
    println!("{}", controls::message(control, &before));
    Ok(EXIT_OK)
}

/// Merge-patches `spec.deployment.version`.
async fn set_version(target: &Target, name: &str, version: &str) -> Result<u8> {
    let before = target.deployer(name).await?;
    let old = before.spec.deployment.version.clone();
    let after = target.patch(name, &json!({"spec": {"deployment": {"version": version}}})).await?;
    let stable = before.status.as_ref().and_then(|s| s.stable_version.clone());
    let what = if old == version {
        "unchanged".to_string()
    } else if stable.as_deref() == Some(version) {
        format!("{old} -> {version}: back to the stable version (rollback)")
    } else {
        format!("{old} -> {version}: rollout requested")
    };
    println!("deployer/{name}: version {what} (generation {})", after.metadata.generation.unwrap_or(0));
    Ok(EXIT_OK)
}

/// Waits for the rollout to finish, printing a line at each change (and every 30 s).
async fn status(target: &Target, name: &str, timeout: Option<Duration>) -> Result<u8> {
    let style = stdout_style();
    let started = Instant::now();
    let frozen = Utc::now();
    let mut last: Option<(String, Instant)> = None;
    let mut failures = 0;
    loop {
        let snap = match target.snapshot(name, false).await {
            Ok(snap) => snap,
            // The first read must work; later ones may fail for a moment (an API server restart).
            Err(e) if last.is_some() && failures < 30 => {
                failures += 1;
                eprintln!("{} warning: {e} (retrying)", Local::now().format("%H:%M:%S"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        failures = 0;
        let Some(d) = &snap.deployer else { return Err(target.not_found(name)) };
        let key = progress_line(&snap, frozen);
        let heartbeat = last.as_ref().is_some_and(|(_, at)| at.elapsed() >= Duration::from_secs(30));
        if last.as_ref().is_none_or(|(k, _)| *k != key) || heartbeat {
            println!("{} {}", Local::now().format("%H:%M:%S"), progress_line(&snap, Utc::now()));
            last = Some((key, Instant::now()));
        }
        match verdict(d) {
            Verdict::Done(message) => {
                println!("deployer/{name}: {} {message}", style.paint("rollout complete:", Tone::Good));
                return Ok(EXIT_OK);
            }
            Verdict::Failed(message) => {
                println!("deployer/{name}: {} {message}", style.paint("rollout failed:", Tone::Bad));
                return Ok(EXIT_FAILED);
            }
            Verdict::Pending(_) => {}
        }
        let pause = match timeout {
            Some(t) if started.elapsed() >= t => {
                let phase = snap.phase().map_or("Pending".to_string(), |p| p.to_string());
                println!(
                    "deployer/{name}: {} after {:?} (phase {phase})",
                    style.paint("timed out", Tone::Warn),
                    t
                );
                return Ok(EXIT_TIMEOUT);
            }
            Some(t) => t.saturating_sub(started.elapsed()).min(Duration::from_secs(1)),
            None => Duration::from_secs(1),
        };
        tokio::time::sleep(pause).await;
    }
}
