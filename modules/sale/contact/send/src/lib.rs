//! `sale/contact/send`: renders a templated mail for each recipient and hands it to the
//! mail relay through an outbox artifact (`outbox.jsonl`, one JSON message per line),
//! the way a shop's newsletter or "your order shipped" task does. Steps have no network:
//! a relay with the `mail_api_key` secret delivers the outbox.
//!
//! ```json
//! {
//!   "subject": "Your order {{order}} has shipped",
//!   "template": "Hello {{name}},\nyour order {{order}} is on its way.",
//!   "recipients": [
//!     {"email": "ann@example.com", "name": "Ann", "order": "A-1001"},
//!     {"email": "bob@example.com", "name": "Bob", "order": "A-1002"}
//!   ]
//! }
//! ```
//!
//! Each recipient's fields (including `email`) are the template's variables. A checkpoint
//! after each message keeps a retry from mailing anyone twice.

mod template;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use stepwise_guest::{
    ErrorContext, Progress, StepError, artifact, checkpoint, context, ensure, ensure_permanent,
    export_step, require_secret,
};

/// The secret the task must carry.
const API_KEY_SECRET: &str = "mail_api_key";

/// Settings of `sale/contact/send`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Subject template (one line).
    subject: String,
    /// Body template.
    template: String,
    /// Who gets a message; each needs `email`, any other field is a template variable.
    recipients: Vec<Recipient>,
    /// Sender address written into each message, if the relay should not use its own.
    from: Option<String>,
    /// Name of the outbox artifact.
    #[serde(default = "default_outbox")]
    outbox: String,
}

fn default_outbox() -> String {
    "outbox.jsonl".into()
}

/// One recipient: `email` plus any template variables.
#[derive(Deserialize)]
struct Recipient {
    email: String,
    #[serde(flatten)]
    vars: Map<String, Value>,
}

/// One line of the outbox.
#[derive(Serialize)]
struct Message<'a> {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    to: &'a str,
    subject: String,
    body: String,
}

/// Saved after each message.
#[derive(Serialize, Deserialize, Default)]
struct Checkpoint {
    /// Recipients whose message is in the outbox.
    sent: usize,
}

/// What the step returns. Never the key itself.
#[derive(Serialize)]
struct Output {
    /// Messages in the outbox, including those an earlier attempt wrote.
    sent: usize,
    /// Messages an earlier attempt had written (0 on a fresh start).
    resumed_from: usize,
    /// The outbox artifact's name.
    outbox: String,
    /// First 8 hex digits of the key's SHA-256: tells which key was used without
    /// revealing it.
    key_fingerprint: String,
}

fn send(settings: Settings) -> Result<Output, StepError> {
    let key = require_secret(API_KEY_SECRET)?;
    // Checks of the settings: the same answer on every attempt, so permanent.
    ensure_permanent!(!settings.recipients.is_empty(), "no recipients");
    ensure_permanent!(
        !settings.subject.contains(['\r', '\n']),
        "the subject template must be one line"
    );
    for (i, recipient) in settings.recipients.iter().enumerate() {
        check_address(&recipient.email)
            .context(format!("recipient {}", i + 1))
            .map_err(StepError::into_permanent)?;
    }

    let ctx = context();
    let resumed_from = checkpoint::load::<Checkpoint>()?.unwrap_or_default().sent;
    ensure_permanent!(
        resumed_from <= settings.recipients.len(),
        "the checkpoint says {resumed_from} messages are sent but there are only {} recipients",
        settings.recipients.len()
    );
    if resumed_from == 0 {
        artifact::write(&settings.outbox, "")?;
    }
    let progress = Progress::new(settings.recipients.len() as u64);
    if resumed_from > 0 {
        progress.set(
            resumed_from as u64,
            format_args!("{resumed_from} already sent"),
        );
    }
    for (i, recipient) in settings.recipients.iter().enumerate().skip(resumed_from) {
        let mut vars = recipient.vars.clone();
        vars.insert("email".into(), Value::String(recipient.email.clone()));
        let which = || format!("recipient {} ({})", i + 1, recipient.email);
        let subject = template::render(&settings.subject, &vars)
            .context(which())
            .map_err(StepError::into_permanent)?;
        ensure_permanent!(
            !subject.contains(['\r', '\n']),
            "{}: the subject has a line break after filling in variables",
            which()
        );
        let message = Message {
            id: format!("{}-{}-{}", ctx.run_id, ctx.step_id, i + 1),
            from: settings.from.as_deref(),
            to: &recipient.email,
            subject,
            body: template::render(&settings.template, &vars)
                .context(which())
                .map_err(StepError::into_permanent)?,
        };
        let mut line = serde_json::to_string(&message)?;
        line.push('\n');
        artifact::append(&settings.outbox, line)?;
        checkpoint::save(&Checkpoint { sent: i + 1 })?;
        progress.advance(format_args!("queued mail to {}", recipient.email));
    }
    Ok(Output {
        sent: settings.recipients.len(),
        resumed_from,
        outbox: settings.outbox,
        key_fingerprint: fingerprint(&key),
    })
}

/// A plausible single address: `local@domain`, no spaces or line breaks (which would let
/// a recipient inject mail headers).
fn check_address(email: &str) -> Result<(), StepError> {
    let valid = email
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.contains(|c: char| c.is_whitespace() || c.is_control() || c == ',');
    ensure!(valid, "`{email}` is not an email address");
    Ok(())
}

fn fingerprint(key: &str) -> String {
    Sha256::digest(key.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

export_step!(send);
// Title, description and the settings' JSON Schema, for the dashboard's form
// and the server's checks at task create (see metadata.json).
stepwise_guest::metadata!(include_str!("../metadata.json"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_with_line_breaks_are_refused() {
        assert!(check_address("ann@example.com").is_ok());
        assert!(check_address("ann@example.com\nBcc: x@y.z").is_err());
        assert!(check_address("ann.example.com").is_err());
    }

    #[test]
    fn the_fingerprint_is_short_and_stable() {
        assert_eq!(fingerprint("secret"), "2bb80d53");
    }
}
