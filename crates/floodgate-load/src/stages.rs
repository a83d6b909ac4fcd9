//! Staged load profiles (`--stage DURATION:TARGET`, `--stages FILE`): a rate
//! in open loop (`1000/s`) or a number of connections in closed loop (`64`)
//! that each stage ramps to linearly, from where the stage before ended
//! (the first from 0). A stage of zero duration jumps.
//!
//! Open loop: the rate `r(t)` is piecewise linear, so the requests due by
//! `t` are `N(t) = ∫ r`, piecewise quadratic, and request `i` is due when
//! `N(t) = i` (see [`Profile::offset`]); its latency counts from then, as in
//! any open-loop run. Closed loop: worker `k` runs while the target at the
//! time is above `k` (rounded: `c(t) ≥ k + ½`), and sleeps otherwise.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the targets of a profile are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// Requests per second, open loop.
    Rate,
    /// Connections, closed loop.
    Concurrency,
}

impl StageKind {
    /// The unit of its targets, as the reports show it.
    pub fn unit(self) -> &'static str {
        match self {
            StageKind::Rate => "req/s",
            StageKind::Concurrency => "connections",
        }
    }
}

/// One stage: ramp to `target` over `duration`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub name: String,
    pub duration: Duration,
    pub target: f64,
}

/// Largest concurrency a stage may ask for (as `--concurrency`).
const MAX_CONNECTIONS: f64 = 100_000.0;

/// A stage of the command line: `[NAME=]DURATION:TARGET`, TARGET `R/s` (a
/// rate) or `N` (connections).
pub fn parse_stage(s: &str) -> Result<(StageKind, Stage), String> {
    let (name, spec) = match s.split_once('=') {
        Some((name, spec)) if !name.trim().is_empty() => (Some(name.trim()), spec),
        Some(_) => return Err(format!("`{s}`: the stage's name is empty")),
        None => (None, s),
    };
    let (duration, target) = spec.split_once(':').ok_or_else(|| {
        format!("`{s}` is not DURATION:TARGET (e.g. 30s:1000/s for a rate, 30s:64 for connections)")
    })?;
    let duration = humantime::parse_duration(duration.trim())
        .map_err(|e| format!("`{s}`: the duration: {e}"))?;
    let target = target.trim();
    let (kind, number) = match target.strip_suffix("/s") {
        Some(rate) => (StageKind::Rate, rate),
        None => (StageKind::Concurrency, target),
    };
    let value: f64 = number
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{s}`: `{target}` is not a number (R/s or N)"))?;
    let stage = Stage {
        name: name.map(str::to_owned).unwrap_or_default(),
        duration,
        target: value,
    };
    check_target(kind, &stage)?;
    Ok((kind, stage))
}

fn check_target(kind: StageKind, stage: &Stage) -> Result<(), String> {
    let v = stage.target;
    match kind {
        StageKind::Rate if !(v.is_finite() && v >= 0.0) => {
            Err(format!("a stage's rate must be 0 or more, not {v}"))
        }
        StageKind::Concurrency
            if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= MAX_CONNECTIONS) =>
        {
            Err(format!(
                "a stage's connections must be a whole number from 0 to 100000, not {v}"
            ))
        }
        _ => Ok(()),
    }
}

/// The stages of a TOML file:
///
/// ```toml
/// [[stage]]
/// name = "ramp"        # optional
/// duration = "30s"
/// rate = 1000          # requests/s (open loop), or: concurrency = 64
/// ```
pub fn parse_stage_file(path: &Path) -> Result<(StageKind, Vec<Stage>), String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        stage: Vec<Entry>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        name: Option<String>,
        duration: String,
        rate: Option<f64>,
        concurrency: Option<f64>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: File = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut kind = None;
    let mut stages = Vec::with_capacity(file.stage.len());
    for (i, entry) in file.stage.into_iter().enumerate() {
        let at = || format!("{}: stage {}", path.display(), i + 1);
        let (this, target) = match (entry.rate, entry.concurrency) {
            (Some(rate), None) => (StageKind::Rate, rate),
            (None, Some(c)) => (StageKind::Concurrency, c),
            _ => return Err(format!("{}: give one of `rate` and `concurrency`", at())),
        };
        if kind.is_some_and(|k| k != this) {
            return Err(format!(
                "{}: every stage gives a rate, or every stage connections",
                at()
            ));
        }
        kind = Some(this);
        let stage = Stage {
            name: entry.name.unwrap_or_default(),
            duration: humantime::parse_duration(&entry.duration)
                .map_err(|e| format!("{}: duration: {e}", at()))?,
            target,
        };
        check_target(this, &stage).map_err(|e| format!("{}: {e}", at()))?;
        stages.push(stage);
    }
    let kind = kind.ok_or_else(|| format!("{}: no [[stage]]", path.display()))?;
    Ok((kind, stages))
}

/// A load profile: stages ramping linearly from one target to the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub kind: StageKind,
    pub stages: Vec<Stage>,
    /// Each stage's start, in seconds from the start of the phase.
    starts: Vec<f64>,
    /// Each stage's starting target (the one before's target; 0 for the first).
    from: Vec<f64>,
    /// Open loop: requests due before each stage.
    due_before: Vec<f64>,
}

impl Profile {
    /// A profile of `stages` (named `1`, `2`, … when not named); they must
    /// last more than zero seconds together.
    pub fn new(kind: StageKind, mut stages: Vec<Stage>) -> Result<Profile, String> {
        if stages.is_empty() {
            return Err("a profile needs a stage".into());
        }
        let mut starts = Vec::with_capacity(stages.len());
        let mut from = Vec::with_capacity(stages.len());
        let mut due_before = Vec::with_capacity(stages.len());
        let (mut t, mut target, mut due) = (0.0, 0.0, 0.0);
        for (i, stage) in stages.iter_mut().enumerate() {
            check_target(kind, stage)?;
            if stage.name.is_empty() {
                stage.name = (i + 1).to_string();
            }
            let d = stage.duration.as_secs_f64();
            starts.push(t);
            from.push(target);
            due_before.push(due);
            due += d * (target + stage.target) / 2.0;
            t += d;
            target = stage.target;
        }
        if t <= 0.0 {
            return Err("the stages last no time at all".into());
        }
        let mut names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err("two stages have the same name".into());
        }
        if stages.iter().all(|s| s.target == 0.0) {
            return Err("every stage's target is 0: nothing would be sent".into());
        }
        Ok(Profile {
            kind,
            stages,
            starts,
            from,
            due_before,
        })
    }

    /// How long the profile lasts.
    pub fn duration(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// The highest target.
    pub fn peak(&self) -> f64 {
        self.stages.iter().map(|s| s.target).fold(0.0, f64::max)
    }

    /// Stage `i`'s start (seconds from the start of the phase), starting
    /// and ending targets.
    pub fn span(&self, i: usize) -> (f64, f64, f64) {
        (self.starts[i], self.from[i], self.stages[i].target)
    }

    /// The stage at `t` seconds from the start (the last one after the end;
    /// a stage of zero duration is never current).
    pub fn stage_at(&self, t: f64) -> usize {
        let mut current = 0;
        for (i, &start) in self.starts.iter().enumerate() {
            if start <= t && (self.stages[i].duration > Duration::ZERO || i == 0) {
                current = i;
            }
        }
        current
    }

    /// The target at `t` seconds from the start (the last target after the end).
    pub fn target_at(&self, t: f64) -> f64 {
        let i = self.stage_at(t);
        let (start, from, to) = self.span(i);
        let d = self.stages[i].duration.as_secs_f64();
        if d == 0.0 || t >= start + d {
            return to;
        }
        from + (to - from) * ((t - start) / d).max(0.0)
    }

    /// Open loop: the requests due in the first `t` seconds, `∫₀ᵗ r`.
    pub fn due_by(&self, t: f64) -> f64 {
        let i = self.stage_at(t);
        let (start, from, to) = self.span(i);
        let d = self.stages[i].duration.as_secs_f64();
        let x = (t - start).clamp(0.0, d);
        let slope = if d > 0.0 { (to - from) / d } else { 0.0 };
        self.due_before[i] + from * x + slope * x * x / 2.0
    }

    /// Open loop: the requests the profile holds, at most `max_requests`:
    /// those due strictly before its end.
    pub fn planned_requests(&self, max_requests: u64) -> u64 {
        let total = self.due_by(self.duration().as_secs_f64());
        // Requests 0, 1, … are due while N(t) reaches them; N(end) itself is not due.
        let n = (total - 1e-6).ceil().max(0.0);
        (n as u64).min(max_requests)
    }

    /// Open loop: when request `i` is due, counted from the start: the
    /// first `t` with `N(t) = i`.
    pub fn offset(&self, i: u64) -> Duration {
        let n = i as f64;
        // The stage in which N reaches n: the last that has requests due
        // before its end beyond n.
        let mut stage = 0;
        for (k, &before) in self.due_before.iter().enumerate() {
            if before <= n {
                stage = k;
            }
        }
        // Skip stages that hold no requests (a zero rate, zero duration).
        while stage + 1 < self.stages.len() && self.due_before[stage + 1] <= n {
            stage += 1;
        }
        let (start, from, to) = self.span(stage);
        let d = self.stages[stage].duration.as_secs_f64();
        let left = n - self.due_before[stage];
        let x = if d == 0.0 || left <= 0.0 {
            0.0
        } else {
            let a = (to - from) / d / 2.0;
            if a.abs() < 1e-12 {
                if from > 0.0 {
                    left / from
                } else {
                    0.0
                }
            } else {
                // a x² + from x − left = 0, the root in [0, d].
                let disc = (from * from + 4.0 * a * left).max(0.0);
                (2.0 * left / (from + disc.sqrt())).clamp(0.0, d)
            }
        };
        Duration::from_secs_f64((start + x).max(0.0))
    }

    /// Closed loop: whether worker `k` (from 0) runs at `t`.
    pub fn active(&self, k: u64, t: f64) -> bool {
        self.target_at(t) >= k as f64 + 0.5
    }

    /// Closed loop: the first time at or after `t` when worker `k` runs;
    /// `None` if it never does again.
    pub fn next_active(&self, k: u64, t: f64) -> Option<f64> {
        let need = k as f64 + 0.5;
        if self.target_at(t) >= need {
            return Some(t);
        }
        for i in self.stage_at(t)..self.stages.len() {
            let (start, from, to) = self.span(i);
            let d = self.stages[i].duration.as_secs_f64();
            let end = start + d;
            if end < t {
                continue;
            }
            if d == 0.0 {
                if to >= need {
                    return Some(start.max(t));
                }
                continue;
            }
            if to >= need {
                // Rising through `need` within the stage (or already above it).
                let at = if from >= need {
                    start
                } else {
                    start + d * (need - from) / (to - from)
                };
                return Some(at.max(t));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn profile(kind: StageKind, stages: &[(f64, f64)]) -> Profile {
        Profile::new(
            kind,
            stages
                .iter()
                .map(|&(d, target)| Stage {
                    name: String::new(),
                    duration: secs(d),
                    target,
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn stages_from_the_command_line() {
        let (kind, s) = parse_stage("30s:1000/s").unwrap();
        assert_eq!(kind, StageKind::Rate);
        assert_eq!(
            (s.duration, s.target, s.name.as_str()),
            (secs(30.0), 1000.0, "")
        );
        let (kind, s) = parse_stage("hold=1m:64").unwrap();
        assert_eq!(kind, StageKind::Concurrency);
        assert_eq!(
            (s.duration, s.target, s.name.as_str()),
            (secs(60.0), 64.0, "hold")
        );
        assert_eq!(parse_stage("0s:1_000/s").unwrap().1.target, 1000.0);
        for bad in [
            "30s",
            "x:10",
            "30s:fast",
            "30s:-1/s",
            "30s:2.5",
            "=30s:1",
            "1s:200000",
        ] {
            assert!(parse_stage(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stages_from_a_file() {
        let path =
            std::env::temp_dir().join(format!("floodgate-load-stages-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[[stage]]\nname = \"ramp\"\nduration = \"5s\"\nrate = 100\n\n[[stage]]\nduration = \"10s\"\nrate = 100\n",
        )
        .unwrap();
        let (kind, stages) = parse_stage_file(&path).unwrap();
        assert_eq!(kind, StageKind::Rate);
        assert_eq!(stages.len(), 2);
        assert_eq!(
            (stages[0].name.as_str(), stages[1].duration),
            ("ramp", secs(10.0))
        );
        let p = Profile::new(kind, stages).unwrap();
        assert_eq!(p.stages[1].name, "2", "unnamed stages are numbered");
        for bad in [
            "[[stage]]\nduration = \"5s\"\n",
            "[[stage]]\nduration = \"5s\"\nrate = 1\nconcurrency = 2\n",
            "[[stage]]\nduration = \"5s\"\nrate = 1\n[[stage]]\nduration = \"5s\"\nconcurrency = 2\n",
            "[[stage]]\nduration = \"5s\"\nrate = 1\nspeed = 3\n",
            "stage = []\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(parse_stage_file(&path).is_err(), "{bad}");
        }
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn profiles_that_send_nothing_are_refused() {
        let none = |stages: Vec<Stage>| Profile::new(StageKind::Rate, stages).is_err();
        assert!(none(Vec::new()));
        let stage = |d: f64, target: f64, name: &str| Stage {
            name: name.into(),
            duration: secs(d),
            target,
        };
        assert!(none(vec![stage(0.0, 10.0, "")]));
        assert!(none(vec![stage(5.0, 0.0, "")]));
        assert!(none(vec![stage(5.0, 1.0, "a"), stage(5.0, 1.0, "a")]));
    }

    #[test]
    fn a_ramp_hold_and_ramp_down_schedules_its_requests() {
        // 0 → 1000/s over 5 s, hold 5 s, back to 0 over 5 s: 2,500 + 5,000 + 2,500.
        let p = profile(StageKind::Rate, &[(5.0, 1000.0), (5.0, 1000.0), (5.0, 0.0)]);
        assert_eq!(p.duration(), secs(15.0));
        assert_eq!(p.peak(), 1000.0);
        assert_eq!(p.planned_requests(u64::MAX), 10_000);
        assert_eq!(p.planned_requests(7), 7);
        assert!((p.due_by(1.0) - 100.0).abs() < 1e-9);
        assert!((p.due_by(5.0) - 2_500.0).abs() < 1e-9);
        assert!((p.due_by(12.0) - 9_100.0).abs() < 1e-9);
        assert_eq!(p.target_at(2.5), 500.0);
        assert_eq!(p.target_at(7.0), 1000.0);
        assert_eq!(p.target_at(14.0), 200.0);
        assert_eq!(p.target_at(99.0), 0.0);
        // Request i is due when N(t) = i, and the offsets never decrease.
        let mut last = Duration::ZERO;
        for i in 0..10_000u64 {
            let at = p.offset(i);
            assert!(at >= last, "{i}");
            assert!(at < p.duration(), "{i} due at {at:?}");
            assert!((p.due_by(at.as_secs_f64()) - i as f64).abs() < 1e-3, "{i}");
            last = at;
        }
        assert_eq!(p.offset(0), Duration::ZERO);
        assert!((p.offset(2_500).as_secs_f64() - 5.0).abs() < 1e-6);
        assert!((p.offset(100).as_secs_f64() - 1.0).abs() < 1e-6);
        assert_eq!(
            (p.stage_at(0.0), p.stage_at(5.0), p.stage_at(14.9)),
            (0, 1, 2)
        );
    }

    #[test]
    fn jumps_and_pauses() {
        // Jump to 100/s, hold 1 s, nothing for 1 s, 100/s again for 1 s.
        let p = profile(
            StageKind::Rate,
            &[
                (0.0, 100.0),
                (1.0, 100.0),
                (0.0, 0.0),
                (1.0, 0.0),
                (0.0, 100.0),
                (1.0, 100.0),
            ],
        );
        assert_eq!(p.planned_requests(u64::MAX), 200);
        assert!((p.offset(99).as_secs_f64() - 0.99).abs() < 1e-9);
        assert!(
            (p.offset(100).as_secs_f64() - 2.0).abs() < 1e-9,
            "{:?}",
            p.offset(100)
        );
        assert!((p.offset(150).as_secs_f64() - 2.5).abs() < 1e-9);
        assert_eq!(p.stage_at(0.0), 1);
        assert_eq!(p.stage_at(1.5), 3);
    }

    #[test]
    fn closed_loop_workers_follow_the_connections() {
        // 0 → 10 connections over 10 s, hold 5 s, down to 2 at once.
        let p = profile(
            StageKind::Concurrency,
            &[(10.0, 10.0), (5.0, 10.0), (0.0, 2.0), (5.0, 2.0)],
        );
        assert!(!p.active(0, 0.0));
        assert!(p.active(0, 0.5));
        assert!(!p.active(9, 9.4) && p.active(9, 9.5));
        assert!(p.active(9, 14.9) && !p.active(9, 15.0) && p.active(1, 19.0));
        assert_eq!(p.next_active(0, 0.0), Some(0.5));
        assert_eq!(p.next_active(4, 1.0), Some(4.5));
        assert_eq!(p.next_active(4, 12.0), Some(12.0));
        assert_eq!(p.next_active(5, 16.0), None, "only 2 after 15 s");
        assert_eq!(p.next_active(1, 16.0), Some(16.0));
    }
}
