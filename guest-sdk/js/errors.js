// The errors a step throws to fail.

/** The step failed with this message; the task's retry policy applies unless `permanent`. */
export class StepError extends Error {
  constructor(message, { permanent = false } = {}) {
    super(message);
    this.name = 'StepError';
    this.permanent = permanent;
  }
}

/** Trying again cannot help (bad settings, a missing secret): the task is not retried. */
export class PermanentError extends StepError {
  constructor(message) {
    super(message, { permanent: true });
    this.name = 'PermanentError';
  }
}
