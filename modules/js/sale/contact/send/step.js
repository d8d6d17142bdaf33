// `sale/contact/send` in JavaScript: renders a templated mail for each recipient and hands
// it to the mail relay through an outbox artifact (`outbox.jsonl`, one JSON message per
// line). The same step as the Rust example in modules/sale/contact/send, with the same
// settings and output:
//
//   {"subject": "Your order {{order}} has shipped",
//    "template": "Hello {{name}},\nyour order {{order}} is on its way.",
//    "recipients": [{"email": "ann@example.com", "name": "Ann", "order": "A-1001"}]}
//
// Each recipient's fields (including `email`) are the template's variables. A checkpoint
// after each message keeps a retry from mailing anyone twice.

import {
  PermanentError, Progress, StepError, artifact, checkpoint, context, requireSecret, step,
} from 'stepwise';
import { sha256 } from './sha256.js';
import { render } from './template.js';

/** The secret the task must carry. */
const API_KEY_SECRET = 'mail_api_key';

const settings = {
  subject: 'string',
  template: 'string',
  recipients: ['object'],
  from: 'string?',
  outbox: { type: 'string', default: 'outbox.jsonl' },
  // For trying retries: fail (transiently) once this many messages are in the outbox.
  fail_after: 'integer?',
};

export const run = step(settings, (s) => {
  const key = requireSecret(API_KEY_SECRET);
  // Checks of the settings: the same answer on every attempt, so permanent.
  if (s.recipients.length === 0) throw new PermanentError('no recipients');
  if (/[\r\n]/.test(s.subject)) throw new PermanentError('the subject template must be one line');
  s.recipients.forEach((recipient, i) => {
    const problem = checkAddress(recipient.email);
    if (problem) throw new PermanentError(`recipient ${i + 1}: ${problem}`);
  });

  const ctx = context();
  const resumedFrom = (checkpoint.load() ?? { sent: 0 }).sent;
  if (resumedFrom > s.recipients.length) {
    throw new PermanentError(
      `the checkpoint says ${resumedFrom} messages are sent but there are only ${s.recipients.length} recipients`,
    );
  }
  if (resumedFrom === 0) artifact.write(s.outbox, '');
  const progress = new Progress(s.recipients.length);
  if (resumedFrom > 0) progress.set(resumedFrom, `${resumedFrom} already sent`);
  for (let i = resumedFrom; i < s.recipients.length; i++) {
    if (s.fail_after !== null && i >= s.fail_after && ctx.attempt === 1) {
      throw new StepError(`failed on purpose after ${i} messages`);
    }
    const recipient = s.recipients[i];
    const which = `recipient ${i + 1} (${recipient.email})`;
    const subject = renderFor(s.subject, recipient, which);
    if (/[\r\n]/.test(subject)) {
      throw new PermanentError(`${which}: the subject has a line break after filling in variables`);
    }
    const message = {
      id: `${ctx.runId}-${ctx.stepId}-${i + 1}`,
      ...(s.from == null ? {} : { from: s.from }),
      to: recipient.email,
      subject,
      body: renderFor(s.template, recipient, which),
    };
    artifact.append(s.outbox, `${JSON.stringify(message)}\n`);
    checkpoint.save({ sent: i + 1 });
    progress.advance(`queued mail to ${recipient.email}`);
  }
  return {
    sent: s.recipients.length,
    resumed_from: resumedFrom,
    outbox: s.outbox,
    key_fingerprint: sha256(key).slice(0, 8),
  };
});

function renderFor(template, recipient, which) {
  try {
    return render(template, recipient);
  } catch (e) {
    throw new PermanentError(`${which}: ${e.message}`);
  }
}

/** A plausible single address: no spaces or line breaks (which would inject headers). */
function checkAddress(email) {
  const at = typeof email === 'string' ? email.indexOf('@') : -1;
  const valid = at > 0 && email.slice(at + 1).includes('.') && !/[\s,\u0000-\u001f]/.test(email);
  return valid ? undefined : `\`${email}\` is not an email address`;
}
