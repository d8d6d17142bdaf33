//! A task's progress bar: its steps' progress folded into one percent, and an
//! honest ETA from the run's rate so far (or past runs before there is one).

use std::time::Duration;

/// Progress of one run across its steps. Steps that are skipped (disabled, or
/// not part of a single-step run) do not count; reused steps count as done.
#[derive(Debug, Clone)]
pub struct RunProgress {
    counted_steps: usize,
    done_steps: usize,
    current: f64,
    highest: f64,
}

impl RunProgress {
    pub fn new(counted_steps: usize, done_steps: usize) -> Self {
        let mut progress = RunProgress {
            counted_steps,
            done_steps,
            current: 0.0,
            highest: 0.0,
        };
        progress.highest = progress.raw();
        progress
    }

    fn raw(&self) -> f64 {
        if self.counted_steps == 0 {
            return 100.0;
        }
        let done = self.done_steps as f64 * 100.0 + self.current.clamp(0.0, 100.0);
        (done / self.counted_steps as f64).min(100.0)
    }

    /// The current step reports `percent`; returns the task percent, which
    /// never goes backwards within a run.
    pub fn step_progress(&mut self, percent: f64) -> f64 {
        self.current = percent;
        self.highest = self.highest.max(self.raw());
        self.highest
    }

    /// The current step ended (whatever its result); the next starts at 0.
    pub fn step_done(&mut self) -> f64 {
        self.done_steps += 1;
        self.current = 0.0;
        self.highest = self.highest.max(self.raw());
        self.highest
    }

    pub fn percent(&self) -> f64 {
        self.highest
    }
}

/// Seconds left: from the rate so far once there is a measurable rate,
/// otherwise from the average of past runs minus the time spent.
pub fn eta_seconds(percent: f64, elapsed: Duration, past_runs: &[f64]) -> Option<f64> {
    let elapsed = elapsed.as_secs_f64();
    if percent >= 100.0 {
        return Some(0.0);
    }
    let from_history = (!past_runs.is_empty())
        .then(|| past_runs.iter().sum::<f64>() / past_runs.len() as f64)
        .map(|average| (average - elapsed).max(0.0));
    if percent >= 1.0 && elapsed >= 0.2 {
        let from_rate = elapsed * (100.0 - percent) / percent;
        // Early on the rate is noisy: lean on history while under 10 %.
        return Some(match from_history {
            Some(history) if percent < 10.0 => (history + from_rate) / 2.0,
            _ => from_rate,
        });
    }
    from_history
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_fold_into_one_percent_that_never_goes_back() {
        let mut p = RunProgress::new(4, 1);
        assert_eq!(p.percent(), 25.0);
        assert_eq!(p.step_progress(50.0), 37.5);
        assert_eq!(p.step_progress(20.0), 37.5);
        assert_eq!(p.step_done(), 50.0);
        assert_eq!(RunProgress::new(0, 0).percent(), 100.0);
    }

    #[test]
    fn eta_from_rate_and_history() {
        assert_eq!(eta_seconds(50.0, Duration::from_secs(10), &[]), Some(10.0));
        assert_eq!(eta_seconds(0.0, Duration::from_secs(1), &[]), None);
        assert_eq!(
            eta_seconds(0.0, Duration::from_secs(1), &[11.0, 9.0]),
            Some(9.0)
        );
        assert_eq!(eta_seconds(100.0, Duration::from_secs(1), &[]), Some(0.0));
    }
}
