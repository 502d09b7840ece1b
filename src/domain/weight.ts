// Target weights: a target's share of new flows is its weight over the sum of weights.
// MAX_WEIGHT bounds them everywhere (the Maglev schedule orders turns by fractions with
// denominators up to 65535, exactly; statistic rules turn weights into probabilities).
//
// Weight 0 is allowed only where a target is listed by its address (`nflb setup
// --target F=ADDR@0`, a config file): the target is known but receives no new flows
// (no statistic rule, no Maglev table entries); its established connections stay. To
// stop new flows to an active target, `nflb target drain` says so directly, so
// `nflb activate --weight` takes 1..MAX_WEIGHT.
import { DomainError } from "./errors.js";

export const MAX_WEIGHT = 65535;
export const DEFAULT_WEIGHT = 1;

export interface WeightRule {
  /** Accept 0 ("known, no new flows"). Default false. */
  allowZero?: boolean;
}

export function isWeight(value: unknown, rule: WeightRule = {}): value is number {
  const min = rule.allowZero ? 0 : 1;
  return (
    typeof value === "number" && Number.isInteger(value) && value >= min && value <= MAX_WEIGHT
  );
}

/** What a bad weight is told: "invalid weight 0: expected an integer 1..65535". */
export function weightProblem(value: unknown, rule: WeightRule = {}): string | undefined {
  if (isWeight(value, rule)) return undefined;
  return `invalid weight ${typeof value === "string" ? JSON.stringify(value) : String(value)}: expected an integer ${rule.allowZero ? 0 : 1}..${MAX_WEIGHT}`;
}

/** Decimal text (or a number) -> weight; DomainError otherwise. */
export function parseWeight(value: string | number, rule: WeightRule = {}): number {
  const n =
    typeof value === "number" ? value : /^\d+$/.test(value.trim()) ? Number(value) : Number.NaN;
  const problem = weightProblem(Number.isNaN(n) ? value : n, rule);
  if (problem !== undefined) throw new DomainError(problem);
  return n;
}
