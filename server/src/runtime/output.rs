//! stdout and stderr of a guest, turned into step log lines with a size cap.
//!
//! A step that prints in a loop must not fill the server's memory or its log
//! table, and it must not fail because its output was cut: writes past the cap
//! succeed and are dropped, and one line says how much was dropped.

use super::host::{LogLevel, StepHost};
use super::panic::PanicWatch;
use parking_lot::Mutex;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line passed on; longer lines are split.
const MAX_LINE: usize = 4096;

struct Shared {
    host: Arc<dyn StepHost>,
    /// Bytes still allowed, across stdout and stderr.
    budget: usize,
    dropped: u64,
}

/// Output budget shared by a step's stdout and stderr.
#[derive(Clone)]
pub struct CapturedOutput {
    shared: Arc<Mutex<Shared>>,
}

impl CapturedOutput {
    pub fn new(host: Arc<dyn StepHost>, cap_bytes: usize) -> Self {
        CapturedOutput {
            shared: Arc::new(Mutex::new(Shared {
                host,
                budget: cap_bytes,
                dropped: 0,
            })),
        }
    }

    /// A stream for one of the guest's outputs, logged at `level`; its lines
    /// are also shown to `panics` (for stderr, where std's panic hook writes).
    pub fn stream(&self, level: LogLevel, panics: Option<PanicWatch>) -> GuestOutput {
        GuestOutput {
            shared: self.shared.clone(),
            level,
            partial: Arc::new(Mutex::new(Vec::new())),
            panics,
        }
    }

    /// Say how much output was dropped, once the step is over.
    pub fn finish(&self) {
        let shared = self.shared.lock();
        if shared.dropped > 0 {
            shared.host.log(
                LogLevel::Warn,
                &format!(
                    "output truncated: {} more bytes of stdout/stderr were dropped",
                    shared.dropped
                ),
            );
        }
    }
}

/// One of the guest's output streams (stdout or stderr).
#[derive(Clone)]
pub struct GuestOutput {
    shared: Arc<Mutex<Shared>>,
    level: LogLevel,
    partial: Arc<Mutex<Vec<u8>>>,
    panics: Option<PanicWatch>,
}

impl GuestOutput {
    /// Log any unterminated last line.
    pub fn flush_partial(&self) {
        let mut partial = self.partial.lock();
        if !partial.is_empty() {
            let shared = self.shared.lock();
            self.emit(&shared, &partial);
            partial.clear();
        }
    }

    fn emit(&self, shared: &Shared, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        if let Some(panics) = &self.panics {
            panics.stderr_line(&line);
        }
        shared.host.log(self.level, &line);
    }

    fn accept(&self, buf: &[u8]) {
        let mut shared = self.shared.lock();
        let take = buf.len().min(shared.budget);
        shared.budget -= take;
        shared.dropped += (buf.len() - take) as u64;
        let mut partial = self.partial.lock();
        for &byte in &buf[..take] {
            if byte == b'\n' || partial.len() >= MAX_LINE {
                self.emit(&shared, &partial);
                partial.clear();
                if byte == b'\n' {
                    continue;
                }
            }
            partial.push(byte);
        }
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.accept(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}
