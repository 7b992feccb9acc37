//! What asks the lan manager to re-read its needs files besides `need
//! reload`: SIGHUP, and a change to `needs`, `needs.overlay` or
//! `needs.runtime` seen by inotify, debounced so that an editor's burst of
//! writes (or a `cp` in several pieces) is read once, when it is over.

use crate::driver::Event;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time after the last change before the files are read.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// The files whose change triggers a reload.
const WATCHED: [&str; 3] = ["needs", "needs.overlay", "needs.runtime"];

/// Asks for a reload on SIGHUP and on every (debounced) change to the needs
/// files in `dir`; ends when the driver is gone. Either source that cannot
/// be set up is logged and the other still works.
/// With `dir` `None` (`--no-watch`), only SIGHUP.
pub async fn watch(dir: Option<PathBuf>, events: mpsc::Sender<Event>) {
    use futures_util::StreamExt;
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot watch SIGHUP; `need reload` still works: {e}");
            None
        }
    };
    let mut files = dir.as_deref().and_then(watch_dir);
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        let debounce = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: re-reading the needs files");
                due = None;
                if events.send(Event::Reload).await.is_err() {
                    return;
                }
            }
            Some(ev) = async { match files.as_mut() { Some(f) => f.next().await, None => std::future::pending().await } } => {
                match ev {
                    Ok(ev) if ev.name.as_ref().and_then(|n| n.to_str()).is_some_and(|n| WATCHED.contains(&n)) => {
                        due = Some(tokio::time::Instant::now() + DEBOUNCE);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("inotify failed ({e}); edits are picked up on SIGHUP or `need reload` only");
                        files = None;
                    }
                }
            }
            () = debounce => {
                due = None;
                if events.send(Event::Reload).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn watch_dir(dir: &std::path::Path) -> Option<inotify::EventStream<Vec<u8>>> {
    use inotify::{Inotify, WatchMask};
    let result = Inotify::init().and_then(|ino| {
        ino.watches().add(
            dir,
            WatchMask::CLOSE_WRITE
                | WatchMask::MOVED_TO
                | WatchMask::DELETE
                | WatchMask::MOVED_FROM,
        )?;
        ino.into_event_stream(vec![0u8; 4096])
    });
    match result {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "cannot watch the needs files ({e}); edits are picked up on SIGHUP or `need reload` only");
            None
        }
    }
}
