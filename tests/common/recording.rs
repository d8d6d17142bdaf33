//! A [`StepHost`] that keeps what a step did, for tests of the sandbox itself.

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use stepwise::runtime::{HostRefusal, LogLevel, StepContext, StepHost, StepLimits, StepRequest};

/// Records what a step did.
#[derive(Default)]
pub struct RecordingHost {
    pub progress: Mutex<Vec<f32>>,
    /// The message of each progress report, in order.
    pub progress_messages: Mutex<Vec<String>>,
    pub logs: Mutex<Vec<(LogLevel, String)>>,
    pub checkpoint: Mutex<Option<Vec<u8>>>,
    pub artifacts: Mutex<HashMap<String, Vec<u8>>>,
    pub secrets: HashMap<String, String>,
}

impl StepHost for RecordingHost {
    fn progress(&self, percent: f32, message: &str) {
        self.progress.lock().unwrap().push(percent);
        self.progress_messages
            .lock()
            .unwrap()
            .push(message.to_string());
    }
    fn log(&self, level: LogLevel, message: &str) {
        self.logs.lock().unwrap().push((level, message.to_string()));
    }
    fn checkpoint_save(&self, data: Vec<u8>) -> BoxFuture<'static, Result<(), String>> {
        *self.checkpoint.lock().unwrap() = Some(data);
        async { Ok(()) }.boxed()
    }
    fn checkpoint_load(&self) -> BoxFuture<'static, Option<Vec<u8>>> {
        let data = self.checkpoint.lock().unwrap().clone();
        async move { data }.boxed()
    }
    fn secret(&self, name: &str) -> Option<String> {
        self.secrets.get(name).cloned()
    }
    fn artifact_write(
        &self,
        name: String,
        data: Vec<u8>,
        append: bool,
    ) -> BoxFuture<'static, Result<(), HostRefusal>> {
        let mut artifacts = self.artifacts.lock().unwrap();
        let entry = artifacts.entry(name).or_default();
        if !append {
            entry.clear();
        }
        entry.extend(data);
        async { Ok(()) }.boxed()
    }
}

/// A request for a step of task 1, run 1, step 1 with these settings and limits.
pub fn request(settings: Value, seconds: f64, memory: u64, attempt: u32) -> StepRequest {
    StepRequest {
        settings: settings.to_string(),
        limits: StepLimits {
            max_execution_time: Duration::from_secs_f64(seconds),
            max_memory: memory,
        },
        context: StepContext {
            task_id: 1,
            run_id: 1,
            step_id: 1,
            attempt,
            details: json!({"shop": "main"}),
        },
    }
}
