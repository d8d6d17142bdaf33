declare module 'stepwise:step/host@0.1.0' {
  /**
   * Report progress: `percent` in 0..=100 (clamped), and a short message.
   */
  export function progress(percent: number, message: string): void;
  /**
   * Write a line to the step's log.
   */
  export function log(level: Level, message: string): void;
  /**
   * Save a checkpoint; a retry of this step can load it. Replaces the previous one.
   */
  export function checkpointSave(data: Uint8Array): void;
  /**
   * Load the checkpoint saved by an earlier attempt of this step, if any.
   */
  export function checkpointLoad(): Uint8Array | undefined;
  /**
   * Read a secret of the task by name; `none` when the task has no such secret.
   */
  export function secret(name: string): string | undefined;
  /**
   * Write (or append to) a named artifact of this run, e.g. a backup dump.
   */
  export function artifactWrite(name: string, data: Uint8Array, append: boolean): void;
  /**
   * Ids, attempt and task details.
   */
  export function context(): StepContext;
  /**
   * Fuel and time left.
   */
  export function remaining(): Budget;
  /**
   * Mark the error this step is about to return as permanent: trying again
   * cannot help (invalid settings, a missing secret), so the task is not
   * retried. No effect if the step then succeeds or a limit stops it.
   */
  export function markPermanent(): void;
  /**
   * Severity of a log line.
   * # Variants
   * 
   * ## `"trace"`
   * 
   * ## `"debug"`
   * 
   * ## `"info"`
   * 
   * ## `"warn"`
   * 
   * ## `"error"`
   */
  export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
  /**
   * Where the step runs: ids, which attempt this is and the task's details.
   */
  export interface StepContext {
    taskId: bigint,
    runId: bigint,
    stepId: bigint,
    /**
     * 1 for the first attempt, 2 for the first retry, ...
     */
    attempt: number,
    /**
     * The task's details as a JSON object (key -> JSON value).
     */
    details: string,
  }
  /**
   * What is left of the step's budget.
   */
  export interface Budget {
    /**
     * Fuel units left (one unit is roughly one wasm instruction).
     */
    fuel: bigint,
    /**
     * Wall-clock milliseconds left before the deadline.
     */
    millis: bigint,
  }
}
