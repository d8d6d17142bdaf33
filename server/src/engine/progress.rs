//! A task's progress bar: its steps' progress folded into one percent, and an
//! honest ETA from the run's rate so far (or past runs before there is one).

use std::collections::VecDeque;
use std::time::Duration;

/// Progress of one run across its steps. Steps that are skipped (disabled, or
/// not part of a single-step run) do not count; reused steps count as done.
/// Each counted step fills a share of the bar proportional to its weight
/// (see [`super::step_weights`]): a step that took most of past runs fills
/// most of the bar, so the rate the ETA is drawn from stays steady across
/// steps of different lengths.
#[derive(Debug, Clone)]
pub struct RunProgress {
    /// Weight of the steps already done (reused ones, then finished ones).
    done_weight: f64,
    /// Weights of the steps still to run, in order; the first is the current.
    to_run: VecDeque<f64>,
    total_weight: f64,
    current: f64,
    highest: f64,
}

impl RunProgress {
    /// Every counted step weighs the same.
    pub fn new(counted_steps: usize, done_steps: usize) -> Self {
        let done = done_steps.min(counted_steps);
        Self::weighted(done as f64, vec![1.0; counted_steps - done])
    }

    /// `done_weight`: the steps already done; `to_run`: the weights of the
    /// steps to run, in order.
    pub fn weighted(done_weight: f64, to_run: Vec<f64>) -> Self {
        let total_weight = done_weight + to_run.iter().sum::<f64>();
        let mut progress = RunProgress {
            done_weight,
            to_run: to_run.into(),
            total_weight,
            current: 0.0,
            highest: 0.0,
        };
        progress.highest = progress.raw();
        progress
    }

    fn raw(&self) -> f64 {
        // With every step done the bar is full, exactly: the weights summed
        // in another order (or 100 × w / w) can fall a hair short, and a
        // finished task must not read 99.99999999999999.
        if self.total_weight <= 0.0 || self.to_run.is_empty() {
            return 100.0;
        }
        let current_weight = self.to_run.front().copied().unwrap_or(0.0);
        let done = self.done_weight + current_weight * self.current.clamp(0.0, 100.0) / 100.0;
        (100.0 * done / self.total_weight).min(100.0)
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
        self.done_weight += self.to_run.pop_front().unwrap_or(0.0);
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
    fn a_run_whose_steps_are_all_done_is_at_exactly_100() {
        // 100 × 0.4123 / 0.4123 is 99.99999999999999 in floating point, and
        // 0.1 + 0.1 + 1.3 summed from 0.1 differs from 0.1 + (0.1 + 1.3).
        let mut one = RunProgress::weighted(0.0, vec![0.4123]);
        assert_eq!(one.step_done(), 100.0);
        let mut resumed = RunProgress::weighted(0.1, vec![0.1, 1.3]);
        resumed.step_done();
        assert_eq!(resumed.step_done(), 100.0);
    }

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
    fn a_step_fills_the_bar_by_its_weight() {
        // A long step then an instant one: halfway through the first is
        // about halfway through the run, not a quarter of it.
        let mut p = RunProgress::weighted(0.0, vec![88.0, 0.01]);
        assert!((p.step_progress(50.0) - 50.0).abs() < 0.1);
        assert!((p.step_done() - 100.0).abs() < 0.1);
        // Reused steps count as done by their weight.
        let p = RunProgress::weighted(3.0, vec![1.0]);
        assert_eq!(p.percent(), 75.0);
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
