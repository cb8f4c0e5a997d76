//! A one-shot stop signal that any number of tasks can wait for.
//!
//! [`Shutdown`] is a cloneable future that resolves once its [`Trigger`] fires (or is dropped).
//! [`on_signal`] makes one that fires on SIGTERM or SIGINT; leader election makes another to
//! stop the controller when it hands over. It is `Send + Sync`, as the controller's
//! `graceful_shutdown_on` requires.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{
    FutureExt,
    channel::oneshot,
    future::{Shared, select},
};
use tracing::info;

/// Resolves once the matching [`Trigger`] fires or is dropped.
#[derive(Clone, Debug)]
pub struct Shutdown(Shared<oneshot::Receiver<()>>);

/// Fires the matching [`Shutdown`].
#[derive(Debug)]
pub struct Trigger(oneshot::Sender<()>);

/// A new stop signal and the trigger that fires it.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = oneshot::channel();
    (Trigger(tx), Shutdown(rx.shared()))
}

impl Trigger {
    /// Fires the signal.
    pub fn fire(self) {
        let _ = self.0.send(());
    }
}

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A dropped trigger counts as fired: nobody is left to keep the work going.
        self.0.poll_unpin(cx).map(|_| ())
    }
}

/// A stop signal that fires on the first SIGTERM or SIGINT. Later signals are ignored (tokio
/// keeps its handlers for the life of the process): the shutdown that follows is bounded in time
/// and must not be cut short before the lease is released.
pub fn on_signal() -> std::io::Result<Shutdown> {
    use tokio::signal::unix::{SignalKind, signal};

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (trigger, shutdown) = channel();
    tokio::spawn(async move {
        let name = match select(Box::pin(term.recv()), Box::pin(int.recv())).await {
            futures::future::Either::Left(_) => "SIGTERM",
            futures::future::Either::Right(_) => "SIGINT",
        };
        info!(signal = name, "shutting down");
        trigger.fire();
    });
    Ok(shutdown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_resolves_once_the_trigger_fires() {
        let (trigger, shutdown) = channel();
        let waiter = tokio::spawn(shutdown.clone());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        trigger.fire();
        waiter.await.expect("the waiter resolves");
        shutdown.await;
    }

    #[tokio::test]
    async fn a_dropped_trigger_counts_as_fired() {
        let (trigger, shutdown) = channel();
        drop(trigger);
        shutdown.await;
    }
}
