//! Live progress on stderr: an indicatif bar on a terminal, plain periodic
//! lines otherwise, nothing with `--quiet`.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::report::{fmt_latency_short, thousands};
use crate::run::Live;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Lines,
    Off,
}

impl Mode {
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Off
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

/// Prints a status line on stderr unless progress is off.
pub fn note(mode: Mode, line: &str) {
    if mode != Mode::Off {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// A running progress display; stop it with [`Progress::finish`].
pub struct Progress {
    task: Option<JoinHandle<()>>,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn none() -> Progress {
        Progress {
            task: None,
            bar: None,
        }
    }

    /// Starts showing the progress of `live`.
    pub fn start(mode: Mode, live: Arc<Live>, interval: Duration, label: &str) -> Progress {
        match mode {
            Mode::Off => Progress::none(),
            Mode::Lines => Progress {
                task: Some(tokio::spawn(lines(live, interval))),
                bar: None,
            },
            Mode::Bar => {
                let bar =
                    ProgressBar::with_draw_target(Some(live.planned), ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:.bold} [{elapsed_precise}] {wide_bar:.cyan/blue} {human_pos}/{human_len} {percent}% | {msg}",
                    )
                    .expect("valid template")
                    .progress_chars("##-"),
                );
                bar.set_prefix(label.to_owned());
                bar.enable_steady_tick(Duration::from_millis(200));
                Progress {
                    task: Some(tokio::spawn(bar_updates(live, bar.clone()))),
                    bar: Some(bar),
                }
            }
        }
    }

    /// Stops the display and clears the bar.
    pub fn finish(self) {
        if let Some(task) = self.task {
            task.abort();
        }
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// RPS (jobs/s) since the last sample, failures so far and p99 of the last
/// window.
struct Rates {
    last_total: u64,
    last_at: Instant,
}

impl Rates {
    fn sample(&mut self, live: &Live) -> (u64, String) {
        let (total, failed, window) = live.sample();
        let now = Instant::now();
        let rps = crate::stats::rate_per_second(total - self.last_total, now - self.last_at);
        self.last_total = total;
        self.last_at = now;
        let p99 = if window.is_empty() {
            "-".to_owned()
        } else {
            fmt_latency_short(window.value_at_quantile(0.99) as f64 / 1e6)
        };
        let (rate, errors, latency) = if live.jobs {
            ("Jobs/s", "Not verified", "p99 to completion")
        } else {
            ("RPS", "Errors", "p99")
        };
        let msg = format!(
            "{rate}: {} | {errors}: {} | {latency}: {}",
            thousands(rps.round() as u64),
            thousands(failed),
            p99
        );
        (total, msg)
    }
}

async fn lines(live: Arc<Live>, interval: Duration) {
    let mut rates = Rates {
        last_total: 0,
        last_at: live.started_at,
    };
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    loop {
        ticker.tick().await;
        let (total, msg) = rates.sample(&live);
        let pct = crate::stats::percentage(total, live.planned);
        note(
            Mode::Lines,
            &format!(
                "Progress: {}/{} ({:.0}%) | {msg}",
                thousands(total),
                thousands(live.planned),
                pct.floor()
            ),
        );
    }
}

async fn bar_updates(live: Arc<Live>, bar: ProgressBar) {
    let mut rates = Rates {
        last_total: 0,
        last_at: live.started_at,
    };
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let (total, msg) = rates.sample(&live);
        bar.set_position(total);
        bar.set_message(msg);
    }
}
