//! Sends completion hooks: a loop claims the deliveries that are due (the
//! run ends wrote them, see [`crate::store::Store::claim_hooks`]), POSTs
//! each, signed, to its URL, and records the try; a failed try (no answer,
//! or not 2xx) is tried again after a growing wait, and given up after
//! [`hooks::MAX_ATTEMPTS`] tries. A claim holds its deliveries for longer
//! than a try can take, so a node that dies while sending leaves them to
//! be claimed again (a receiver may then see a delivery twice: it tells
//! them apart by `X-Stepwise-Delivery`).

use super::Inner;
use crate::hooks::{self, HookSettings};
use crate::store::{DueHook, HookAttempt, HookNext};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Deliveries claimed (and sent at once) per pass.
const CLAIM_BATCH: i64 = 16;

/// How long a claim holds its deliveries beyond a try's timeout.
const CLAIM_MARGIN: Duration = Duration::from_secs(30);

/// The longest pause between two passes (shorter when retries are).
const MAX_POLL: Duration = Duration::from_secs(1);

/// Claim and send due deliveries until stopped.
pub(super) async fn delivery_loop(inner: Arc<Inner>, stop: CancellationToken) {
    let settings = &inner.config.hooks;
    let client = match client(settings) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!("completion hooks are off: no HTTP client ({error:#})");
            return;
        }
    };
    let poll = settings
        .retry_base
        .clamp(Duration::from_millis(10), MAX_POLL);
    loop {
        let sent = match deliver_due(&inner, &client).await {
            Ok(sent) => sent,
            Err(error) => {
                tracing::warn!("sending completion hooks failed: {error:#}");
                0
            }
        };
        if sent as i64 == CLAIM_BATCH {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// No redirects: a redirect could lead to a host the settings refuse.
fn client(settings: &HookSettings) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Stepwise/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// One pass: claim what is due and send it all at once. Returns how many.
async fn deliver_due(inner: &Arc<Inner>, client: &reqwest::Client) -> anyhow::Result<usize> {
    let now = Utc::now();
    let lease_until = now + inner.config.hooks.timeout + CLAIM_MARGIN;
    let due = inner
        .store
        .claim_hooks(&inner.config.node_id, now, lease_until, CLAIM_BATCH)
        .await?;
    let count = due.len();
    futures::future::join_all(due.into_iter().map(|hook| deliver(inner, client, hook))).await;
    Ok(count)
}

/// One try of one delivery, recorded.
async fn deliver(inner: &Arc<Inner>, client: &reqwest::Client, hook: DueHook) {
    let settings = &inner.config.hooks;
    let started_at = Utc::now();
    let clock = Instant::now();
    let (status_code, error, next) = match settings.check_url(&hook.url) {
        // The settings changed since the task was given its URL: trying
        // again would not help.
        Err(refused) => (None, Some(format!("not sent: {refused}")), HookNext::GiveUp),
        Ok(_) => {
            let (status_code, error) = send(inner, client, &hook, started_at).await;
            let next = match (&error, settings.retry_delay(hook.round_attempt)) {
                (None, _) => HookNext::Delivered,
                (Some(_), Some(wait)) => HookNext::RetryAt(Utc::now() + wait),
                (Some(_), None) => HookNext::GiveUp,
            };
            (status_code, error, next)
        }
    };
    let delivered = error.is_none();
    let attempt = HookAttempt {
        attempt: hook.attempt,
        node: inner.config.node_id.clone(),
        started_at,
        duration_ms: clock.elapsed().as_millis().try_into().unwrap_or(i64::MAX),
        status_code,
        error,
    };
    if !delivered {
        tracing::info!(
            delivery = hook.delivery_id,
            task_id = hook.task_id,
            attempt = hook.attempt,
            "completion hook failed: {}",
            attempt.error.as_deref().unwrap_or_default()
        );
    }
    if let Err(error) = inner
        .store
        .record_hook_attempt(hook.delivery_id, &attempt, next, Utc::now())
        .await
    {
        // The claim runs out and the delivery is tried again.
        tracing::warn!(
            delivery = hook.delivery_id,
            "recording a completion hook's try failed: {error:#}"
        );
    }
}

/// POST the signed body; the status code (if an answer came) and an error
/// (none for a 2xx answer).
async fn send(
    inner: &Inner,
    client: &reqwest::Client,
    hook: &DueHook,
    now: DateTime<Utc>,
) -> (Option<i64>, Option<String>) {
    let body = body(hook, now);
    let signature = hooks::sign(inner.secrets.hook_key(), &body);
    let answer = client
        .post(&hook.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Stepwise-Event", "run.ended")
        .header("X-Stepwise-Delivery", hook.delivery_id.to_string())
        .header("X-Stepwise-Attempt", hook.attempt.to_string())
        .header("X-Stepwise-Timestamp", now.timestamp().to_string())
        .header(hooks::SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await;
    match answer {
        Ok(response) => {
            let status = response.status();
            let code = Some(i64::from(status.as_u16()));
            if status.is_success() {
                (code, None)
            } else {
                (code, Some(format!("the receiver answered {status}")))
            }
        }
        Err(error) => (None, Some(describe(&error))),
    }
}

/// What went wrong, in words a user can act on.
fn describe(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "no answer within the timeout"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail = format!("{detail}: {cause}");
        source = cause.source();
    }
    format!("{what} ({detail})")
}

/// The JSON a receiver gets; `sent_at` (inside the signed bytes) lets it
/// refuse old replays.
fn body(hook: &DueHook, now: DateTime<Utc>) -> Vec<u8> {
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    let run = &hook.run;
    json!({
        "event": "run.ended",
        "delivery": { "id": hook.delivery_id, "attempt": hook.attempt },
        "task": { "id": hook.task_id, "name": hook.task_name, "code": hook.task_code },
        "run": {
            "id": run.id,
            "attempt": run.attempt,
            "status": run.status,
            "trigger": run.trigger,
            "node": run.node,
            "rescued": run.rescued,
            "message": run.message,
            "started_at": at(run.started_at),
            "finished_at": run.finished_at.map(at),
        },
        "sent_at": at(now),
    })
    .to_string()
    .into_bytes()
}
