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
                // A staged profile says how long the phase lasts, not how many
                // requests it sends (closed loop): its bar counts milliseconds.
                let (len, template) = match &live.profile {
                    Some(p) => (
                        p.duration().as_millis() as u64,
                        "{prefix:.bold} [{elapsed_precise}] {wide_bar:.cyan/blue} {percent}% | {msg}",
                    ),
                    None => (
                        live.planned,
                        "{prefix:.bold} [{elapsed_precise}] {wide_bar:.cyan/blue} {human_pos}/{human_len} {percent}% | {msg}",
                    ),
                };
                let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(template)
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
            "{}{rate}: {} | {errors}: {} | {latency}: {}",
            stage_note(live).map_or_else(String::new, |s| s + " | "),
            thousands(rps.round() as u64),
            thousands(failed),
            p99
        );
        (total, msg)
    }
}

/// With a staged profile: the stage under way and what it asks for now,
/// `Stage hold (2/3): 1,000 req/s`.
fn stage_note(live: &Live) -> Option<String> {
    let p = live.profile.as_ref()?;
    let t = live.started_at.elapsed().as_secs_f64();
    let i = p.stage_at(t);
    Some(format!(
        "Stage {} ({}/{}): {} {}",
        p.stages[i].name,
        i + 1,
        p.stages.len(),
        thousands(p.target_at(t).round() as u64),
        p.kind.unit()
    ))
}

/// How far the phase is: `1,234/10,000 (12%)`, or with a staged profile (whose
/// length is its time, not a count) `12s/60s (20%)`.
fn position(live: &Live, total: u64) -> String {
    match &live.profile {
        Some(p) => {
            let length = p.duration().as_secs_f64();
            let t = live.started_at.elapsed().as_secs_f64().min(length);
            format!(
                "{t:.0}s/{length:.0}s ({:.0}%)",
                (100.0 * t / length.max(f64::MIN_POSITIVE)).floor()
            )
        }
        None => format!(
            "{}/{} ({:.0}%)",
            thousands(total),
            thousands(live.planned),
            crate::stats::percentage(total, live.planned).floor()
        ),
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
        note(
            Mode::Lines,
            &format!("Progress: {} | {msg}", position(&live, total)),
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
        bar.set_position(match &live.profile {
            Some(_) => live.started_at.elapsed().as_millis() as u64,
            None => total,
        });
        bar.set_message(msg);
    }
}
