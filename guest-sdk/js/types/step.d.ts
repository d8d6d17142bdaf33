/// <reference path="./interfaces/stepwise-step-host.d.ts" />
declare module 'stepwise:step/step@0.1.0' {
  export type * as StepwiseStepHost010 from 'stepwise:step/host@0.1.0'; // import stepwise:step/host@0.1.0
  /**
  * Run the step. `settings` is the step's settings as JSON text; the `ok`
  * value is the step's output as JSON text, the `err` value a message.
  */
  export function run(settings: string): string;
}
