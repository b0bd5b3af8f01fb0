//! The progress bar on stderr while reports go out: the phase, and reports and pushes per
//! second.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

use super::shared::Shared;

pub(super) fn progress_bar(sh: &Arc<Shared>) -> Option<(ProgressBar, JoinHandle<()>)> {
    if !sh.cfg.progress {
        return None;
    }
    let total = sh.cfg.warmup + sh.cfg.duration;
    let bar = ProgressBar::new(u64::try_from(total.as_millis()).unwrap_or(u64::MAX));
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}")
    {
        bar.set_style(style);
    }
    let task = {
        let (bar, sh) = (bar.clone(), Arc::clone(sh));
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut last = (started, 0u64, 0u64);
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let now = tokio::time::Instant::now();
                let (p, d) = (sh.published.load(Relaxed), sh.delivered.load(Relaxed));
                let secs = (now - last.0).as_secs_f64().max(1e-3);
                let phase = if sh.now_ns() < sh.window_start.load(Relaxed) {
                    "warmup"
                } else {
                    "measuring"
                };
                bar.set_position(u64::try_from((now - started).as_millis()).unwrap_or(0));
                bar.set_message(format!(
                    "{phase}: {:.0} reports/s, {:.0} pushes/s",
                    (p - last.1) as f64 / secs,
                    (d - last.2) as f64 / secs
                ));
                last = (now, p, d);
            }
        })
    };
    Some((bar, task))
}
