// Types of the Stepwise JS SDK (stepwise.js). The host interface's own types, generated
// from guest-sdk/wit with `jco guest-types ../wit --world-name step -o types`, are in types/.

/// <reference path="./types/interfaces/stepwise-step-host.d.ts" />

/** A settings schema: see README.md. */
export type Schema =
  | 'string' | 'number' | 'integer' | 'boolean' | 'object' | 'any'
  | 'string?' | 'number?' | 'integer?' | 'boolean?' | 'object?' | 'any?'
  | [Schema]
  | { type: Schema; default: unknown }
  | { [field: string]: Schema };

export class StepError extends Error {
  constructor(message: string, options?: { permanent?: boolean });
  readonly permanent: boolean;
}
export class PermanentError extends StepError {
  constructor(message: string);
}

/** The step's `run`: `export const run = step(schema, fn)`. */
export function step<S = any>(schema: Schema, fn: (settings: S) => unknown): (settings: string) => string;
export function step(fn: (settings: any) => unknown): (settings: string) => string;
export function check<S = any>(schema: Schema, value: unknown, path?: string): S;

export function progress(percent: number, message?: unknown): void;
export class Progress {
  constructor(total: number);
  readonly total: number;
  readonly done: number;
  advance(message?: unknown): void;
  set(done: number, message?: unknown): void;
  percent(): number;
}

type Line = (message: unknown) => void;
export const log: { trace: Line; debug: Line; info: Line; warn: Line; error: Line };

export function secret(name: string): string | undefined;
export function requireSecret(name: string): string;

export interface Context {
  taskId: number;
  runId: number;
  stepId: number;
  /** 1 for the first attempt, 2 for the first retry, ... */
  attempt: number;
  details: Record<string, unknown>;
}
export function context(): Context;
export function remaining(): { fuel: number; millis: number };

export const artifact: {
  write(name: string, data: string | Uint8Array): void;
  append(name: string, data: string | Uint8Array): void;
};
export const checkpoint: {
  save(state: unknown): void;
  load<T = unknown>(): T | undefined;
};
