//! `kubectl deployer get NAME -w`: the view, kept current by watches on the Deployer, its
//! Deployments and its Events.
//!
//! On a terminal the screen is cleared once and redrawn in place every second (the time left
//! counts down) and at each change. Piped, a new frame is printed only when the content changes:
//! the content is compared as rendered at a fixed instant, so that the ticking clocks alone do
//! not make a new frame.

use std::{
    io::{IsTerminal, Write},
    time::Duration,
};

use chrono::{DateTime, Local, Utc};
use crossterm::{
    cursor::{Hide, MoveTo, Show},
    queue,
    style::Print,
    terminal::{Clear, ClearType},
};
use deployer_operator::api::Deployer;
use futures::{FutureExt, StreamExt, stream::BoxStream};
use k8s_openapi::api::{apps::v1::Deployment, events::v1::Event};
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;

use crate::{
    cli::{EXIT_FAILED, EXIT_OK},
    cluster::{Error, Result, Target, events_selector, snapshot_of},
    frame::frame,
    snapshot::Snapshot,
    style::{Style, Tone, fit},
    verdict::{Verdict, verdict},
};

/// What one of the watches reported.
enum Change {
    /// Its initial list is complete.
    Ready(usize),
    /// An object was added, changed or deleted.
    Changed,
    /// The watch failed (it retries with a backoff).
    Failed(String),
}

/// Watches `name` and redraws until Ctrl-C, or with `until_done` until the rollout is finished.
/// Returns the exit status.
pub async fn watch(target: &Target, name: &str, until_done: bool) -> Result<u8> {
    let first = target.snapshot(name, true).await?;
    if first.deployer.is_none() {
        return Err(target.not_found(name));
    }
    let tty = std::io::stdout().is_terminal();
    let style =
        Style::detect(tty, std::env::var_os("NO_COLOR").as_deref(), std::env::var_os("TERM").as_deref());
    let mut screen =
        if tty { Screen::Terminal { drawn: None } } else { Screen::Pipe { last: None, at: Utc::now() } };

    let ns = target.namespace.as_str();
    let (deployers, deployers_feed) = mirror(
        Api::<Deployer>::namespaced(target.client.clone(), ns),
        &format!("metadata.name={name}"),
        "",
        0,
    );
    let owned = format!("{}={name}", deployer_operator::resources::DEPLOYER_LABEL);
    let (deployments, deployments_feed) =
        mirror(Api::<Deployment>::namespaced(target.client.clone(), ns), "", &owned, 1);
    let (events, events_feed) =
        mirror(Api::<Event>::namespaced(target.client.clone(), ns), &events_selector(name), "", 2);
    let mut changes = futures::stream::select_all([deployers_feed, deployments_feed, events_feed]);

    let mut snap = first;
    let mut ready = [false; 3];
    let mut problem: Option<String> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let status = loop {
        if let Err(e) = screen.show(&snap, Utc::now(), style, problem.as_deref()) {
            // A closed pipe (`| head`) ends the watch quietly.
            break if e.kind() == std::io::ErrorKind::BrokenPipe { EXIT_OK } else { EXIT_FAILED };
        }
        if until_done && let Some(d) = &snap.deployer {
            match verdict(d) {
                Verdict::Done(_) => break EXIT_OK,
                Verdict::Failed(_) => break EXIT_FAILED,
                Verdict::Pending(_) => {}
            }
        }
        tokio::select! {
            _ = &mut ctrl_c => break EXIT_OK,
            _ = tick.tick() => {}
            change = changes.next() => {
                let mut change = change;
                // Take every change already there, then draw once.
                while let Some(c) = change {
                    match c {
                        Change::Ready(i) => ready[i] = true,
                        Change::Changed => problem = None,
                        Change::Failed(e) => problem = Some(e),
                    }
                    change = changes.next().now_or_never().flatten();
                }
                if ready.iter().all(|r| *r) {
                    snap = snapshot_of(
                        ns,
                        name,
                        deployers.state().first().map(|d| Deployer::clone(d)),
                        deployments.state().iter().map(|d| Deployment::clone(d)).collect(),
                        events.state().iter().map(|e| Event::clone(e)).collect(),
                    );
                }
            }
        }
    };
    screen.finish().map_err(|e| Error(format!("writing to the terminal: {e}")))?;
    Ok(status)
}

/// A store of the objects `api` lists with the given selectors, and the feed of its changes
/// (tagged `index`). The feed must be polled for the store to fill.
fn mirror<K>(api: Api<K>, fields: &str, labels: &str, index: usize) -> (Store<K>, BoxStream<'static, Change>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let mut config = watcher::Config::default();
    if !fields.is_empty() {
        config = config.fields(fields);
    }
    if !labels.is_empty() {
        config = config.labels(labels);
    }
    let feed = reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .map(move |e| match e {
            Ok(watcher::Event::InitDone) => Change::Ready(index),
            Ok(_) => Change::Changed,
            Err(e) => Change::Failed(e.to_string()),
        })
        .boxed();
    (store, feed)
}

/// Where the frames go.
enum Screen {
    /// A terminal: redrawn in place.
    Terminal {
        /// What is on the screen (nothing is drawn twice).
        drawn: Option<String>,
    },
    /// A pipe: a frame per change of content.
    Pipe {
        /// The content of the last frame printed, rendered at `at`.
        last: Option<String>,
        /// The fixed instant the content is compared at.
        at: DateTime<Utc>,
    },
}

impl Screen {
    fn show(
        &mut self,
        snap: &Snapshot,
        now: DateTime<Utc>,
        style: Style,
        problem: Option<&str>,
    ) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        match self {
            Screen::Terminal { drawn } => {
                let mut text = frame(snap, now, style);
                text.push_str("\n\n");
                text.push_str(&style.paint(
                    &format!(
                        "updated {}   redrawn every second and on changes   Ctrl-C to quit",
                        Local::now().format("%H:%M:%S")
                    ),
                    Tone::Dim,
                ));
                if let Some(problem) = problem {
                    text.push('\n');
                    text.push_str(
                        &style.paint(&format!("watch interrupted, retrying: {problem}"), Tone::Warn),
                    );
                }
                if drawn.as_deref() == Some(text.as_str()) {
                    return Ok(());
                }
                let (columns, rows) = crossterm::terminal::size().unwrap_or((80, 24));
                if drawn.is_none() {
                    queue!(out, Hide, Clear(ClearType::All))?;
                }
                queue!(out, MoveTo(0, 0))?;
                let rows = usize::from(rows.max(2)) - 1;
                for line in text.lines().take(rows) {
                    queue!(
                        out,
                        Print(fit(line, usize::from(columns))),
                        Clear(ClearType::UntilNewLine),
                        Print("\r\n")
                    )?;
                }
                queue!(out, Clear(ClearType::FromCursorDown))?;
                out.flush()?;
                *drawn = Some(text);
            }
            Screen::Pipe { last, at } => {
                let content = frame(snap, *at, Style::PLAIN);
                if last.as_deref() == Some(content.as_str()) {
                    return Ok(());
                }
                writeln!(out, "--- {}", Local::now().format("%H:%M:%S"))?;
                writeln!(out, "{}", frame(snap, now, style))?;
                if let Some(problem) = problem {
                    writeln!(out, "watch interrupted, retrying: {problem}")?;
                }
                out.flush()?;
                *last = Some(content);
            }
        }
        Ok(())
    }

    /// Gives the terminal back: the cursor shown, below the frame.
    fn finish(&mut self) -> std::io::Result<()> {
        if let Screen::Terminal { drawn: Some(_) } = self {
            let mut out = std::io::stdout().lock();
            queue!(out, Show, Print("\r\n"))?;
            out.flush()?;
        }
        Ok(())
    }
}
