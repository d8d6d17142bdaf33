//! How much of a run each step is, for the progress bar and its ETA: the
//! step's average duration in the task's recent completed runs (the same
//! step, or else the same module), or else what its module took lately on
//! this node, so an instant step after a long one does not take half the
//! bar. Without any history every step weighs the same.

use crate::store::{PlannedStep, Run, RunStatus, StepRunStatus};
use parking_lot::Mutex;
use std::collections::HashMap;

/// Completed runs of the task whose step durations weigh its steps.
pub(super) const PAST_RUNS: i64 = 5;

/// A step that took no measurable time still fills a sliver of the bar.
const SHORTEST: f64 = 0.001;

/// What each module's completed steps took lately on this node: for a task
/// whose own history does not know a step (its first run, a step added
/// since), the module's steps in other tasks are the next best guess.
#[derive(Debug, Default)]
pub(crate) struct ModuleDurations(Mutex<HashMap<String, f64>>);

impl ModuleDurations {
    /// Weight of the newest duration in the running average: recent runs
    /// count most, one odd run does not take over.
    const NEWEST: f64 = 0.3;

    pub fn record(&self, module: &str, seconds: f64) {
        let seconds = seconds.max(SHORTEST);
        let mut averages = self.0.lock();
        match averages.get_mut(module) {
            Some(average) => *average += Self::NEWEST * (seconds - *average),
            None => {
                averages.insert(module.to_string(), seconds);
            }
        }
    }

    pub fn get(&self, module: &str) -> Option<f64> {
        self.0.lock().get(module).copied()
    }
}

/// The weights of `steps` (the counted ones, in order), from the steps of
/// the `past` runs (completed ones only) that ran the same step id, or else
/// the same module, or else from what the module took lately on this node
/// (`modules`). A step with no history weighs the average of those with
/// one; when none has history, all weigh 1.
pub(super) fn from_history(
    steps: &[&PlannedStep],
    past: &[Run],
    modules: &ModuleDurations,
) -> Vec<f64> {
    let mut by_step: HashMap<i64, Vec<f64>> = HashMap::new();
    let mut by_module: HashMap<&str, Vec<f64>> = HashMap::new();
    for step_run in past
        .iter()
        .filter(|run| run.status == RunStatus::Completed)
        .flat_map(|run| &run.steps)
        .filter(|step_run| step_run.status == StepRunStatus::Completed)
    {
        let (Some(started), Some(finished)) = (step_run.started_at, step_run.finished_at) else {
            continue;
        };
        let seconds =
            ((finished - started).num_microseconds().unwrap_or(0) as f64 / 1e6).max(SHORTEST);
        by_step.entry(step_run.step_id).or_default().push(seconds);
        by_module
            .entry(step_run.controller.as_str())
            .or_default()
            .push(seconds);
    }
    let average = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let known: Vec<Option<f64>> = steps
        .iter()
        .map(|planned| {
            by_step
                .get(&planned.step.id)
                .or_else(|| by_module.get(planned.step.controller.as_str()))
                .map(average)
                .or_else(|| modules.get(&planned.step.controller))
        })
        .collect();
    let with_history: Vec<f64> = known.iter().flatten().copied().collect();
    if with_history.is_empty() {
        return vec![1.0; steps.len()];
    }
    let fallback = with_history.iter().sum::<f64>() / with_history.len() as f64;
    known.into_iter().map(|w| w.unwrap_or(fallback)).collect()
}
